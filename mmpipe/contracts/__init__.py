"""Data contracts: Great Expectations suites gate every dataset version, in two layers.

Project suites (data_contracts/, shipped) hold what is true of every mmpipe dataset; source suites
hold what is true of one source and are inferred from its first good version (like TFX's SchemaGen),
then reviewed and exported by the user. suites.py reads the suite files and says which apply;
frames.py derives the small tables GX looks at (never the pixels); infer.py writes source suites
and changes them on request (`mmpipe contracts ...`); validate.py runs GX, applies the severity
policy, caches and persists results.
"""

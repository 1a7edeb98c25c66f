"""Data contracts: Great Expectations suites from data_contracts/ gate every dataset version.

suites.py reads and checks the suite files; frames.py derives the small tables GX looks at (never
the pixels); validate.py runs GX, applies the severity policy, caches and persists results;
profile.py writes starting suites for a new dataset (`mmpipe contracts init`).
"""

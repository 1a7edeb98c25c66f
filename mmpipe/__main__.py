"""`python -m mmpipe`: the CLI, as the interpreter that runs it (how local training workers are started)."""

from mmpipe.cli import main

main()

"""The `mmpipe` command line."""

from mmpipe.cli.app import app, main

__all__ = ["app", "main"]

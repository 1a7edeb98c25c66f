"""The `mmpipe` command: one Typer app, a module per command group. Heavy imports (prefect,
tensorflow, great_expectations) happen inside commands, so `mmpipe --help` answers at once."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mmpipe.cli import contracts, pipeline, runs, stages
from mmpipe.cli.common import EXIT_INTERNAL_ERROR, EXIT_UNUSABLE_INPUT
from mmpipe.config import ENV_DEBUG as DEBUG_ENV
from mmpipe.errors import MmpipeError

app = typer.Typer(
    name="mmpipe",
    help="Raw text + image data in: clean versioned Parquet shards, data contracts, a trained and evaluated "
    "Keras classifier with a serving export out, orchestrated by Prefect.\n\n"
    "Start with `mmpipe demo`: a sample dataset through the whole pipeline, in a few minutes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow; [brackets] are not eaten as markup
)

for command, name in ((pipeline.demo, "demo"), (pipeline.run_command, "run"), (stages.ingest, "ingest"),
                      (stages.validate, "validate"), (stages.train_command, "train"), (stages.evaluate, "evaluate"),
                      (stages.predict, "predict"), (pipeline.serve, "serve"), (pipeline.sample, "sample")):
    app.command(name)(command)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(contracts.contracts_app, name="contracts")


@app.callback()
def options(
    verbose: Annotated[bool, typer.Option("--verbose", help=f"Show tracebacks (also `{DEBUG_ENV}=1`).")] = False,
) -> None:
    if verbose:
        os.environ[DEBUG_ENV] = "1"


def main() -> None:
    """Entry point: every error becomes one line on stderr, never a traceback (unless asked for).

    Exit 2: the input or a setting is unusable (a domain error, or a file the user named cannot be
    read or written); exit 1: an internal error, which is a bug to report.
    """
    try:
        app()
    except MmpipeError as error:
        typer.echo(f"mmpipe: error: {error}", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    except KeyboardInterrupt:
        typer.echo("mmpipe: interrupted; what was written completely is kept, the rest is redone next time", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, and how to see more
        if os.environ.get(DEBUG_ENV):
            raise
        typer.echo(f"mmpipe: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                   f" (run again with --verbose or {DEBUG_ENV}=1 for the traceback, and please report it)", err=True)
        sys.exit(EXIT_INTERNAL_ERROR)

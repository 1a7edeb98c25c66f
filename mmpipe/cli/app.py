"""The `mmpipe` command: one Typer app, a module per command group. Heavy imports (prefect,
tensorflow, great_expectations) happen inside commands, so `mmpipe --help` answers at once."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from mmpipe.cli import contracts, pipeline, runs, score, stages, tracking, tune
from mmpipe.cli.common import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_UNUSABLE_INPUT, PlainFlagsGroup
from mmpipe.config import ENV_DEBUG as DEBUG_ENV
from mmpipe.errors import MmpipeError
from mmpipe.native_logs import configure_stderr

INTERRUPTED = "mmpipe: interrupted; what was written completely is kept, the rest is redone next time"

# Errors of the machine or of a path the user gave, not of mmpipe: one line with what to do, exit 2.
USER_ERRNOS = {
    errno.ENOSPC: "the disk is full: free some space and run it again",
    errno.EDQUOT: "the disk quota is used up: free some space and run it again",
    errno.EACCES: "fix the permissions, or choose another path",
    errno.EPERM: "fix the permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EISDIR: "a folder is where a file was expected: check the path",
    errno.ENOTDIR: "a file is where a folder was expected: check the path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run it again",
}

app = typer.Typer(
    name="mmpipe",
    help="Raw text + image data in: clean versioned Parquet shards, data contracts, a trained and evaluated "
    "Keras classifier with a serving export out, orchestrated by Prefect.\n\n"
    "Start with `mmpipe demo`: a sample dataset through the whole pipeline, in a few minutes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow; [brackets] are not eaten as markup
    cls=PlainFlagsGroup,
)

for command, name in ((pipeline.demo, "demo"), (pipeline.run_command, "run"), (stages.ingest, "ingest"),
                      (stages.validate, "validate"), (stages.train_command, "train"), (tune.tune, "tune"),
                      (stages.evaluate, "evaluate"),
                      (score.score, "score"), (stages.predict, "predict"), (pipeline.serve, "serve"),
                      (pipeline.sample, "sample")):
    app.command(name)(command)
app.command("watch")(pipeline.watch)  # the watcher to run next to a worker (deployments/prefect.yaml)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(contracts.contracts_app, name="contracts")
app.add_typer(tracking.tracking_app, name="tracking")


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
    verbose = "--verbose" in sys.argv[1:] or bool(os.environ.get(DEBUG_ENV))
    configure_stderr(verbose)
    try:
        app()
    except SystemExit as done:
        if done.code == EXIT_INTERRUPTED:  # Typer's answer to Ctrl-C inside a command: the same line as below
            typer.echo(INTERRUPTED, err=True)
        raise
    except MmpipeError as error:
        typer.echo(f"mmpipe: error: {error}", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    except OSError as error:
        if error.errno not in USER_ERRNOS or os.environ.get(DEBUG_ENV):
            raise
        where = f": {error.filename}" if error.filename else ""
        typer.echo(f"mmpipe: error: {error.strerror}{where} ({USER_ERRNOS[error.errno]})", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, and how to see more
        if os.environ.get(DEBUG_ENV):
            raise
        if _prefect_api_lost(error):
            where = os.environ.get("PREFECT_API_URL") or "the temporary Prefect server"
            detail = str(error).splitlines()[0] if str(error) else ""
            typer.echo(f"mmpipe: error: lost the Prefect API at {where} ({type(error).__name__}: {detail}): once it "
                       "answers again, rerun; a run stopped mid-training continues with `mmpipe train --resume RUN_ID`",
                       err=True)
            sys.exit(EXIT_UNUSABLE_INPUT)
        typer.echo(f"mmpipe: internal error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                   f" (run again with --verbose or {DEBUG_ENV}=1 for the traceback, and please report it)", err=True)
        sys.exit(EXIT_INTERNAL_ERROR)


def _prefect_api_lost(error: Exception) -> bool:
    """The Prefect API stopped answering mid-command (httpx's connection errors are not OSErrors)."""
    return type(error).__module__.split(".")[0] in ("httpx", "httpcore") and type(error).__name__ in (
        "ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "ConnectTimeout", "ReadTimeout")


"""What every command shares: option types, exit codes, help that shows flags as flags, and running a
Prefect flow from the CLI."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mmpipe.errors import MmpipeError

EXIT_FAILED_CHECK = 1  # validate found a failed critical expectation
EXIT_INTERNAL_ERROR = 1
EXIT_UNUSABLE_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for Ctrl-C

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: ./mmpipe.toml if present). `MMPIPE_*` variables "
                 "override it, e.g. `MMPIPE_IMAGE__SIZE=32`; flags override both.", show_default=False),
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help="Data dir for shards, quarantine and dataset.json (default: ./mmpipe-data); a "
                 "folder or a bucket URL (s3://, gs://, az://).", show_default=False),
]
RunsOption = Annotated[
    str | None, typer.Option("--runs", help="Runs dir (default: ./mmpipe-runs); a folder or a bucket URL (s3://, "
                             "gs://, az://).", show_default=False)
]
DaskOption = Annotated[
    str | None,
    typer.Option("--dask", help="Clean chunks on an existing Dask cluster, e.g. `tcp://scheduler:8786` "
                 "(needs `pip install mmpipe[dask]`; default: local threads).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a report.")]
ContractsOption = Annotated[
    Path | None,
    typer.Option("--contracts", help="Folder of exported source suites (shards.json, dataset.json) to validate with, "
                 "instead of the ones inferred into `DATA/contracts/` (sets `contracts.suites_dir`).",
                 show_default=False),
]


class PlainFlagsGroup(TyperGroup):
    """A command group whose help shows flags bare (`--json`), its own and those of every command in it.

    Typer 0.29's help prints a type after every option, flags too (`--json <bool>`), as if they took
    a value; it prints a metavar instead when one is set, and an empty one prints nothing.
    """

    def get_params(self, ctx):
        return _bare_flags(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _bare_flags(command.get_params(ctx))  # --help included: it is made here, not declared
        return command


def _bare_flags(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def say_on_stderr(line: str) -> None:
    typer.echo(f"mmpipe: {line}", err=True)


@contextlib.contextmanager
def stores_on_disk(settings):
    """(`settings` with a bucket data dir or run store replaced by a local mirror, published when the command
    ends; a function that names the bucket again in what the command prints). See mmpipe.storage.mirror."""
    from mmpipe.storage.mirror import on_local_disk, published

    with on_local_disk(settings, say=say_on_stderr) as local:
        for folder in (local.data_dir, local.runs_dir):
            with contextlib.suppress(FileNotFoundError):  # created when written
                os.stat(folder)  # a path the system refuses (too long, a file as a parent) fails here, before a flow
        yield local, lambda value: published(value, local, settings)


@contextlib.contextmanager
def reading(location: str | Path, wanted: Callable[[str], bool] = lambda relative: True) -> Iterator[Path]:
    """A folder to read `location` from: the folder itself, or for a bucket URL a temporary copy of the files
    `wanted` accepts (relative paths); no lock, so it reads while a writer works."""
    from mmpipe.storage.mirror import readable
    from mmpipe.storage.urls import is_url

    if not is_url(location):
        yield Path(location).absolute()
        return
    with readable(str(location), wanted) as folder:
        yield folder


def start_prefect() -> None:
    """Before the first flow: Prefect's defaults for a temporary server, and a reachable API if one is set."""
    from flows.environment import prepare_prefect, temporary_server_dies_with_this_process
    from mmpipe.cli.terminal import check_prefect_api

    prepare_prefect()
    check_prefect_api()
    temporary_server_dies_with_this_process()


def run_flow(call) -> Any:
    """Run a flow; a domain error raised inside it reaches the user as that error, not a traceback."""
    try:
        return call()
    except MmpipeError:
        raise
    except Exception as error:
        cause = error
        while cause is not None and not isinstance(cause, MmpipeError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise

"""`mmpipe contracts`: show, export, init, accept-classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmpipe.cli.common import (
    ConfigOption,
    ContractsOption,
    DataOption,
    JsonOption,
    PlainFlagsGroup,
    stores_on_disk,
)
from mmpipe.cli.output import brief
from mmpipe.wording import counted

contracts_app = typer.Typer(help="The data contracts of a data dir: show, export, infer, accept new classes.",
                            no_args_is_help=True, cls=PlainFlagsGroup)


@contracts_app.command("show")
def contracts_show(
    data: DataOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which suites apply to the data dir, where they come from, and what the source suites expect.

    Project suites ship with mmpipe and hold for every dataset; source suites are this source's
    (inferred into `DATA/contracts/` from its first good version, or exported ones given by
    `--contracts DIR`).
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import source_origin_line
    from mmpipe.contracts.suites import describe_expectation, load_contracts

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    with stores_on_disk(settings) as (settings, shown):
        loaded = load_contracts(settings.data_dir, settings)
        described = loaded.describe()
        layers = {"project": loaded.project, "source": loaded.source or {}}
        if as_json:
            for name, suites in layers.items():
                described[name]["expectations"] = {kind: suite.expectations for kind, suite in suites.items()}
            typer.echo(json.dumps(shown(described), default=str))
            return
        typer.echo(f"project contracts: built-in, {described['project']['dir']}")
        typer.echo(source_origin_line(shown(described)))
        for name, suites in layers.items():
            for kind, suite in suites.items():
                typer.echo(f"\n{name}/{kind} ({shown(str(suite.path))}):")
                for entry in suite.expectations:
                    kwargs = {key: value for key, value in entry.get("kwargs", {}).items() if key != "column"}
                    arguments = ", ".join(f"{key}={brief(value)}" for key, value in kwargs.items())
                    typer.echo(f"  {entry['severity']:<8} {describe_expectation(entry)}"
                               + (f": {arguments}" if arguments else ""))
        typer.echo("\n<name> values are filled in at validation from the dataset's settings and the drift reference")
        if loaded.source is None:
            typer.echo("next: `mmpipe validate` infers the source contracts from the current version")
        elif described["source"]["origin"] == "inferred":
            typer.echo("keep them under version control: `mmpipe contracts export DIR`, then `--contracts DIR` "
                       "(or contracts.suites_dir)")


@contracts_app.command("export")
def contracts_export(
    out: Annotated[Path, typer.Argument(help="Folder to write shards.json and dataset.json into.",
                                        show_default=False)],
    data: DataOption = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing suite files.")] = False,
    config: ConfigOption = None,
) -> None:
    """Copy the data dir's source suites to a folder, to review and keep under version control.

    Then use them with `--contracts DIR` (or `contracts.suites_dir = "DIR"` in mmpipe.toml, or a
    `[serve] sources` entry's `contracts`): exported suites win over the inferred ones.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import export_source_suites

    settings = load_config(config, {"data_dir": data})
    with stores_on_disk(settings) as (settings, shown):
        for path in export_source_suites(settings.data_dir, settings, out, force=force):
            typer.echo(f"wrote {shown(str(path))}")
        typer.echo(f"use them with `--contracts {out}` or `contracts.suites_dir = \"{out}\"` in mmpipe.toml")


@contracts_app.command("init")
def contracts_init(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option(help="Folder for shards.json and dataset.json (default: the data "
                                             "dir's `contracts/`, where validation finds them).",
                                             show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace existing suite files (re-infer).")] = False,
    config: ConfigOption = None,
) -> None:
    """Infer source suites from the current dataset version, like TFX SchemaGen (the explicit form).

    `mmpipe validate` does this by itself on a data dir's first good version; use this to
    re-infer (`--force`) after the data has changed on purpose, or to write them elsewhere.
    The class set is critical; observed ranges (with a margin), formats, class coverage and
    drift are warnings; sizes and drift bounds stay parameters filled in from the config.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import init_source_suites

    settings = load_config(config, {"data_dir": data})
    with stores_on_disk(settings) as (settings, shown):
        for path in init_source_suites(settings.data_dir, settings, out, force=force):
            typer.echo(f"wrote {shown(str(path))}")
        typer.echo("review them (severity: critical stops training, warning reports), then run `mmpipe validate`")


@contracts_app.command("accept-classes")
def contracts_accept_classes(
    data: DataOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
) -> None:
    """Accept the classes of the current dataset version that the source contracts do not know.

    A later version with a new class fails validation on purpose (a new class changes the model's
    output); this records the decision in the source suites (the data dir's, or the exported
    ones given by `--contracts`). Then run `mmpipe validate` (or the pipeline) again.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import accept_classes

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    with stores_on_disk(settings) as (settings, shown):
        added, path = accept_classes(settings.data_dir, settings)
        if not added:
            typer.echo(f"nothing to accept: {shown(str(path))} already knows every class of the current version")
            return
        accepted = ", ".join(f"{name!r} ({counted(rows, 'row')})" for name, rows in added.items())
        typer.echo(f"accepted {accepted} into {shown(str(path))}")
        typer.echo("next: `mmpipe validate` (or `mmpipe run`)")

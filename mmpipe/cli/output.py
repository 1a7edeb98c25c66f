"""How commands show results: summaries, the notices a user must see, and a progress bar."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer

from mmpipe.wording import counted


def print_ingest_summary(summary: dict[str, Any]) -> None:
    quarantined = sum(summary["quarantined"].values())
    typer.echo(f"dataset {summary['dataset_version']} in {summary['data_dir']}")
    typer.echo(f"  {counted(summary['rows_read'], 'row')} read: {summary['accepted']} accepted, "
               f"{quarantined} quarantined, {counted(summary['duplicates'], 'duplicate')}")
    for reason, count in sorted(summary["quarantined"].items(), key=lambda item: -item[1]):
        typer.echo(f"    {reason}: {count}")
    typer.echo("  splits: " + ", ".join(f"{split} {count}" for split, count in summary["splits"].items()))
    typer.echo(f"  classes: {', '.join(summary['classes'])}")
    from mmpipe.ingest.version import DATASET_FILE

    typer.echo(f"details (reject examples, lineage): {Path(summary['data_dir']) / DATASET_FILE}")


def print_pipeline_summary(summary: dict) -> None:
    metrics, promotion = summary["metrics"], summary["promotion"] or {}
    ingest = summary["ingest"]
    validation = summary["validation"]
    typer.echo(f"dataset {summary['dataset_version']}: {counted(ingest['accepted'], 'row')} accepted, "
               f"{sum(ingest['quarantined'].values())} quarantined, {counted(ingest['duplicates'], 'duplicate')}; "
               f"contracts passed ({warnings_of(validation)})")
    if validation.get("page"):
        typer.echo(f"  validation page: {validation['page']}")
    print_contracts(summary["validation"])
    majority = (summary.get("baselines") or {}).get("majority") or {}
    against = (f" (always predicting {majority['class']!r}: accuracy {majority['accuracy']:.4f})"
               if majority else "")
    typer.echo(f"run {summary['run_id']}: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
               f"on the test split{against}; {'promoted to champion' if promotion.get('promoted') else 'not promoted'}")
    heads = summary.get("heads") or {}
    if len(heads) > 1:  # what fusion added: each of the model's heads alone, on the same rows
        from mmpipe.train.model import HEADS

        typer.echo("  each head alone, macro F1: " + ", ".join(f"{name} {heads[name]['metrics']['macro_f1']:.4f}"
                                                             for name in HEADS if name in heads))
    if promotion and not promotion.get("promoted"):
        typer.echo("  " + "; ".join(promotion.get("reasons", [])))
    typer.echo(f"report: {summary['report']}")
    print_tracking(summary)


def print_tracking(summary: dict) -> None:
    """Where the run is on the MLflow server, when it was mirrored there."""
    tracked = summary.get("tracking")
    if tracked:
        version = f", model {tracked['model']} version {tracked['model_version']}" if tracked["model_version"] else ""
        typer.echo(f"MLflow: {tracked['url'] or 'run ' + tracked['mlflow_run_id']}{version}")


def print_contracts(validation: dict) -> None:
    """Which suites were used; when they were just inferred, the loud notice on stderr too."""
    from mmpipe.contracts.infer import source_origin_line

    typer.echo(f"  {source_origin_line(validation['contracts'])}")
    print_notice(validation)


def warnings_of(validation: dict) -> str:
    """`no warnings`, `1 warning`, `3 warnings`: how many warning expectations failed."""
    count = len(validation["warnings"])
    return counted(count, "warning") if count else "no warnings"


def print_notice(validation: dict) -> None:
    if validation.get("notice"):
        typer.secho(f"mmpipe: {validation['notice']}", err=True, bold=True)


def setting_value(value: Any) -> str:
    """A setting as TOML would say it, a float to 4 significant digits (a sampled learning rate: 0.000706)."""
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def brief(value: Any, limit: int = 400) -> str:
    """A suite argument as a reviewer reads it: parameters as <name> (filled in from the settings)."""
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return f"<{value['$PARAMETER']}>"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Progress as plain lines (stderr not a terminal: a CI log, a file): `Pipeline [0:42]: training, epoch 7/30 ...`.
PROGRESS_LINE = re.compile(r"^\w[\w ]* \[\d+:\d\d(:\d\d)?\]: ")
PLAIN_EVERY_S = 15.0  # within a stage, at most a line this often (each stage's first and last step always)


class ProgressBar:
    """Progress on stderr, driven by the flows' `mmpipe_progress` log records: (done, total[, what]) names the
    stage and its last number. On a terminal a rich bar with an ETA; otherwise plain lines (PROGRESS_LINE), one
    per stage change and at most one every PLAIN_EVERY_S seconds within a stage; nothing when `quiet` (--json)."""

    def __init__(self, description: str, quiet: bool):
        self.description, self.quiet = description, quiet

    def __enter__(self):
        if self.quiet:
            return self
        from flows.progress import PROGRESS_EXTRA, RUN_LOGGERS

        show = self._bar() if sys.stderr.isatty() else self._plain()

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                progress = getattr(record, PROGRESS_EXTRA, None)
                if progress is not None:
                    show(*(*progress, "")[:3])

        self.handler = Handler()
        for name in RUN_LOGGERS:  # the flows' own lines and their tasks' (training's epochs come from a task)
            logging.getLogger(name).addHandler(self.handler)
        return self

    def _bar(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
        shown = {"task": self.progress.add_task(self.description, total=None)}
        self.progress.start()

        def show(done: int, total: int | None, what: str) -> None:
            description = f"{self.description}: {what}" if what else self.description
            if total is None:  # a stage without counts: a fresh bar (rich keeps an old total, and its ETA)
                self.progress.remove_task(shown["task"])
                shown["task"] = self.progress.add_task(description, total=None)
            else:
                self.progress.update(shown["task"], completed=done, total=total, description=description)

        return show

    def _plain(self):
        started = time.monotonic()
        last = {"stage": None, "at": 0.0, "first": None}

        def show(done: int, total: int | None, what: str) -> None:
            now, stage = time.monotonic(), what.split(",")[0]
            changed = stage != last["stage"]
            if changed:
                last.update(stage=stage, first=None)
            if total and last["first"] is None:
                # The pace is measured from the stage's first counted step on: that step also carries the stage's
                # start (a model loaded, worker processes started): "about 9:34 left" of a 20-second scoring.
                last["first"] = (now, done)
            if not changed and now - last["at"] < PLAIN_EVERY_S and done != total:
                return
            last["at"] = now
            counts = ""
            if total:
                first_at, first_done = last["first"]
                counts = f" ({done}/{total}"
                if first_done < done < total:
                    counts += f", about {_clock((now - first_at) / (done - first_done) * (total - done))} left"
                counts += ")"
            print(f"{self.description} [{_clock(now - started)}]: {what or 'starting'}{counts}", file=sys.stderr,
                  flush=True)

        return show

    def __exit__(self, *exc_info):
        if hasattr(self, "progress"):
            self.progress.stop()
        if hasattr(self, "handler"):
            from flows.progress import RUN_LOGGERS

            for name in RUN_LOGGERS:
                logging.getLogger(name).removeHandler(self.handler)


def _clock(seconds: float) -> str:
    """0:42, 12:05, 1:02:03."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"

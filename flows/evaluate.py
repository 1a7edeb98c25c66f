"""The evaluate flow: score a run on a held-out split, publish the numbers, decide promotion."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from flows.artifacts import (
    CONFUSION_MATRIX,
    EVALUATION_METRICS,
    EVALUATION_REPORT,
    EVALUATION_REPORT_FILE,
    PROMOTION_DECISION,
    RELIABILITY_DIAGRAM,
    TRAINING_CURVES,
    artifact_key,
)
from flows.progress import stage
from flows.tracking import mirror_run_task
from mmpipe.config import Config
from mmpipe.evaluate import evaluate_run
from mmpipe.evaluate.promote import promote
from mmpipe.runs.record import RunDir, load_record
from mmpipe.train.model import HEADS


@task(name="evaluate-model", cache_policy=NO_CACHE, persist_result=False)
def evaluate_task(run_dir: Path, config: Config, split: str, data_dir: Path | None) -> dict:
    return evaluate_run(run_dir, config.evaluate, split=split, data_dir=data_dir).result


@task(name="promote-run", cache_policy=NO_CACHE, persist_result=False)
def promote_task(runs_dir: Path, run_id: str, config: Config) -> dict:
    return promote(runs_dir, run_id, config.evaluate)


@flow(name="evaluate", flow_run_name="evaluate {run_id}")
def evaluate_flow(run_id: str, config: Config, split: str = "test", data_dir: Path | None = None,
                  promote_run: bool = True) -> dict:
    """Evaluate; publish `evaluation-report` and `evaluation-metrics`; on the run's own test split,
    decide champion/challenger and publish `promotion-decision`."""
    runs_dir = Path(config.runs_dir).absolute()
    stage(f"evaluating on the {split} split")
    result = evaluate_task(runs_dir / run_id, config, split, data_dir)
    record = load_record(RunDir(runs_dir / run_id))
    key = partial(artifact_key, data_dir=data_dir or record.data_dir)  # the history of the source scored here
    create_markdown_artifact(key=key(EVALUATION_REPORT), markdown=evaluation_markdown(result),
                             description=f"Run {run_id} on {result['split']} of {result['dataset_version']}")
    create_table_artifact(key=key(EVALUATION_METRICS), table=metric_rows(result),
                          description=f"Run {run_id}: metrics on {result['n']} {result['split']} rows")
    report = Path(result["report"])
    create_link_artifact(key=key(EVALUATION_REPORT_FILE), link=report.as_uri(), link_text=f"{report} (open it from the "
                         "machine that ran the flow: charts, slices, lineage)",
                         description=f"Run {run_id}: the full report, self-contained HTML")
    # Data URIs: the UI shows the pictures without a file server (the run dir is on the worker's disk).
    publish_charts(run_id, result, RunDir(Path(result["out_dir"])), record, key)
    logger = get_run_logger()
    logger.info("run %s on %s (%d rows): accuracy %.4f, macro F1 %.4f; report %s", run_id, result["split"],
                result["n"], result["metrics"]["accuracy"], result["metrics"]["macro_f1"],
                result["report"])
    summary = {key: result[key] for key in ("run_id", "split", "dataset_version", "n", "metrics", "baselines",
                                            "heads", "per_class", "low_support", "out_dir", "report")}
    if promote_run and result["primary"]:
        stage("deciding promotion")
        decision = promote_task(runs_dir, run_id, config)
        verdict = "promoted to champion" if decision["promoted"] else "not promoted"
        create_markdown_artifact(key=key(PROMOTION_DECISION), description=f"Run {run_id}: {verdict}",
                                 markdown=f"## Run {run_id}: {verdict}\n\n"
                                 + "\n".join(f"* {reason}" for reason in decision["reasons"]))
        logger.info("run %s %s: %s", run_id, verdict, "; ".join(decision["reasons"]))
        summary["promotion"] = decision
    # The run's own test split is what its MLflow run shows (other evaluations stay in the run store).
    summary["tracking"] = mirror_run_task(runs_dir / run_id, config, "evaluate") if result["primary"] else None
    return summary


def publish_charts(run_id: str, result: dict, out: RunDir, record, key: Callable[[str], str]) -> None:
    """The report's charts as image artifacts: the confusion matrix, the reliability diagram, the curves."""
    from mmpipe.evaluate import charts

    def image(name: str, png: bytes, what: str) -> None:
        create_image_artifact(key=key(name), image_url=f"data:image/png;base64,{base64.b64encode(png).decode()}",
                              description=f"Run {run_id}: {what}")

    image(CONFUSION_MATRIX, out.confusion_matrix.read_bytes(), f"confusion matrix on {result['split']}")
    if result.get("calibration"):
        image(RELIABILITY_DIAGRAM, charts.to_png(charts.reliability_diagram(result["calibration"],
                                                                            result["metrics"]["ece"])),
              f"reliability diagram on {result['split']} (ECE {result['metrics']['ece']:.4f})")
    if record.history:
        image(TRAINING_CURVES, charts.to_png(charts.run_curves(record)), f"training curves, {len(record.history)} "
              "epochs")


def metric_rows(result: dict) -> list[dict]:
    """Flat rows for the table artifact (plain floats: artifacts go through json.dumps)."""
    rows = []
    for key, value in result["metrics"].items():
        if isinstance(value, dict):
            rows.extend({"metric": f"{key}_{inner}", "value": float(number)} for inner, number in value.items())
        else:
            rows.append({"metric": key, "value": float(value)})
    return rows


def evaluation_markdown(result: dict) -> str:
    metrics = result["metrics"]
    lines = [f"# Run {result['run_id']}: {result['split']} split of `{result['dataset_version']}`", "",
             f"{result['n']} rows. Accuracy **{metrics['accuracy']:.4f}**, macro F1 **{metrics['macro_f1']:.4f}**, "
             f"weighted F1 {metrics['weighted_f1']:.4f}, log loss {metrics['log_loss']:.4f}, "
             f"ECE {metrics['ece']:.4f}" + (f" ({metrics['ece_uncalibrated']:.4f} before calibration)"
                                             if "ece_uncalibrated" in metrics else "") + ".", "",
             *_head_lines(result.get("heads") or {}, metrics),
             "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, scores in result["per_class"].items():
        lines.append(f"| {name} | {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} "
                     f"| {scores['support']} |")
    lines += _slice_lines(result.get("slices") or {})
    lines += ["", f"Report: [{result['report']}]({Path(result['report']).as_uri()})"]
    return "\n".join(lines)


def _head_lines(heads: dict, metrics: dict) -> list[str]:
    """What fusion added: the served blend's macro F1 beside each of the model's heads alone, on the same rows."""
    if len(heads) < 2:
        return []
    cells = [f"served **{metrics['macro_f1']:.4f}**",
             *(f"{name} head {heads[name]['metrics']['macro_f1']:.4f}" for name in HEADS if name in heads)]
    return ["Macro F1 by head (same rows): " + ", ".join(cells) + ".", ""]


def _slice_lines(slices: dict) -> list[str]:
    """The worst slice of each dimension (where to look first), flagged when it is small."""
    lines = []
    for dimension, entries in slices.items():
        if len(entries) > 1:
            worst = min(entries, key=lambda entry: entry["accuracy"])
            lines.append(f"| {dimension} | {worst['value']} | {worst['n']}{' (small)' if worst['small'] else ''} "
                         f"| {worst['accuracy']:.4f} |")
    return ["", "Weakest slice per dimension:", "", "| dimension | slice | rows | accuracy |", "|---|---|---:|---:|",
            *lines] if lines else []

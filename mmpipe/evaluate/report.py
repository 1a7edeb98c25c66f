"""The evaluation report: confusion_matrix.png and a self-contained report.html (opens offline).

Charts come from mmpipe.evaluate.charts (matplotlib), inlined as SVG; the page fetches nothing, so it
opens the same from a laptop, a CI artifact or an air-gapped server. Metrics are grouped the way a
reader asks about them: quality (beside the baselines it must beat), calibration, speed; then where
it fails (per class, confusion, slices) and what it was trained on.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mmpipe.evaluate import charts
from mmpipe.evaluate.metrics import CALIBRATION, QUALITY, named
from mmpipe.evaluate.slices import smallest
from mmpipe.files import atomic_path
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.train.model import HEADS
from mmpipe.wording import counted

PAGE_STYLE = """body{font-family:system-ui,sans-serif;max-width:62em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .7em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}.small td{color:#a00}
.note{color:#555}figure{margin:.5em 0}svg,img{max-width:100%;height:auto}h2{border-bottom:1px solid #ddd}"""


def write_report(out: RunDir, record: RunRecord, result: dict[str, Any]) -> Path:
    """(Re)write the PNG and the HTML for one evaluation; the promotion decision is shown if there is one."""
    figure = charts.confusion_matrix(result["confusion_matrix"], result["classes"])
    with atomic_path(out.confusion_matrix) as temp:
        temp.write_bytes(charts.to_png(figure))
    decision = json.loads(out.promotion.read_text()) if out.promotion.is_file() else None
    page = render_html(record, result, charts.to_svg(figure), decision)
    with atomic_path(out.report) as temp:
        temp.write_text(page, encoding="utf-8")
    return out.report


def render_html(record: RunRecord, result: dict[str, Any], confusion_svg: str, decision: dict | None) -> str:
    escape = html.escape
    metrics = result["metrics"]
    promotion = ""
    if decision:
        verdict = "promoted to champion" if decision["promoted"] else "not promoted"
        reasons = "".join(f"<li>{escape(reason)}</li>" for reason in decision["reasons"])
        promotion = f"<h2>Promotion: {verdict}</h2><ul>{reasons}</ul>"
    calibration = result.get("calibration")
    reliability = (f"<figure>{charts.to_svg(charts.reliability_diagram(calibration, metrics['ece']))}</figure>"
                   if calibration else "")
    curves = (f"<figure>{charts.to_svg(charts.run_curves(record))}</figure>"
              f"<p class=note>{counted(len(record.history), 'epoch')} recorded.</p>" if record.history
              else "<p>no epochs recorded</p>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mmpipe run {escape(result['run_id'])}</title>
<style>{PAGE_STYLE}</style></head>
<body>
<h1>Run {escape(result['run_id'])}: {escape(record.variant)} model</h1>
<p>Evaluated on the <b>{escape(result['split'])}</b> split of dataset <code>{escape(result['dataset_version'])}</code>
({result['n']} rows) at {escape(result['evaluated_at'])}.</p>
{promotion}
<h2>Quality</h2>{quality_html(metrics, result.get("baselines") or {})}
{heads_html(result, record)}
<h2>Calibration</h2>{calibration_html(metrics)}{reliability}
<h2>Speed</h2>{speed_html(metrics)}
<h2>Per class</h2>{per_class_html(result)}
<h2>Confusion matrix</h2><figure>{confusion_svg}</figure>
<h2>Slices</h2>{slices_html(result.get("slices") or {})}
<h2>Training curves</h2>{curves}
<h2>Lineage</h2>{lineage_html(record)}
</body></html>
"""


def quality_html(metrics: dict[str, Any], baselines: dict[str, Any]) -> str:
    """Quality metrics, with what the baselines scored on the same rows beside them."""
    header = "".join(f"<th>{html.escape(_baseline_name(name, found))}</th>" for name, found in baselines.items())
    rows = []
    for key, label in named(metrics, QUALITY):
        cells = "".join(f"<td>{found[key]:.4f}</td>" if key in found else "<td>&mdash;</td>"
                        for found in baselines.values())
        rows.append(f"<tr><td>{html.escape(label)}</td><td><b>{metrics[key]:.4f}</b></td>{cells}</tr>")
    note = ("<p class=note>Baselines are scored on the same rows; a run that does not beat them has learned "
            "nothing the baseline did not.</p>") if baselines else ""
    return f"<table><tr><th>metric</th><th>this run</th>{header}</tr>{''.join(rows)}</table>{note}"


HEAD_NAMES = {"fused": "fused head", "text": "text head alone", "image": "image head alone"}


def heads_html(result: dict[str, Any], record: RunRecord) -> str:
    """What the served blend gives beside each of the model's own heads on the same rows, overall and per
    class: what fusion added (empty for a model with one head)."""
    found = result.get("heads") or {}
    heads = {name: found[name] for name in HEADS if name in found}  # the blend's order (JSON files sort keys)
    if len(heads) < 2:
        return ""
    escape = html.escape
    weights = dict(zip((record.blend or {}).get("heads", []), (record.blend or {}).get("weights", []), strict=False))
    header = "".join(f"<th>{escape(HEAD_NAMES.get(name, name))}</th>" for name in heads)
    overall = []
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
        cells = "".join(f"<td>{found['metrics'][key]:.4f}</td>" for found in heads.values())
        overall.append(f"<tr><td>{label}</td><td><b>{result['metrics'][key]:.4f}</b></td>{cells}</tr>")
    weight_cells = "".join(f"<td>{weights[name]:.2f}</td>" if name in weights else "<td>&mdash;</td>"
                           for name in heads)
    overall.append(f"<tr><td>weight in the blend</td><td></td>{weight_cells}</tr>")
    branches = [name for name in heads if name != "fused"]
    rows = []
    for name, values in result["per_class"].items():
        cells = "".join(f"<td>{found['per_class_f1'][name]:.4f}</td>" for found in heads.values())
        best_branch = max(heads[branch]["per_class_f1"][name] for branch in branches)
        rows.append(f"<tr><td>{escape(name)}</td><td><b>{values['f1']:.4f}</b></td>{cells}"
                    f"<td>{values['f1'] - best_branch:+.4f}</td></tr>")
    return (f"<h2>What fusion added</h2><p class=note>The run serves a blend of its heads, weighted on the "
            f"validation split; each head alone, on the same rows:</p>"
            f"<table><tr><th>metric</th><th>served</th>{header}</tr>{''.join(overall)}</table>"
            f"<h3>F1 per class</h3><table><tr><th>class</th><th>served</th>{header}<th>served minus the better "
            f"branch</th></tr>{''.join(rows)}</table>")


def calibration_html(metrics: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(label)} (lower is better)</td><td>{metrics[key]:.4f}</td></tr>"
                   for key, label in named(metrics, CALIBRATION))
    return f"<table>{rows}</table>"


def speed_html(metrics: dict[str, Any]) -> str:
    if "throughput_samples_per_s" not in metrics:
        return "<p>not measured</p>"
    latency = metrics.get("latency_ms") or {}
    rows = [f"<tr><td>batch throughput</td><td>{metrics['throughput_samples_per_s']:,.1f} rows/s</td></tr>"]
    rows += [f"<tr><td>one-row latency, {name}</td><td>{value:.2f} ms</td></tr>" for name, value in latency.items()]
    return f"<table>{''.join(rows)}</table><p class=note>Measured on the machine that evaluated, this split.</p>"


def per_class_html(result: dict[str, Any]) -> str:
    escape = html.escape
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td>"
        f"<td>{v['f1']:.4f}</td><td>{v['support']}</td></tr>" for name, v in result["per_class"].items())
    low = result.get("low_support") or {"classes": {}}
    low_support = (f"<p><b>Low-support classes</b> (fewer than {low['min_train_rows']} train rows, so their numbers "
                   "rest on little evidence): " + ", ".join(f"{escape(name)} ({counted(count, 'train row')})"
                                                            for name, count in low["classes"].items())
                   + "</p>") if low["classes"] else ""
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}</table>{low_support}")


def slices_html(sliced: dict[str, list[dict[str, Any]]]) -> str:
    """A table per dimension; slices with few rows flagged (red), the smallest named first."""
    if not sliced:
        return "<p>no slices (evaluated before mmpipe computed them)</p>"
    escape = html.escape
    flagged = smallest(sliced)
    named = ", ".join(f"{escape(dimension)} = {escape(entry['value'])} ({counted(entry['n'], 'row')})"
                      for dimension, entry in flagged[:8])
    named += f" and {len(flagged) - 8} more" if len(flagged) > 8 else ""
    warning = f"<p><b>Small slices</b> (their numbers rest on few rows): {named}</p>" if flagged else ""
    tables = []
    for dimension, entries in sliced.items():
        rows = "".join(
            f"<tr{' class=small' if entry['small'] else ''}><td>{escape(entry['value'])}</td><td>{entry['n']}</td>"
            f"<td>{entry['accuracy']:.4f}</td><td>{_interval(entry.get('accuracy_interval'))}</td>"
            f"<td>{_score(entry['macro_f1'])}</td><td>{entry['ece']:.4f}</td>"
            f"<td>{'few rows' if entry['small'] else ''}</td></tr>" for entry in entries)
        tables.append(f"<h3>by {escape(dimension.replace('_', ' '))}</h3><table><tr><th>{escape(dimension)}</th>"
                      "<th>rows</th><th>accuracy</th><th>95% interval</th><th>macro F1</th><th>ECE</th><th>note</th>"
                      f"</tr>{rows}</table>")
    return warning + "".join(tables)


def _interval(bounds: list[float] | None) -> str:
    """Where the slice's accuracy could be on other rows like these (absent in reports before mmpipe said)."""
    return "&mdash;" if not bounds else f"{bounds[0]:.2f}&ndash;{bounds[1]:.2f}"


def _score(value: float | None) -> str:
    return "&mdash;" if value is None else f"{value:.4f}"


def _baseline_name(name: str, found: dict[str, Any]) -> str:
    if name == "majority":
        return f"always predicting {found['class']!r}"
    return f"{name}-only run {found['run_id']}"


def lineage_html(record: RunRecord) -> str:
    """Dataset, its shards and validation, config, code and packages behind the run."""
    escape = html.escape
    lineage = record.lineage
    validation = lineage.get("validation") or {}
    shards = "".join(f"<li><code>{escape(s['path'])}</code> {counted(s['rows'], 'row')}, "
                     f"sha256 <code>{s['sha256']}</code></li>" for s in lineage.get("shards", []))
    packages = ", ".join(f"{name} {version}" for name, version in record.packages.items())
    items = [
        f"trained on dataset <code>{escape(record.dataset_version)}</code> "
        f"in <code>{escape(record.data_dir)}</code>",
        f"validation: {_verdict(validation.get('success'))}"
        + (f" (<code>{escape(str(validation['result']))}</code>)" if validation.get("result") else ""),
        f"config hash <code>{escape(record.config_hash)}</code>, seed {record.seed}, "
        f"mmpipe {escape(record.code_version)}, "
        + (f"git commit <code>{escape(record.git_commit)}</code>" if record.git_commit else "not from a git checkout"),
        f"packages: {escape(packages)}",
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + f"</ul><ul>{shards}</ul>"


def _verdict(success: bool | None) -> str:
    return {True: "passed", False: "failed"}.get(success, "not recorded")

"""The scoring report: a self-contained report.html (opens offline) of what was scored, what was quarantined
and why, the metrics when the rows had labels, and each drift feature's reference beside the scored rows."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from mmpipe.evaluate import charts
from mmpipe.evaluate.report import PAGE_STYLE
from mmpipe.files import atomic_path
from mmpipe.wording import counted

DRIFT_CHART_FILE = "drift.png"  # the same chart as a picture, for the Prefect UI


def write_report(folder: Path, name: str, result: dict[str, Any], reference: dict[str, Any],
                 current: dict[str, Any]) -> list[str]:
    """report.html, and drift.png when drift was judged; the names of the files written. The chart is drawn
    once, as a PNG, and the page holds it as a data URI (an SVG as well took 0.9 s more of a 2,000-row scoring)."""
    figure = charts.drift_panels(reference.get("features", {}), current, result["drift"]["features"])
    png = charts.to_png(figure) if figure is not None else None
    image = f'<img alt="drift per feature" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    with atomic_path(folder / name) as temp:
        temp.write_text(render_html(result, image), encoding="utf-8")
    if png is None:
        return [name]
    with atomic_path(folder / DRIFT_CHART_FILE) as temp:
        temp.write_bytes(png)
    return [name, DRIFT_CHART_FILE]


def render_html(result: dict[str, Any], drift_chart: str) -> str:
    escape = html.escape
    drift = result["drift"]
    quarantined = "".join(f"<tr><td>{escape(reason)}</td><td>{count}</td></tr>"
                          for reason, count in result["quarantined"].items())
    rows = "".join(
        f"<tr{' class=small' if found['drifted'] else ''}><td>{escape(name)}</td><td>{escape(found['test'])}</td>"
        f"<td>{_number(found['statistic'])}</td><td>{found['threshold']}</td><td>{_number(found['p_value'], 2)}</td>"
        f"<td>{'drifted' if found['drifted'] else 'no'}</td></tr>" for name, found in drift["features"].items())
    sliced = "".join(
        f"<tr{' class=small' if verdict['detected'] else ''}><td>{escape(name)} = {escape(value)}</td>"
        f"<td>{escape(_drifted(verdict['features']))}</td></tr>"
        for name, values in (drift.get("slices") or {}).items() for value, verdict in values.items())
    metrics = result["metrics"]
    quality = (f"<p>On the {counted(metrics['rows'], 'labelled row')}: accuracy <b>{metrics['accuracy']:.4f}</b>, "
               f"macro F1 <b>{metrics['macro_f1']:.4f}</b>.</p>" if metrics else
               "<p>No row had a label the model knows: no metrics.</p>")
    if result["unknown_labels"]:
        quality += (f"<p>{counted(result['unknown_labels'], 'row')} labelled with a class the run was not trained on "
                    "(scored, not in the metrics).</p>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mmpipe scoring {escape(result['version'])}</title>
<style>{PAGE_STYLE}</style></head>
<body>
<h1>Scoring {escape(result['version'])} with run {escape(result['run_id'])}</h1>
<p>Source <code>{escape(result['source']['path'])}</code>: {counted(result['rows_read'], 'row')} read,
{result['scored']} scored, {sum(result['quarantined'].values())} quarantined, at {escape(result['scored_at'])}.
Predictions: <code>{escape(result['predictions'][0])}</code>.</p>
<h2>Quarantined</h2>{f"<table><tr><th>reason</th><th>rows</th></tr>{quarantined}</table>" if quarantined
                      else "<p>none</p>"}
<h2>Quality</h2>{quality}
<h2>Drift: {'detected' if drift['detected'] else 'none'}</h2>
<p class=note>{escape(drift['note'])}. Reference: the train split of dataset
<code>{escape(result['lineage']['run_dataset_version'])}</code> the run learned from; for unknown words its val and test
rows (the vocabulary was fitted on the train split), for the predicted class its test split's predictions.</p>
{f"<table><tr><th>feature</th><th>test</th><th>statistic</th><th>threshold</th><th>p-value</th><th>drift</th></tr>"
 f"{rows}</table>" if rows else ""}
{f"<h3>By slice</h3><table><tr><th>slice</th><th>drifted features</th></tr>{sliced}</table>" if sliced else ""}
<figure>{drift_chart}</figure>
</body></html>
"""


def _drifted(features: dict[str, Any]) -> str:
    return ", ".join(name for name, found in features.items() if found["drifted"]) or "none"


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "&mdash;"
    return f"{value:.{digits}g}" if digits == 2 else f"{value:.{digits}f}"

"""The evaluation report: confusion_matrix.png and a self-contained report.html (opens offline).

Drawn with Pillow and inline SVG, so no plotting library is needed and the HTML embeds
everything it shows (the PNG as a data URI).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mmpipe.files import atomic_path
from mmpipe.runs.record import RunDir, RunRecord

_CELL = 44
_MARGIN = 110


def write_report(out: RunDir, record: RunRecord, result: dict[str, Any]) -> Path:
    """(Re)write the PNG and the HTML for one evaluation; the promotion decision is shown if there is one."""
    png = confusion_matrix_png(result["confusion_matrix"], result["classes"])
    with atomic_path(out.confusion_matrix) as temp:
        temp.write_bytes(png)
    decision = json.loads(out.promotion.read_text()) if out.promotion.is_file() else None
    page = render_html(record, result, png, decision)
    with atomic_path(out.report) as temp:
        temp.write_text(page, encoding="utf-8")
    return out.report


def confusion_matrix_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    """Rows are true classes, columns predictions; cells shaded by the share of their row."""
    import io

    size = len(classes)
    side = _MARGIN + size * _CELL + 10
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, 4), "predicted ->", fill="black")
    draw.text((4, 4), "true", fill="black")
    for i, name in enumerate(classes):
        draw.text((4, _MARGIN + i * _CELL + _CELL // 2 - 5), name[:16], fill="black")
        draw.text((_MARGIN + i * _CELL + 2, _MARGIN - 16 - 12 * (i % 2)), name[:7], fill="black")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            shade = int(255 - 200 * count / total)
            left, top = _MARGIN + j * _CELL, _MARGIN + i * _CELL
            box = (left, top, left + _CELL - 1, top + _CELL - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline="gray")
            draw.text((box[0] + 6, box[1] + _CELL // 2 - 5), str(count), fill="black" if shade > 120 else "white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def render_html(record: RunRecord, result: dict[str, Any], png: bytes, decision: dict | None) -> str:
    escape = html.escape
    metrics = result["metrics"]
    rows = "".join(f"<tr><td>{escape(key)}</td><td>{_number(value)}</td></tr>" for key, value in metrics.items())
    per_class = "".join(
        f"<tr><td>{escape(name)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td>"
        f"<td>{v['f1']:.4f}</td><td>{v['support']}</td></tr>" for name, v in result["per_class"].items())
    low = result.get("low_support") or {"classes": {}}
    low_support = (f"<p><b>Low-support classes</b> (fewer than {low['min_train_rows']} train rows, so their numbers "
                   "rest on little evidence): " + ", ".join(f"{escape(name)} ({count} train rows)"
                                                            for name, count in low["classes"].items())
                   + "</p>") if low["classes"] else ""
    baseline_rows = "".join(
        f"<tr><td>{escape(_baseline_name(name, found))}</td><td>{found['accuracy']:.4f}</td>"
        f"<td>{found['macro_f1']:.4f}</td></tr>" for name, found in (result.get("baselines") or {}).items())
    baselines = (f"<h2>Baselines on the same rows</h2><table><tr><th>model</th><th>accuracy</th><th>macro F1</th></tr>"
                 f"<tr><td>this run</td><td>{metrics['accuracy']:.4f}</td><td>{metrics['macro_f1']:.4f}</td></tr>"
                 f"{baseline_rows}</table>") if baseline_rows else ""
    promotion = ""
    if decision:
        verdict = "promoted to champion" if decision["promoted"] else "not promoted"
        reasons = "".join(f"<li>{escape(reason)}</li>" for reason in decision["reasons"])
        promotion = f"<h2>Promotion: {verdict}</h2><ul>{reasons}</ul>"
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mmpipe run {escape(result['run_id'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body>
<h1>Run {escape(result['run_id'])}: {escape(record.variant)} model</h1>
<p>Evaluated on the <b>{escape(result['split'])}</b> split of dataset <code>{escape(result['dataset_version'])}</code>
({result['n']} rows) at {escape(result['evaluated_at'])}.</p>
{promotion}
{baselines}
<h2>Metrics</h2><table>{rows}</table>
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{per_class}</table>{low_support}
<h2>Confusion matrix</h2><img alt="confusion matrix" src="data:image/png;base64,{image}">
<h2>Training curves</h2>{training_curves_svg(record.history)}
<h2>Lineage</h2>{lineage_html(record)}
</body></html>
"""


def _baseline_name(name: str, found: dict[str, Any]) -> str:
    if name == "majority":
        return f"always predicting {found['class']!r}"
    return f"{name}-only run {found['run_id']}"


def lineage_html(record: RunRecord) -> str:
    """Dataset, its shards and validation, config, code and packages behind the run."""
    escape = html.escape
    lineage = record.lineage
    validation = lineage.get("validation") or {}
    shards = "".join(f"<li><code>{escape(s['path'])}</code> {s['rows']} rows, sha256 <code>{s['sha256']}</code></li>"
                     for s in lineage.get("shards", []))
    packages = ", ".join(f"{name} {version}" for name, version in record.packages.items())
    items = [
        f"trained on dataset <code>{escape(record.dataset_version)}</code> "
        f"in <code>{escape(record.data_dir)}</code>",
        f"validation passed: {escape(str(validation.get('success', 'unknown')))} "
        f"(<code>{escape(str(validation.get('result', '')))}</code>)",
        f"config hash <code>{escape(record.config_hash)}</code>, seed {record.seed}, "
        f"mmpipe {escape(record.code_version)}, git <code>{escape(str(record.git_commit))}</code>",
        f"packages: {escape(packages)}",
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + f"</ul><ul>{shards}</ul>"


def training_curves_svg(history: list[dict[str, float]], width: int = 640, height: int = 220) -> str:
    """Loss and accuracy per epoch as inline SVG polylines (train solid, validation dashed)."""
    if not history:
        return "<p>no epochs recorded</p>"
    series = [(key, [epoch.get(key) for epoch in history]) for key in ("loss", "val_loss", "accuracy", "val_accuracy")]
    series = [(key, values) for key, values in series if all(v is not None for v in values)]
    top = max(max(values) for _, values in series) or 1.0
    colours = {"loss": "#c33", "val_loss": "#c33", "accuracy": "#36c", "val_accuracy": "#36c"}
    step = (width - 40) / max(1, len(history) - 1)
    lines = []
    for key, values in series:
        points = " ".join(f"{20 + i * step:.1f},{height - 20 - (height - 40) * v / top:.1f}"
                          for i, v in enumerate(values))
        dash = ' stroke-dasharray="5,4"' if key.startswith("val_") else ""
        lines.append(f'<polyline fill="none" stroke="{colours[key]}" stroke-width="2"{dash} points="{points}">'
                     f"<title>{key}</title></polyline>")
    legend = ", ".join(f"{key} {values[-1]:.4f}" for key, values in series)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="{width}" height="{height}" fill="#fafafa"/>{"".join(lines)}</svg>'
            f"<p>{len(history)} epoch(s); last: {html.escape(legend)} "
            "(red: loss, blue: accuracy, dashed: validation)</p>")


def _number(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_number(inner)}" for key, inner in value.items())
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

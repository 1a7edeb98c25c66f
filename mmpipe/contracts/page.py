"""The validation page: one self-contained HTML file per validated version, `index.html`.

mmpipe used to write GX's Data Docs here. They were kept out on purpose, not fixed: GX's page
templates load Bootstrap, jQuery and Vega from CDNs (unstyled offline), their Home and suite links
assume a whole GX site that an ephemeral context never writes, shards validated together shared
one page (val and test linked to train's), and they cannot show what mmpipe decides on top of GX
(severity, one verdict per expectation over all shards, the hint, the integrity check). Rendering
them also cost ~2.4 s of an ~11 s validation. This page is rendered from result.json and
dataset.json alone (no GX import), with inline CSS and nothing fetched.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from mmpipe.files import atomic_path
from mmpipe.ingest.version import DATASET_FILE, DatasetVersion
from mmpipe.wording import counted

PAGE_FILE = "index.html"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { border: 1px solid #d0d0d5; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f5; } td.num { text-align: right; }
code { font: 12px ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
.passed { color: #0a7d32; font-weight: 600; } .failed { color: #b3261e; font-weight: 700; }
.warning { color: #9a5b00; font-weight: 600; } .muted { color: #666; }
.notice { background: #fff6d6; border: 1px solid #e6c200; padding: .6em .8em; }
tr.failed-row td { background: #fdecea; } tr.warning-row td { background: #fff8e6; }
td.ids code { word-break: normal; white-space: nowrap; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; } dt { font-weight: 600; }
"""


def write_page(folder: Path, result: dict[str, Any], version: DatasetVersion, result_file: str) -> Path:
    """Write `folder/index.html` for the validation result of `version` stored as `folder/result_file`."""
    path = Path(folder) / PAGE_FILE
    with atomic_path(path) as temp:
        temp.write_text(render_page(result, version, result_file), encoding="utf-8")
    return path


def render_page(result: dict[str, Any], version: DatasetVersion, result_file: str) -> str:
    outcomes = result["outcomes"]
    failed = [o for o in outcomes if not o["success"] and o["severity"] == "critical"]
    warned = [o for o in outcomes if not o["success"] and o["severity"] != "critical"]
    verdict = "passed" if result["success"] else "FAILED"
    title = f"Validation of dataset {version.version}: {verdict}"
    parts = [
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Validation of dataset <code>{escape(version.version)}</code>: "
        f"<span class='{'passed' if result['success'] else 'failed'}'>{verdict}</span></h1>",
        f"<p>{counted(len(failed), 'critical failure')}, {counted(len(warned), 'warning')}, "
        f"{counted(len(outcomes), 'expectation')} checked. Critical expectations gate training; warnings "
        "are reported only.</p>",
    ]
    if result.get("inferred"):
        parts.append(f"<p class='notice'>The source contracts were inferred from this version: review them with "
                     f"<code>mmpipe contracts show --data {escape(str(version.data_dir))}</code>.</p>")
    parts += _about(result, version) + _suites(result["contracts"]) + _shards(result, version)
    parts += _expectations(outcomes)
    # A relative link: it works offline, and after the folder is copied elsewhere.
    parts.append(f"<p class='muted'>Every observed value, parameter and statistic: <a href='{result_file}'>"
                 f"{result_file}</a>. Written by mmpipe; opens offline.</p></body></html>\n")
    return "\n".join(parts)


def _about(result: dict[str, Any], version: DatasetVersion) -> list[str]:
    reference = result.get("reference")
    drift = ("this version (the first to be validated)" if reference in (None, "self", version.version)
             else reference)
    rows = [("validated at", f"{result.get('validated_at', '?')} (UTC)"),
            ("validation key", f"<code>{escape(str(result.get('run_key', '?')))}</code>"),
            ("dataset version", f"<code>{escape(version.version)}</code>, created {escape(version.created_at)}"),
            ("source", f"<code>{escape(str(version.source.get('path', '?')))}</code> "
                       f"({escape(str(version.source.get('kind', '?')))})"),
            ("data dir", f"<code>{escape(str(version.data_dir))}</code> "
                         f"(<code>{DATASET_FILE}</code> lists the shards)"),
            ("drift reference", f"<code>{escape(str(drift))}</code>")]
    return ["<h2>What was validated</h2>", "<dl>"] + [f"<dt>{key}</dt><dd>{value}</dd>" for key, value in rows] + [
        "</dl>"]


def _suites(contracts: dict[str, Any]) -> list[str]:
    rows = []
    for layer in ("project", "source"):
        described = contracts.get(layer) or {}
        for kind, file in (described.get("files") or {}).items():
            rows.append(f"<tr><td>{layer}/{kind}</td><td>{escape(str(described.get('origin', '')))}</td>"
                        f"<td><code>{escape(file['path'])}</code></td><td><code>{escape(file['sha256'])}</code></td>"
                        "</tr>")
    if not (contracts.get("source") or {}).get("files"):
        source_dir = escape(str((contracts.get("source") or {}).get("dir", "")))
        rows.append(f"<tr><td>source</td><td>none yet</td><td colspan='2'>inferred into <code>{source_dir}"
                    "</code> from the first version that passes the project suites</td></tr>")
    return ["<h2>Suites</h2>", "<table><tr><th>suite</th><th>origin</th><th>file</th><th>sha256</th></tr>",
            *rows, "</table>"]


def _shards(result: dict[str, Any], version: DatasetVersion) -> list[str]:
    current = result.get("shards") or {}
    rows = []
    for entry in version.shards:
        same = current.get(entry.path, entry.sha256) == entry.sha256
        state = "<span class='passed'>unchanged</span>" if same else "<span class='failed'>CHANGED since ingest</span>"
        rows.append(f"<tr><td><code>{escape(entry.path)}</code></td><td>{escape(str(entry.split))}</td>"
                    f"<td class='num'>{entry.rows}</td><td><code>{escape(entry.sha256)}</code></td>"
                    f"<td>{state}</td></tr>")
    total = sum(entry.rows for entry in version.shards)
    return [f"<h2>Shards: {counted(len(version.shards), 'shard')}, {counted(total, 'row')}</h2>",
            "<table><tr><th>shard</th><th>split</th><th>rows</th><th>sha256 (as recorded at ingest)</th>"
            "<th>file now</th></tr>", *rows, "</table>"]


def _expectations(outcomes: list[dict[str, Any]]) -> list[str]:
    rows = []
    # Failures first, then warnings, each group in suite order (sorted() is stable).
    for o in sorted(outcomes, key=lambda o: (o["success"], o["severity"] != "critical")):
        state = "passed" if o["success"] else ("failed" if o["severity"] == "critical" else "warning")
        shown = {"passed": "pass", "failed": "FAIL", "warning": "warn"}[state]
        notes = []
        if o.get("shards"):
            notes.append("in " + ", ".join(f"<code>{escape(shard)}</code>" for shard in o["shards"]))
        if o.get("hint"):
            notes.append(escape(o["hint"]))
        observed = escape(str(o["observed"])) + "".join(f"<br><span class='muted'>{note}</span>" for note in notes)
        examples = ", ".join(f"<code>{escape(str(e))}</code>" for e in o.get("examples", []))
        rows.append(f"<tr class='{state}-row'><td>{escape(o['suite'])}</td><td>{escape(o['expectation'])}<br>"
                    f"<code class='muted'>{escape(o.get('check', ''))}</code></td><td>{escape(o['severity'])}</td>"
                    f"<td class='{state}'>{shown}</td><td>{observed}</td><td class='ids'>{examples}</td></tr>")
    return [f"<h2>Expectations ({len(outcomes)})</h2>",
            "<table><tr><th>suite</th><th>expectation</th><th>severity</th><th>result</th><th>observed</th>"
            "<th>example ids</th></tr>", *rows, "</table>"]

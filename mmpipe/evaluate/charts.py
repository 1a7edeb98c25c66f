"""The report's charts, drawn with matplotlib (axes, ticks, legends and colour bars done right).

Figures are built with the object API (`matplotlib.figure.Figure`, no pyplot): no global backend or
figure registry, so evaluating in a Prefect worker thread or a notebook changes nothing there.
SVG keeps text as text (`svg.fonttype: none`): it stays sharp at any zoom, is searchable, and a
fixed hash salt and no date make the same numbers give the same bytes.
"""

from __future__ import annotations

import io
import re
from typing import Any

_SVG_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "mmpipe", "font.size": 9}
_TRAIN, _VALIDATION = "#1f77b4", "#d62728"


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def to_svg(figure) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(_SVG_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)  # an RDF block naming the tool
    return text[text.index("<svg"):]  # inline in HTML: no XML declaration or doctype


def to_png(figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def training_curves(history: list[dict[str, float]], kept_epoch: int | None = None, kept_by: str = ""):
    """Loss and accuracy per epoch, train and validation, the epoch whose weights the run kept marked.
    With branch heads, the train loss is the fused head's (the total adds the branches' losses); the
    validation loss and accuracy are the served blend's."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(8, 3)
    epochs = [int(entry.get("epoch", index + 1)) for index, entry in enumerate(history)]
    train_loss = "fused_loss" if history and all("fused_loss" in entry for entry in history) else "loss"
    for axes, metric, title in zip(figure.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy"), strict=True):
        train = train_loss if metric == "loss" else metric
        for key, colour, name in ((train, _TRAIN, "train"), (f"val_{metric}", _VALIDATION, "validation")):
            values = [entry.get(key) for entry in history]
            if all(value is not None for value in values):
                axes.plot(epochs, values, marker="o", markersize=3, color=colour, label=name)
        if kept_epoch is not None and len(epochs) > 1:
            axes.axvline(kept_epoch, color="grey", linestyle=":", linewidth=1,
                         label=f"kept: epoch {kept_epoch}" + (f" (best {kept_by})" if kept_by else ""))
        axes.set(title=title, xlabel="epoch", ylabel=metric)
        if metric == "accuracy":
            axes.set_ylim(0, 1.02)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return figure


def run_curves(record):
    """A run's training curves (its RunRecord's history, the kept epoch named by what chose it); None without
    epochs. One drawing for the report, the Prefect artifact and the MLflow run."""
    if not record.history:
        return None
    kept_by = (record.monitor or "").replace("val_", "validation ").replace("_", " ").replace("macro f1", "macro F1")
    return training_curves(record.history, record.best_epoch, kept_by)


def confusion_matrix(matrix: list[list[int]], classes: list[str]):
    """Cells coloured by the share of their true class (row), each with its count; a colour bar."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64).reshape(len(classes), len(classes))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(14.0, max(4.5, 0.45 * len(classes) + 2.5))
    figure = _figure(side + 1.2, side)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class's rows")
    names = [name if len(name) <= 24 else name[:23] + "…" for name in classes]
    axes.set_xticks(range(len(classes)), names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(len(classes)), names)
    axes.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (counts; colour: row share)")
    if len(classes) <= 30:  # beyond that the numbers overlap; the colours still tell
        size = 9 if len(classes) <= 12 else 7
        for (row, column), count in np.ndenumerate(counts):
            if count:
                axes.text(column, row, str(count), ha="center", va="center", fontsize=size,
                          color="white" if shares[row, column] > 0.6 else "black")
    return figure


def reliability_diagram(bins: list[dict[str, Any]], ece: float):
    """Accuracy against mean confidence per confidence bin, the diagonal being perfect calibration;
    below it, how many rows fall in each bin (a bin with few rows says little)."""
    figure = _figure(5, 5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    filled = [b for b in bins if b["n"]]
    centres = [(b["low"] + b["high"]) / 2 for b in filled]
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    top.bar(centres, [b["accuracy"] for b in filled], width=width * 0.9, color=_TRAIN, alpha=0.8,
            label="accuracy in the bin")
    top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color=_VALIDATION,
             markersize=4, label="mean confidence vs accuracy")
    top.set(ylabel="accuracy", ylim=(0, 1.02), xlim=(0, 1), title=f"Reliability diagram (ECE {ece:.4f})")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(centres, [b["n"] for b in filled], width=width * 0.9, color="grey")
    bottom.set(xlabel="confidence of the predicted class", ylabel="rows")
    bottom.grid(alpha=0.3)
    return figure


_REFERENCE, _CURRENT = "#7f7f7f", "#ff7f0e"


def drift_panels(reference: dict[str, list], current: dict[str, Any], judged: dict[str, dict[str, Any]]):
    """Each judged feature's reference (the run's train split) beside the scored rows: shares of rows per bin
    for a number (bins from both sides' range), per category for a category; the test's verdict as the title."""
    import numpy as np
    from matplotlib.patches import Patch

    names = list(judged)
    if not names:
        return None
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    # Fixed margins, not the constrained layout: the layout engine measured half the chart's time (0.23 of 0.44 s),
    # and panels of one size need no solving. One legend for all the panels, above them.
    figure = _figure(3.2 * columns, 2.4 * rows + 0.4, layout=None)
    figure.subplots_adjust(left=0.08, right=0.98, top=1 - 0.5 / (2.4 * rows + 0.4), bottom=0.3 / (2.4 * rows + 0.4),
                           wspace=0.32, hspace=0.5)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes, name in zip(grid, names, strict=False):
        found = judged[name]
        if found["test"].startswith("ks"):
            before = np.array([np.nan if value is None else value for value in reference[name]], dtype=float)
            after = np.asarray(current[name], dtype=float)
            before, after = before[~np.isnan(before)], after[~np.isnan(after)]
            both = np.concatenate([before, after])
            bins = np.histogram_bin_edges(both, bins=20) if both.size else 10
            for values, colour, label in ((before, _REFERENCE, "training data"), (after, _CURRENT, "scored")):
                if values.size:
                    axes.hist(values, bins=bins, weights=np.full(values.size, 1 / values.size), histtype="step",
                              linewidth=1.5, color=colour, label=label)
            statistic = "KS"
        else:
            categories = sorted(set(found["reference_shares"]) | set(found["current_shares"]))
            positions = np.arange(len(categories))
            for offset, key, colour, label in ((-0.2, "reference_shares", _REFERENCE, "training data"),
                                               (0.2, "current_shares", _CURRENT, "scored")):
                axes.bar(positions + offset, [found[key].get(name, 0) for name in categories], width=0.4,
                         color=colour, label=label)
            axes.set_xticks(positions, categories, rotation=30 if len(categories) > 4 else 0, fontsize=7)
            statistic = "PSI"
        value = "n/a" if found["statistic"] is None else f"{found['statistic']:.3f}"
        axes.set_title(f"{name.replace('_', ' ')}: {statistic} {value}" + (" DRIFTED" if found["drifted"] else ""),
                       color="#a00" if found["drifted"] else "#222", fontsize=9)
        axes.set_ylabel("share of rows", fontsize=8)
        axes.grid(alpha=0.3)
    for axes in grid[len(names):]:
        axes.set_visible(False)
    handles = [Patch(color=_REFERENCE, label="training data"), Patch(color=_CURRENT, label="scored")]
    figure.legend(handles=handles, loc="upper center", ncols=2, fontsize=8, frameon=False)
    return figure

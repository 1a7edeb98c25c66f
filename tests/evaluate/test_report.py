"""The evaluation report: every part a reader needs, drawn with real axes, self-contained (fetches nothing)."""

import re

import numpy as np

from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.evaluate.report import write_report
from mmpipe.runs.record import RunDir, load_record
from tests.fixtures.files import external_links
from tests.fixtures.runs import make_run


def _report(tmp_path, *, slices=None, baselines=None, heads=None):
    run = RunDir(make_run(tmp_path, "20260101T000000Z-a", None))
    record = load_record(run)
    record.history = [{"epoch": 1, "loss": 1.37, "val_loss": 1.3, "accuracy": 0.5, "val_accuracy": 0.4},
                      {"epoch": 2, "loss": 0.25, "val_loss": 0.9, "accuracy": 0.9, "val_accuracy": 0.7}]
    # The weights kept are epoch 1's, chosen on validation macro F1, though epoch 2 has the lower validation loss.
    record.best_epoch, record.monitor = 1, "val_macro_f1"
    if heads:
        record.blend = {"heads": list(heads), "weights": [0.8, 0.5, 0.0][: len(heads)]}
    scored = classification_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
                                    record.classes)
    scored["metrics"].update(throughput_samples_per_s=812.5, latency_ms={"p50": 3.25, "p95": 4.5})
    result = {"run_id": record.run_id, "split": "test", "dataset_version": "v1", "n": 3, "classes": record.classes,
              "evaluated_at": "2026-01-01T00:00:00Z", "low_support": {"min_train_rows": 5, "classes": {"dog": 2}},
              "baselines": baselines or {}, "slices": slices or {}, "heads": heads or {}, **scored}
    run.promotion.write_text('{"promoted": true, "reasons": ["no champion yet"]}')
    return run, record, scored, write_report(run, record, result).read_text()


def _svg_texts(svg: str) -> list[str]:
    return [text.strip() for text in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def _figures(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_the_report_shows_metrics_classes_low_support_promotion_and_lineage(tmp_path):
    run, record, scored, page = _report(tmp_path)
    assert f"{scored['metrics']['accuracy']:.4f}" in page
    assert "Low-support classes" in page and "dog (2 train rows)" in page
    assert "Promotion: promoted to champion" in page and "no champion yet" in page
    assert record.config_hash in page and run.confusion_matrix.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert external_links(page) == []  # self-contained: nothing fetched from the network or the disk
    assert "validation: not recorded" in page and "not from a git checkout" in page
    assert "True" not in page and "None" not in page  # Python's words are not the reader's


def test_metrics_are_grouped_quality_calibration_speed_with_baselines_beside_them(tmp_path):
    baselines = {"majority": {"class": "cat", "accuracy": 0.3333, "macro_f1": 0.25},
                 "text": {"run_id": "20260101T000000Z-t", "accuracy": 0.6667, "macro_f1": 0.5}}
    _, _, scored, page = _report(tmp_path, baselines=baselines)
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings.index("Quality") < headings.index("Calibration") < headings.index("Speed")
    quality = page[page.index("<h2>Quality"):page.index("<h2>Calibration")]
    assert "always predicting &#x27;cat&#x27;" in quality and "text-only run 20260101T000000Z-t" in quality
    accuracy_row = re.search(r"<tr><td>accuracy</td>(.*?)</tr>", quality).group(1)
    assert re.findall(r"<td>(?:<b>)?([\d.]+)", accuracy_row) == [f"{scored['metrics']['accuracy']:.4f}", "0.3333",
                                                                  "0.6667"]
    assert "log loss" not in quality and "ece" not in quality.lower()
    calibration = page[page.index("<h2>Calibration"):page.index("<h2>Speed")]
    assert f"{scored['metrics']['ece']:.4f}" in calibration and "log loss" in calibration
    speed = page[page.index("<h2>Speed"):page.index("<h2>Per class")]
    assert "812.5 rows/s" in speed and "3.25 ms" in speed


def test_charts_have_axes_ticks_and_legends(tmp_path):
    _, record, _, page = _report(tmp_path)
    reliability, confusion, curves = _figures(page)  # in the page's order
    texts = _svg_texts(curves)
    assert {"Loss", "Accuracy", "epoch", "loss", "accuracy", "train", "validation"} <= set(texts)
    assert "kept: epoch 1 (best validation macro F1)" in texts  # the epoch whose weights the run kept
    assert {"1", "2"} <= set(texts)  # integer epoch ticks
    texts = _svg_texts(confusion)
    assert {"predicted class", "true class", *record.classes} <= set(texts)
    assert "share of the true class's rows" in texts  # the colour bar says what colour means
    texts = _svg_texts(reliability)
    assert {"perfectly calibrated", "accuracy", "rows", "confidence of the predicted class"} <= set(texts)
    assert any(text.startswith("Reliability diagram (ECE ") for text in texts)


def test_slices_are_tabled_and_small_ones_flagged(tmp_path):
    slices = {"image_format": [{"value": "PNG", "n": 40, "small": False, "accuracy": 0.9, "macro_f1": 0.85,
                                "log_loss": 0.3, "ece": 0.05, "accuracy_interval": [0.7695, 0.9604]},
                               {"value": "GIF", "n": 1, "small": True, "accuracy": 0.0, "macro_f1": 0.0,
                                "log_loss": 2.0, "ece": 0.6}]}
    _, _, _, page = _report(tmp_path, slices=slices)
    section = page[page.index("<h2>Slices"):page.index("<h2>Training curves")]
    assert "<h3>by image format</h3>" in section
    assert "Small slices" in section and "image_format = GIF (1 row)" in section
    assert re.search(r"<tr class=small><td>GIF</td><td>1</td><td>0.0000</td>", section)
    assert re.search(r"<tr><td>PNG</td><td>40</td><td>0.9000</td><td>0.77&ndash;0.96</td><td>0.8500</td>", section)
    assert "<th>95% interval</th>" in section and "<td>&mdash;</td>" in section  # GIF: a report from before
    assert "<th></th>" not in page and "<th>note</th>" in section  # every column says what it holds
    assert "<td>few rows</td></tr>" in section


def test_what_fusion_added_sets_the_served_blend_beside_each_head_alone_per_class(tmp_path):
    heads = {name: {"metrics": {"accuracy": accuracy, "macro_f1": accuracy - 0.1, "log_loss": 1.0, "ece": 0.1},
                    "per_class_f1": {"cat": accuracy, "dog": accuracy - 0.2}}
             for name, accuracy in (("fused", 0.6), ("text", 0.5), ("image", 0.4))}
    _, _, scored, page = _report(tmp_path, heads=heads)
    section = page[page.index("<h2>What fusion added"):page.index("<h2>Calibration")]
    assert "fused head" in section and "text head alone" in section and "image head alone" in section
    assert re.search(r"<tr><td>weight in the blend</td><td></td><td>0.80</td><td>0.50</td><td>0.00</td></tr>", section)
    served_cat = scored["per_class"]["cat"]["f1"]
    assert (f"<tr><td>cat</td><td><b>{served_cat:.4f}</b></td><td>0.6000</td><td>0.5000</td><td>0.4000</td>"
            f"<td>{served_cat - 0.5:+.4f}</td></tr>") in section  # minus the better branch (text, 0.5)
    single, _, _, page = _report(tmp_path / "single", heads={"image": heads["image"]})
    assert "What fusion added" not in page  # one head: nothing was fused

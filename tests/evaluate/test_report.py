"""The evaluation report: every part a reader needs, self-contained (nothing fetched when opened)."""

import re

from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.evaluate.report import write_report
from mmpipe.runs.record import RunDir, load_record
from tests.fixtures.runs import make_run


def test_the_report_shows_metrics_classes_low_support_promotion_and_lineage(tmp_path):
    import numpy as np

    run = RunDir(make_run(tmp_path, "20260101T000000Z-a", None))
    record = load_record(run)
    record.history = [{"epoch": 1, "loss": 1.2, "val_loss": 1.3, "accuracy": 0.5, "val_accuracy": 0.4}]
    scored = classification_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
                                    record.classes)
    result = {"run_id": record.run_id, "split": "test", "dataset_version": "v1", "n": 3, "classes": record.classes,
              "evaluated_at": "2026-01-01T00:00:00Z", "low_support": {"min_train_rows": 5, "classes": {"dog": 2}},
              **scored}
    run.promotion.write_text('{"promoted": true, "reasons": ["no champion yet"]}')
    page = write_report(run, record, result).read_text()
    assert f"{scored['metrics']['accuracy']:.4f}" in page and "Low-support classes" in page and "dog (2" in page
    assert "Promotion: promoted to champion" in page and "no champion yet" in page
    assert record.config_hash in page and "data:image/png;base64," in page and run.confusion_matrix.is_file()
    links = re.findall(r'(?:src|href)="(?!data:)([^"]+)"', page)
    assert links == []  # self-contained: nothing fetched from the network or the disk

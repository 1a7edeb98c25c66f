"""The README's "on your own data" line, as a new user runs it: `mmpipe run SOURCE --json` in an empty
working directory, on sources with class names the sample never had, shared images, a tiny class,
long and empty texts: a JSONL and a folder tree; and two sources served side by side."""

import json

import pytest
from typer.testing import CliRunner

from flows.pipeline import pipeline_flow
from mmpipe.cli import app
from mmpipe.config import load_config
from mmpipe.contracts.suites import SOURCE_SUITES_DIR, class_set_entry, read_suite
from tests.fixtures.datasets import TINY_MODEL
from tests.fixtures.files import distinct_images, write_manifest

pytestmark = pytest.mark.slow

# Only sizes and epochs are set (through MMPIPE_* variables, as a user would): contracts and
# everything else are the defaults a new user gets.
TINY = {"IMAGE__SIZE": 16, "TRAIN__EPOCHS": 1, "TRAIN__EXPORT_SERVING": False,
        **{key.upper().replace(".", "__"): value for key, value in TINY_MODEL.items()}}


def rows_for(classes: dict[str, int], images: list[str], prefix: str) -> list[dict[str, str]]:
    """Two captions per image; one long text and one text that cleans to nothing per class."""
    rows, image = [], 0
    for label, count in classes.items():
        for n in range(count):
            if n % 2 == 0:
                image += 1
            text = f"{label.replace('_', ' ')} seen {n}" if n > 1 else ("long words " * 300 if n else "<br>")
            rows.append({"text": text, "image": f"{prefix}{images[image]}", "label": label})
    return rows


def run_cli(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "empty")
    for key, value in TINY.items():
        monkeypatch.setenv(f"MMPIPE_{key}", json.dumps(value))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def check_inferred(summary, data_dir, classes):
    validation = summary["validation"]
    assert validation["success"] and validation["inferred"]
    assert validation["contracts"]["source"]["origin"] == "inferred"
    assert validation["contracts"]["source"]["dir"] == str(data_dir.absolute() / SOURCE_SUITES_DIR)
    entry = class_set_entry(read_suite(data_dir / SOURCE_SUITES_DIR / "shards.json", "shards"))
    assert entry["kwargs"]["value_set"] == sorted(classes)
    assert summary["metrics"]["accuracy"] >= 0 and summary["run_id"]


# JSONL only: CSV is the sample's format, which nearly every other test reads (the suite's 15 minutes).
@pytest.mark.parametrize("suffix", [".jsonl"])
def test_mmpipe_run_on_a_manifest_of_your_own(prefect_api, tmp_path, monkeypatch, suffix):
    (tmp_path / "empty").mkdir()
    classes = {"document-open": 24, "grinning_face": 20, "weather-storm": 30, "rare_one": 3}
    images = distinct_images(tmp_path / "mine" / "pics", 60, seed=21)
    manifest = write_manifest(tmp_path / "mine" / f"set{suffix}", rows_for(classes, images, "pics/"))
    data, runs = tmp_path / "d", tmp_path / "r"
    summary, stderr = run_cli(["run", str(manifest), "--data", str(data), "--runs", str(runs), "--json"],
                              tmp_path, monkeypatch)
    check_inferred(summary, data, classes)
    assert summary["ingest"]["quarantined"] == {"text_empty": len(classes)}
    assert "contracts inferred from dataset" in stderr and "mmpipe contracts show" in stderr
    small = next(w for w in summary["validation"]["warnings"] if w["expectation"].startswith("every class has"))
    assert "'rare_one'" in small["observed"]
    train = json.loads((data / "dataset.json").read_text())["counts"]["train"]
    low_support = json.loads((runs / summary["run_id"] / "metrics.json").read_text())["low_support"]["classes"]
    assert "rare_one" in low_support and low_support == {name: n for name, n in train.items() if n < 5}


def test_mmpipe_run_on_a_folder_tree_of_your_own(prefect_api, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    classes = {"Straße": 20, "café au lait": 24, "x": 22}
    for label, count in classes.items():
        names = distinct_images(tmp_path / "tree" / label, count, seed=len(label))
        for n, name in enumerate(names):
            (tmp_path / "tree" / label / name).with_suffix(".txt").write_text(f"{label} number {n}")
    summary, _ = run_cli(["run", str(tmp_path / "tree"), "--data", str(tmp_path / "d"), "--runs",
                          str(tmp_path / "r"), "--json"], tmp_path, monkeypatch)
    check_inferred(summary, tmp_path / "d", classes)
    assert summary["ingest"]["accepted"] == sum(classes.values())


def test_two_sources_served_side_by_side_keep_their_own_contracts(prefect_api, tmp_path):
    sources = {}
    for name, classes in (("birds", {"sparrow": 30, "crow": 30}), ("tools", {"hammer": 30, "saw": 26, "drill": 24})):
        images = distinct_images(tmp_path / name / "images", 50, seed=len(name))
        sources[name] = (write_manifest(tmp_path / name / "manifest.csv", rows_for(classes, images, "images/")),
                         classes)
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                                "serve.sources": [str(path) for path, _ in sources.values()], "image.size": 16,
                                "train.epochs": 1, "train.export_serving": False, **TINY_MODEL}, environ={})
    for manifest, classes in sources.values():
        state = pipeline_flow(str(manifest), config, return_state=True)
        assert state.is_completed(), state.message
        data_dir = config.for_source(manifest).data_dir
        assert data_dir != config.data_dir
        check_inferred(state.result(), data_dir, classes)

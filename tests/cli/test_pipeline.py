"""`mmpipe demo`, the README's first command, end to end on a small sample (tiny model, one epoch)."""

import json

from mmpipe.runs.record import RunDir
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import TINY_MODEL

# One epoch on 40 rows scores near the majority class: the promotion floor is off to see a promotion.
TINY = {"IMAGE__SIZE": 16, "TRAIN__EPOCHS": 1, "EVALUATE__MIN_GAIN_OVER_MAJORITY": -1,
        **{key.upper().replace(".", "__"): v for key, v in TINY_MODEL.items()}}


def test_demo_runs_the_whole_pipeline_and_says_what_to_do_next(prefect_api, tmp_path, monkeypatch, capsys):
    for key, value in TINY.items():
        monkeypatch.setenv(f"MMPIPE_{key}", json.dumps(value))
    folder = tmp_path / "demo"
    code, out, err = run_main(["demo", str(folder), "--rows", "40"], monkeypatch, capsys)
    assert code == 0, err
    assert f"wrote the sample: {folder / 'sample' / 'manifest.csv'}" in out
    assert "contracts passed" in out and "accuracy" in out and "promoted to champion" in out
    report = next(line.split("report: ", 1)[1] for line in out.splitlines() if line.startswith("report: "))
    run = RunDir(report.rsplit("/", 1)[0])
    assert run.report.is_file() and run.serving.is_dir() and run.path.parent == (folder / "runs").absolute()
    assert f"mmpipe runs list --runs {folder / 'runs'}" in out and "mmpipe predict" in out
    assert "contracts inferred from dataset" in err
    code, _, err = run_main(["demo", str(folder)], monkeypatch, capsys)
    assert code == 2 and "not an empty folder" in err

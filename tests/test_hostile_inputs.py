"""Bad input and broken files, through the command a user runs: one line, the right exit status, and
nothing earlier lost. The kill -9 and concurrency cases are in test_faults.py."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmpipe.config import load_config
from mmpipe.ingest import ingest, load_dataset
from mmpipe.ingest.shards import ShardWriter
from mmpipe.runs.record import RunDir, load_record
from mmpipe.runs.store import CHAMPION_FILE, list_runs, read_champion
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config
from tests.fixtures.runs import make_run


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("damage", ["", "{not json", "[1, 2]", '{"format": "x"}', '{"classes": 5}'],
                         ids=["empty", "not-json", "not-an-object", "format-not-a-number", "wrong-shape"])
def test_a_damaged_run_is_listed_as_damaged_and_the_others_still_are(tmp_path, monkeypatch, capsys, damage):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    broken = RunDir(make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.7, "dog": 0.7}))
    broken.record.write_text(damage)
    rows = {row["run_id"]: row for row in list_runs(tmp_path)}
    assert rows["20260101T000000Z-a"]["status"] == "completed" and rows["20260101T000000Z-a"]["macro_f1"] == 0.6
    assert rows["20260102T000000Z-b"]["status"] == "damaged" and str(broken.record) in rows["20260102T000000Z-b"][
        "problem"]
    code, out, err = run_main(["runs", "list", "--runs", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and "damaged" in out and str(broken.record) in err
    for command in (["runs", "show", "20260102T000000Z-b"], ["evaluate", "20260102T000000Z-b"],
                    ["predict", "20260102T000000Z-b", "--text", "x"]):
        code, _, err = run_main([*command, "--runs", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and one_line(err) and str(broken.record) in err, command


@pytest.mark.parametrize("pointer", ["{", "{}", '{"run_id": 5}'], ids=["not-json", "empty-object", "wrong-shape"])
def test_damaged_metrics_and_champion_files_are_named_and_the_list_goes_on(tmp_path, monkeypatch, capsys, pointer):
    run = RunDir(make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6}))
    run.metrics.write_text("")
    (tmp_path / CHAMPION_FILE).write_text(pointer)
    [row] = list_runs(tmp_path)
    assert row["macro_f1"] is None and str(run.metrics) in row["problem"]
    code, out, err = run_main(["runs", "list", "--runs", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and "20260101T000000Z-a" in out and CHAMPION_FILE in err
    for command in (["runs", "champion"], ["predict", "--text", "x"]):
        code, _, err = run_main([*command, "--runs", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and one_line(err) and CHAMPION_FILE in err and "mmpipe evaluate" in err, command


@pytest.mark.parametrize("change", [{"metrics": []}, {"per_class": "x"}, {"per_class": {"cat": 1}}],
                         ids=["metrics-a-list", "per-class-a-string", "class-scores-a-number"])
def test_a_metrics_file_of_another_shape_is_named_and_the_list_goes_on(tmp_path, monkeypatch, capsys, change):
    """Valid JSON of the wrong shape: "damaged: FILE" in one line, never an internal error, and the others listed."""
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    run = RunDir(make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.7, "dog": 0.7}))
    run.metrics.write_text(json.dumps({**json.loads(run.metrics.read_text()), **change}))
    code, out, err = run_main(["runs", "list", "--runs", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and "20260101T000000Z-a" in out and f"{run.metrics} is damaged" in err
    for command in (["runs", "show", run.run_id], ["runs", "compare", "20260101T000000Z-a", run.run_id]):
        code, _, err = run_main([*command, "--runs", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and one_line(err) and f"{run.metrics} is damaged" in err, command


def test_a_run_whose_trainer_died_shows_interrupted_not_running(tmp_path):
    run = RunDir(make_run(tmp_path, "20260101T000000Z-a", None, status="running"))
    record = load_record(run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.pid, record.host = int(dead.stdout), __import__("socket").gethostname()
    record.save(run)
    assert list_runs(tmp_path)[0]["status"] == "interrupted"
    record.pid = os.getpid()  # alive
    record.save(run)
    assert list_runs(tmp_path)[0]["status"] == "running"


def test_a_promotion_cut_short_before_the_pointer_moved_is_finished_by_the_next_evaluate(tmp_path, monkeypatch):
    from mmpipe.config import EvaluateConfig
    from mmpipe.evaluate import promote as promotion

    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    promotion.promote(tmp_path, "20260101T000000Z-a", EvaluateConfig())
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.8, "dog": 0.8})

    def dies(*_args):
        raise KeyboardInterrupt("the process dies between the decision and the pointer")

    with monkeypatch.context() as patched:
        patched.setattr(promotion, "set_champion", dies)
        with pytest.raises(KeyboardInterrupt):
            promotion.promote(tmp_path, "20260102T000000Z-b", EvaluateConfig())
    decision = json.loads(RunDir(tmp_path / "20260102T000000Z-b").promotion.read_text())
    assert decision["promoted"] and read_champion(tmp_path)["run_id"] == "20260101T000000Z-a"  # cut in half
    assert promotion.promote(tmp_path, "20260102T000000Z-b", EvaluateConfig()) == decision
    assert read_champion(tmp_path)["run_id"] == "20260102T000000Z-b"
    assert read_champion(tmp_path)["previous"] == "20260101T000000Z-a"


@pytest.fixture
def ingested(sample_manifest, tmp_path):
    config = make_config(tmp_path / "data", **{"ingest.classes": SAMPLE_CLASSES})
    return config, ingest(sample_manifest, config)


def test_a_full_disk_during_ingest_is_one_line_and_the_previous_version_stays(ingested, sample_manifest, monkeypatch):
    config, before = ingested
    cache = config.data_dir / "cache"
    cached_before = set(cache.rglob("*.parquet"))

    def disk_full(self, table):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardWriter, "write", disk_full)
    changed = make_config(config.data_dir, **{"ingest.classes": SAMPLE_CLASSES, "text.lowercase": True})
    with pytest.raises(Exception, match="is full") as raised:
        ingest(sample_manifest, changed)
    assert "previous dataset version is intact" in str(raised.value) and type(raised.value).__name__ == "DataDirError"
    assert load_dataset(config.data_dir) == before
    assert set(cache.rglob("*.parquet")) == cached_before  # what this ingest cached is gone again
    assert not list(config.data_dir.rglob(".*.tmp*"))


def test_a_disk_that_fills_while_a_shard_is_closed_leaves_no_temporary_shard(ingested, sample_manifest, monkeypatch):
    """The last write of a shard is its close (the footer): on a full disk that fails too, and the half-written
    file must go with it, as docs/reliability.md says."""
    import mmpipe.ingest.shards as shards

    config, before = ingested

    class FillsTheDisk(shards.pq.ParquetWriter):
        def close(self):
            super().close()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.pq, "ParquetWriter", FillsTheDisk)
    changed = make_config(config.data_dir, **{"ingest.classes": SAMPLE_CLASSES, "text.lowercase": True})
    with pytest.raises(Exception, match="is full"):
        ingest(sample_manifest, changed)
    assert load_dataset(config.data_dir) == before
    assert not list(config.data_dir.rglob(".*.tmp*")) and not list(config.data_dir.rglob(".*.tmp"))


@pytest.mark.slow  # a real `mmpipe` process on a real, small file system
def test_on_a_real_full_disk_ingest_says_so_in_one_line(sample_manifest, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        toml = tmp_path / "mmpipe.toml"
        toml.write_text(f"[ingest]\nclasses = {json.dumps(SAMPLE_CLASSES)}\n[image]\nsize = 64\n")
        done = subprocess.run([str(Path(sys.executable).parent / "mmpipe"), "ingest", str(sample_manifest), "--data",
                               str(mount / "data"), "--config", str(toml)], capture_output=True, text=True,
                              timeout=300, env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
        assert done.returncode == 2 and one_line(done.stderr), done.stderr[-3000:]
        assert "is full" in done.stderr and str(mount / "data") in done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_train_refuses_a_changed_or_missing_shard_before_a_run_exists(validated_sample, tmp_path, monkeypatch,
                                                                       capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(validated_sample, data)
    shard = data / load_dataset(data).shards_of("train")[0].path
    if damage == "truncate":
        os.truncate(shard, 1000)
    else:
        shard.unlink()
    code, _, err = run_main(["train", "--data", str(data), "--runs", str(tmp_path / "runs")], monkeypatch, capsys)
    assert code == 2 and one_line(err) and shard.name in err and "mmpipe ingest" in err
    assert not (tmp_path / "runs").exists()


def test_the_next_writer_removes_what_a_killed_writer_left(ingested, sample_manifest):
    config, before = ingested
    stale = [config.data_dir / "shards" / ".train-00000.4242.tmp",
             config.data_dir / "cache" / "chunks" / ".x.parquet.abcd.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert ingest(sample_manifest, config).version == before.version
    assert not any(path.exists() for path in stale)


def test_an_unreachable_prefect_api_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    (tmp_path / "m.csv").write_text("text,image,label\n")
    code, _, err = run_main(["ingest", str(tmp_path / "m.csv"), "--data", str(tmp_path / "d")], monkeypatch, capsys)
    assert code == 2 and one_line(err) and "http://127.0.0.1:9/api" in err and "prefect server start" in err


def test_a_path_the_system_refuses_is_one_line(sample_manifest, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(["ingest", str(sample_manifest), "--data", str(tmp_path / ("x" * 300))],
                            monkeypatch, capsys)
    assert code == 2 and one_line(err) and "too long" in err


@pytest.mark.slow  # a real `mmpipe` process, so its real stderr
def test_a_stage_error_inside_a_flow_is_one_line_on_stderr(validated_sample, tmp_path):
    from tests.fixtures.datasets import duplicate_id, tamper

    data = tmp_path / "data"
    shutil.copytree(validated_sample, data)
    tamper(data, duplicate_id)
    done = subprocess.run([str(Path(sys.executable).parent / "mmpipe"), "validate", "--data", str(data)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"})
    assert done.returncode == 1 and one_line(done.stderr), done.stderr[-3000:]
    assert "ids unique in the shard" in done.stderr and done.stdout == ""


def test_load_config_ignores_the_test_hook_and_debug_variables():
    config = load_config(None, {}, environ={"MMPIPE_DEBUG": "1", "MMPIPE_FAULT_KILL_AT": "3"})
    assert config.seed == 42


def test_a_truncated_model_file_is_named_not_an_internal_error(trained_run, tmp_path):
    from mmpipe.config import EvaluateConfig
    from mmpipe.errors import RunStoreError
    from mmpipe.evaluate import evaluate_run

    run = RunDir(shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name))
    with open(run.model, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)  # what a full disk or a half copy leaves
    with pytest.raises(RunStoreError, match=rf"{run.model} cannot be loaded .* damaged") as raised:
        evaluate_run(run.path, EvaluateConfig())
    assert "\n" not in str(raised.value)


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_training_names_the_disk_and_how_to_continue(validated_sample, tmp_path, monkeypatch):
    import mmpipe.runs.record
    from mmpipe.errors import TrainingError
    from mmpipe.train import train
    from tests.fixtures.datasets import run_config

    data = shutil.copytree(validated_sample, tmp_path / "data")
    monkeypatch.setattr(mmpipe.runs.record, "write_json_atomic", disk_full)  # run.json: the run's first write
    with pytest.raises(TrainingError, match=rf"the disk holding {tmp_path / 'runs'} is full .* --resume") as raised:
        train(run_config(data, tmp_path / "runs"))
    assert "\n" not in str(raised.value)


def test_a_full_disk_in_evaluation_names_the_disk_and_the_command(trained_run, tmp_path, monkeypatch):
    import mmpipe.evaluate.score
    from mmpipe.config import EvaluateConfig
    from mmpipe.errors import EvaluationError

    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    monkeypatch.setattr(mmpipe.evaluate.score, "write_json_atomic", disk_full)
    with pytest.raises(EvaluationError, match=rf"the disk holding {run} is full .*mmpipe evaluate {run.name}`"):
        mmpipe.evaluate.score.evaluate_run(run, EvaluateConfig())

"""Crash anywhere, lose nothing: kill -9 a child process at its writes, run commands at once.

Every file mmpipe publishes goes through one commit (a rename), which has two kill points: before
and after the rename (MMPIPE_FAULT_KILL_AT=N kills at the Nth). After each kill the data dir and
the run store must be in their old or their new state, never a mix, and the next run must succeed
and give what an uninterrupted one gives. docs/reliability.md lists what is covered.
"""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mmpipe.contracts.validate import read_reference
from mmpipe.ingest.version import DATASET_FILE, load_dataset
from mmpipe.runs.record import RunDir, load_record, status_of
from mmpipe.runs.store import list_runs, read_champion, read_json
from mmpipe.sample import SampleSpec, write_sample
from tests.fixtures.datasets import SAMPLE_CLASSES, TINY_MODEL
from tests.fixtures.forked import Forker

pytestmark = pytest.mark.slow(seconds=20)  # child processes, many of them

SETTINGS = {"image.size": 16, "ingest.chunk_rows": 8, "ingest.classes": SAMPLE_CLASSES, "ingest.workers": 1}
CHILD = """
import json, sys
from mmpipe.config import load_config
settings = json.loads(sys.argv[1])
config = load_config(None, settings, environ={})
"""
INGEST = CHILD + "from mmpipe.ingest import ingest\ningest(sys.argv[2], config)\n"
TRAIN = CHILD + "from mmpipe.train import train\ntrain(config, resume=(sys.argv[2:] or [None])[0])\n"
# What the children import before they fork: a kill point costs its own work, not an interpreter's start.
PRELOAD = ["mmpipe.ingest", "mmpipe.contracts.validate", "mmpipe.train", "mmpipe.evaluate", "mmpipe.evaluate.promote",
           "mmpipe.evaluate.charts", "tensorflow", "keras"]
EVALUATE = CHILD + ("from mmpipe.evaluate import evaluate_run\nfrom mmpipe.evaluate.promote import promote\n"
                    "evaluate_run(sys.argv[2], config.evaluate)\n"
                    "promote(config.runs_dir, sys.argv[3], config.evaluate)\n")


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Each child a fork of one server that imported mmpipe and TensorFlow once (tests/fixtures/forked.py)."""
    forker = Forker(PRELOAD, tmp_path_factory.mktemp("children"))
    yield forker
    forker.close()


def commit_points(children: Forker, script: str, settings: dict, *args: str, scratch: Path) -> list[str]:
    """Run once with the logging hook; the commit points it passed, in order."""
    log = scratch / "commits.log"
    done = children.run(script, json.dumps(settings), *args, fault=f"log:{log}")
    assert done.returncode == 0, done.stderr[-2000:]
    return log.read_text().splitlines()


def ran(children: Forker, script: str, settings: dict, *args: str):
    return children.run(script, json.dumps(settings), *args)


def killed_at(children: Forker, point: int, script: str, settings: dict, *args: str) -> None:
    done = children.run(script, json.dumps(settings), *args, fault=str(point))
    assert done.returncode == -signal.SIGKILL, (point, done.stderr[-2000:])


def digests(data_dir: Path) -> dict[str, str]:
    version = load_dataset(data_dir)
    return {entry.path: hashlib.sha256(version.path_of(entry).read_bytes()).hexdigest()
            for entry in version.shards + version.quarantine}


def assert_whole(data_dir: Path, versions: set[str]) -> None:
    """The data dir is one complete version: the one before or the one after, every listed file intact."""
    version = load_dataset(data_dir)
    assert version.version in versions
    for entry in version.shards + version.quarantine:
        assert hashlib.sha256(version.path_of(entry).read_bytes()).hexdigest() == entry.sha256, entry.path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two versions of one source: the second has 12 more rows."""
    root = tmp_path_factory.mktemp("fault-sources")
    old = write_sample(root / "old", SampleSpec(rows=48, seed=4, min_side=8, max_side=24, fault_rate=0.1))
    new = root / "new"
    shutil.copytree(old.parent, new)
    extra = write_sample(root / "extra", SampleSpec(rows=12, seed=5, min_side=8, max_side=24, fault_rate=0.0))
    for image in (extra.parent / "images").iterdir():
        shutil.copy(image, new / "images" / f"x{image.name}")
    lines = extra.read_text().splitlines()[1:]
    with open(new / "manifest.csv", "a") as handle:
        handle.writelines(line.replace("images/", "images/x") + "\n" for line in lines)
    return old, new / "manifest.csv"


def test_ingest_killed_at_every_write_leaves_the_old_or_the_new_version(children, sources, tmp_path):
    old_source, new_source = sources
    base = tmp_path / "base"
    assert ran(children, INGEST, {**SETTINGS, "data_dir": str(base)}, str(old_source)).returncode == 0
    old = load_dataset(base).version
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    points = commit_points(children, INGEST, {**SETTINGS, "data_dir": str(clean)}, str(new_source), scratch=tmp_path)
    new, expected = load_dataset(clean).version, digests(clean)
    assert new != old and len(points) >= 10  # new raw and cleaned chunks, shards, quarantine, dataset.json
    for point in range(1, len(points) + 1):
        data = tmp_path / f"killed-{point}"
        shutil.copytree(base, data)
        killed_at(children, point, INGEST, {**SETTINGS, "data_dir": str(data)}, str(new_source))
        assert_whole(data, {old, new})
        assert ran(children, INGEST, {**SETTINGS, "data_dir": str(data)}, str(new_source)).returncode == 0
        assert load_dataset(data).version == new and digests(data) == expected, points[point - 1]
        assert not list(data.rglob(".*.tmp*")), "the next writer removes what a killed one left"
        kept = {str(path.relative_to(data)) for folder in ("shards", "quarantine")
                for path in (data / folder).iterdir()}
        assert kept == set(expected), "the previous version's files go, also when the kill came after dataset.json"
        shutil.rmtree(data)


@pytest.fixture(scope="module")
def validated(sources, tmp_path_factory):
    from mmpipe.config import load_config
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.ingest import ingest

    data = tmp_path_factory.mktemp("fault-validated") / "data"
    config = load_config(None, {**SETTINGS, "data_dir": str(data)}, environ={})
    ingest(sources[0], config)
    assert validate_dataset(data, config).success
    return data


TRAIN_SETTINGS = {**SETTINGS, **TINY_MODEL, "train.epochs": 2, "train.export_serving": False}


def test_train_killed_at_its_writes_leaves_a_readable_store_and_resumes(children, validated, tmp_path):
    settings = {**TRAIN_SETTINGS, "data_dir": str(validated), "runs_dir": str(tmp_path / "scratch-runs")}
    points = commit_points(children, TRAIN, settings, scratch=tmp_path)
    assert len(points) >= 16
    for point in sorted({1, 2, len(points) // 3, len(points) // 2, len(points) - 3, len(points) - 1}):
        runs = tmp_path / f"runs-{point}"
        killed_at(children, point, TRAIN, {**settings, "runs_dir": str(runs)})
        rows = list_runs(runs)  # run.json is never half-written: the run is listed whole, or not yet at all
        if not rows:
            assert point == 1 and not list(runs.glob("*/run.json"))
            continue
        [row] = rows
        run = RunDir(runs / row["run_id"])
        read_reference(validated)  # the drift reference is the old one or the new one, never half of one
        if row["status"] == "completed":  # killed after the run finished (moving the reference)
            assert run.model.is_file() and len(load_record(run).history) == 2
            continue
        assert row["status"] == "interrupted", (points[point - 1], row)
        done = ran(children, TRAIN, {**settings, "runs_dir": str(runs)}, row["run_id"])
        if "no completed epoch to resume from" in done.stderr:  # killed before the first checkpoint was whole
            assert not list(run.checkpoints.glob("epoch-*.json"))
            continue
        assert done.returncode == 0, (points[point - 1], done.stderr[-2000:])
        record = load_record(run)
        assert record.status == "completed" and len(record.history) == 2 and run.model.is_file()
        assert not list(run.path.rglob(".*.tmp*")), "the resuming trainer removes what the killed one left"


def test_evaluate_killed_at_its_writes_never_leaves_a_half_decision(children, validated, tmp_path, trained_run):
    runs = tmp_path / "runs"
    # No promotion floor: the tiny run must be promoted for the champion pointer's writes to be killed.
    settings = {**TRAIN_SETTINGS, "evaluate.min_gain_over_majority": -1, "data_dir": str(validated),
                "runs_dir": str(runs)}
    shutil.copytree(trained_run, runs / trained_run.name)
    scratch = tmp_path / "scratch"
    shutil.copytree(runs, scratch)
    points = commit_points(children, EVALUATE, {**settings, "runs_dir": str(scratch)}, str(scratch / trained_run.name),
                           trained_run.name, scratch=tmp_path)
    assert len(points) >= 10
    # Sampled (each point costs two evaluations): the first writes, two in the middle, and just after each write of
    # the promotion (the intent, promotion.json, champion.json: the last 8 points, with the report's two last).
    last = len(points)
    for point in sorted({1, 2, last // 3, last // 2, last - 6, last - 4, last - 2}):
        shutil.rmtree(runs)
        shutil.copytree(trained_run.parent, runs, ignore=shutil.ignore_patterns("champion.json", ".champion.lock"))
        killed_at(children, point, EVALUATE, settings, str(runs / trained_run.name), trained_run.name)
        run = RunDir(runs / trained_run.name)
        metrics = read_json(run.metrics)  # absent or complete, never half
        assert metrics is None or metrics["run_id"] == trained_run.name
        assert ran(children, EVALUATE, settings, str(run.path), trained_run.name).returncode == 0, points[point - 1]
        decision = read_json(run.promotion)
        assert decision["promoted"] and read_champion(runs)["run_id"] == trained_run.name, points[point - 1]
        assert status_of(load_record(run)) == "completed"


def test_three_ingests_at_once_on_one_data_dir_leave_one_whole_version(children, tmp_path):
    sources = [write_sample(tmp_path / f"s{n}", SampleSpec(rows=40, seed=10 + n, min_side=8, max_side=16))
               for n in range(3)]
    data = tmp_path / "data"
    script = INGEST.replace("from mmpipe.config", "import logging; logging.basicConfig()\nfrom mmpipe.config")
    for _ in range(3):
        workers = [subprocess.Popen([sys.executable, "-c", script, json.dumps({**SETTINGS, "data_dir": str(data)}),
                                     str(source)], stderr=subprocess.PIPE, text=True) for source in sources]
        errors = [worker.communicate(timeout=600)[1] for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0, 0], errors
        assert any("waiting for it to finish" in error for error in errors)
        versions = set()
        for source in sources:  # the version each source gives alone
            alone = tmp_path / f"alone-{source.parent.name}"
            if not alone.exists():
                assert ran(children, INGEST, {**SETTINGS, "data_dir": str(alone)}, str(source)).returncode == 0
            versions.add(load_dataset(alone).version)
        assert_whole(data, versions)
        assert not list(data.rglob(".*.tmp*"))
    assert json.loads((data / DATASET_FILE).read_text())["accepted"] > 0


PROMOTE = CHILD + ("from mmpipe.evaluate.promote import promote\n"
                   "promote(config.runs_dir, sys.argv[2], config.evaluate)\n")


def test_a_promotion_killed_between_decision_and_pointer_is_finished_before_the_next_decision(children, tmp_path):
    """kill -9 after A's promotion.json, before the pointer: B must be judged against A, not crowned as the first."""
    from mmpipe.config import EvaluateConfig
    from mmpipe.evaluate.promote import promote
    from tests.fixtures.runs import make_run

    runs = tmp_path / "runs"
    for run_id, f1 in (("A", 0.8), ("B", 0.7)):  # B: worse than A, so never promoted over it
        make_run(runs, run_id, {"cat": f1, "dog": f1})
    settings = {"runs_dir": str(runs)}
    scratch = tmp_path / "scratch"
    shutil.copytree(runs, scratch)
    points = commit_points(children, PROMOTE, {"runs_dir": str(scratch)}, "A", scratch=tmp_path)
    after_decision = next(n for n, line in enumerate(points, 1) if line.split()[1:] == [
        "after", str(scratch / "A" / "promotion.json")])
    killed_at(children, after_decision, PROMOTE, settings, "A")
    assert read_json(runs / "A" / "promotion.json")["promoted"] and read_champion(runs) is None  # cut in half
    decision = promote(runs, "B", EvaluateConfig())
    assert read_champion(runs)["run_id"] == "A" and decision["champion_before"] == "A" and not decision["promoted"]
    assert promote(runs, "A", EvaluateConfig())["promoted"] and read_champion(runs)["run_id"] == "A"
    assert not (runs / ".champion.pending").exists()

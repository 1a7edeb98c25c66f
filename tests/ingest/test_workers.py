"""Chunk workers: processes give the same bytes as threads and one worker; Ctrl-C and kill -9 leave no
worker behind and the published dataset intact."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from mmpipe.errors import DataDirError
from mmpipe.ingest import ingest
from mmpipe.ingest.version import load_dataset
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config
from tests.fixtures.files import write_manifest


def digests(data_dir):
    return {path.relative_to(data_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("shards", "quarantine") for path in sorted((data_dir / folder).glob("*.parquet"))}


def test_processes_threads_and_one_worker_write_the_same_bytes(sample_manifest, tmp_path):
    versions = {}
    for name, settings in {"processes": {"ingest.workers": 2, "ingest.parallel": "processes"},
                           "threads": {"ingest.workers": 2, "ingest.parallel": "threads"},
                           "one": {"ingest.workers": 1}}.items():
        config = make_config(tmp_path / name, **{"ingest.classes": SAMPLE_CLASSES, **settings})
        versions[name] = ingest(sample_manifest, config).version
    assert len(set(versions.values())) == 1
    assert digests(tmp_path / "processes") == digests(tmp_path / "threads") == digests(tmp_path / "one") != {}


def _slow_ingest(tmp_path, rows=200):
    """A child process ingesting on 2 worker processes for several seconds: every row decodes one large
    image (distinct texts, so no row is a duplicate)."""
    import numpy as np
    from PIL import Image

    (tmp_path / "src").mkdir()
    noise = np.random.default_rng(3).integers(0, 256, size=(1500, 1500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "src" / "big.png", compress_level=1)
    rows = [{"text": f"row {i}", "image": "big.png", "label": "ab"[i % 2]} for i in range(rows)]
    manifest = write_manifest(tmp_path / "src" / "m.csv", rows)
    script = textwrap.dedent(f"""
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
        from mmpipe.config import load_config
        from mmpipe.ingest import ingest
        config = load_config(None, {{"data_dir": {str(tmp_path / "data")!r}, "image.size": 16, "ingest.workers": 2,
                                     "ingest.parallel": "processes", "ingest.chunk_rows": 8}}, environ={{}})
        ingest({str(manifest)!r}, config)
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _workers_of(process, timeout=60):
    """The child's worker processes (forked by its forkserver: grandchildren), once it has some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = [grandchild for child in psutil.Process(process.pid).children()
                 for grandchild in child.children()]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no worker process appeared (exit {process.poll()})")


def _gone(processes, timeout=20):
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


@pytest.mark.slow  # a child process with worker processes
def test_kill_9_leaves_no_worker_behind(tmp_path):
    process = _slow_ingest(tmp_path)
    workers = _workers_of(process)
    everything = psutil.Process(process.pid).children(recursive=True)  # the forkserver too
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _gone(everything) == [], f"still running after the parent was killed: {workers}"
    assert not (tmp_path / "data" / "dataset.json").exists()  # nothing was published


@pytest.mark.slow  # a child process with worker processes
def test_ctrl_c_stops_cleanly(tmp_path):
    process = _slow_ingest(tmp_path)
    _workers_of(process)
    everything = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    assert "BrokenProcessPool" not in err and "Traceback" in err  # the parent's interrupt, not a broken pool
    assert _gone(everything) == []
    with pytest.raises(DataDirError):
        load_dataset(tmp_path / "data")  # nothing half-published


def test_a_main_module_workers_cannot_import_means_threads(monkeypatch):
    """`python - < script`: multiprocessing would make every worker import '<stdin>' and die."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from mmpipe.ingest.workers import chunk_workers

    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    monkeypatch.setattr(main, "__file__", "<stdin>", raising=False)
    with chunk_workers(2, "processes") as workers:
        assert isinstance(workers, ThreadPoolExecutor)
    monkeypatch.setattr(main, "__file__", __file__)
    with chunk_workers(2, "processes") as workers:
        assert isinstance(workers, ProcessPoolExecutor)


@pytest.mark.slow  # a child process with worker processes
def test_a_worker_killed_under_the_ingest_is_one_clear_error(tmp_path):
    process = _slow_ingest(tmp_path)
    workers = _workers_of(process)
    workers[0].kill()  # what the out-of-memory killer does
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "DataDirError: a chunk worker process died (killed, out of memory, or your script" in err
    assert _gone(workers[1:]) == []

"""Scaling out: the ingest flow's chunk tasks on a Dask cluster give the same bytes as the local run."""

import hashlib
import json

import pytest

from flows.ingest import run_ingest
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config

pytestmark = pytest.mark.slow  # starts a Dask cluster of worker processes


def digests(data_dir):
    return {path.relative_to(data_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("shards", "quarantine") for path in sorted((data_dir / folder).glob("*.parquet"))}


def test_ingest_on_a_local_dask_cluster_writes_byte_identical_shards(prefect_api, sample_manifest, tmp_path,
                                                                      monkeypatch, capsys):
    from distributed import LocalCluster
    from prefect.settings import get_current_settings

    # Worker processes report task runs to the same API as this process.
    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    local = run_ingest(sample_manifest, make_config(tmp_path / "local", **{"ingest.classes": SAMPLE_CLASSES}))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config = make_config(tmp_path / "dask", **{"ingest.classes": SAMPLE_CLASSES,
                                                   "ingest.dask_address": cluster.scheduler_address})
        on_dask = run_ingest(sample_manifest, config)
        toml = tmp_path / "mmpipe.toml"
        toml.write_text(f"[image]\nsize = 16\n[ingest]\nclasses = {json.dumps(SAMPLE_CLASSES)}\nchunk_rows = 8\n")
        code, out, err = run_main(["ingest", str(sample_manifest), "--data", str(tmp_path / "cli"), "--config",
                                   str(toml), "--dask", cluster.scheduler_address, "--json"], monkeypatch, capsys)
    assert on_dask["dataset_version"] == local["dataset_version"]
    assert digests(tmp_path / "dask") == digests(tmp_path / "local") != {}
    assert code == 0, err
    assert json.loads(out)["dataset_version"] == local["dataset_version"]
    assert digests(tmp_path / "cli") == digests(tmp_path / "local")

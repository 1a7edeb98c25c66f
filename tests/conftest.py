"""Shared fixtures: one session-scoped Prefect API, tiny sample datasets built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The temporary API server needs ~20 s on 2 cores; telemetry only adds lock contention.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from mmpipe.config import Config, load_config  # noqa: E402
from mmpipe.sample import SampleSpec, write_sample  # noqa: E402

SAMPLE_ROWS = 60


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API (temporary server) shared by every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    """A 60-row sample (plus faults) with every format and mode; read-only for tests."""
    folder = tmp_path_factory.mktemp("sample")
    return write_sample(folder, SampleSpec(rows=SAMPLE_ROWS, seed=1, min_side=8, max_side=32, fault_rate=0.2))


def make_config(data_dir: Path, **overrides) -> Config:
    """Test config: 16x16 images, small chunks so chunking is exercised, no environment leaking in."""
    values = {"data_dir": str(data_dir), "image.size": 16, "ingest.chunk_rows": 8}
    values.update(overrides)
    return load_config(None, values, environ={})


SAMPLE_CLASSES = ["lantern", "moon", "sun", "window"]


@pytest.fixture(scope="session")
def ingested_sample(sample_manifest, tmp_path_factory) -> Path:
    """A data dir holding the ingested sample (16 px); copy it before changing anything."""
    from mmpipe.ingest import ingest

    data_dir = tmp_path_factory.mktemp("ingested") / "data"
    ingest(sample_manifest, make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES}))
    return data_dir


# 49 accepted rows: a split share can be 0.1 off by chance alone.
SMALL_SAMPLE_CONTRACTS = {"contracts.split_tolerance": 0.25, "contracts.suites_dir": "data_contracts"}


@pytest.fixture(scope="session")
def validated_sample(ingested_sample, tmp_path_factory) -> Path:
    """The ingested sample after it passed the project's contracts; copy it before changing anything."""
    import shutil

    from mmpipe.contracts.validate import validate_dataset

    data_dir = tmp_path_factory.mktemp("validated") / "data"
    shutil.copytree(ingested_sample, data_dir)
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, **SMALL_SAMPLE_CONTRACTS})
    assert validate_dataset(data_dir, config).success
    return data_dir


@pytest.fixture
def config(tmp_path) -> Config:
    return make_config(tmp_path / "data", **{"ingest.classes": ["lantern", "moon", "sun", "window"]})

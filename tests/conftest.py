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


async def artifact(flow_run_id, key: str):
    """The artifact with `key` that a flow run published, or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return next((a for a in found if a.key == key), None)


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
SMALL_SAMPLE_CONTRACTS = {"contracts.split_tolerance": 0.25}


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


TINY_MODEL = {"model.max_tokens": 100, "model.sequence_length": 8, "model.embedding_dim": 8, "model.lstm_units": 8,
              "model.conv_filters": [4, 8], "model.dense_units": 8, "train.batch_size": 16}


def run_config(data_dir: Path, runs_dir: Path, **overrides) -> Config:
    """A config that trains the tiny model for one epoch on the validated sample."""
    values = {"ingest.classes": SAMPLE_CLASSES, "runs_dir": str(runs_dir), "train.epochs": 1,
              "train.export_serving": False,  # tested where it matters: trained_run, test_train's variants
              **SMALL_SAMPLE_CONTRACTS, **TINY_MODEL, **overrides}
    return make_config(data_dir, **values)


@pytest.fixture(scope="session")
def trained_run(validated_sample, tmp_path_factory) -> Path:
    """One finished fused run (with its serving export) on a copy of the validated sample; read-only."""
    import shutil

    from mmpipe.train import train

    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(validated_sample, root / "data")
    return train(run_config(root / "data", root / "runs", **{"train.export_serving": True})).run_dir


@pytest.fixture
def config(tmp_path) -> Config:
    return make_config(tmp_path / "data", **{"ingest.classes": ["lantern", "moon", "sun", "window"]})

"""The ingest flow against a real Prefect API: states, results and artifacts."""

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.artifacts import INGEST_COUNTS, INGEST_REJECTS, INGEST_SUMMARY, artifact_key
from flows.ingest import ingest_flow, run_ingest
from mmpipe.errors import SourceError
from mmpipe.ingest.version import load_dataset
from tests.fixtures.datasets import make_config


async def artifacts_of(flow_run_id):
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        flow_run = await client.read_flow_run(flow_run_id)
    return {artifact.key: artifact for artifact in artifacts if artifact.key}, flow_run


def test_ingest_flow_publishes_summary_and_tables(prefect_api, sample_manifest, config):
    state = ingest_flow(str(sample_manifest), config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["dataset_version"] == load_dataset(config.data_dir).version
    artifacts, flow_run = asyncio.run(artifacts_of(state.state_details.flow_run_id))
    assert flow_run.name == f"ingest {sample_manifest}"
    artifacts = {name: artifacts.get(artifact_key(name, config.data_dir))
                 for name in (INGEST_SUMMARY, INGEST_COUNTS, INGEST_REJECTS)}
    assert None not in artifacts.values()
    markdown = artifacts[INGEST_SUMMARY].data
    assert summary["dataset_version"] in markdown and "label_conflict" in markdown
    assert "sun" in artifacts[INGEST_COUNTS].data


def test_flow_with_default_runner_matches_the_core(prefect_api, sample_manifest, tmp_path):
    from mmpipe.ingest import ingest

    via_flow = run_ingest(sample_manifest, make_config(tmp_path / "flow"))
    via_core = ingest(sample_manifest, make_config(tmp_path / "core")).summary()
    assert via_flow["dataset_version"] == via_core["dataset_version"]


def test_unusable_source_fails_the_flow_run(prefect_api, tmp_path, config):
    bad = tmp_path / "m.csv"
    bad.write_text("text,label\nx,y\n")
    state = ingest_flow(str(bad), config, return_state=True)
    assert state.is_failed()
    assert "lacks the required image column;" in state.message
    with pytest.raises(SourceError, match="lacks the required image column"):
        state.result()

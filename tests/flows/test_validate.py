"""The validate flow and `mmpipe validate` against a real Prefect API and the real suites."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.artifacts import VALIDATION_PAGE, VALIDATION_REPORT, artifact_key
from flows.validate import validate_flow
from mmpipe.cli import app
from mmpipe.errors import ContractViolation
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import SAMPLE_CLASSES, artifact, duplicate_id, make_config, tamper


@pytest.fixture
def data_dir(ingested_sample, tmp_path):
    shutil.copytree(ingested_sample, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def config(data_dir):
    return make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.split_tolerance": 0.25})


def test_passing_dataset_completes_with_a_report(prefect_api, data_dir, config):
    state = validate_flow(str(data_dir), config, return_state=True)
    assert state.is_completed()
    assert state.result()["success"] is True
    report = asyncio.run(artifact(state.state_details.flow_run_id, artifact_key(VALIDATION_REPORT, data_dir)))
    assert report is not None and "passed" in report.data and "expect_column_values_to_be_unique" in report.data
    assert "contracts inferred from dataset" in report.data  # the first version: said loudly
    page = Path(state.result()["page"])
    assert page.is_file() and f"`{page}`" in report.data
    link = asyncio.run(artifact(state.state_details.flow_run_id, artifact_key(VALIDATION_PAGE, data_dir)))
    assert link is not None and link.data == f"[Validation page of dataset {page.parent.name} (opens offline)]" \
                                             f"({page.as_uri()})"


def test_critical_failure_fails_the_run_with_the_reason(prefect_api, data_dir, config):
    table = tamper(data_dir, duplicate_id)
    duplicate = table["id"][0].as_py()
    state = validate_flow(str(data_dir), config, return_state=True)
    assert state.is_failed()
    assert "ids unique in the shard" in state.message and duplicate in state.message
    assert "expect_column_values_to_be_unique(id)" in state.message
    with pytest.raises(ContractViolation):
        state.result()
    report = asyncio.run(artifact(state.state_details.flow_run_id, artifact_key(VALIDATION_REPORT, data_dir)))
    assert "**FAIL**" in report.data


def write_toml(path, data_dir):
    path.write_text(f'data_dir = "{data_dir}"\n[ingest]\nclasses = {json.dumps(SAMPLE_CLASSES)}\n'
                    "[image]\nsize = 16\n[contracts]\nsplit_tolerance = 0.25\n")
    return path


def test_cli_validate_exit_codes_and_json(prefect_api, data_dir, tmp_path, monkeypatch, capsys):
    runner = CliRunner()
    toml = write_toml(tmp_path / "mmpipe.toml", data_dir)
    ok = runner.invoke(app, ["validate", "--config", str(toml), "--json"])
    assert ok.exit_code == 0, ok.output
    passed = json.loads(ok.stdout)
    assert passed["success"] is True and passed["inferred"] and passed["contracts"]["source"]["origin"] == "inferred"
    assert "contracts inferred from dataset" in ok.stderr
    said = runner.invoke(app, ["validate", "--config", str(toml)])
    assert said.exit_code == 0 and f"(no warnings); report: {passed['page']}\n" in said.stdout
    tamper(data_dir, duplicate_id)
    bad = runner.invoke(app, ["validate", "--config", str(toml), "--json"])
    assert bad.exit_code == 1
    summary = json.loads(bad.stdout)
    assert summary["success"] is False
    failed = {item["expectation"]: item for item in summary["failed"]}
    assert failed["ids unique in the shard"]["check"] == "expect_column_values_to_be_unique(id)"
    assert failed["ids unique in the shard"]["examples"] and failed["ids unique in the shard"]["severity"] == "critical"
    told = runner.invoke(app, ["validate", "--config", str(toml)])
    assert told.exit_code == 1 and "failed 2 critical expectations: ids unique in the shard" in told.stderr
    assert told.stderr.rstrip().endswith(f"Details: {summary['page']}")
    code, _, err = run_main(["validate", "--data", str(tmp_path / "nothing")], monkeypatch, capsys)
    assert code == 2 and "mmpipe ingest" in err and "Traceback" not in err

"""The deployments `mmpipe serve` builds, and prefect.yaml describing the same ones."""

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from deployments.serve import build_deployments
from flows.watch import SOURCE_CHANGED
from mmpipe.config import load_config
from mmpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def served(tmp_path):
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": [str(tmp_path / "m.csv")],
                                "serve.retrain_cron": "15 4 * * 1", "serve.timezone": "Europe/Berlin"}, environ={})
    return {deployment.name: deployment for deployment in build_deployments(config)}


def test_serve_builds_the_three_deployments(tmp_path):
    deployments = served(tmp_path)
    assert set(deployments) == {"retrain", "watch", "on-new-data"}
    cron = deployments["retrain"].schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("15 4 * * 1", "Europe/Berlin")
    assert deployments["retrain"].parameters["source"] == str(tmp_path / "m.csv")
    trigger = deployments["on-new-data"].triggers[0]
    assert trigger.expect == {SOURCE_CHANGED} and trigger.parameters["source"] == "{{ event.payload.source }}"
    assert deployments["on-new-data"].concurrency_limit == 1
    assert deployments["on-new-data"].concurrency_options.collision_strategy == "ENQUEUE"
    assert deployments["watch"].schedules[0].schedule.interval.total_seconds() == 60


def test_serve_without_sources_says_how_to_add_one(tmp_path):
    with pytest.raises(ConfigError, match=r"\[serve\] sources"):
        build_deployments(load_config(None, {"data_dir": str(tmp_path)}, environ={}))


def test_prefect_yaml_describes_the_same_deployments(tmp_path):
    described = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in described} == set(served(tmp_path))
    for deployment in described:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name in ("pipeline", "watch")
    on_new_data = next(d for d in described if d["name"] == "on-new-data")
    assert on_new_data["triggers"][0]["expect"] == [SOURCE_CHANGED]
    assert load_config(None, {**on_new_data["parameters"]["config"]}, environ={}).serve.sources


def test_several_sources_get_their_own_dirs_and_deployments(tmp_path):
    sources = [str(tmp_path / "a" / "manifest.csv"), str(tmp_path / "b" / "manifest.csv")]
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                                "serve.sources": sources}, environ={})
    first, second = (config.for_source(source) for source in sources)
    assert first.data_dir != second.data_dir and first.data_dir.parent == tmp_path / "data"
    assert first.runs_dir != second.runs_dir and first.runs_dir.parent == tmp_path / "runs"
    names = [deployment.name for deployment in build_deployments(config)]
    assert len(set(names)) == len(names) == 4  # two retrains (distinct names), watch, on-new-data
    one = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": sources[:1]}, environ={})
    assert one.for_source(sources[0]) is one  # a single source keeps the configured dirs


def test_a_source_entry_can_name_its_own_exported_contracts(tmp_path):
    sources = [str(tmp_path / "a.csv"), {"path": str(tmp_path / "b.csv"), "contracts": str(tmp_path / "reviewed")}]
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": sources}, environ={})
    assert config.for_source(tmp_path / "a.csv").contracts.suites_dir is None
    assert config.for_source(tmp_path / "b.csv").contracts.suites_dir == tmp_path / "reviewed"
    assert [entry.path for entry in config.serve.sources] == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]

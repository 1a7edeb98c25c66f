"""The deployments `mmpipe serve` builds, and prefect.yaml describing the same ones."""

import os
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.templating import apply_values

from deployments.serve import build_deployments
from deployments.steps import read_mmpipe_config
from flows.watch import SOURCE_CHANGED
from mmpipe.config import load_config
from mmpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def served(tmp_path):
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": [str(tmp_path / "m.csv")],
                                "serve.retrain_cron": "15 4 * * 1", "serve.timezone": "Europe/Berlin"}, environ={})
    return {deployment.name: deployment for deployment in build_deployments(config)}


def test_serve_builds_retrain_and_on_new_data_and_no_per_poll_deployment(tmp_path):
    deployments = served(tmp_path)
    assert set(deployments) == {"retrain", "on-new-data"}  # the watcher is a thread, not a flow run per poll
    cron = deployments["retrain"].schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("15 4 * * 1", "Europe/Berlin")
    assert deployments["retrain"].parameters["source"] == str(tmp_path / "m.csv")
    trigger = deployments["on-new-data"].triggers[0]
    assert trigger.expect == {SOURCE_CHANGED} and trigger.parameters == {"source": "{{ event.payload.source }}"}
    assert deployments["on-new-data"].parameters["config"]["data_dir"] == str(tmp_path / "data")
    assert deployments["on-new-data"].concurrency_limit == 1
    assert deployments["on-new-data"].concurrency_options.collision_strategy == "ENQUEUE"
    assert not deployments["on-new-data"].schedules


def test_serve_without_sources_says_how_to_add_one(tmp_path):
    with pytest.raises(ConfigError, match=r"\[serve\] sources"):
        build_deployments(load_config(None, {"data_dir": str(tmp_path)}, environ={}))


def test_prefect_yaml_describes_the_same_deployments_from_the_config(tmp_path, monkeypatch):
    """The yaml repeats no setting: its `{{ mmpipe.* }}` values come from the build step that reads mmpipe's config."""
    shipped = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    everything = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": [str(tmp_path / "m.csv")],
                                    "serve.retrain_on": ["new_data", "drift"],
                                    "serve.score_sources": [str(tmp_path / "inbox")]}, environ={})
    assert {d["name"] for d in shipped["deployments"]} == {d.name for d in build_deployments(everything)}
    pull_directory = {"prefect.deployments.steps.set_working_directory": {"directory": "{{ mmpipe.checkout }}"}}
    assert shipped["pull"] == [pull_directory]
    assert shipped["build"] == [{"deployments.steps.read_mmpipe_config": {"id": "mmpipe"}}]
    for deployment in shipped["deployments"]:
        flow_name = "score" if deployment["name"] == "score-on-arrival" else "pipeline"
        assert load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"])).name == flow_name
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("MMPIPE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MMPIPE_SERVE__SOURCES", '["a/manifest.csv", "b/manifest.csv"]')
    (tmp_path / "mmpipe.toml").write_text('data_dir = "store"\n[serve]\nretrain_cron = "15 4 * * 1"\n')
    described = apply_values(shipped["deployments"], {"mmpipe": read_mmpipe_config()})
    assert apply_values(shipped["pull"], {"mmpipe": read_mmpipe_config()})[0][
        "prefect.deployments.steps.set_working_directory"] == {"directory": str(tmp_path)}
    retrain, on_new_data = (next(d for d in described if d["name"] == name) for name in ("retrain", "on-new-data"))
    assert retrain["parameters"]["source"] == "a/manifest.csv" and retrain["schedules"][0]["cron"] == "15 4 * * 1"
    config = load_config(None, {**retrain["parameters"]["config"]}, environ={})
    assert config.data_dir == Path("store") and len(config.serve.sources) == 2  # so each source gets its own dirs
    assert config.for_source("b/manifest.csv").data_dir.parent == Path("store")
    assert on_new_data["parameters"]["config"] == retrain["parameters"]["config"]
    assert on_new_data["triggers"][0]["expect"] == [SOURCE_CHANGED]
    # retrain_on decides which event triggers are on; the drift trigger names the source as a drift event does.
    on_drift = next(d for d in described if d["name"] == "on-drift")
    assert on_new_data["triggers"][0]["enabled"] is True and on_drift["triggers"][0]["enabled"] is False
    assert on_drift["triggers"][0]["match"]["mmpipe.model-source"] == str(tmp_path / "a" / "manifest.csv")
    monkeypatch.setenv("MMPIPE_SERVE__RETRAIN_ON", '"drift"')
    drift_only = apply_values(shipped["deployments"], {"mmpipe": read_mmpipe_config()})
    enabled = {d["name"]: d["triggers"][0]["enabled"] for d in drift_only if d.get("triggers")}
    assert enabled == {"on-new-data": False, "on-drift": True, "score-on-arrival": True}
    # Prefect does not template a trigger's parameters at deploy time: the event fills them in.
    shipped_trigger = next(d for d in shipped["deployments"] if d["name"] == "on-new-data")["triggers"][0]
    assert shipped_trigger["parameters"] == {"source": "{{ event.payload.source }}"}


def test_prefect_yaml_without_a_source_says_how_to_add_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMPIPE_SERVE__SOURCES", raising=False)
    monkeypatch.delenv("MMPIPE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"\[serve\] sources"):
        read_mmpipe_config()


def test_several_sources_get_their_own_dirs_and_deployments(tmp_path):
    sources = [str(tmp_path / "a" / "manifest.csv"), str(tmp_path / "b" / "manifest.csv")]
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                                "serve.sources": sources}, environ={})
    first, second = (config.for_source(source) for source in sources)
    assert first.data_dir != second.data_dir and first.data_dir.parent == tmp_path / "data"
    assert first.runs_dir != second.runs_dir and first.runs_dir.parent == tmp_path / "runs"
    names = [deployment.name for deployment in build_deployments(config)]
    assert len(set(names)) == len(names) == 3  # two retrains (distinct names), on-new-data
    one = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": sources[:1]}, environ={})
    assert one.for_source(sources[0]) is one  # a single source keeps the configured dirs


def test_a_source_entry_can_name_its_own_exported_contracts(tmp_path):
    sources = [str(tmp_path / "a.csv"), {"path": str(tmp_path / "b.csv"), "contracts": str(tmp_path / "reviewed")}]
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": sources}, environ={})
    assert config.for_source(tmp_path / "a.csv").contracts.suites_dir is None
    assert config.for_source(tmp_path / "b.csv").contracts.suites_dir == tmp_path / "reviewed"
    assert [entry.path for entry in config.serve.sources] == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]


def test_retraining_on_drift_and_scoring_on_arrival_are_deployments_with_their_triggers(tmp_path):
    from flows.score import DRIFT_DETECTED, MODEL_SOURCE_LABEL

    sources = [str(tmp_path / "a" / "manifest.csv"), str(tmp_path / "b" / "manifest.csv")]
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": sources,
                                "serve.retrain_on": ["drift"],
                                "serve.score_sources": [{"path": str(tmp_path / "inbox"), "model_source": sources[1]}]},
                         environ={})
    deployments = {deployment.name: deployment for deployment in build_deployments(config)}
    assert not {"on-new-data"} & set(deployments)  # retrain_on has no "new_data": a changed source waits for cron
    drift = [deployment for name, deployment in deployments.items() if name.startswith("on-drift-")]
    assert sorted(deployment.parameters["source"] for deployment in drift) == sources
    for deployment in drift:  # each retrains its own source, on drift in data its champion scored
        (trigger,) = deployment.triggers
        assert trigger.expect == {DRIFT_DETECTED}
        assert trigger.match.model_dump()[MODEL_SOURCE_LABEL] == deployment.parameters["source"]
    (arrival,) = deployments["score-on-arrival"].triggers
    assert arrival.expect == {SOURCE_CHANGED} and arrival.match.model_dump()["prefect.resource.id"] == "mmpipe.scored.*"
    assert arrival.parameters == {"source": "{{ event.payload.source }}",
                                  "model_source": "{{ event.payload.model_source }}"}
    assert deployments["score-on-arrival"].flow_name == "score"

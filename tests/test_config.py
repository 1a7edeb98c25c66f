import pytest

from mmpipe.config import load_config
from mmpipe.errors import ConfigError


def test_defaults_work_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.image.size == 64 and config.ingest.split_ratios.train == 0.8


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 1\n[image]\nsize = 32\nfit = "crop"\n[text]\nlowercase = true\n')
    environ = {"MMPIPE_IMAGE__SIZE": "24", "MMPIPE_SEED": "7", "MMPIPE_INGEST__CLASSES": '["a", "b"]'}
    config = load_config(path, {"seed": 9}, environ=environ)
    assert config.image.size == 24 and config.image.fit == "crop" and config.text.lowercase
    assert config.seed == 9
    assert config.ingest.classes == ["a", "b"]


def test_mmpipe_toml_in_working_dir_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mmpipe.toml").write_text("[image]\nsize = 20\n")
    assert load_config(environ={}).image.size == 20


@pytest.mark.parametrize(
    ("toml", "environ", "message"),
    [("[image]\nsize = 2\n", {}, "image.size"),
     ("[image]\nsizes = 2\n", {}, "image.sizes"),
     ("", {"MMPIPE_TEXT__LOWERCASE": "maybe"}, "text.lowercase"),
     ("[ingest.split_ratios]\ntrain = 0.5\n", {}, "add up to 1"),
     ("not toml = = =", {}, "cannot read config file"),
     # Paths of the wrong type: one line naming the setting, not a TypeError from deep inside a command.
     ("data_dir = 5\n", {}, "data_dir.*must be a folder path or a bucket URL"),
     ("runs_dir = []\n", {}, "runs_dir.*must be a folder path"),
     ("", {"MMPIPE_RUNS_DIR": '{"a": 1}'}, "runs_dir.*must be a folder path")],
)
def test_bad_values_name_the_setting(tmp_path, toml, environ, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=environ)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_hash_is_stable_and_tracks_what_shapes_output(tmp_path):
    base = load_config(None, {"data_dir": "a"}, environ={})
    assert base.ingest_hash() == load_config(None, {"data_dir": "b", "ingest.workers": 7}, environ={}).ingest_hash()
    assert base.ingest_hash() != load_config(None, {"image.size": 32}, environ={}).ingest_hash()
    assert base.hash() != load_config(None, {"seed": 3}, environ={}).hash()
    assert base.ingest_hash() == load_config(None, {"seed": 3}, environ={}).ingest_hash()


def test_where_training_runs_is_the_machines_to_say_whatever_config_was_deployed():
    deployed = load_config(None, {"train.epochs": 3, "train.strategy": "one_device"}, environ={})
    gpu_worker = {"MMPIPE_TRAIN__STRATEGY": "mirrored", "MMPIPE_TRAIN__CPU_DEVICES": "2", "MMPIPE_TRAIN__EPOCHS": "9"}
    here = deployed.on_this_machine(gpu_worker)
    assert (here.train.strategy, here.train.cpu_devices) == ("mirrored", 2)
    assert here.train.epochs == 3  # the model's settings stay the deployed ones
    assert deployed.on_this_machine({}) is deployed
    with pytest.raises(ConfigError, match="MMPIPE_TRAIN__"):
        deployed.on_this_machine({"MMPIPE_TRAIN__STRATEGY": "all_of_them"})

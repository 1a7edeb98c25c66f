"""`mmpipe tune` refuses what cannot be searched in one line, before it starts Prefect or trains anything."""

from tests.fixtures.cli import run_main


def test_an_unusable_space_file_is_one_line_naming_the_setting(tmp_path, monkeypatch, capsys):
    space = tmp_path / "space.toml"
    space.write_text("[model]\nlearning_rate = { low = 0.01, high = 0.001 }\n")
    code, out, err = run_main(["tune", "--data", str(tmp_path / "data"), "--space", str(space)], monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err == (f"mmpipe: error: invalid search space in {space}: model.learning_rate: low 0.01 must be below "
                   "high 0.001\n")


def test_a_space_file_may_be_a_config_file_s_tune_space(tmp_path, monkeypatch, capsys):
    """The same tables under [tune.space] are read too; then the missing dataset is what stops it."""
    space = tmp_path / "mmpipe.toml"
    space.write_text("[tune.space.train]\nbatch_size = [16, 32]\n")
    code, _, err = run_main(["tune", "--data", str(tmp_path / "data"), "--space", str(space)], monkeypatch, capsys)
    assert code == 2 and "invalid search space" not in err
    assert err.startswith("mmpipe: error: ") and str(tmp_path / "data") in err and len(err.splitlines()) == 1


def test_an_impossible_setting_in_the_config_is_named_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMPIPE_TUNE__SPACE", '{"image": {"size": [32, 64]}}')
    code, _, err = run_main(["tune", "--data", str(tmp_path / "data")], monkeypatch, capsys)
    assert code == 2 and "[image] settings cannot be searched" in err and len(err.splitlines()) == 1

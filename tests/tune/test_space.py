"""The search space: every mistake in [tune.space] is one line naming it, before any trial; a trial's settings are
the config's own values."""

import pytest

from mmpipe.config import DEFAULT_SPACE, Config, load_config
from mmpipe.errors import ConfigError
from mmpipe.tune.space import apply, check_space, configured, suggest


def test_the_default_space_holds_the_default_configuration():
    """The first trial is the configuration as set: the default space must contain every default value."""
    config = Config()
    first, outside = configured(config, check_space(DEFAULT_SPACE))
    assert outside == []
    assert first["model.learning_rate"] == config.model.learning_rate
    assert first["model.conv_filters"] == "[16, 32, 64, 128]"  # lists are stored as JSON text


@pytest.mark.parametrize(("space", "named"), [
    ({"model": {"dropout_rate": {"low": 0.1, "high": 1.5}}}, "model.dropout_rate = 1.5 is not a value the setting"),
    ({"model": {"lstm_unit": [32, 64]}}, "model.lstm_unit is not a setting"),
    ({"model": {"learning_rate": {"low": 0.01, "high": 0.001}}}, "model.learning_rate: low 0.01 must be below high"),
    ({"model": {"learning_rate": {"low": 0, "high": 0.01, "log": True}}}, "log range must start above 0"),
    ({"model": {"pooling": {"low": 1, "high": 2}}}, "model.pooling is not a number: give a list of choices"),
    ({"train": {"batch_size": {"low": 8.5, "high": 64}}}, "train.batch_size: low = 8.5 is not an integer"),
    ({"train": {"batch_size": []}}, "train.batch_size: the list of choices is empty"),
    ({"train": {"epochs": {"low": 1, "high": 9, "by": 2}}}, "train.epochs: a range is { low = ..., high = ... }"),
    ({"image": {"size": [32, 64]}}, "[image] settings cannot be searched"),
    ({"train": {"strategy": ["mirrored"]}}, "train.strategy cannot be searched"),
    ({"modle": {"learning_rate": [0.1]}}, "unknown section 'modle'"),
    ({"model": {"text_tokens": ["words", "letters"]}}, "model.text_tokens = 'letters' is not a value"),
    ({}, "the space is empty"),
])
def test_an_unusable_space_is_one_line_naming_it(space, named):
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"tune.space": space}, environ={})
    message = str(raised.value)
    assert named in message and "\n" not in message
    assert message.startswith("invalid configuration") and "tune.space" in message


def test_a_space_from_the_config_file_replaces_the_default(tmp_path):
    toml = tmp_path / "mmpipe.toml"
    toml.write_text('[tune.space.model]\nlearning_rate = { low = 1e-4, high = 1e-2, log = true }\n'
                    'conv_filters = [[8, 16], [16, 32, 64]]\n')
    config = load_config(toml, environ={})
    assert [parameter.name for parameter in check_space(config.tune.space)] == ["model.learning_rate",
                                                                                  "model.conv_filters"]


def test_a_trial_s_settings_become_the_config_it_trains():
    import optuna

    config = Config()
    parameters = check_space({"model": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                        "conv_filters": [[8, 16], [16, 32, 64]], "augment": [False, True]},
                              "train": {"batch_size": {"low": 8, "high": 64, "step": 8}}})
    trial = optuna.trial.FixedTrial({"model.learning_rate": 3e-3, "model.conv_filters": "[8, 16]",
                                     "model.augment": True, "train.batch_size": 24})
    values = suggest(trial, parameters)
    assert values == {"model.learning_rate": 3e-3, "model.conv_filters": [8, 16], "model.augment": True,
                      "train.batch_size": 24}
    trained = apply(config, values)
    assert (trained.model.learning_rate, trained.model.conv_filters, trained.model.augment,
            trained.train.batch_size) == (3e-3, (8, 16), True, 24)
    assert trained.model.lstm_units == config.model.lstm_units and trained.hash() != config.hash()


def test_values_outside_the_space_are_named_not_guessed():
    config = load_config(None, {"model.learning_rate": 0.5}, environ={})
    first, outside = configured(config, check_space({"model": {"learning_rate": {"low": 1e-4, "high": 1e-2},
                                                               "lstm_units": [32, 64]}}))
    assert outside == ["model.learning_rate"] and first == {"model.lstm_units": 64}

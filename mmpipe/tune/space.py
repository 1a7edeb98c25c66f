"""The search space: `[tune.space]` read into parameters, each checked against the setting it searches.

A parameter is a range (`{ low, high, log, step }`, integers for an integer setting) or a list of choices. Every
bound and choice must be a value the setting itself accepts, so an impossible range fails when the config is
loaded, in one line naming it, before any trial trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mmpipe.config import Config, ModelConfig, TrainConfig
from mmpipe.config_layers import merge, nest

SEARCHED_SECTIONS = {"model": ModelConfig, "train": TrainConfig}
# Settings that say where or how a run is kept, not what it learns.
NOT_SEARCHED = {
    "train.strategy": "where training runs is the machine's to say",
    "train.cpu_devices": "where training runs is the machine's to say",
    "train.export_serving": "it changes what a run writes, not what it learns",
}
RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Parameter:
    """One searched setting: `name` is its dotted path (`model.learning_rate`)."""

    name: str
    kind: str  # "int", "float" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def labels(self) -> list[Any]:
        """The choices as Optuna stores them: lists as JSON text (Optuna's choices are plain values)."""
        return [json.dumps(choice) if isinstance(choice, list) else choice for choice in self.choices]

    def value_of(self, stored: Any) -> Any:
        """The setting's value for what Optuna stored."""
        if self.kind == "categorical":
            return self.choices[self.labels().index(stored)]
        return stored

    def stored(self, value: Any) -> Any | None:
        """What Optuna stores for the setting's `value`; None when the space does not hold it."""
        value = list(value) if isinstance(value, tuple) else value
        if self.kind == "categorical":
            return self.labels()[self.choices.index(value)] if value in self.choices else None
        return value if self.low <= value <= self.high else None


def check_space(space: dict[str, Any]) -> list[Parameter]:
    """The parameters of a `[tune.space]` table; ValueError naming the first one that cannot be searched."""
    if not isinstance(space, dict) or not space:
        raise ValueError("the space is empty: give at least one setting, e.g. [tune.space.model] "
                         "learning_rate = { low = 1e-4, high = 1e-2, log = true }")
    parameters = []
    for section, fields in space.items():
        if section in ("image", "text", "ingest"):
            raise ValueError(f"[{section}] settings cannot be searched: they shape the dataset, which every trial "
                             "shares; ingest into another data dir to compare them")
        if section not in SEARCHED_SECTIONS:
            raise ValueError(f"unknown section {section!r}: the space searches [model] and [train] settings")
        if not isinstance(fields, dict):
            raise ValueError(f"{section}: give a table of settings, e.g. [tune.space.{section}]")
        parameters += [_parameter(section, field, spec) for field, spec in fields.items()]
    return parameters


def _parameter(section: str, field: str, spec: Any) -> Parameter:
    model = SEARCHED_SECTIONS[section]
    name = f"{section}.{field}"
    if field not in model.model_fields:
        raise ValueError(f"{name} is not a setting (the [{section}] settings: {', '.join(model.model_fields)})")
    if name in NOT_SEARCHED:
        raise ValueError(f"{name} cannot be searched: {NOT_SEARCHED[name]}")
    default = model.model_fields[field].default
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"{name}: the list of choices is empty")
        for choice in spec:
            _check_value(model, name, choice)
        return Parameter(name, "categorical", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ValueError(f"{name} = {spec!r}: give a range {{ low = ..., high = ... }} or a list of choices")
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if not numeric:
        raise ValueError(f"{name} is not a number: give a list of choices, e.g. {name.split('.')[1]} = "
                         f"[{json.dumps(default if not isinstance(default, tuple) else list(default))}, ...]")
    unknown = set(spec) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(spec):
        raise ValueError(f"{name}: a range is {{ low = ..., high = ... }} with optional log = true or step = ...; "
                         f"got {', '.join(sorted(spec)) or 'nothing'}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    kind = "int" if isinstance(default, int) else "float"
    for bound, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                  or (kind == "int" and not float(value).is_integer())):
            raise ValueError(f"{name}: {bound} = {value!r} is not {'an integer' if kind == 'int' else 'a number'}")
    if not low < high:
        raise ValueError(f"{name}: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ValueError(f"{name}: a log range must start above 0 (low = {low!r})")
    if step is not None and (step <= 0 or log):
        raise ValueError(f"{name}: step must be above 0, and cannot go with log = true")
    for value in (low, high):
        _check_value(model, name, int(value) if kind == "int" else value)
    return Parameter(name, kind, low=int(low) if kind == "int" else float(low),
                     high=int(high) if kind == "int" else float(high), log=log, step=step)


def _check_value(model, name: str, value: Any) -> None:
    """ValueError unless the setting accepts `value`, in the setting's own words."""
    try:
        model.model_validate({name.split(".", 1)[1]: value})
    except ValidationError as error:
        raise ValueError(f"{name} = {value!r} is not a value the setting takes: {error.errors()[0]['msg']}") from None


def suggest(trial, parameters: list[Parameter]) -> dict[str, Any]:
    """The settings an Optuna trial samples, as the settings' values."""
    values = {}
    for parameter in parameters:
        if parameter.kind == "categorical":
            stored = trial.suggest_categorical(parameter.name, parameter.labels())
        elif parameter.kind == "int":
            stored = trial.suggest_int(parameter.name, parameter.low, parameter.high, log=parameter.log,
                                       step=int(parameter.step or 1))
        else:
            stored = trial.suggest_float(parameter.name, parameter.low, parameter.high, log=parameter.log,
                                         step=parameter.step)
        values[parameter.name] = parameter.value_of(stored)
    return values


def configured(config: Config, parameters: list[Parameter]) -> tuple[dict[str, Any], list[str]]:
    """The config's own values in Optuna's terms (the first trial's), and the names the space does not hold."""
    stored, outside = {}, []
    for parameter in parameters:
        section, field = parameter.name.split(".", 1)
        value = parameter.stored(getattr(getattr(config, section), field))
        if value is None:
            outside.append(parameter.name)
        else:
            stored[parameter.name] = value
    return stored, outside


def apply(config: Config, values: dict[str, Any]) -> Config:
    """`config` with the trial's settings (dotted names) in place."""
    merged = config.model_dump(mode="json")
    for name, value in values.items():
        merge(merged, nest(name.split("."), value))
    return Config.model_validate(merged)

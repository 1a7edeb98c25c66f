"""Where settings come from, layered by mmpipe.config.load_config: the TOML file, MMPIPE_* variables (values
parsed as JSON when they are JSON) and dotted flags, merged key by key."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mmpipe.errors import ConfigError

DEFAULT_CONFIG_FILE = "mmpipe.toml"
# Read by the loader itself, not a setting: the path of the config file.
ENV_CONFIG_FILE = "MMPIPE_CONFIG"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def config_file(path: Path | None, environ: Mapping[str, str]) -> Path | None:
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = Path(environ[ENV_CONFIG_FILE])
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing --config or leave it out")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None


def parse_env_value(raw: str) -> Any:
    """`32` -> 32, `true` -> True, `["a","b"]` -> list; anything that is not JSON stays a string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def nest(keys: list[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    return nested


def merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value

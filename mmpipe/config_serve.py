"""The [serve] section: the sources `mmpipe serve` retrains on and watches, and the data it scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from mmpipe.config_layers import Section
from mmpipe.errors import ConfigError
from mmpipe.files import stable_hash
from mmpipe.storage.urls import absolute, stem


class SourceEntry(Section):
    """One source `mmpipe serve` watches, optionally with its own exported contracts."""

    path: str = Field(description="a manifest or a LABEL/FILE folder")
    contracts: Path | None = Field(None, description="folder of this source's exported suites (`mmpipe contracts "
                                   "export`); default: the ones inferred into its data dir")


class ScoreSourceEntry(Section):
    """Data `mmpipe serve` (or `mmpipe watch`) scores with a champion when new files settle in it."""

    path: str = Field(description="a manifest, a folder or a bucket prefix")
    model_source: str | None = Field(None, description="the [serve] source whose champion scores it (default: "
                                     "the only one)")


class ServeConfig(Section):
    """What `mmpipe serve` schedules and watches."""

    sources: list[SourceEntry] = Field(
        default_factory=list, description='manifests or folders to retrain on and watch: "path" or '
        '{ path = "...", contracts = "DIR" }')
    retrain_cron: str = Field("0 2 * * *", description="when `retrain` runs (cron, default nightly at 02:00)")
    timezone: str = Field("UTC", description="IANA timezone of retrain_cron, e.g. Europe/Berlin")
    watch_interval_s: float = Field(60.0, gt=0, description="how often the watcher (`mmpipe serve`, `mmpipe watch`) "
                                    "looks at the sources")
    score_sources: list[ScoreSourceEntry] = Field(default_factory=list, description='data scored by a champion '
                                                  'when new files settle: "path" or { path = "...", model_source = '
                                                  '"SOURCE" }')
    retrain_on: list[Literal["new_data", "drift"]] = Field(["new_data"], description="what starts a retraining "
                                                           "besides the schedule: new data in a source, drift found "
                                                           "scoring new data, or both")

    @field_validator("sources", "score_sources", mode="before")
    @classmethod
    def _paths_are_entries(cls, value: Any) -> Any:
        """A plain string is an entry of its path alone."""
        if isinstance(value, list):
            return [{"path": str(item)} if isinstance(item, str | Path) else item for item in value]
        return value

    @field_validator("retrain_on", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def scored_by(self, entry: ScoreSourceEntry) -> str:
        """The training source whose champion scores `entry`; a ConfigError when it cannot be told."""
        if entry.model_source is not None:
            if self.entry_for(entry.model_source) is None:
                raise ConfigError(f"[serve] score_sources: {entry.path} names model_source {entry.model_source}, "
                                  "which is not one of [serve] sources")
            return str(absolute(entry.model_source))
        if len(self.sources) != 1:
            raise ConfigError(f"[serve] score_sources: say which source's champion scores {entry.path}: "
                              f'{{ path = "{entry.path}", model_source = "..." }} (one of [serve] sources)')
        return str(absolute(self.sources[0].path))

    def require_sources(self, who: str) -> list[str]:
        """The source paths; a ConfigError saying how to add one when there are none (`who` needs them)."""
        if not self.sources:
            raise ConfigError(f"{who} needs at least one source: set [serve] sources = [\"path/to/manifest.csv\"] "
                              "in mmpipe.toml (or MMPIPE_SERVE__SOURCES='[\"...\"]')")
        return [entry.path for entry in self.sources]

    def entry_for(self, source: str | Path) -> SourceEntry | None:
        """The configured entry of `source` (compared as absolute paths), if it is one."""
        wanted = absolute(source)
        return next((entry for entry in self.sources if absolute(entry.path) == wanted), None)


def source_dir_name(source: str | Path) -> str:
    """A short, stable, readable name for a source: its file or folder name and a hash of its path."""
    return f"{stem(source)}-{stable_hash(str(absolute(source)), 8)}"

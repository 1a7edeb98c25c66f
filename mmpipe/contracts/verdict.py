"""The verdict on one dataset version: an Outcome per expectation, and the report users read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmpipe.contracts.infer import source_origin_line
from mmpipe.wording import counted


@dataclass
class Outcome:
    """One expectation's verdict over its scope (the whole version, or the shards it was run on)."""

    suite: str
    expectation: str
    severity: str
    success: bool
    observed: Any
    examples: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    check: str = ""
    hint: str = ""

    def describe(self) -> dict[str, Any]:
        return {"expectation": self.expectation, "check": self.check, "severity": self.severity,
                "observed": self.observed, "examples": self.examples, "suite": self.suite, "shards": self.shards,
                "hint": self.hint}


@dataclass
class ValidationReport:
    """The verdict on one dataset version. `success` is False when any critical expectation failed."""

    dataset_version: str
    success: bool
    outcomes: list[Outcome]
    report: Path  # result.json: everything, for programs
    page: Path  # index.html: the same, for people (offline, self-contained)
    reference: str
    contracts: dict[str, Any]
    inferred: bool = False
    reused: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    @property
    def notice(self) -> str | None:
        """The loud line a user must see when this validation inferred the source contracts."""
        if not self.inferred:
            return None
        data_dir = Path(self.report).parents[2]  # DATA/validation/<version>/result.json
        return (f"contracts inferred from dataset {self.dataset_version}: review them with `mmpipe contracts show "
                f"--data {data_dir}`, keep them with `mmpipe contracts export DIR --data {data_dir}`")

    @property
    def contracts_line(self) -> str:
        """Which suites were used, in one line."""
        return f"project contracts built-in ({self.contracts['project']['dir']}); {source_origin_line(self.contracts)}"

    def summary(self) -> dict[str, Any]:
        """The object `mmpipe validate --json` prints."""
        return {
            "dataset_version": self.dataset_version,
            "success": self.success,
            "failed": [o.describe() for o in self.failed],
            "warnings": [o.describe() for o in self.warnings],
            "report": str(self.report),
            "page": str(self.page),
            "contracts": self.contracts,
            "inferred": self.inferred,
            "notice": self.notice,
        }

    def failure_message(self) -> str:
        """One paragraph naming each failed critical expectation, what was observed, offending ids, what to do."""
        parts = []
        for outcome in self.failed:
            ids = f"; ids: {', '.join(outcome.examples)}" if outcome.examples else ""
            hint = f" ({outcome.hint})" if outcome.hint else ""
            parts.append(f"{outcome.expectation} [{outcome.suite}: {outcome.check}] observed "
                         f"{short(outcome.observed, 300)}{ids}{hint}")
        return (f"dataset {self.dataset_version} failed {counted(len(parts), 'critical expectation')}: "
                + " | ".join(parts) + f". Details: {self.page}")

    def to_markdown(self) -> str:
        verdict = "passed" if self.success else "FAILED"
        lines = [f"# Validation of dataset `{self.dataset_version}`: {verdict}", ""]
        if self.notice:
            lines += [f"**{self.notice}**", ""]
        lines += [f"{counted(len(self.failed), 'critical failure')}, {counted(len(self.warnings), 'warning')}, "
                  f"{counted(len(self.outcomes), 'expectation')}. Drift reference: `{self.reference}`.",
                  "", f"The whole report, offline: `{self.page}` (every observed value: `{self.report}`).",
                  "", f"Suites: {self.contracts_line}.",
                  "", "| suite | expectation | severity | result | observed | examples |",
                  "|---|---|---|---|---|---|"]
        for o in sorted(self.outcomes, key=lambda o: (o.success, o.severity != "critical")):
            mark = "pass" if o.success else ("**FAIL**" if o.severity == "critical" else "warn")
            examples = ", ".join(f"`{e}`" for e in o.examples[:5])
            observed = short(o.observed)
            lines.append(f"| {o.suite} | {o.expectation} (`{o.check}`) | {o.severity} | {mark} | {observed} "
                         f"| {examples} |")
        return "\n".join(lines) + "\n"


def short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Suite files: hand-editable Great Expectations suite JSON, checked entry by entry.

GX logs and silently drops an expectation it cannot build; a contract that quietly lost a check
would pass data it should stop, so every entry is built here first and any refusal is an error
that names the file, the entry and GX's reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.errors import ContractFileError
from mmpipe.files import sha256_file

SUITE_FILES = {"shards": "shards.json", "dataset": "dataset.json"}
SEVERITIES = ("critical", "warning")
LOCAL_SUITES_DIR = Path("data_contracts")
INDEX_META = "mmpipe_index"


@dataclass(frozen=True)
class SuiteFile:
    """A suite as written in data_contracts/: its name, where it came from, its hash and entries."""

    kind: str
    path: Path
    sha256: str
    name: str
    expectations: list[dict[str, Any]]


def suites_dir(config: Config) -> Path:
    """contracts.suites_dir if set, else ./data_contracts when it holds suites, else the built-in suites."""
    if config.contracts.suites_dir is not None:
        return Path(config.contracts.suites_dir)
    if (LOCAL_SUITES_DIR / SUITE_FILES["shards"]).is_file():
        return LOCAL_SUITES_DIR
    return Path(str(resources.files("data_contracts")))


def read_suites(config: Config) -> dict[str, SuiteFile]:
    """Both suites, structurally checked (GX is not imported here)."""
    folder = suites_dir(config)
    return {kind: read_suite(folder / file, kind) for kind, file in SUITE_FILES.items()}


def read_suite(path: Path, kind: str) -> SuiteFile:
    """Parse one suite file and check its shape: a name, and entries with type, kwargs and severity."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractFileError(f"suite file {path} is missing; run `mmpipe contracts init` to write one") from None
    except (OSError, ValueError) as error:
        raise ContractFileError(f"suite file {path} is not readable JSON: {error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("name"), str):
        raise ContractFileError(f"suite file {path} must be a JSON object with a string \"name\"")
    entries = content.get("expectations")
    if not isinstance(entries, list) or not entries:
        raise ContractFileError(f"suite file {path} has no \"expectations\" list; an empty contract checks nothing")
    for index, entry in enumerate(entries):
        where = f"{path}: expectation #{index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            example = "expect_column_values_to_be_unique"
            raise ContractFileError(f"{where} must be an object with a \"type\" such as {example}")
        if not isinstance(entry.get("kwargs", {}), dict):
            raise ContractFileError(f"{where} ({entry['type']}): \"kwargs\" must be an object")
        if entry.get("severity") not in SEVERITIES:
            raise ContractFileError(f"{where} ({entry['type']}): \"severity\" must be one of {', '.join(SEVERITIES)}")
    return SuiteFile(kind, path, sha256_file(path), content["name"], entries)


def build_gx_suite(suite: SuiteFile):
    """The GX ExpectationSuite for `suite`; every entry must be accepted or this raises."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for index, entry in enumerate(suite.expectations):
        try:
            # GX reorders results; the index in meta ties each result back to its entry in the file.
            meta = {**(entry.get("meta") or {}), INDEX_META: index}
            configuration = ExpectationConfiguration(
                type=entry["type"], kwargs=entry.get("kwargs", {}), meta=meta, severity=entry["severity"]
            )
            built.append(configuration.to_domain_obj())
        except Exception as error:  # noqa: BLE001 - GX raises many types for a bad entry; all mean the same
            raise ContractFileError(
                f"{suite.path}: expectation #{index + 1} ({entry['type']}) is not valid for Great Expectations: {error}"
            ) from None
    gx_suite = gx.ExpectationSuite(name=suite.name, expectations=built)
    if len(gx_suite.expectations) != len(suite.expectations):
        raise ContractFileError(
            f"{suite.path}: Great Expectations kept {len(gx_suite.expectations)} of {len(suite.expectations)} "
            "expectations; fix or remove the rejected ones"
        )
    return gx_suite


def describe_expectation(entry: dict[str, Any]) -> str:
    """A short human name: meta.name if given, else `type(column)`."""
    meta = entry.get("meta") or {}
    if meta.get("name"):
        return str(meta["name"])
    kwargs = entry.get("kwargs", {})
    target = kwargs.get("column") or ("table" if "column" not in kwargs else "")
    return f"{entry['type']}({target})"


def write_suite(path: Path, name: str, expectations: list[dict[str, Any]], notes: str) -> None:
    """Write a suite file the way people will read and edit it: sorted keys, one entry per block."""
    from mmpipe.files import write_json_atomic

    write_json_atomic(path, {"name": name, "meta": {"notes": notes}, "expectations": expectations})

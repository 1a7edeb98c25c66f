"""Suite files and the two layers of contracts that apply to a data dir.

* **Project suites** (`data_contracts/`, shipped with mmpipe): what holds for every mmpipe dataset.
* **Source suites**: what holds for one source (its class set, observed ranges, drift). Inferred
  from the data dir's first version that passes the project suites and kept in `DATA/contracts/`,
  unless exported suites are given (`contracts.suites_dir`, `--contracts DIR`), which win.

Nothing here looks at the working directory: which suites apply depends on the config and the data
dir only, and every result says which were used and where they came from.

GX logs and silently drops an expectation it cannot build; a contract that quietly lost a check
would pass data it should stop, so every entry is built here first and any refusal is an error
that names the file, the entry and GX's reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.errors import ContractFileError
from mmpipe.files import json_text, sha256_file, write_json_atomic

SUITE_FILES = {"shards": "shards.json", "dataset": "dataset.json"}
SEVERITIES = ("critical", "warning")
PROJECT, SOURCE = "project", "source"
# Where a data dir keeps the source suites inferred for it.
SOURCE_SUITES_DIR = "contracts"
# Where each layer's suites came from, as results report it.
BUILT_IN, INFERRED, EXPORTED, NOT_YET = "built-in", "inferred", "exported", "none yet"
# Meta keys GX carries through to each result, tying it back to its suite file and entry.
INDEX_META = "mmpipe_index"
SUITE_META = "mmpipe_suite"


@dataclass(frozen=True)
class SuiteFile:
    """One suite file: its layer and kind, where it is, its hash, its entries and its meta."""

    layer: str
    kind: str
    path: Path
    sha256: str
    name: str
    expectations: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        """`project/shards`, `source/dataset`, ...: how reports name the suite."""
        return f"{self.layer}/{self.kind}"


@dataclass(frozen=True)
class Contracts:
    """The suites that apply to one data dir: the project layer, and the source layer if there is one yet."""

    project: dict[str, SuiteFile]
    source: dict[str, SuiteFile] | None
    source_dir: Path
    source_origin: str  # INFERRED (kept in the data dir), EXPORTED (given by the user) or NOT_YET

    def suites(self, kind: str) -> list[SuiteFile]:
        """The suites of one kind (shards or dataset), project layer first."""
        return [self.project[kind]] + ([self.source[kind]] if self.source else [])

    def hashes(self) -> dict[str, str]:
        return {suite.label: suite.sha256 for kind in SUITE_FILES for suite in self.suites(kind)}

    def describe(self) -> dict[str, Any]:
        """Which suites were used and where they came from, as every validation result records it."""
        project_dir = self.project["shards"].path.parent
        source: dict[str, Any] = {"origin": self.source_origin, "dir": str(self.source_dir)}
        if self.source:
            source["files"] = {kind: {"path": str(s.path), "sha256": s.sha256} for kind, s in self.source.items()}
            source.update({key: self.source["shards"].meta[key] for key in ("inferred_from", "inferred_at")
                           if key in self.source["shards"].meta})
        return {"project": {"origin": BUILT_IN, "dir": str(project_dir),
                            "files": {kind: {"path": str(s.path), "sha256": s.sha256}
                                      for kind, s in self.project.items()}},
                "source": source}


def project_suites_dir() -> Path:
    """The shipped project suites (the `data_contracts` package)."""
    return Path(str(resources.files("data_contracts")))


def source_suites_location(data_dir: Path, config: Config) -> tuple[Path, str]:
    """Exported suites (contracts.suites_dir) if given, else the data dir's own inferred ones."""
    if config.contracts.suites_dir is not None:
        return Path(config.contracts.suites_dir).absolute(), EXPORTED
    return Path(data_dir).absolute() / SOURCE_SUITES_DIR, INFERRED


def load_contracts(data_dir: Path, config: Config) -> Contracts:
    """Both layers, structurally checked (GX is not imported here).

    Raises:
        ContractFileError: a suite file is malformed, or exported suites were named and are missing.
    """
    project = read_suites(project_suites_dir(), PROJECT)
    folder, origin = source_suites_location(data_dir, config)
    present = [kind for kind, file in SUITE_FILES.items() if (folder / file).is_file()]
    if origin == EXPORTED and len(present) < len(SUITE_FILES):
        raise ContractFileError(
            f"contracts.suites_dir {folder} has no {' or '.join(f for f in SUITE_FILES.values())}: write them with "
            f"`mmpipe contracts export {folder}`, or leave the setting out to use the data dir's inferred suites")
    if not present or (origin == INFERRED and len(present) < len(SUITE_FILES)):
        # None yet, or one file of an inference a kill cut short: the next validation infers them again, whole.
        return Contracts(project, None, folder, NOT_YET)
    return Contracts(project, read_suites(folder, SOURCE), folder, origin)


def read_suites(folder: Path, layer: str) -> dict[str, SuiteFile]:
    return {kind: read_suite(folder / file, kind, layer) for kind, file in SUITE_FILES.items()}


def read_suite(path: Path, kind: str, layer: str = SOURCE) -> SuiteFile:
    """Parse one suite file and check its shape: a name, and entries with type, kwargs and severity."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractFileError(f"suite file {path} is missing; `mmpipe contracts init` writes a new one") from None
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
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    return SuiteFile(layer, kind, path, sha256_file(path), content["name"], entries, meta)


def build_gx_expectations(suite: SuiteFile) -> list:
    """GX expectation objects for every entry of `suite`; any entry GX refuses is an error naming it."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for index, entry in enumerate(suite.expectations):
        try:
            # GX reorders results; the suite label and index in meta tie each result back to its entry.
            meta = {**(entry.get("meta") or {}), INDEX_META: index, SUITE_META: suite.label}
            configuration = ExpectationConfiguration(
                type=entry["type"], kwargs=entry.get("kwargs", {}), meta=meta, severity=entry["severity"]
            )
            built.append(configuration.to_domain_obj())
        except Exception as error:  # noqa: BLE001 - GX raises many types for a bad entry; all mean the same
            raise ContractFileError(
                f"{suite.path}: expectation #{index + 1} ({entry['type']}) is not valid for Great Expectations: {error}"
            ) from None
    return built


def build_gx_suite(name: str, suites: list[SuiteFile]):
    """One GX ExpectationSuite running the entries of several suite files together (one pass over the data)."""
    import great_expectations as gx

    built = [expectation for suite in suites for expectation in build_gx_expectations(suite)]
    gx_suite = gx.ExpectationSuite(name=name, expectations=built)
    if len(gx_suite.expectations) != len(built):
        paths = ", ".join(str(suite.path) for suite in suites)
        raise ContractFileError(f"{paths}: Great Expectations kept {len(gx_suite.expectations)} of {len(built)} "
                                "expectations; fix or remove the rejected ones")
    return gx_suite


def describe_expectation(entry: dict[str, Any]) -> str:
    """A short human name: meta.name if given, else `type(column)`."""
    meta = entry.get("meta") or {}
    if meta.get("name"):
        return str(meta["name"])
    kwargs = entry.get("kwargs", {})
    target = kwargs.get("column") or ("table" if "column" not in kwargs else "")
    return f"{entry['type']}({target})"


def class_set_entry(suite: SuiteFile) -> dict[str, Any] | None:
    """The entry that fixes the class set: `expect_column_values_to_be_in_set` on `label`, if the suite has one."""
    return next((entry for entry in suite.expectations if entry["type"] == "expect_column_values_to_be_in_set"
                 and entry.get("kwargs", {}).get("column") == "label"), None)


def suite_text(name: str, expectations: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A suite file's text, the way people will read and edit it: sorted keys, one entry per block."""
    return json_text({"name": name, "meta": meta, "expectations": expectations})


def write_suite(path: Path, name: str, expectations: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    write_json_atomic(path, {"name": name, "meta": meta, "expectations": expectations})


def unwritten_suite(layer: str, kind: str, path: Path, name: str, expectations: list[dict[str, Any]],
                    meta: dict[str, Any]) -> SuiteFile:
    """A suite not yet on disk, with the hash its file will have once `write_suite` writes it."""
    digest = hashlib.sha256(suite_text(name, expectations, meta).encode("utf-8")).hexdigest()
    return SuiteFile(layer, kind, path, digest, name, expectations, meta)

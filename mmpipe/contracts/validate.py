"""Validate a dataset version against both layers of contracts, apply the severity policy, cache, persist.

Shards are validated with the `shards` suites and the version as a whole with the `dataset` suites;
the project and source suites of one kind run together in one GX pass. Shards that share a column
set are validated together too (GX's fixed cost per run is ~0.3 s; per shard it would dominate);
only when such a batch fails are its shards re-run one by one, so each failure is pinned to its
shard. Results are cached by (shard content hash, suite file hashes, the parameters the suites use),
so an unchanged shard under unchanged suites costs nothing; a shard is re-hashed whenever its size
or mtime differs from what ingest recorded, so a stored verdict never outlives the file it describes.

A data dir without source suites gets them inferred from this version (see infer.py) when it
passes the project suites; the inferred suites run in the same pass and must pass on it.
gx.py runs GX; verdict.py holds what comes out; page.py writes the page people read (index.html).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from mmpipe.config import SPLITS, Config
from mmpipe.contracts.frames import (
    contract_parameters,
    dataset_config,
    dataset_frame,
    dataset_statistics,
    frame_of,
    shard_table,
    split_shares,
)
from mmpipe.contracts.gx import GreatExpectations, outcomes_of, parameters_used, without_source
from mmpipe.contracts.infer import inferred_suites, save_suites
from mmpipe.contracts.page import PAGE_FILE, write_page
from mmpipe.contracts.suites import (
    INFERRED,
    NOT_YET,
    SOURCE,
    Contracts,
    SuiteFile,
    class_set_entry,
    describe_expectation,
    load_contracts,
)
from mmpipe.contracts.verdict import Outcome, ValidationReport
from mmpipe.errors import DataDirError
from mmpipe.files import stable_hash, write_json_atomic
from mmpipe.ingest.version import DatasetVersion, data_dir_lock, load_dataset
from mmpipe.wording import counted, first_line

VALIDATION_DIR = "validation"
REFERENCE_FILE = "reference.json"
RESULT_FILE = "result.json"
# Part of every cache key: results written by an older layout of this module are never reused.
CACHE_FORMAT = 2
INTEGRITY = "files"


def validation_dir(data_dir: Path, dataset_version: str) -> Path:
    return Path(data_dir) / VALIDATION_DIR / dataset_version


def read_reference(data_dir: Path) -> dict[str, Any] | None:
    """The drift reference: statistics of the last version that passed and was trained on."""
    path = Path(data_dir) / VALIDATION_DIR / REFERENCE_FILE
    if not path.is_file():
        return None
    reference = _read_json(path)
    if reference is None or not {"dataset_version", "label_weights", "medians"} <= set(reference):
        raise DataDirError(f"{path} is damaged; delete it (the next passing version becomes the reference)")
    return reference


def set_reference(data_dir: Path, dataset_version: str) -> None:
    """Make a validated version the drift reference (training calls this for the version it used)."""
    result = json.loads((validation_dir(data_dir, dataset_version) / RESULT_FILE).read_text())
    write_json_atomic(Path(data_dir) / VALIDATION_DIR / REFERENCE_FILE,
                      {"dataset_version": dataset_version, **result["statistics"]})


def validate_dataset(data_dir: Path, config: Config) -> ValidationReport:
    """Validate the data dir's current dataset version; never raises for failed expectations.

    Raises:
        DataDirError: no dataset in `data_dir`, or a shard it lists is missing.
        ContractFileError: a suite file is missing, malformed or rejected by GX.
    """
    with data_dir_lock(data_dir):  # it writes results, suites and the reference into the data dir
        return _validate(Path(data_dir).absolute(), config)


def _validate(data_dir: Path, config: Config) -> ValidationReport:
    started = time.perf_counter()
    version = load_dataset(data_dir)
    config = dataset_config(version, config)
    contracts = load_contracts(data_dir, config)
    reference = read_reference(data_dir)
    out_dir = validation_dir(data_dir, version.version)
    shard_hashes = version.current_shard_hashes()

    def run_key(contracts: Contracts) -> str:
        recorded = {entry.path: entry.sha256 for entry in version.shards}  # what dataset.json claims, edited or not
        return stable_hash([CACHE_FORMAT, version.version, recorded, shard_hashes, contracts.hashes(),
                            config.contracts.model_dump(mode="json", exclude={"suites_dir"}),
                            config.image.size, config.text.model_dump(), config.ingest.split_ratios.model_dump(),
                            reference["dataset_version"] if reference else version.version])

    previous = _read_json(out_dir / RESULT_FILE)
    if previous is not None and previous.get("run_key") == run_key(contracts):
        here = {"contracts": contracts.describe(), "page": str(out_dir / PAGE_FILE)}
        if any(previous.get(key) != value for key, value in here.items()):  # the data dir was moved or copied
            previous = {**previous, **here}  # the same verdict, about the files where they are now
            write_json_atomic(out_dir / RESULT_FILE, previous)
            _publish_page(out_dir, previous, version)
        elif not (out_dir / PAGE_FILE).is_file():  # validated by an older mmpipe, or stopped before the page
            _publish_page(out_dir, previous, version)
        return _report_from(previous, out_dir, reused=True, seconds=time.perf_counter() - started)
    run = _Run(data_dir, version, config, shard_hashes)
    inferring = contracts.source is None and run.dataset_frame().shape[0] > 0  # nothing to learn from no rows
    if inferring:  # candidates: kept only if this version passes the project suites
        candidates = inferred_suites(contracts.source_dir, version, run.tables(), run.dataset_frame())
        contracts = replace(contracts, source=candidates, source_origin=INFERRED)
    statistics = dataset_statistics(run.dataset_frame())
    reference_used = reference or {"dataset_version": "self", **statistics}
    parameters = contract_parameters(version, config, reference_used)
    shard_results = run.validate_shards(contracts.suites("shards"), parameters)
    dataset_result = run.validate_dataset(contracts.suites("dataset"), parameters)
    outcomes = _integrity_outcomes(version, shard_hashes)
    rows = {entry.path: entry.rows for entry in version.shards} | {"dataset": len(run.dataset_frame())}
    for kind, results in (("shards", shard_results), ("dataset", {"dataset": dataset_result})):
        outcomes += [o for suite in contracts.suites(kind) for o in outcomes_of(suite, results, rows)]
    if inferring:
        if all(o.success for o in outcomes if o.severity == "critical" and not o.suite.startswith(SOURCE)):
            save_suites(contracts.source)
        else:  # a version that fails the project suites teaches nothing about its source
            outcomes = [o for o in outcomes if not o.suite.startswith(SOURCE)]
            shard_results = {scope: without_source(result) for scope, result in shard_results.items()}
            dataset_result = without_source(dataset_result)
            contracts = replace(contracts, source=None, source_origin=NOT_YET)
            inferring = False
    _explain_new_classes(outcomes, contracts, run, data_dir)
    _explain_train_counts(outcomes, run, config.contracts.min_train_per_class)
    _explain_split_shares(outcomes, run, config, parameters["split_tolerance"])
    success = all(o.success for o in outcomes if o.severity == "critical")
    result = {
        "run_key": run_key(contracts), "dataset_version": version.version, "success": success,
        "outcomes": [asdict(o) for o in outcomes], "reference": reference_used["dataset_version"],
        "statistics": statistics, "parameters": parameters, "contracts": contracts.describe(),
        "inferred": inferring, "shards": shard_hashes,
        "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "page": str(out_dir / PAGE_FILE),
    }
    write_json_atomic(out_dir / RESULT_FILE, result)
    _publish_page(out_dir, result, version)  # after result.json, which it links to and is rendered from
    if success and reference is None:
        set_reference(data_dir, version.version)  # the first passing version anchors drift checks
    return _report_from(result, out_dir, reused=False, seconds=time.perf_counter() - started)


def _integrity_outcomes(version: DatasetVersion, shard_hashes: dict[str, str]) -> list[Outcome]:
    """A critical outcome: every shard file is still the one ingest wrote (a changed shard is named)."""
    changed = [entry.path for entry in version.shards if shard_hashes[entry.path] != entry.sha256]
    observed = (f"{counted(len(changed), 'shard')} not as recorded in dataset.json (sha256): {', '.join(changed)}"
                if changed else "every shard matches its recorded sha256")
    return [Outcome(suite=INTEGRITY, expectation="shard files unchanged since ingest", severity="critical",
                    success=not changed, observed=observed, shards=changed,
                    check="sha256(shard file) == dataset.json",
                    hint=f"something rewrote {'it' if len(changed) == 1 else 'them'} after ingest; run `mmpipe ingest` "
                    "again to rebuild the dataset"
                    if changed else "")]


def _publish_page(out_dir: Path, result: dict[str, Any], version: DatasetVersion) -> None:
    write_page(out_dir, result, version, RESULT_FILE)
    # GX Data Docs written by an older mmpipe: broken offline (see page.py), so nobody should open them.
    shutil.rmtree(out_dir / "docs", ignore_errors=True)


def _explain_train_counts(outcomes: list[Outcome], run: _Run, minimum: int) -> None:
    """The train-count check names classes and their train rows instead of GX's count of rows."""
    frame = run.dataset_frame()
    for outcome in outcomes:
        if outcome.check.endswith("(train_count_of_label)") and not frame.empty:
            counts = frame.groupby("label")["train_count_of_label"].first()
            small = ", ".join(f"{label!r} ({count})" for label, count in sorted(counts.items()) if count < minimum)
            fewest = counts.idxmin()
            outcome.observed = (f"train rows per class under {minimum}: {small}" if small else
                                f"every class has at least {minimum} train rows (fewest: {fewest!r}, "
                                f"{counts[fewest]})")


def _explain_split_shares(outcomes: list[Outcome], run: _Run, config: Config, tolerance: float) -> None:
    """The split-share check shows each split's share and the configured ratio, not a count of rows;
    its example ids are dropped (every row of an off split would qualify, which says nothing)."""
    frame = run.dataset_frame()
    for outcome in outcomes:
        if outcome.check.endswith("(split_share_error)") and not frame.empty:
            shares, ratios = split_shares(frame), config.ingest.split_ratios.model_dump()
            observed = ", ".join(f"{split} {shares.get(split, 0.0):.2f}" for split in SPLITS)
            expected = ", ".join(f"{split} {ratios[split]:.2f}" for split in SPLITS)
            outcome.observed = f"{observed} (expected {expected}, each within {tolerance:g})"
            outcome.examples = []


def _explain_new_classes(outcomes: list[Outcome], contracts: Contracts, run: _Run, data_dir: Path) -> None:
    """A failed class-set check names the unknown classes, their row counts and the command that accepts them."""
    if contracts.source is None:
        return
    entry = class_set_entry(contracts.source["shards"])
    if entry is None:
        return
    name = describe_expectation(entry)
    for outcome in outcomes:
        if outcome.suite == contracts.source["shards"].label and outcome.expectation == name and not outcome.success:
            counts = run.dataset_frame()["label"].value_counts()
            known = set(entry["kwargs"].get("value_set") or [])
            unknown = {str(label): int(count) for label, count in counts.items() if label not in known}
            shown = ", ".join(f"{label!r} ({counted(count, 'row')})" for label, count in sorted(unknown.items()))
            outcome.observed = f"classes the source contracts do not know: {shown}"
            outcome.hint = (f"if they are real classes, accept them with `mmpipe contracts accept-classes --data "
                            f"{data_dir}`; otherwise fix their labels and ingest again")


class _Run:
    """State of one validation: frames read once, GX started only if a cache misses."""

    def __init__(self, data_dir: Path, version: DatasetVersion, config: Config, shard_hashes: dict[str, str]):
        self.data_dir, self.version, self.config, self.shard_hashes = data_dir, version, config, shard_hashes
        self.cache_dir = data_dir / VALIDATION_DIR / "cache"
        self._tables: dict[str, Any] = {}
        self._dataset_frame = None
        self._gx: GreatExpectations | None = None

    def table(self, shard_path: str):
        if shard_path not in self._tables:
            import pyarrow as pa

            try:
                self._tables[shard_path] = shard_table(self.data_dir / shard_path)
            except (pa.ArrowException, OSError) as error:  # truncated or overwritten since ingest
                raise DataDirError(f"shard {shard_path} cannot be read ({first_line(error)}): it is not the "
                                   "file ingest wrote; re-run `mmpipe ingest` to rebuild the dataset") from None
        return self._tables[shard_path]

    def tables(self) -> list:
        return [self.table(entry.path) for entry in self.version.shards]

    def dataset_frame(self):
        if self._dataset_frame is None:
            self._dataset_frame = dataset_frame(self.tables(), self.config)
        return self._dataset_frame

    @property
    def gx(self) -> GreatExpectations:
        if self._gx is None:
            self._gx = GreatExpectations()
        return self._gx

    def validate_shards(self, suites: list[SuiteFile], parameters: dict[str, Any]) -> dict[str, dict]:
        used = parameters_used(suites, parameters)
        hashes = [suite.sha256 for suite in suites]
        results: dict[str, dict] = {}
        pending: dict[tuple, list[dict]] = {}
        for entry in self.version.shards:
            key = stable_hash([CACHE_FORMAT, self.shard_hashes[entry.path], hashes, used])
            cached = _read_json(self.cache_dir / f"shard-{key}.json")
            if cached is not None:
                results[entry.path] = cached
                continue
            table = self.table(entry.path)
            pending.setdefault((tuple(table.column_names), table.num_rows == 0), []).append((entry.path, key))
        for group in pending.values():
            together = self.gx.run(suites, frame_of([self.table(path) for path, _ in group]), used)
            for path, key in group:
                # A clean batch result is true of each shard in it; anything else is pinned per shard.
                shared = together["success"] or len(group) == 1
                alone = together if shared else self.gx.run(suites, frame_of([self.table(path)]), used)
                write_json_atomic(self.cache_dir / f"shard-{key}.json", alone, pretty=False)
                results[path] = alone
        return results

    def validate_dataset(self, suites: list[SuiteFile], parameters: dict[str, Any]) -> dict:
        used = parameters_used(suites, parameters)
        key = stable_hash([CACHE_FORMAT, self.version.version, list(self.shard_hashes.values()),
                           [suite.sha256 for suite in suites], used])
        cached = _read_json(self.cache_dir / f"dataset-{key}.json")
        if cached is not None:
            return cached
        result = self.gx.run(suites, self.dataset_frame(), used)
        write_json_atomic(self.cache_dir / f"dataset-{key}.json", result, pretty=False)
        return result


def _report_from(result: dict, out_dir: Path, reused: bool, seconds: float) -> ValidationReport:
    return ValidationReport(
        dataset_version=result["dataset_version"], success=result["success"],
        outcomes=[Outcome(**o) for o in result["outcomes"]], report=out_dir / RESULT_FILE,
        page=out_dir / PAGE_FILE, reference=result["reference"], contracts=result["contracts"],
        inferred=result["inferred"] and not reused, reused=reused, seconds=round(seconds, 3),
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None

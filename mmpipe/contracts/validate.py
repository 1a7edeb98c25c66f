"""Validate a dataset version against the suites, apply the severity policy, cache and persist.

Shards are validated with the `shards` suite and the version as a whole with the `dataset` suite.
Shards that share a column set are validated together in one GX run (GX's fixed cost per run is
~0.3 s; per shard it would dominate); only when such a batch fails are its shards re-run one by
one, so each failure is pinned to its shard. Results are cached by (shard hash, suite file hash,
the parameters the suite uses), so an unchanged shard under an unchanged suite costs nothing.
GX is imported only when something has to be validated, and runs in this thread only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.contracts.frames import (
    contract_parameters,
    dataset_config,
    dataset_frame,
    dataset_statistics,
    frame_of,
    shard_table,
)
from mmpipe.contracts.suites import INDEX_META, SuiteFile, build_gx_suite, describe_expectation, read_suites
from mmpipe.dataset import DatasetVersion, load_dataset
from mmpipe.errors import DataDirError
from mmpipe.files import stable_hash, write_json_atomic

VALIDATION_DIR = "validation"
REFERENCE_FILE = "reference.json"
RESULT_FILE = "result.json"
EXAMPLES = 10
RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"], "partial_unexpected_count": 20}


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

    def describe(self) -> dict[str, Any]:
        return {"expectation": self.expectation, "severity": self.severity, "observed": self.observed,
                "examples": self.examples, "suite": self.suite, "shards": self.shards}


@dataclass
class ValidationReport:
    """The verdict on one dataset version. `success` is False when any critical expectation failed."""

    dataset_version: str
    success: bool
    outcomes: list[Outcome]
    report: Path
    docs: Path
    reference: str
    reused: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    def summary(self) -> dict[str, Any]:
        """The object `mmpipe validate --json` prints."""
        return {
            "dataset_version": self.dataset_version,
            "success": self.success,
            "failed": [o.describe() for o in self.failed],
            "warnings": [o.describe() for o in self.warnings],
            "report": str(self.report),
        }

    def failure_message(self) -> str:
        """One paragraph naming each failed critical expectation, what was observed and offending ids."""
        parts = []
        for outcome in self.failed:
            ids = f"; ids: {', '.join(outcome.examples)}" if outcome.examples else ""
            parts.append(f"{outcome.expectation} [{outcome.suite}] observed {_short(outcome.observed)}{ids}")
        return (f"dataset {self.dataset_version} failed {len(parts)} critical expectation(s): "
                + " | ".join(parts) + f". Details: {self.report}")

    def to_markdown(self) -> str:
        verdict = "passed" if self.success else "FAILED"
        lines = [f"# Validation of dataset `{self.dataset_version}`: {verdict}", "",
                 f"{len(self.failed)} critical failure(s), {len(self.warnings)} warning(s), "
                 f"{len(self.outcomes)} expectations. Drift reference: `{self.reference}`. Report: `{self.report}`.",
                 "", "| suite | expectation | severity | result | observed | examples |",
                 "|---|---|---|---|---|---|"]
        for o in sorted(self.outcomes, key=lambda o: (o.success, o.severity != "critical")):
            mark = "pass" if o.success else ("**FAIL**" if o.severity == "critical" else "warn")
            examples = ", ".join(f"`{e}`" for e in o.examples[:5])
            observed = _short(o.observed)
            lines.append(f"| {o.suite} | `{o.expectation}` | {o.severity} | {mark} | {observed} | {examples} |")
        return "\n".join(lines) + "\n"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        DataDirError: no dataset in `data_dir`.
        ContractFileError: a suite file is missing, malformed or rejected by GX.
    """
    started = time.perf_counter()
    data_dir = Path(data_dir).absolute()
    version = load_dataset(data_dir)
    config = dataset_config(version, config)
    suites = read_suites(config)
    reference = read_reference(data_dir)
    out_dir = validation_dir(data_dir, version.version)
    run_key = stable_hash([version.version, [entry["sha256"] for entry in version.manifest["shards"]],
                           {k: s.sha256 for k, s in suites.items()},
                           config.contracts.model_dump(mode="json", exclude={"suites_dir"}),
                           config.image.size, config.text.model_dump(), config.ingest.split_ratios.model_dump(),
                           reference["dataset_version"] if reference else version.version])
    previous = _read_json(out_dir / RESULT_FILE)
    if previous is not None and previous.get("run_key") == run_key:
        return _report_from(previous, out_dir, reused=True, seconds=time.perf_counter() - started)
    run = _Run(data_dir, version, config, suites)
    statistics = dataset_statistics(run.dataset_frame())
    reference_used = reference or {"dataset_version": "self", **statistics}
    parameters = contract_parameters(version, config, reference_used)
    shard_results = run.validate_shards(parameters)
    dataset_result = run.validate_dataset(parameters)
    outcomes = _outcomes(suites["shards"], shard_results) + _outcomes(suites["dataset"], {"dataset": dataset_result})
    success = all(o.success for o in outcomes if o.severity == "critical")
    docs = _write_docs(out_dir / "docs", shard_results, dataset_result)
    result = {
        "run_key": run_key, "dataset_version": version.version, "success": success,
        "outcomes": [asdict(o) for o in outcomes], "reference": reference_used["dataset_version"],
        "statistics": statistics, "parameters": parameters,
        "suites": {kind: {"path": str(s.path), "sha256": s.sha256} for kind, s in suites.items()},
        "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "docs": str(docs),
    }
    write_json_atomic(out_dir / RESULT_FILE, result)
    if success and reference is None:
        set_reference(data_dir, version.version)  # the first passing version anchors drift checks
    return _report_from(result, out_dir, reused=False, seconds=time.perf_counter() - started)


class _Run:
    """State of one validation: frames read once, GX started only if a cache misses."""

    def __init__(self, data_dir: Path, version: DatasetVersion, config: Config, suites: dict[str, SuiteFile]):
        self.data_dir, self.version, self.config, self.suites = data_dir, version, config, suites
        self.cache_dir = data_dir / VALIDATION_DIR / "cache"
        self._tables: dict[str, Any] = {}
        self._dataset_frame = None
        self._gx: _GreatExpectations | None = None

    def table(self, shard_path: str):
        if shard_path not in self._tables:
            try:
                self._tables[shard_path] = shard_table(self.data_dir / shard_path)
            except FileNotFoundError:
                raise DataDirError(f"shard {shard_path} listed in dataset.json is missing; re-run `mmpipe ingest`"
                                   ) from None
        return self._tables[shard_path]

    def dataset_frame(self):
        if self._dataset_frame is None:
            shards = [self.table(e["path"]) for e in self.version.manifest["shards"]]
            self._dataset_frame = dataset_frame(shards, self.config)
        return self._dataset_frame

    @property
    def gx(self) -> _GreatExpectations:
        if self._gx is None:
            self._gx = _GreatExpectations()
        return self._gx

    def validate_shards(self, parameters: dict[str, Any]) -> dict[str, dict]:
        suite = self.suites["shards"]
        used = _parameters_used(suite, parameters)
        results: dict[str, dict] = {}
        pending: dict[tuple, list[dict]] = {}
        for entry in self.version.manifest["shards"]:
            key = stable_hash([entry["sha256"], suite.sha256, used])
            cached = _read_json(self.cache_dir / f"shard-{key}.json")
            if cached is not None:
                results[entry["path"]] = cached
                continue
            table = self.table(entry["path"])
            pending.setdefault((tuple(table.column_names), table.num_rows == 0), []).append({**entry, "key": key})
        for entries in pending.values():
            together = self.gx.run(suite, frame_of([self.table(e["path"]) for e in entries]), used)
            for entry in entries:
                # A clean batch result is true of each shard in it; anything else is pinned per shard.
                shared = together["success"] or len(entries) == 1
                alone = together if shared else self.gx.run(suite, frame_of([self.table(entry["path"])]), used)
                write_json_atomic(self.cache_dir / f"shard-{entry['key']}.json", alone, pretty=False)
                results[entry["path"]] = alone
        return results

    def validate_dataset(self, parameters: dict[str, Any]) -> dict:
        suite = self.suites["dataset"]
        used = _parameters_used(suite, parameters)
        key = stable_hash([self.version.version, suite.sha256, used])
        cached = _read_json(self.cache_dir / f"dataset-{key}.json")
        if cached is not None:
            return cached
        result = self.gx.run(suite, self.dataset_frame(), used)
        write_json_atomic(self.cache_dir / f"dataset-{key}.json", result, pretty=False)
        return result


class _GreatExpectations:
    """An ephemeral GX context: one pandas batch definition, one validation definition per suite."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("mmpipe").add_dataframe_asset("derived")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._definitions: dict[str, Any] = {}

    def run(self, suite: SuiteFile, frame, parameters: dict[str, Any]) -> dict:
        # A ValidationDefinition loads the batch once (Batch.validate loads and fingerprints it twice).
        if suite.sha256 not in self._definitions:
            gx_suite = build_gx_suite(suite)
            gx_suite.name = f"{suite.name}-{suite.sha256[:12]}"
            definition = self.gx.ValidationDefinition(
                name=gx_suite.name, data=self.batch_definition, suite=self.context.suites.add(gx_suite)
            )
            self._definitions[suite.sha256] = self.context.validation_definitions.add(definition)
        result = self._definitions[suite.sha256].run(
            batch_parameters={"dataframe": frame}, expectation_parameters=parameters, result_format=RESULT_FORMAT
        )
        return json.loads(json.dumps(result.to_json_dict(), default=str))  # plain JSON types only


def _parameters_used(suite: SuiteFile, parameters: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters a suite refers to: a reference change must not invalidate shard results."""
    text = json.dumps(suite.expectations)
    return {name: value for name, value in parameters.items() if f'"$PARAMETER": "{name}"' in text}


def _outcomes(suite: SuiteFile, results: dict[str, dict]) -> list[Outcome]:
    """One Outcome per expectation of `suite`, merged over the scopes (shards) it ran on."""
    by_index = {scope: {item["expectation_config"]["meta"][INDEX_META]: item for item in result["results"]}
                for scope, result in results.items()}
    outcomes = []
    if not by_index:
        return outcomes  # no shards: only the dataset suite speaks
    for index, entry in enumerate(suite.expectations):
        failing = [(scope, items[index]) for scope, items in by_index.items() if not items[index]["success"]]
        first = failing[0][1] if failing else next(iter(by_index.values()))[index]
        examples: list[str] = []
        for _, item in failing:
            for row in item["result"].get("partial_unexpected_index_list", []):
                if "id" in row and str(row["id"]) not in examples:
                    examples.append(str(row["id"]))
        outcomes.append(Outcome(
            suite=suite.kind, expectation=describe_expectation(entry), severity=entry["severity"],
            success=not failing, observed=_observed(first), examples=examples[:EXAMPLES],
            shards=[scope for scope, _ in failing if scope != "dataset"],
        ))
    return outcomes


def _observed(item: dict) -> Any:
    info = item["exception_info"]
    # GX reports one error directly, or several keyed by the metric that raised them.
    errors = [info] if "raised_exception" in info else list(info.values())
    messages = sorted({e.get("exception_message") for e in errors if e.get("raised_exception")})
    if messages:
        return "error: " + "; ".join(str(message) for message in messages)
    result = item["result"]
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        values = result.get("partial_unexpected_list", [])[:5]
        examples = f", e.g. {values}" if values else ""
        return f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected{examples}"
    return result


def _report_from(result: dict, out_dir: Path, reused: bool, seconds: float) -> ValidationReport:
    return ValidationReport(
        dataset_version=result["dataset_version"], success=result["success"],
        outcomes=[Outcome(**o) for o in result["outcomes"]], report=out_dir / RESULT_FILE,
        docs=Path(result["docs"]), reference=result["reference"], reused=reused, seconds=round(seconds, 3),
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_docs(folder: Path, shard_results: dict[str, dict], dataset_result: dict) -> Path:
    """GX Data Docs pages (one per distinct result) and an index that links them."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    from mmpipe.files import atomic_path

    pages: dict[str, tuple[str, bool]] = {}
    rendered: dict[int, str] = {}
    view, renderer = DefaultJinjaPageView(), ValidationResultsPageRenderer()  # templates compile once
    for scope, result in [("dataset", dataset_result), *shard_results.items()]:
        name = "dataset.html" if scope == "dataset" else Path(scope).stem + ".html"
        if id(result) not in rendered:  # shards validated together share one page
            suite_result = ExpectationSuiteValidationResult(
                success=result["success"], suite_name=result["suite_name"], statistics=result["statistics"],
                meta=result["meta"], suite_parameters=result.get("suite_parameters", {}),
                results=[ExpectationValidationResult(
                    success=item["success"], expectation_config=ExpectationConfiguration(**item["expectation_config"]),
                    result=item["result"], meta=item["meta"], exception_info=item["exception_info"],
                ) for item in result["results"]],
            )
            html = view.render(renderer.render(suite_result))
            with atomic_path(folder / name) as temp:
                temp.write_text(html, encoding="utf-8")
            rendered[id(result)] = name
        pages[scope] = (rendered[id(result)], result["success"])
    links = "\n".join(f'<li><a href="{page}">{scope}</a>: {"passed" if ok else "failed"}</li>'
                      for scope, (page, ok) in pages.items())
    index = folder / "index.html"
    with atomic_path(index) as temp:
        temp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>mmpipe validation</title></head>"
                        f"<body><h1>Validation results</h1><ul>\n{links}\n</ul></body></html>\n", encoding="utf-8")
    return index

"""Great Expectations glue: run several suite files as one GX suite over a frame, read results back.

GX is imported only when something has to be validated, and runs in the caller's thread only
(it is not thread-safe).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mmpipe.contracts.suites import INDEX_META, SOURCE, SUITE_META, SuiteFile, build_gx_suite, describe_expectation
from mmpipe.contracts.verdict import Outcome
from mmpipe.files import stable_hash
from mmpipe.wording import counted

EXAMPLES = 10
# What a single observed value measures, as its wording starts.
MEASURES = {"expect_column_median_to_be_between": "median ", "expect_column_mean_to_be_between": "mean ",
            "expect_column_kl_divergence_to_be_less_than": "KL divergence ",
            "expect_column_unique_value_count_to_be_between": "distinct values: "}
ROW_COUNTS = ("expect_table_row_count_to_be_between", "expect_table_row_count_to_equal")
RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"], "partial_unexpected_count": 20}


class GreatExpectations:
    """An ephemeral GX context: one pandas batch definition, one validation definition per set of suites."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        # An ephemeral context logs "Created temporary directory ... for ephemeral docs site" at INFO,
        # into flow-run logs too: a line about a folder mmpipe never uses.
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("mmpipe").add_dataframe_asset("derived")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._definitions: dict[str, Any] = {}

    def run(self, suites: list[SuiteFile], frame, parameters: dict[str, Any]) -> dict:
        """Run several suite files' entries as one GX suite over `frame` (one pass over the data)."""
        key = stable_hash([suite.sha256 for suite in suites], 12)
        # A ValidationDefinition loads the batch once (Batch.validate loads and fingerprints it twice).
        if key not in self._definitions:
            name = "+".join(suite.label for suite in suites) + f"-{key}"
            definition = self.gx.ValidationDefinition(
                name=name, data=self.batch_definition, suite=self.context.suites.add(build_gx_suite(name, suites))
            )
            self._definitions[key] = self.context.validation_definitions.add(definition)
        result = self._definitions[key].run(
            batch_parameters={"dataframe": frame}, expectation_parameters=parameters, result_format=RESULT_FORMAT
        )
        return json.loads(json.dumps(result.to_json_dict(), default=str))  # plain JSON types only


def parameters_used(suites: list[SuiteFile], parameters: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters the suites refer to: a reference change must not invalidate shard results."""
    text = json.dumps([suite.expectations for suite in suites])
    return {name: value for name, value in parameters.items() if f'"$PARAMETER": "{name}"' in text}


def outcomes_of(suite: SuiteFile, results: dict[str, dict], rows: dict[str, int]) -> list[Outcome]:
    """One Outcome per expectation of `suite`, merged over the scopes (shards) it ran on; `rows` per scope."""
    by_index = {scope: {item["expectation_config"]["meta"][INDEX_META]: item for item in result["results"]
                        if item["expectation_config"]["meta"].get(SUITE_META) == suite.label}
                for scope, result in results.items()}
    outcomes = []
    if not by_index:
        return outcomes  # no shards: only the dataset suites speak
    for index, entry in enumerate(suite.expectations):
        failing = [(scope, items[index]) for scope, items in by_index.items() if not items[index]["success"]]
        examples: list[str] = []
        for _, item in failing:
            for row in item["result"].get("partial_unexpected_index_list", []):
                if "id" in row and str(row["id"]) not in examples:
                    examples.append(str(row["id"]))
        if failing:  # a failing result is always one shard's own (a failed batch is re-run shard by shard)
            observed = _observed([item for _, item in failing])
        else:  # a passing one may be a batch's, cached from another version: rows come from the scopes
            observed = _observed([next(iter(by_index.values()))[index]], [rows[scope] for scope in by_index])
        outcomes.append(Outcome(
            suite=suite.label, expectation=describe_expectation(entry), severity=entry["severity"],
            success=not failing, observed=observed, examples=examples[:EXAMPLES],
            shards=[scope for scope, _ in failing if scope != "dataset"], check=_check_name(entry),
            hint=str((entry.get("meta") or {}).get("hint", "")) if failing else "",
        ))
    return outcomes


def _check_name(entry: dict[str, Any]) -> str:
    """`type(column)`: what GX checked, whatever the entry's human name."""
    kwargs = entry.get("kwargs", {})
    target = kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or "table"
    return f"{entry['type']}({target})"


def _observed(items: list[dict], rows: list[int] | None = None) -> str:
    """What GX observed, in words, summed over the scopes (shards) an expectation ran on; `rows`: the
    scopes' row counts, where the items may describe other rows too."""
    errors = []
    for item in items:
        info = item["exception_info"]
        # GX reports one error directly, or several keyed by the metric that raised them.
        errors += [info] if "raised_exception" in info else list(info.values())
    messages = sorted({e.get("exception_message") for e in errors if e.get("raised_exception")})
    if messages:
        return "error: " + "; ".join(str(message) for message in messages)
    results = [item["result"] for item in items]
    kwargs = items[0]["expectation_config"].get("kwargs", {})
    if all("unexpected_count" in result for result in results):
        unexpected = sum(result["unexpected_count"] for result in results)
        total = sum(rows) if rows is not None else sum(result.get("element_count") or 0 for result in results)
        if not total:
            return "no rows to check"
        values = list(dict.fromkeys(str(value) for result in results
                                    for value in result.get("partial_unexpected_list", [])))[:5]
        examples = f", e.g. {', '.join(values)}" if values else ""
        return f"{unexpected} of {counted(total, 'row')} unexpected{examples}{_expected(kwargs)}"
    first = results[0]
    if "partial_missing_list" in first:  # "contains the set": GX reports what is missing, not what was seen
        missing, wanted = sorted(first["partial_missing_list"], key=str), kwargs.get("value_set") or []
        present = [value for value in wanted if value not in missing]
        if not missing:
            return f"all {len(wanted)} present: {names(wanted)}"
        return f"missing: {names(missing)}" + (f" (present: {names(present)})" if present else " (none present)")
    mismatched = (first.get("details") or {}).get("mismatched")
    if mismatched:  # a column set: name what is missing or extra, not the whole observed list
        return "; ".join(f"{key} columns: {names(value)}" for key, value in mismatched.items() if value)
    if "observed_value" in first:
        value = first["observed_value"]
        if value is None:  # GX computes no median, KL divergence ... over no values
            return "nothing to measure: no values in this column"
        if isinstance(value, list):
            return names(value, limit=20)
        kind = items[0]["expectation_config"]["type"]
        if kind not in ROW_COUNTS:
            return f"{MEASURES.get(kind, '')}{number(value)}{_expected(kwargs)}"
        if rows is not None and len(rows) > 1:
            return f"{counted(len(rows), 'shard')}, the smallest with {counted(min(rows), 'row')}{_expected(kwargs)}"
        return counted(rows[0] if rows else value, "row") + _expected(kwargs)
    return json.dumps(first, default=str)


def _expected(kwargs: dict[str, Any]) -> str:
    """The bounds an expectation allows, as ` (expected 1 to 300)`, or nothing when it has none."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if "threshold" in kwargs:
        return f" (expected under {number(kwargs['threshold'])})"
    if low is not None and high is not None:
        return f" (expected {number(low)} to {number(high)})" if low != high else f" (expected {number(low)})"
    if low is not None:
        return f" (expected at least {number(low)})"
    if high is not None:
        return f" (expected at most {number(high)})"
    return ""


def number(value: Any) -> str:
    """A measured number as people read it: 57, 181.9, 0.15, 4.844e-09."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def names(values: list, limit: int = 10) -> str:
    """Up to `limit` names, then how many more: a class set of thousands stays one readable line."""
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def without_source(result: dict) -> dict:
    """A GX result without the source suites' entries (candidates that were not kept)."""
    kept = [item for item in result["results"]
            if not str(item["expectation_config"]["meta"].get(SUITE_META, "")).startswith(SOURCE)]
    return {**result, "results": kept, "success": all(item["success"] for item in kept)}

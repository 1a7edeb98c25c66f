"""Source suites: inferred from one dataset version (like TFX's SchemaGen), then reviewed by people.

What a version shows about its source becomes a suite: the class set (critical: a new class is a
decision, not an accident), observed ranges with a margin, the formats seen, every class present
and enough train rows per class, split shares, one split per image, and drift from the reference
(all warnings). Only the class set is critical, because everything else that happens to hold on
the first version (a tiny class, an image shared across splits by a given split column) may be
luck; an inferred suite must always pass on the version it came from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mmpipe.config import Config
from mmpipe.contracts.frames import STAT_COLUMNS
from mmpipe.contracts.suites import (
    INFERRED,
    SOURCE,
    SUITE_FILES,
    SuiteFile,
    class_set_entry,
    load_contracts,
    source_suites_location,
    unwritten_suite,
    write_suite,
)
from mmpipe.errors import ContractFileError
from mmpipe.ingest.version import DatasetVersion, data_dir_lock, load_dataset

# Observed ranges are widened by this factor (down and up) before they become warnings.
RANGE_MARGIN = 2.0
CLASS_SET_HINT = ("a new class is a decision: if it is real, `mmpipe contracts accept-classes` adds it to the "
                  "source suites; otherwise fix the labels and ingest again")


def _expect(kind: str, severity: str, name: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "severity": severity, "meta": {"name": name}}


def _parameter(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def infer_source_suites(classes: list[str], shard_tables: list[pa.Table], frame: pd.DataFrame
                        ) -> dict[str, list[dict[str, Any]]]:
    """Expectations for one source, from its shards' derived tables and its dataset frame.

    Facts of the data are literal values for a person to review; values that follow from the
    config or the drift reference stay parameters ({"$PARAMETER": name}) filled in at validation.
    """
    if not shard_tables or frame.empty:
        raise ContractFileError("the dataset has no accepted rows to infer contracts from; ingest some data first")
    columns = pa.concat_tables(shard_tables, promote_options="permissive").select(
        ["text_length", "orig_width", "orig_height", "orig_format"]).to_pandas()

    def observed(column: str) -> dict[str, int]:
        low, high = int(columns[column].min()), int(columns[column].max())
        return {"min_value": int(low / RANGE_MARGIN), "max_value": int(high * RANGE_MARGIN) + 1}

    class_set = _expect("expect_column_values_to_be_in_set", "critical", "label is a known class",
                        column="label", value_set=sorted(classes))
    class_set["meta"]["hint"] = CLASS_SET_HINT
    shards = [
        class_set,
        _expect("expect_column_values_to_be_between", "warning", "text length within the observed range",
                column="text_length", **observed("text_length")),
        _expect("expect_column_values_to_be_between", "warning", "original width within the observed range",
                column="orig_width", **observed("orig_width")),
        _expect("expect_column_values_to_be_between", "warning", "original height within the observed range",
                column="orig_height", **observed("orig_height")),
        _expect("expect_column_values_to_be_in_set", "warning", "image format one of those seen",
                column="orig_format", value_set=sorted(columns["orig_format"].dropna().unique().tolist())),
    ]
    dataset = [
        _expect("expect_column_distinct_values_to_contain_set", "warning", "every known class present",
                column="label", value_set=sorted(classes)),
        _expect("expect_column_values_to_be_between", "warning", "every class has enough train examples",
                column="train_count_of_label", min_value=_parameter("min_train_per_class")),
        _expect("expect_column_values_to_be_between", "warning", "split shares close to the configured ratios",
                column="split_share_error", min_value=0, max_value=_parameter("split_tolerance")),
        _expect("expect_column_values_to_be_between", "warning", "each image in one split",
                column="image_split_count", min_value=1, max_value=1),
        _expect("expect_column_kl_divergence_to_be_less_than", "warning", "label distribution close to the reference",
                column="label", partition_object=_parameter("reference_label_partition"),
                threshold=_parameter("kl_threshold")),
        *[_expect("expect_column_median_to_be_between", "warning", f"median {name} close to the reference",
                  column=name, min_value=_parameter(f"{name}_median_min"),
                  max_value=_parameter(f"{name}_median_max"))
          for name in STAT_COLUMNS],
    ]
    return {"shards": shards, "dataset": dataset}


def inferred_suites(folder: Path, version: DatasetVersion, shard_tables: list[pa.Table], frame: pd.DataFrame
                    ) -> dict[str, SuiteFile]:
    """The source suites of `version`, as files for `folder` that are not written yet (see `save_suites`)."""
    entries = infer_source_suites(version.classes, shard_tables, frame)
    meta = {"inferred_from": version.version, "inferred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "notes": f"Inferred by mmpipe from dataset {version.version}. Review them (critical stops training, "
                     "warning reports) and keep them with `mmpipe contracts export DIR`."}
    return {kind: unwritten_suite(SOURCE, kind, Path(folder) / file, f"mmpipe-source-{kind}", entries[kind], meta)
            for kind, file in SUITE_FILES.items()}


def save_suites(suites: dict[str, SuiteFile]) -> list[Path]:
    for suite in suites.values():
        write_suite(suite.path, suite.name, suite.expectations, suite.meta)
    return [suite.path for suite in suites.values()]


def init_source_suites(data_dir: Path, config: Config, out: Path | None = None, force: bool = False) -> list[Path]:
    """`mmpipe contracts init`: infer source suites from the current version, into `out` or the data dir.

    Raises:
        ContractFileError: suites exist there already (and not `force`), or the dataset has no rows.
    """
    with data_dir_lock(data_dir):
        return _init_source_suites(data_dir, config, out, force)


def _init_source_suites(data_dir: Path, config: Config, out: Path | None, force: bool) -> list[Path]:
    from mmpipe.contracts.frames import dataset_config, dataset_frame, shard_table

    version = load_dataset(data_dir)
    folder = Path(out) if out is not None else source_suites_location(data_dir, config)[0]
    existing = [str(folder / file) for file in SUITE_FILES.values() if (folder / file).exists()]
    if existing and not force:
        raise ContractFileError(f"{', '.join(existing)} already exist; review them, or pass --force to replace them")
    tables = [shard_table(version.path_of(entry)) for entry in version.shards]
    return save_suites(inferred_suites(folder, version, tables, dataset_frame(tables, dataset_config(version, config))))


def accept_classes(data_dir: Path, config: Config) -> tuple[dict[str, int], Path]:
    """Add the current version's classes that the source suites do not know to their class set.

    Returns the classes added (with their accepted row counts) and the suite file changed.

    Raises:
        ContractFileError: there are no source suites yet, or they have no class-set expectation.
    """
    with data_dir_lock(data_dir):
        return _accept_classes(data_dir, config)


def _accept_classes(data_dir: Path, config: Config) -> tuple[dict[str, int], Path]:
    version = load_dataset(data_dir)
    contracts = load_contracts(data_dir, config)
    if contracts.source is None:
        raise ContractFileError(f"{data_dir} has no source contracts yet: `mmpipe validate` infers them from the "
                                "first version that passes the project contracts")
    shards = contracts.source["shards"]
    entry = class_set_entry(shards)
    if entry is None:
        raise ContractFileError(f"{shards.path} has no class set (expect_column_values_to_be_in_set on label) "
                                "to accept classes into")
    known = set(entry["kwargs"]["value_set"])
    new = {name: sum(counts.get(name, 0) for counts in version.counts.values())
           for name in version.classes if name not in known}
    if not new:
        return {}, shards.path
    classes = sorted(known | set(new))
    for suite in contracts.source.values():
        for item in suite.expectations:
            if item.get("kwargs", {}).get("column") == "label" and isinstance(item["kwargs"].get("value_set"), list):
                item["kwargs"]["value_set"] = classes
        meta = {**suite.meta, "accepted_classes": sorted(set(suite.meta.get("accepted_classes", [])) | set(new))}
        write_suite(suite.path, suite.name, suite.expectations, meta)
    return new, shards.path


def export_source_suites(data_dir: Path, config: Config, out: Path, force: bool = False) -> list[Path]:
    """Copy the source suites in effect to `out`, to review and keep in version control.

    Raises:
        ContractFileError: no source suites yet, or files exist in `out` (and not `force`).
    """
    contracts = load_contracts(data_dir, config)
    if contracts.source is None:
        raise ContractFileError(f"{data_dir} has no source contracts yet: run `mmpipe validate --data {data_dir}` "
                                "(it infers them), or `mmpipe contracts init`")
    out = Path(out)
    existing = [str(out / file) for file in SUITE_FILES.values() if (out / file).exists()]
    if existing and not force and out.absolute() != contracts.source_dir:
        raise ContractFileError(f"{', '.join(existing)} already exist; pass --force to replace them")
    paths = []
    for kind, suite in contracts.source.items():
        target = out / SUITE_FILES[kind]
        write_suite(target, suite.name, suite.expectations, {**suite.meta, "exported_from": str(suite.path)})
        paths.append(target)
    return paths


def source_origin_line(description: dict[str, Any]) -> str:
    """One line saying which source suites were used and where they came from (CLI output, reports)."""
    source = description["source"]
    if not source.get("files"):
        return (f"no source contracts yet: they are inferred into {source['dir']} from the first version that "
                "passes the project contracts")
    if source["origin"] == INFERRED:
        return f"source contracts inferred from dataset {source.get('inferred_from')}, kept in {source['dir']}"
    return f"source contracts exported to {source['dir']}"

"""`mmpipe contracts init`: profile an accepted dataset and write starting suites, like TFX SchemaGen.

Facts of the data (the class set, observed ranges with a margin) are written as literal values for
a person to review; values that follow from the config or the drift reference stay parameters
({"$PARAMETER": name}) that mmpipe fills in at validation time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.contracts.frames import dataset_frame, shard_table
from mmpipe.contracts.suites import SUITE_FILES, write_suite
from mmpipe.dataset import load_dataset
from mmpipe.errors import ContractFileError

# Observed ranges are widened by this factor (down and up) before they become warnings.
RANGE_MARGIN = 2.0


def _expect(kind: str, severity: str, name: str | None = None, **kwargs: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "kwargs": kwargs, "severity": severity}
    if name:
        entry["meta"] = {"name": name}
    return entry


def _parameter(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def profile_suites(data_dir: Path, config: Config) -> dict[str, list[dict[str, Any]]]:
    """Expectations for the shards and dataset suites, from the current dataset in `data_dir`."""
    version = load_dataset(data_dir)
    tables = [shard_table(data_dir / entry["path"]) for entry in version.manifest["shards"]]
    if not tables:
        raise ContractFileError(f"dataset {version.version} has no accepted rows to profile; ingest some data first")
    columns = tables[0].column_names
    frames = [table.to_pandas() for table in tables]
    rows = dataset_frame(tables, config)
    classes = list(version.manifest["classes"])

    def observed(column: str) -> tuple[int, int]:
        values = [f[column] for f in frames]
        low, high = min(int(v.min()) for v in values), max(int(v.max()) for v in values)
        return max(0, int(low / RANGE_MARGIN)), int(high * RANGE_MARGIN) + 1

    text_low, text_high = observed("text_length")
    width_low, width_high = observed("orig_width")
    height_low, height_high = observed("orig_height")
    shards = [
        _expect("expect_table_columns_to_match_set", "critical", column_set=columns, exact_match=True),
        _expect("expect_table_row_count_to_be_between", "critical", min_value=1),
        _expect("expect_column_values_to_not_be_null", "critical", column="id"),
        _expect("expect_column_values_to_be_unique", "critical", column="id"),
        _expect("expect_column_values_to_match_regex", "critical", column="image_sha256", regex="^[0-9a-f]{64}$"),
        _expect("expect_column_values_to_be_unique", "critical", column="image_sha256"),
        _expect("expect_column_values_to_be_in_set", "critical", column="label", value_set=classes),
        _expect("expect_column_values_to_be_in_set", "critical", column="split", value_set=["train", "val", "test"]),
        _expect("expect_column_values_to_be_between", "critical", column="text_length",
                min_value=_parameter("text_min_chars"), max_value=_parameter("text_max_chars")),
        _expect("expect_column_values_to_be_between", "critical", column="image_bytes",
                min_value=_parameter("image_bytes"), max_value=_parameter("image_bytes")),
        _expect("expect_column_values_to_be_between", "critical", column="orig_width",
                min_value=1, max_value=_parameter("orig_side_max")),
        _expect("expect_column_values_to_be_between", "critical", column="orig_height",
                min_value=1, max_value=_parameter("orig_side_max")),
        _expect("expect_column_values_to_be_between", "warning", "text_length within the profiled range",
                column="text_length", min_value=text_low, max_value=text_high),
        _expect("expect_column_values_to_be_between", "warning", "orig_width within the profiled range",
                column="orig_width", min_value=width_low, max_value=width_high),
        _expect("expect_column_values_to_be_between", "warning", "orig_height within the profiled range",
                column="orig_height", min_value=height_low, max_value=height_high),
    ]
    dataset = [
        _expect("expect_column_values_to_be_unique", "critical", "ids unique across the dataset", column="id"),
        _expect("expect_column_values_to_be_unique", "critical", "image content unique across the dataset",
                column="image_sha256"),
        _expect("expect_column_distinct_values_to_contain_set", "critical", "every class present",
                column="label", value_set=classes),
        _expect("expect_column_values_to_be_between", "critical", "every class has enough train examples",
                column="train_count_of_label", min_value=_parameter("min_train_per_class")),
        _expect("expect_column_distinct_values_to_contain_set", "critical", "every split present",
                column="split", value_set=_parameter("splits")),
        _expect("expect_column_values_to_be_between", "critical", "split shares match the configured ratios",
                column="split_share_error", min_value=0, max_value=_parameter("split_tolerance")),
        _expect("expect_column_kl_divergence_to_be_less_than", "warning", "label distribution close to the reference",
                column="label", partition_object=_parameter("reference_label_partition"),
                threshold=_parameter("kl_threshold")),
        *[_expect("expect_column_median_to_be_between", "warning", f"median {name} close to the reference",
                  column=name, min_value=_parameter(f"{name}_median_min"),
                  max_value=_parameter(f"{name}_median_max"))
          for name in ("text_length", "image_brightness", "image_colourfulness")],
    ]
    if len(rows) == 0:
        raise ContractFileError("the dataset has no rows to profile")
    return {"shards": shards, "dataset": dataset}


def write_starting_suites(data_dir: Path, config: Config, out_dir: Path, force: bool = False) -> list[Path]:
    """Write shards.json and dataset.json into `out_dir`; refuses to overwrite unless `force`."""
    targets = {kind: out_dir / file for kind, file in SUITE_FILES.items()}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not force:
        raise ContractFileError(f"{', '.join(existing)} already exist; review them, or pass --force to overwrite")
    suites = profile_suites(data_dir, config)
    version = load_dataset(data_dir).version
    for kind, path in targets.items():
        write_suite(path, f"mmpipe-{kind}", suites[kind],
                    f"Written by `mmpipe contracts init` from dataset {version}; review before relying on it.")
    return list(targets.values())

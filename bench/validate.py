"""Validation throughput: `mmpipe validate` on >= 200,000 rows against merely reading the columns.

    python bench/validate.py [--rows 200000] [--write docs/benchmarks.md]

Builds a data dir of synthetic shards in the real shard schema (64 px; rows copied from a real
ingested sample with unique ids and hashes), then in one process: reads the shards' non-image
columns with pyarrow (the floor), imports Great Expectations, validates the dataset as a first
version (project suites + source suites inferred from it, in one pass), validates it as a later
version (against the stored source suites), and validates it again unchanged. Validation cost
is also compared with ingest time, estimated from an ingest of real generated images measured
in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ingest import WORK, write_section  # noqa: E402  (shared bench helpers)

SECTION = "validate"
REPEATS = 3
SIZE = 64
CLASSES = ["lantern", "moon", "sun", "window"]


def generated(name: str, spec) -> Path:
    from mmpipe.sample import write_sample

    folder = WORK / name
    if not (folder / "manifest.csv").exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_sample(folder, spec)
    return folder / "manifest.csv"


def build_dataset(rows: int) -> tuple[Path, float]:
    """Time an ingest of 400 large images; grow an ingested default sample to `rows` synthetic rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmpipe.config import load_config
    from mmpipe.ingest import ingest
    from mmpipe.ingest.schema import shard_schema
    from mmpipe.ingest.shards import ShardWriter
    from mmpipe.sample import SampleSpec

    large = generated("validate-large", SampleSpec(rows=400, seed=3, min_side=300, max_side=800, fault_rate=0.0,
                                                   kinds=(("JPEG", "RGB", "jpg"), ("PNG", "RGB", "png"))))
    timing_dir = WORK / "validate-timing"
    shutil.rmtree(timing_dir, ignore_errors=True)
    started = time.perf_counter()
    timed = ingest(large, load_config(None, {"data_dir": str(timing_dir), "image.size": SIZE}, environ={}))
    ingest_rate = timed.rows_read / (time.perf_counter() - started)
    shutil.rmtree(timing_dir, ignore_errors=True)

    # Rows like the ones the project's suites were profiled on (`mmpipe sample` defaults).
    seed_dir = WORK / "validate-seed"
    shutil.rmtree(seed_dir, ignore_errors=True)
    config = load_config(None, {"data_dir": str(seed_dir), "image.size": SIZE, "ingest.classes": CLASSES},
                         environ={})
    seed = ingest(generated("validate-sample", SampleSpec()), config)

    data_dir = WORK / f"validate-{rows}"
    shutil.rmtree(data_dir, ignore_errors=True)
    template = pa.concat_tables([pq.read_table(seed.path_of(entry)) for entry in seed.shards])
    files = []
    rows_per_shard = int(config.ingest.shard_target_mb * 2**20) // (SIZE * SIZE * 3 + 256)
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        count = int(rows * share)
        with ShardWriter(data_dir / "shards", split, shard_schema(SIZE), rows_per_shard, data_dir) as writer:
            for start in range(0, count, 8192):
                n = min(8192, count - start)
                picked = template.take([i % template.num_rows for i in range(start, start + n)])
                keys = [f"{split}-{start + i}" for i in range(n)]
                picked = picked.set_column(0, "id", pa.array(keys))
                sha = pa.array([hashlib.sha256(k.encode()).hexdigest() for k in keys])
                picked = picked.set_column(picked.schema.get_field_index("image_sha256"), "image_sha256", sha)
                picked = picked.set_column(picked.schema.get_field_index("split"), "split", pa.array([split] * n))
                writer.write(picked)
        files += writer.files
    seed.model_copy(update={"shards": files, "dataset_version": f"bench-{rows}", "accepted": rows, "quarantine": [],
                            "data_dir": data_dir}).save()
    return data_dir, ingest_rate


def measure(data_dir: Path) -> dict:
    import pyarrow.parquet as pq

    from mmpipe.ingest.version import load_dataset

    version = load_dataset(data_dir)
    paths = [version.path_of(entry) for entry in version.shards]
    columns = [n for n in pq.read_schema(paths[0]).names if n != "image"]
    for path in paths:
        pq.read_table(path, columns=columns)  # warm the page cache for both contenders
    started = time.perf_counter()
    rows = sum(pq.read_table(path, columns=columns).num_rows for path in paths)
    read_s = time.perf_counter() - started

    started = time.perf_counter()
    import great_expectations  # noqa: F401

    import_s = time.perf_counter() - started
    from mmpipe.config import load_config
    from mmpipe.contracts.suites import SOURCE_SUITES_DIR
    from mmpipe.contracts.validate import validate_dataset

    config = load_config(None, {"data_dir": str(data_dir), "image.size": SIZE, "ingest.classes": CLASSES},
                         environ={})

    def from_scratch(*folders: str) -> tuple[float, list[float], object]:
        runs = []
        for _ in range(REPEATS):  # no stored result, no cache, a new GX context each time
            for folder in folders:
                shutil.rmtree(data_dir / folder, ignore_errors=True)
            started = time.perf_counter()
            report = validate_dataset(data_dir, config)
            runs.append(time.perf_counter() - started)
            assert report.success, report.failure_message()
        return statistics.median(runs), runs, report

    first_s, first_runs, first = from_scratch("validation", SOURCE_SUITES_DIR)
    assert first.inferred
    validate_s, runs, report = from_scratch("validation")
    assert not report.inferred
    started = time.perf_counter()
    again = validate_dataset(data_dir, config)
    again_s = time.perf_counter() - started
    assert again.reused
    return {"rows": rows, "shards": len(paths), "read_s": read_s, "import_s": import_s,
            "first_s": first_s, "first_range": (min(first_runs), max(first_runs)),
            "validate_s": validate_s, "validate_range": (min(runs), max(runs)), "again_s": again_s,
            "expectations": len(report.outcomes)}


def render(result: dict, ingest_rate: float, command: str) -> str:
    rows = result["rows"]
    ingest_s = rows / ingest_rate
    share = 100 * result["validate_s"] / ingest_s
    share_with_import = 100 * (result["validate_s"] + result["import_s"]) / ingest_s
    lines = [
        f"<!-- bench:{SECTION} -->",
        "## Validate (`bench/validate.py`)",
        "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores. "
        f"{rows:,} rows in {result['shards']} shards ({SIZE} px), {result['expectations']} expectations (project "
        "suites from `data_contracts/` + the source suites inferred for the data dir); page cache warm; one process.",
        "",
        "| what | seconds | rows/s | vs floor |",
        "|---|---:|---:|---:|",
        f"| floor: pyarrow reads the non-image columns | {result['read_s']:.2f} | "
        f"{rows / result['read_s']:,.0f} | 1.00x |",
        f"| first version: `validate_dataset` inferring the source suites, median of {REPEATS} (range "
        f"{result['first_range'][0]:.2f}-{result['first_range'][1]:.2f} s; GX already imported) | "
        f"{result['first_s']:.2f} | {rows / result['first_s']:,.0f} | {result['first_s'] / result['read_s']:.1f}x "
        "slower |",
        f"| later version: `validate_dataset` from scratch against stored source suites, median of {REPEATS} (range "
        f"{result['validate_range'][0]:.2f}-{result['validate_range'][1]:.2f} s) | {result['validate_s']:.2f} | "
        f"{rows / result['validate_s']:,.0f} | {result['validate_s'] / result['read_s']:.1f}x slower |",
        f"| the same, with the one-off `import great_expectations` | {result['validate_s'] + result['import_s']:.2f} | "
        f"{rows / (result['validate_s'] + result['import_s']):,.0f} | |",
        f"| unchanged re-validation (result reused) | {result['again_s']:.3f} | | |",
        "",
        f"* Versus ingest: ingest ran at {ingest_rate:.0f} rows/s in this run (real 300-800 px images, default "
        f"workers), so ingesting {rows:,} rows takes ~{ingest_s:,.0f} s and validating them costs "
        f"{share:.2f}% of that ({share_with_import:.2f}% "
        "with the import); target <= 10%. Target >= 100,000 rows/s.",
        f"<!-- /bench:{SECTION} -->",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the synthetic dataset (default 200000)")
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file's validate section")
    args = parser.parse_args()
    command = "python bench/validate.py" + (f" --rows {args.rows}" if args.rows != 200_000 else "") + \
        (f" --write {args.write}" if args.write else "")
    data_dir, ingest_rate = build_dataset(args.rows)
    section = render(measure(data_dir), ingest_rate, command)
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

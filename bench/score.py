"""Scoring: rows/s of `mmpipe score` against the same work written plainly, and its memory as rows grow.

    python bench/score.py [--rows 2000] [--repeat 3] [--write docs/benchmarks.md]

One run is trained by `mmpipe demo` (its champion). New data: fresh samples (another seed) of --rows rows,
4x and 16x as many (about 4 minutes to draw). On the same rows:
- bare `model.predict_on_batch` on rows already decoded (ingest's own shards of the new data): the floor;
- the full path written plainly: read the manifest, decode and letterbox each image with Pillow, lowercase
  the text, predict in batches; no quarantine, no cache, no drift, no files;
- `score_source` in a fresh process (reading, ingest's cleaning, prediction, the files, drift), cold: no
  cache, with its peak RSS, at each size;
- `mmpipe score --json` as a user runs it (its own temporary Prefect server included).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from ingest import write_section  # noqa: E402

SECTION = "score"
FACTORS = (1, 4, 16)  # the sizes measured, in --rows


def child(mode: str, manifest: str, run_dir: str, out: str) -> None:
    """One measurement in a fresh process; prints {"seconds", "rows", "rss_mb"} as JSON."""
    import numpy as np

    from mmpipe.config import load_config
    from mmpipe.runs.record import RunDir, load_record
    from mmpipe.score.runner import model_of

    record = load_record(RunDir(Path(run_dir)))
    model = model_of(Path(run_dir))  # the model object score_source predicts with: loaded once per process
    size = record.run_config.image.size
    model.predict_on_batch({"text": np.array(["warm up"], dtype=object), "image": np.zeros((1, size, size, 3),
                                                                                           np.uint8)})
    start = time.perf_counter()
    if mode == "score":
        from mmpipe.score import score_source

        config = load_config(None, {"score.out_dir": out, "data_dir": str(Path(out) / "data")}, environ={})
        rows = score_source(manifest, Path(run_dir), config)["scored"]
    elif mode == "plain":
        rows = plain_full_path(Path(manifest), model, size)
    else:  # bare: the model alone on rows ingest already decoded
        rows = bare_predict(Path(out), model, size)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "rss_mb": rss}))


def plain_full_path(manifest: Path, model, size: int, batch: int = 256) -> int:
    """The full path as a plain script writes it: Pillow decode + letterbox, lowercase text, predict."""
    import numpy as np
    from PIL import Image, ImageOps

    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    done = 0
    for start in range(0, len(rows), batch):
        texts, images = [], []
        for row in rows[start:start + batch]:
            try:
                with Image.open(manifest.parent / row["image"]) as image:
                    fitted = ImageOps.pad(image.convert("RGB"), (size, size), color=(255, 255, 255))
            except Exception:  # noqa: BLE001 - a plain script skips what it cannot read
                continue
            texts.append(" ".join(row["text"].lower().split()))
            images.append(np.asarray(fitted, dtype=np.uint8))
        if texts:
            model.predict_on_batch({"text": np.array(texts, dtype=object), "image": np.stack(images)})
            done += len(texts)
    return done


def bare_predict(data_dir: Path, model, size: int, batch: int = 256) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmpipe.train.inputs import image_view

    shards = sorted((data_dir / "shards").glob("*.parquet"))
    tables = [pq.read_table(path, columns=["text", "image"]) for path in shards]
    table = pa.concat_tables(tables)
    texts, images = np.array(table["text"].to_pylist(), dtype=object), image_view(table["image"], size)
    for start in range(0, len(texts), batch):
        model.predict_on_batch({"text": texts[start:start + batch], "image": images[start:start + batch]})
    return len(texts)


def measure(mode: str, manifest: Path, run_dir: Path, out: Path, repeat: int) -> dict:
    """The median of `repeat` measurements (each in a fresh process; a scoring each time into a new folder)."""
    found = []
    for attempt in range(repeat):
        where = out if mode == "bare" else out / f"try-{attempt}"
        done = subprocess.run([sys.executable, __file__, "--child", mode, str(manifest), str(run_dir), str(where)],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return sorted(found, key=lambda result: result["seconds"])[len(found) // 2]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per path, the median reported")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    from mmpipe.sample import DEMO, write_sample

    with tempfile.TemporaryDirectory(prefix="mmpipe-bench-score-") as work:
        work = Path(work)
        print("training the champion (mmpipe demo, about a minute)", flush=True)
        subprocess.run([sys.executable, "-m", "mmpipe", "demo", str(work / "demo")], check=True,
                       stdout=subprocess.DEVNULL)
        (run_dir,) = [path for path in (work / "demo" / "runs").iterdir() if path.is_dir()]
        sets = {}
        for factor in FACTORS:
            spec = DEMO.__class__(**{**DEMO.__dict__, "rows": factor * args.rows, "seed": 7, "fault_rate": 0.0})
            sets[factor] = write_sample(work / f"new-{factor}x", spec)
        small = sets[1]
        # The new data as ingest stores it: what the bare model reads, decoded already.
        from mmpipe.config import load_config
        from mmpipe.ingest import ingest

        ingest(small, load_config(None, {"data_dir": str(work / "decoded"), "image.size": 32}, environ={}))
        results = {"bare": measure("bare", small, run_dir, work / "decoded", args.repeat)}
        for factor in FACTORS:
            for mode in ("plain", "score"):
                results[f"{mode}_{factor}x"] = measure(mode, sets[factor], run_dir, work / f"{mode}-{factor}x",
                                                       args.repeat)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmpipe", "score", str(small), "--runs", str(work / "demo" / "runs"),
                        "--out", str(work / "scores-cli"), "--json"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        results["cli"] = {"seconds": time.perf_counter() - start, "rows": results["score_1x"]["rows"]}
    print(json.dumps(results, indent=1))
    rate = {name: found["rows"] / found["seconds"] for name, found in results.items()}
    ratio = {factor: rate[f"score_{factor}x"] / rate[f"plain_{factor}x"] for factor in FACTORS}
    rss = {factor: results[f"score_{factor}x"]["rss_mb"] for factor in FACTORS}
    command = "python bench/score.py" + (f" --rows {args.rows}" if args.rows != 2000 else "") + \
        (f" --repeat {args.repeat}" if args.repeat != 3 else "") + \
        (f" --write {args.write}" if args.write else "")
    rows = [("bare", "plain_1x", "bare `model.predict_on_batch` on decoded rows (the floor)")]
    for factor in FACTORS:
        rows += [(f"plain_{factor}x", f"plain_{factor}x", "plain full path: Pillow decode + letterbox + predict"),
                 (f"score_{factor}x", f"plain_{factor}x", "`score_source`: ingest's cleaning, prediction, files, "
                                                          "report, drift")]
    rows.append(("cli", "plain_1x", "`mmpipe score --json` (its own Prefect server and imports included)"))
    section = "\n".join([
        f"<!-- bench:{SECTION} -->", "## Scoring (`bench/score.py`)", "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores. "
        f"The champion of `mmpipe demo` (the default model, 32 px) scores fresh samples (seed 7, no faults) of "
        f"{', '.join(f'{factor * args.rows:,}' for factor in FACTORS)} rows; each path in a fresh process after the "
        f"model is loaded and warmed up, the median of {args.repeat} measurements; each path's ratio is to the plain "
        "full path on the same rows.", "",
        "| path | rows | seconds | rows/s | vs the plain full path | peak RSS MB |", "|---|---:|---:|---:|---:|---:|",
        *(f"| {label} | {results[name]['rows']:,} | {results[name]['seconds']:.2f} | {rate[name]:.0f} | "
          f"{rate[name] / rate[baseline]:.2f}x | {results[name].get('rss_mb', float('nan')):.0f} |"
          for name, baseline, label in rows),
        "",
        "Target: `score_source` at least 0.8x the plain full path: "
        + ", ".join(f"{ratio[factor]:.2f}x on {factor * args.rows:,} rows" for factor in FACTORS)
        + " (a scoring's fixed costs, its report, drift and the start of its worker processes, weigh less on more "
        f"rows). Memory as rows grow {FACTORS[-1]}x: {rss[FACTORS[-1]]:.0f} MB vs {rss[1]:.0f} MB "
        f"({rss[FACTORS[-1]] / rss[1]:.2f}x).",
        f"<!-- /bench:{SECTION} -->", ""])
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

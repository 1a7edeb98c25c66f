"""Drift: does it fire on data that changed, and stay quiet on data like the training data?

    python bench/drift.py [--halves 20] [--write docs/benchmarks.md]

On a dataset nobody here made (the emoji of bench/datasets.py: Noto Color Emoji, labelled by Unicode group),
30% of the rows are set aside (seeded) and a run is trained on the rest, on the pipeline's own splits (the
default model, 8 epochs, 32 px). Then `score_source` scores, with that run:
- `--halves` random halves of the training manifest: the training data itself;
- `--halves` random halves of the rows set aside: new data like the training data, never seen;
  on both, any drift is a false alarm (target: at most 5% of the halves);
- the rows set aside with every image at 25% of its brightness (RGB scaled, transparency kept):
  brightness must be flagged.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from datasets import write_emoji  # noqa: E402
from ingest import write_section  # noqa: E402

SECTION = "drift"


def darken(folder: Path, factor: float = 0.25) -> None:
    """Every image of `folder`/images at `factor` of its brightness: RGB scaled, an alpha channel kept."""
    from PIL import Image

    for path in (folder / "images").iterdir():
        with Image.open(path) as image:
            image.load()
            bands = image.convert("RGBA").split()
            darker = [band.point(lambda value: int(value * factor)) for band in bands[:3]]
            Image.merge("RGBA", (*darker, bands[3])).save(path)


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def halves_of(manifest: Path, count: int, rng: random.Random, run: Path, config) -> dict:
    """Score `count` random halves of `manifest`; the drift verdicts, the false alarms and what they flagged."""
    from mmpipe.score import score_source

    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    drifts, flagged = [], Counter()
    for index in range(count):
        half = write_rows(manifest.with_name(f"{manifest.stem}-half-{index}.csv"), rng.sample(rows, len(rows) // 2))
        drift = score_source(half, run, config)["drift"]
        drifts.append(drift)
        drifted = sorted(name for name, found in drift["features"].items() if found["drifted"])
        flagged.update(drifted)
        print(f"{manifest.stem} half {index + 1}: {'DRIFT ' + ', '.join(drifted) if drifted else 'no drift'}",
              flush=True)
    return {"drifts": drifts, "alarms": sum(drift["detected"] for drift in drifts), "flagged": flagged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--halves", type=int, default=20)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    from mmpipe.config import load_config
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.evaluate import evaluate_run
    from mmpipe.ingest import ingest
    from mmpipe.score import score_source
    from mmpipe.train import train

    with tempfile.TemporaryDirectory(prefix="mmpipe-bench-drift-") as work:
        work = Path(work)
        everything = write_emoji(work / "emoji")
        with open(everything, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        random.Random(1).shuffle(rows)
        kept = len(rows) * 3 // 10
        manifest, aside = (write_rows(work / "emoji" / name, part)
                           for name, part in (("train.csv", rows[kept:]), ("aside.csv", rows[:kept])))
        config = load_config(None, {"data_dir": str(work / "data"), "runs_dir": str(work / "runs"), "image.size": 32,
                                    "train.epochs": 8, "score.out_dir": str(work / "scores")}, environ={})
        started = time.perf_counter()
        ingest(manifest, config)
        validate_dataset(work / "data", config)
        run = train(config).run_dir
        metrics = evaluate_run(run, config.evaluate).result["metrics"]
        print(f"trained {run.name} in {time.perf_counter() - started:.0f} s: test macro F1 {metrics['macro_f1']:.3f}",
              flush=True)
        rng = random.Random(0)
        halves = {what: halves_of(source, args.halves, rng, run, config)
                  for what, source in (("training data", manifest), ("new data set aside", aside))}
        shutil.copytree(work / "emoji", work / "dark")
        darken(work / "dark")
        dark = score_source(work / "dark" / "aside.csv", run, config)
    features = dark["drift"]["features"]
    scored = [drift for found in halves.values() for drift in found["drifts"]]
    smallest_p = {name: min(drift["features"][name]["p_value"] for drift in scored
                            if drift["features"][name]["p_value"] is not None) for name in features}
    command = "python bench/drift.py" + (f" --halves {args.halves}" if args.halves != 20 else "") + \
        (f" --write {args.write}" if args.write else "")
    section = "\n".join([
        f"<!-- bench:{SECTION} -->", "## Drift (`bench/drift.py`)", "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores. "
        f"The emoji set ({len(rows):,} rows, Noto Color Emoji by Unicode group, not made here), {kept} rows set "
        f"aside; a run of the default model (8 epochs, 32 px, test macro F1 {metrics['macro_f1']:.3f}) trained on "
        f"the rest scores {args.halves} random halves of its training manifest and of the rows set aside (like "
        "the training data: any drift is a false alarm), and the rows set aside darkened to 25% brightness. "
        "Default thresholds (`[score]`: alpha 0.05 shared by the features, KS >= 0.1, PSI >= 0.2).", "",
        *(f"False alarms on halves of the {what}: **{found['alarms']} of {args.halves}** "
          f"({100 * found['alarms'] / args.halves:.0f}%; target <= 5%)"
          + (f", flagging {', '.join(sorted(found['flagged']))}" if found["flagged"] else "") + "."
          for what, found in halves.items()), "",
        "| feature | darkened: statistic | threshold | p-value | drifted | all halves: smallest p-value |",
        "|---|---:|---:|---:|---|---:|",
        *(f"| {name} | {found['statistic']} | {found['threshold']} | {found['p_value']:.3g} | "
          f"{'**yes**' if found['drifted'] else 'no'} | {smallest_p[name]:.3g} |" for name, found in features.items()),
        "", f"Darkened: drift {'detected' if dark['drift']['detected'] else 'NOT detected'}; brightness "
        f"{'flagged' if features['brightness']['drifted'] else 'NOT flagged'} (target: flagged).",
        f"<!-- /bench:{SECTION} -->", ""])
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

"""The model, side by side in one run: the default's fused prediction against its own single-branch variants,
the previous default and a plain in-memory Keras script of the seed's shape, on datasets nobody here made.

    python bench/model.py [--write docs/benchmarks.md] [--datasets demo,icons,glyphs,emoji,tango,oxygen]

Each dataset (built by bench/datasets.py, never stored in git) is ingested at 64 px (the demo's sample: at
32 px, its own setting) and validated, then trained through mmpipe's own `train` + `evaluate_run` with the
default config, for each variant of the default preset (fused, text, image) and for the previous default
(no branch heads, two convolutions; `PREVIOUS_DEFAULT` in bench/train.py). Per row: parameters, forward
MFLOPs per sample, train samples/s (rows x epochs / training seconds), epochs run and the one kept, test
accuracy, macro F1 and expected calibration error (after the blend's calibration; before it in brackets).
The plain script is the seed's shape written plainly (an embedding + LSTM, Conv2D -> MaxPooling2D -> Conv2D ->
global average pooling, Dense, Adam, 10 epochs, no early stopping, no calibration), fused and each branch
alone, trained on the same train rows and scored on the same test rows.

The default was chosen on the validation splits of demo, icons, glyphs, emoji and tango (`TUNED_ON`);
`oxygen` was built after the choices were frozen and is reported apart (`HELD_OUT`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from datasets import (  # noqa: E402
    write_demo_set,
    write_emoji,
    write_glyphs,
    write_icons,
    write_oxygen,
    write_sample_set,
    write_tango,
)
from ingest import WORK, write_section  # noqa: E402
from train import PREVIOUS_DEFAULT  # noqa: E402

SECTION = "model"
BUILDERS = {"demo": write_demo_set, "sample400": lambda folder: write_sample_set(folder, 400),
            "sample2000": lambda folder: write_sample_set(folder, 2000),
            "icons": write_icons, "glyphs": write_glyphs, "emoji": write_emoji, "tango": write_tango,
            "oxygen": write_oxygen}
TUNED_ON = ["demo", "icons", "glyphs", "emoji", "tango"]
HELD_OUT = ["oxygen"]
RUNS = [("default", "fused"), ("default", "text"), ("default", "image"), ("previous", "fused")]
PLAIN_EPOCHS = 10
# Targets of the fusion issue, per dataset.
MARGIN_OVER_BEST_SINGLE = 0.02
MAX_ECE = 0.05


def prepare(name: str, size: int | None = None) -> Path:
    """Build, ingest (at `size` px, default: the config's) and validate the dataset once; its data dir."""
    from mmpipe.config import load_config
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.ingest import ingest

    folder, data = WORK / "model" / name, WORK / "model" / f"{name}{f'-{size}px' if size else ''}-data"
    if not (data / "dataset.json").exists():
        manifest = BUILDERS[name](folder)
        toml = manifest.parent / "mmpipe.toml"  # the sample's own settings (its class list)
        config = load_config(toml if toml.exists() else None, {"data_dir": str(data), "image.size": size},
                             environ={})
        ingest(manifest, config)
        assert validate_dataset(data, config).success
    return data


def train_once(data: Path, preset: str, variant: str) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from mmpipe.config import load_config
    from mmpipe.evaluate import evaluate_run
    from mmpipe.ingest import load_dataset
    from mmpipe.runs.record import RunDir, load_record
    from mmpipe.train import train
    from mmpipe.train.model import forward_flops, load_model

    settings = {"data_dir": str(data), "runs_dir": str(data.parent / f"{data.name}-runs"), "model.variant": variant,
                "train.export_serving": False,
                **({"model.preset": preset} if preset != "previous" else PREVIOUS_DEFAULT)}
    config = load_config(None, settings, environ={})
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    evaluation = evaluate_run(result.run_dir, config.evaluate).result
    model = load_model(result.run_dir / "model.keras")
    record = load_record(RunDir(result.run_dir))
    metrics = evaluation["metrics"]
    train_rows = load_dataset(data).rows_of("train")
    probabilities = np.array(pq.read_table(RunDir(result.run_dir).predictions).column("probabilities").to_pylist())
    return {"preset": preset, "variant": variant, "params": model.count_params(),
            "mflops": forward_flops(model) / 1e6, "samples_s": train_rows * len(record.history) / seconds,
            "epochs": len(record.history), "best": record.best_epoch, "cap": config.train.epochs,
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "ece": metrics["ece"],
            "ece_before": metrics.get("ece_uncalibrated"), "weights": (record.blend or {}).get("weights"),
            "ece_floor": ece_floor(probabilities, config.evaluate.ece_bins),
            "heads": {name: found["metrics"]["macro_f1"] for name, found in evaluation.get("heads", {}).items()},
            "majority": evaluation["baselines"]["majority"], "test_rows": evaluation["n"]}


def ece_floor(probabilities, bins: int, draws: int = 200) -> float:
    """The ECE a perfectly calibrated model with these very confidences would show on this many rows: each row's
    label drawn from its own probabilities, the mean over `draws` draws. On a test split of a hundred-odd rows
    this sampling noise alone is a few hundredths."""
    import numpy as np

    from mmpipe.evaluate.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    cumulative = probabilities.cumsum(axis=1)
    found = []
    for _ in range(draws):
        labels = (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)
        found.append(expected_calibration_error(labels, probabilities, bins))
    return float(np.mean(found))


def plain_reference(data: Path, variant: str) -> dict:
    """The plain in-memory script, on the same rows (train split in, test split scored)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mmpipe.evaluate.metrics import classification_metrics
    from mmpipe.ingest import load_dataset
    from mmpipe.train.inputs import make_dataset

    version = load_dataset(data)

    def arrays(split):
        texts, images, labels = [], [], []
        for inputs, one_hot in make_dataset(version, split, batch_size=256):
            texts += [value.decode() for value in inputs["text"].numpy()]
            images.append(inputs["image"].numpy())
            labels.append(one_hot.numpy())
        return {"text": tf.constant(texts), "image": np.concatenate(images)}, np.concatenate(labels)

    train_inputs, train_labels = arrays("train")
    test_inputs, test_labels = arrays("test")
    keras.utils.set_random_seed(0)
    text = keras.Input((), dtype="string", name="text")
    image = keras.Input(train_inputs["image"].shape[1:], dtype="uint8", name="image")
    features, inputs = [], {}
    if variant in ("fused", "text"):
        vectorizer = keras.layers.TextVectorization(max_tokens=20000, output_sequence_length=64)
        vectorizer.adapt(train_inputs["text"])
        features.append(keras.layers.LSTM(64)(keras.layers.Embedding(20000, 64, mask_zero=True)(vectorizer(text))))
        inputs["text"] = text
    if variant in ("fused", "image"):
        b = keras.layers.Rescaling(1 / 255)(keras.ops.cast(image, "float32"))
        b = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(32, 3, activation="relu", padding="same")(b))
        features.append(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(64, 3, activation="relu",
                                                                                 padding="same")(b)))
        inputs["image"] = image
    x = keras.layers.Concatenate()(features) if len(features) > 1 else features[0]
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(train_labels.shape[1], activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(tf.data.Dataset.from_tensor_slices(({name: train_inputs[name] for name in inputs}, train_labels))
              .shuffle(4096, seed=0).batch(32), epochs=PLAIN_EPOCHS, verbose=0)
    seconds = time.perf_counter() - started
    predicted = model.predict({name: test_inputs[name] for name in inputs}, verbose=0).astype(np.float64)
    metrics = classification_metrics(test_labels.argmax(axis=1), predicted, version.classes)["metrics"]
    return {"preset": "plain script", "variant": variant, "params": model.count_params(), "mflops": None,
            "samples_s": len(train_labels) * PLAIN_EPOCHS / seconds, "epochs": PLAIN_EPOCHS, "best": None,
            "cap": PLAIN_EPOCHS, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "ece": metrics["ece"], "ece_before": None, "ece_floor": None, "weights": None, "heads": {}}


def render(results: dict[str, list[dict]], command: str) -> str:
    lines = [f"<!-- bench:{SECTION} -->", "## Model (`bench/model.py`)", "",
             f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
             f"{os.cpu_count()} cores, CPU only. Every dataset at 64 px (demo: 32 px, as `mmpipe demo` writes it), "
             "80/10/10 splits, the default `[train]` settings. Datasets: `bench/datasets.py`. The default was "
             f"chosen on the validation splits of {', '.join(TUNED_ON)}; test numbers were never used to choose. "
             f"{', '.join(HELD_OUT)} was built after the choices were frozen (its own section below). "
             "ECE: after the calibration the run serves (before it, in brackets); ECE floor: what a perfectly "
             "calibrated model with the same confidences would show on as few rows (sampling noise alone).", ""]
    summary = []
    for group, names in (("tuned on (validation only)", TUNED_ON), ("held out", HELD_OUT)):
        present = [name for name in names if name in results]
        if not present:
            continue
        if group == "held out":
            lines += ["### Held out: built after the default was frozen, never tuned on", ""]
        for name in present:
            lines += _dataset_lines(name, results[name])
            summary.append((group, name, _verdict(results[name])))
    lines += ["### Targets, per dataset", "",
              f"Fused macro F1 >= the best of (own text-only, own image-only, the plain script fused, text or image) "
              f"+ {MARGIN_OVER_BEST_SINGLE}; fused accuracy >= the plain script's best; ECE <= {MAX_ECE}.", "",
              "| dataset | set | fused macro F1 | best rival (macro F1) | margin | accuracy vs plain best | ECE "
              "(floor) | met |",
              "|---|---|---:|---|---:|---:|---:|---|"]
    for group, name, verdict in summary:
        lines.append(f"| {name} | {group} | {verdict['f1']:.3f} | {verdict['rival']} ({verdict['rival_f1']:.3f}) | "
                     f"{verdict['margin']:+.3f} | {verdict['accuracy_gap']:+.3f} | {verdict['ece']:.3f} "
                     f"({verdict['ece_floor']:.3f}) | "
                     f"{'yes' if verdict['met'] else '**no**'} |")
    lines += ["", f"<!-- /bench:{SECTION} -->"]
    return "\n".join(lines) + "\n"


def _dataset_lines(name: str, rows: list[dict]) -> list[str]:
    majority = next(row["majority"] for row in rows if "majority" in row)
    lines = [f"**{name}** ({rows[0].get('test_rows', '?')} test rows; always predicting "
             f"{majority['class']!r}: accuracy {majority['accuracy']:.3f}, macro F1 {majority['macro_f1']:.3f})",
             "", "| model | variant | params | forward MFLOPs | train samples/s | epochs (kept) | accuracy | macro F1 "
             "| ECE (before) | ECE floor |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        mflops = f"{row['mflops']:.1f}" if row["mflops"] is not None else "-"
        epochs = f"{row['epochs']} of {row['cap']} ({row['best']})" if row["best"] else str(row["epochs"])
        before = f" ({row['ece_before']:.3f})" if row.get("ece_before") is not None else ""
        floor = f"{row['ece_floor']:.3f}" if row.get("ece_floor") is not None else "-"
        lines.append(f"| {row['preset']} | {row['variant']} | {row['params']:,} | {mflops} | {row['samples_s']:.0f} | "
                     f"{epochs} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {row['ece']:.3f}{before} | {floor} |")
    fused = _row(rows, "default", "fused")
    if fused["heads"]:
        heads = ", ".join(f"{head} head {value:.3f}" for head, value in fused["heads"].items())
        weights = ", ".join(f"{weight:.2f}" for weight in fused["weights"] or [])
        lines += ["", f"The default fused run's heads alone on the same test rows (macro F1): {heads}; "
                      f"blend weights fitted on validation: {weights}."]
    return [*lines, ""]


def _row(rows: list[dict], preset: str, variant: str) -> dict:
    return next(row for row in rows if row["preset"] == preset and row["variant"] == variant)


def _verdict(rows: list[dict]) -> dict:
    fused = _row(rows, "default", "fused")
    rivals = [row for row in rows if row["variant"] != "fused" and row["preset"] == "default"] + \
        [row for row in rows if row["preset"] == "plain script"]
    best = max(rivals, key=lambda row: row["macro_f1"])
    plain_accuracy = max(row["accuracy"] for row in rows if row["preset"] == "plain script")
    margin = fused["macro_f1"] - best["macro_f1"]
    met = margin >= MARGIN_OVER_BEST_SINGLE and fused["accuracy"] >= plain_accuracy and fused["ece"] <= MAX_ECE
    rival = f"{best['preset'].replace('default', 'own')} {best['variant']}"
    return {"f1": fused["macro_f1"], "rival": rival, "rival_f1": best["macro_f1"], "margin": margin,
            "accuracy_gap": fused["accuracy"] - plain_accuracy, "ece": fused["ece"], "ece_floor": fused["ece_floor"],
            "met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    every = ",".join([*TUNED_ON, *HELD_OUT])
    parser.add_argument("--datasets", default=every, help="comma-separated: " + ", ".join(BUILDERS))
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file's model section")
    args = parser.parse_args()
    command = "python bench/model.py" + (f" --datasets {args.datasets}" if args.datasets != every else "") + \
        (f" --write {args.write}" if args.write else "")
    results: dict[str, list[dict]] = {}
    for name in args.datasets.split(","):
        data = prepare(name)
        results[name] = [train_once(data, preset, variant) for preset, variant in RUNS]
        results[name] += [plain_reference(data, variant) for variant in ("fused", "text", "image")]
        print(json.dumps({name: results[name]}, default=str), flush=True)
    section = render(results, command)
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

"""Training input pipeline: is streaming from shards ever the bottleneck?

    python bench/train.py [--rows 2000] [--write docs/benchmarks.md]

In one process, on a data dir of synthetic rows in the real shard schema (64 px, copied from an
ingested `mmpipe sample` with unique ids): (a) iterate the tf.data pipeline alone, (b) train the
default fused model streaming from the shards, (c) train the same model on the same rows held in
memory as numpy arrays (the plain `model.fit` baseline), and (d) the previous default (no branch
heads, two convolutions of 32 and 64 filters) streaming from the same shards: what the current
default's training costs per epoch against it. Each training measurement is one epoch after a
warm-up epoch (graph tracing excluded). Then, each in a fresh interpreter, one epoch of streaming
training on the dataset and on one 4x its size: peak RSS must stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ingest import write_section  # noqa: E402
from validate import build_dataset  # noqa: E402

SECTION = "train"
BATCH = 32
# The default before branch heads and the blend (2026-12): what training cost per epoch is compared with. (Its runs
# are calibrated now too: a run with one head is temperature-scaled on validation.)
PREVIOUS_DEFAULT = {"model.conv_filters": [32, 64], "model.branch_loss_weight": 0, "model.modality_dropout": 0,
                    "model.batch_norm_momentum": 0.99, "model.label_smoothing": 0.1, "model.dropout_rate": 0.1,
                    "train.epochs": 20}


def measure(data_dir: Path) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from mmpipe.config import load_config
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train.inputs import for_heads, make_dataset, split_rows, train_texts
    from mmpipe.train.model import adapt_vectorizers, build_model, head_names

    version = load_dataset(data_dir)
    rows = split_rows(version, "train")
    config = load_config(None, {"data_dir": str(data_dir)}, environ={})
    previous = load_config(None, {"data_dir": str(data_dir), **PREVIOUS_DEFAULT}, environ={})
    keras.utils.set_random_seed(0)

    def pipeline(heads=None):
        data = make_dataset(version, "train", batch_size=BATCH, shuffle_buffer=2048, seed=0)
        return for_heads(data, heads) if heads else data

    for _ in pipeline():
        pass  # warm the page cache and tf.data
    started = time.perf_counter()
    for _ in pipeline():
        pass
    iterate_s = time.perf_counter() - started

    vectorizer = adapt_vectorizers(config.model, train_texts(version))
    classes = version.classes

    def streaming_seconds(settings) -> float:
        model = build_model(settings.model, len(classes), 64, vectorizer)
        heads = head_names(settings.model)
        model.fit(pipeline(heads), epochs=1, verbose=0)  # trace the graph
        started = time.perf_counter()
        model.fit(pipeline(heads), epochs=1, verbose=0)
        return time.perf_counter() - started

    stream_s = streaming_seconds(config)
    previous_s = streaming_seconds(previous)

    texts, images, labels = [], [], []
    for inputs, one_hot in pipeline():
        texts.append(inputs["text"].numpy())
        images.append(inputs["image"].numpy())
        labels.append(one_hot.numpy())
    # Keras' numpy adapter takes no string arrays: the texts go in as one in-memory tf.string tensor.
    memory = {"text": tf.constant(np.concatenate(texts)), "image": np.concatenate(images)}
    targets = {name: np.concatenate(labels) for name in head_names(config.model)}
    model = build_model(config.model, len(classes), 64, vectorizer)
    model.fit(memory, targets, batch_size=BATCH, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(memory, targets, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
    memory_s = time.perf_counter() - started
    return {"rows": rows, "iterate": rows / iterate_s, "stream": rows / stream_s, "memory": rows / memory_s,
            "previous": rows / previous_s}


def streaming_epoch(data_dir: Path) -> dict:
    """One epoch of streaming training in this (fresh) process: its peak RSS is the number."""
    import keras

    from mmpipe.config import load_config
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train.inputs import for_heads, make_dataset, split_rows, train_texts
    from mmpipe.train.model import adapt_vectorizers, build_model, head_names

    version = load_dataset(data_dir)
    config = load_config(None, {"data_dir": str(data_dir)}, environ={})
    keras.utils.set_random_seed(0)
    model = build_model(config.model, len(version.classes), 64,
                        adapt_vectorizers(config.model, train_texts(version)))
    started = time.perf_counter()
    model.fit(for_heads(make_dataset(version, "train", batch_size=BATCH, shuffle_buffer=2048, seed=0),
                        head_names(config.model)), epochs=1, verbose=0)
    return {"rows": split_rows(version, "train"), "seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb()}


def rss_under_growth(rows: int) -> list[dict]:
    results = []
    for count in (rows, 4 * rows):
        data_dir, _ = build_dataset(count)
        out = subprocess.run([sys.executable, __file__, "--child-epoch", str(data_dir)], capture_output=True,
                             text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  streaming epoch on {results[-1]['rows']} rows: peak RSS {results[-1]['peak_rss_mb']:.0f} MB",
              file=sys.stderr)
    return results


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render(result: dict, command: str) -> str:
    a, b, c, d = result["iterate"], result["stream"], result["memory"], result["previous"]
    growth = result["growth"][1]["peak_rss_mb"] / result["growth"][0]["peak_rss_mb"]
    lines = [
        f"<!-- bench:{SECTION} -->",
        "## Train (`bench/train.py`)",
        "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, "
        f"CPU only. {result['rows']:,} train rows, 64 px, default fused model, batch {BATCH}; one epoch after a "
        "warm-up epoch.",
        "",
        "| what | samples/s | ratio | target |",
        "|---|---:|---:|---|",
        f"| (a) tf.data from shards, iteration alone | {a:,.0f} | (a)/(b) = {a / b:.1f}x | >= 10x |",
        f"| (b) training, streaming from shards | {b:,.0f} | (b)/(c) = {b / c:.2f}x | >= 0.95x |",
        f"| (c) training, same rows in memory (numpy) | {c:,.0f} | baseline | |",
        f"| (d) the previous default (no branch heads, 2 convolutions), streaming | {d:,.0f} | the default's cost per "
        f"epoch: (d)/(b) = {d / b:.2f}x the previous's | <= 1.5x |",
        "",
        f"Peak RSS of the whole run above: {result['peak_rss_mb']:.0f} MB.",
        "",
        "Memory under growth: one epoch of streaming training, each in a fresh process.",
        "",
        "| train rows | peak RSS | epoch |",
        "|---:|---:|---:|",
        *(f"| {g['rows']:,} | {g['peak_rss_mb']:.0f} MB | {g['seconds']:.0f} s |" for g in result["growth"]),
        "",
        f"4x the rows: peak RSS {growth:.2f}x (target: flat, <= 1.1x). The shuffle buffer (2,048 rows), "
        "record batches and prefetch bound memory, not the dataset.",
        f"<!-- /bench:{SECTION} -->",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="rows in the synthetic dataset (default 2000)")
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file's train section")
    parser.add_argument("--child-epoch", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_epoch:
        print(json.dumps(streaming_epoch(args.child_epoch)))
        return
    command = "python bench/train.py" + (f" --rows {args.rows}" if args.rows != 2000 else "") + \
        (f" --write {args.write}" if args.write else "")
    data_dir, _ = build_dataset(args.rows)
    result = measure(data_dir)
    result["peak_rss_mb"] = peak_rss_mb()
    result["growth"] = rss_under_growth(args.rows)
    section = render(result, command)
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

"""Training under each strategy: samples/s of one device, mirrored over logical CPU devices, two workers.

    python bench/distribute.py [--rows 3000] [--epochs 4] [--write docs/benchmarks.md]

One dataset (`mmpipe sample` rows, ingested at 64 px and validated), then `mmpipe.train.train` on it,
the default fused model with the default per-replica batch, once per strategy, each in a fresh process
(CPU devices can only be split before TensorFlow starts): one_device; mirrored over 2 logical CPU
devices; multi_worker as 2 processes on this host (TF_CONFIG on loopback ports). The rate is train
rows per second of epoch, the median over the epochs after the first (the first traces the graph).
The simplest baseline, one device, is in the same run; each ratio is against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ingest import write_section  # noqa: E402

SECTION = "distribute"
WORK = Path(os.environ.get("MMPIPE_BENCH_DIR", "/tmp/mmpipe-bench"))
SIZE = 64
ROWS, EPOCHS = 3000, 6  # epochs of a few seconds: what an epoch costs beside its steps (checkpoints) is a small part
CASES = [  # (strategy, train settings, worker processes); mirrored uses the GPUs where there are several
    ("one_device", {"train.strategy": "one_device"}, 1),
    ("mirrored", {"train.strategy": "mirrored", "train.cpu_devices": 2}, 1),
    ("multi_worker, 2 processes", {"train.strategy": "multi_worker"}, 2),
]


def build(rows: int) -> Path:
    """A validated data dir of `rows` sample rows at 64 px (built once, reused while it is there)."""
    from mmpipe.config import load_config
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.ingest import ingest
    from mmpipe.sample import SampleSpec, write_sample

    data_dir = WORK / f"distribute-{rows}" / "data"
    if (data_dir / "dataset.json").is_file():
        return data_dir
    raw = write_sample(WORK / f"distribute-{rows}" / "raw", SampleSpec(rows=rows, seed=5, fault_rate=0.0))
    config = load_config(None, {"data_dir": str(data_dir), "image.size": SIZE}, environ={})
    ingest(raw, config)
    if not validate_dataset(data_dir, config).success:
        raise SystemExit(f"the bench dataset in {data_dir} failed validation")
    return data_dir


def child(data_dir: Path, runs: Path, settings: dict, epochs: int) -> None:
    """Train once in this process and print the epoch times (the chief's are the ones reported)."""
    import keras

    from mmpipe.config import load_config
    from mmpipe.train import train

    times: list[float] = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    config = load_config(None, {"data_dir": str(data_dir), "runs_dir": str(runs), "train.epochs": epochs,
                                "train.export_serving": False, "train.early_stopping_patience": epochs + 1,
                                **settings}, environ={})
    result = train(config, callbacks=[EpochTimes()])
    print(json.dumps({"epoch_s": times, "distribution": result.distribution, "chief": result.chief}))


def measure(data_dir: Path, settings: dict, processes: int, epochs: int) -> dict:
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train.launch import local_worker_environments

    runs = WORK / "distribute-runs"
    command = [sys.executable, __file__, "--child", json.dumps(settings), str(data_dir), str(runs), str(epochs)]
    environments = local_worker_environments(processes) if processes > 1 else [{}]
    workers = [subprocess.Popen(command, env={**os.environ, **extra, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for extra in environments]
    outputs = [worker.communicate()[0] for worker in workers]
    if any(worker.returncode for worker in workers):
        raise SystemExit(f"a training process failed: {settings}")
    chief = next(json.loads(out.strip().splitlines()[-1]) for out in outputs
                 if json.loads(out.strip().splitlines()[-1])["chief"])
    rows = load_dataset(data_dir).rows_of("train")
    timed = chief["epoch_s"][1:]
    return {"rows": rows, "rate": rows / statistics.median(timed), "slowest": rows / max(timed),
            "fastest": rows / min(timed), "distribution": chief["distribution"]}


def render(results: list[tuple[str, dict]], command: str, epochs: int, gpus: list[str]) -> str:
    baseline = results[0][1]["rate"]
    rows = results[0][1]["rows"]
    lines = [
        f"<!-- bench:{SECTION} -->",
        "## Distributed training (`bench/distribute.py`)",
        "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, {'GPUs: ' + ', '.join(gpus) if gpus else 'CPU only'}. {rows:,} train rows of `mmpipe sample` data "
        f"at {SIZE} px, the default fused model, "
        f"`mmpipe.train.train` with {epochs} epochs in a fresh process per strategy; the rate is train rows per "
        "second of epoch (the median over the epochs after the first).",
        "",
        "| strategy | devices | replicas x workers | batch per replica / global | samples/s (median) | "
        "epochs ranged | vs one device |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for name, result in results:
        shape = result["distribution"]
        devices = ", ".join(device.split("device:")[-1] for device in shape["devices"])
        lines.append(f"| {name} | {devices} | {shape['replicas'] // shape['workers']} x {shape['workers']} | "
                     f"{shape['per_replica_batch']} / {shape['global_batch']} | {result['rate']:,.0f} | "
                     f"{result['slowest']:,.0f}-{result['fastest']:,.0f} | {result['rate'] / baseline:.2f}x |")
    lines += [
        "",
        *(["On a CPU no strategy is faster than one device, nor can one be: TensorFlow's one-device kernels "
           "already use every core, and the logical devices and the worker processes share the same cores. What "
           f"the table measures is what each strategy costs: mirrored {results[1][1]['rate'] / baseline:.2f}x, two "
           f"workers {results[2][1]['rate'] / baseline:.2f}x (each step's gradients and logs cross loopback gRPC "
           "between the processes). The range between epochs is wide because the replicas contend for the same "
           "cores. A speed-up needs more devices: GPUs, or machines.", "",
           "GPU: none was available where this was measured (the session that ran it was not lent one), so one "
           "device on CPU against a GPU is not measured here; on a machine with GPUs this script measures one "
           "device against mirrored over them."] if not gpus else []),
        f"<!-- /bench:{SECTION} -->",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=ROWS, help=f"sample rows before the split (default {ROWS})")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per strategy (default {EPOCHS}; >= 2)")
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file's section")
    parser.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        settings, data_dir, runs, epochs = args.child
        child(Path(data_dir), Path(runs), json.loads(settings), int(epochs))
        return
    command = "python bench/distribute.py" + (f" --rows {args.rows}" if args.rows != ROWS else "") + \
        (f" --epochs {args.epochs}" if args.epochs != EPOCHS else "") + (f" --write {args.write}" if args.write else "")
    data_dir = build(args.rows)
    results = []
    for name, settings, processes in CASES:
        results.append((name, measure(data_dir, settings, processes, max(2, args.epochs))))
        print(f"  {name}: {results[-1][1]['rate']:,.0f} samples/s", file=sys.stderr)
    import tensorflow as tf

    section = render(results, command, args.epochs, [gpu.name for gpu in tf.config.list_physical_devices("GPU")])
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

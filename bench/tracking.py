"""Tracking: what mirroring runs to MLflow adds to a demo run's wall time.

    python bench/tracking.py [--rounds 2] [--write docs/benchmarks.md]

A real `mlflow server` on loopback (SQLite backend, served artifacts; tests/fixtures/tracking.py), on the
same 2 cores. `mmpipe demo` as a fresh command without tracking (the baseline) and with
MLFLOW_TRACKING_URI set, interleaved, `--rounds` each (median). Then, in one process, a full mirror of
the last tracked demo run into a new experiment (params, history, metrics, artifacts, the model
version, the alias): the time mirroring itself costs, apart from the noise of two trainings.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from ingest import write_section  # noqa: E402

from tests.fixtures.tracking import running_mlflow_server  # noqa: E402

SECTION = "tracking"


def demo(folder: Path, uri: str | None) -> float:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmpipe", "demo", str(folder)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def mirror_again(runs: Path, uri: str) -> float:
    """A full mirror of the demo's run into a fresh experiment, timed in this process (imports done first)."""
    import mlflow  # noqa: F401 (imported before the clock starts: a flow's process has it imported after the first)

    from mmpipe.config import load_config
    from mmpipe.tracking import mirror_run

    (run,) = [path for path in runs.iterdir() if path.is_dir()]
    config = load_config(None, {"runs_dir": str(runs), "tracking.uri": uri, "tracking.experiment": "bench-again"},
                         environ={})
    start = time.perf_counter()
    assert mirror_run(run, config) is not None
    return time.perf_counter() - start


def import_cost() -> float:
    """Seconds `import mlflow.pyfunc` adds to a process that already imported TensorFlow (once per process)."""
    script = ("import time, tensorflow; start = time.perf_counter(); import mlflow.pyfunc; "
              "print(time.perf_counter() - start)")
    return float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                 .stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmpipe-bench-tracking-") as work:
        work = Path(work)
        (work / "mlflow").mkdir()
        with running_mlflow_server(work / "mlflow") as uri:
            plain, tracked = [], []
            for index in range(args.rounds):
                plain.append(demo(work / f"plain-{index}", None))
                tracked.append(demo(work / f"tracked-{index}", uri))
                print(f"round {index + 1}: demo {plain[-1]:.1f} s, with tracking {tracked[-1]:.1f} s", flush=True)
            mirror = mirror_again(work / f"tracked-{args.rounds - 1}" / "runs", uri)
    imported = statistics.median(import_cost() for _ in range(3))
    base, with_tracking = statistics.median(plain), statistics.median(tracked)
    command = "python bench/tracking.py" + (f" --rounds {args.rounds}" if args.rounds != 2 else "") + \
        (f" --write {args.write}" if args.write else "")
    section = "\n".join([
        f"<!-- bench:{SECTION} -->", "## Tracking (`bench/tracking.py`)", "",
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores. "
        "`mmpipe demo` (1,000 sample rows, the default model) as a fresh command, without and with "
        "MLFLOW_TRACKING_URI (a real `mlflow server` on loopback, SQLite, on the same cores), interleaved, "
        f"median of {args.rounds}; then one full mirror of the last tracked run into a new experiment, in-process.",
        "", "| what | seconds | vs the demo without tracking |", "|---|---:|---:|",
        f"| demo without tracking (baseline) | {base:.1f} | 1.00x |",
        f"| demo with tracking | {with_tracking:.1f} | {with_tracking / base:.2f}x |",
        f"| one full mirror (params, history, metrics, artifacts, model version, alias) | {mirror:.2f} | "
        f"{100 * mirror / base:.1f}% |",
        f"| `import mlflow.pyfunc` after TensorFlow (once per process, median of 3) | {imported:.2f} | "
        f"{100 * imported / base:.1f}% |",
        f"| tracking's cost: mirror + import | {mirror + imported:.2f} | {100 * (mirror + imported) / base:.1f}% |",
        "",
        "The demo's two wall times differ by training noise as much as by tracking; the mirror row is the cost "
        "tracking adds (it runs twice per pipeline run, the second adding only the evaluation and the model).",
        f"<!-- /bench:{SECTION} -->", ""])
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)


if __name__ == "__main__":
    main()

"""Make the README's screenshots from a real run: the report, the Prefect UI's run and artifact pages, and
the MLflow run page; and a short `mmpipe tune` on the demo's data, its study in the UI.

    python docs/screenshots.py            # writes docs/images/*.png (about 6 minutes on 2 cores)

It starts a Prefect server and an MLflow tracking server of its own (temporary stores, free ports), runs
`mmpipe demo` against them, then `mmpipe score` on the demo's sample darkened to a quarter of its brightness,
and opens the run's report.html, the scoring's report, the Prefect UI's pages and the MLflow run page in
headless Chromium (Debian's `chromium`; `--chromium PATH` for another). Nothing is drawn by hand:
what the pictures show is what a user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from flows.artifacts import artifact_key  # noqa: E402
from tests.fixtures.tracking import free_port, running_mlflow_server  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
ARTIFACTS = ("evaluation-report", "confusion-matrix", "reliability-diagram", "training-curves", "tracked-run")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", type=Path, default=IMAGES)
    parser.add_argument("--work", type=Path, help="keep the demo's files here (default: a temporary folder)")
    args = parser.parse_args()
    if not shutil.which(args.chromium):
        sys.exit(f"no Chromium at {args.chromium!r}: install Debian's `chromium` or pass --chromium PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmpipe-shots-") as temp:
        work = args.work or Path(temp)
        port = free_port()
        env = {**os.environ, "PREFECT_HOME": str(Path(temp) / "prefect"),
               "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
        (Path(temp) / "mlflow").mkdir()
        server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with running_mlflow_server(Path(temp) / "mlflow") as tracking:
            env["MLFLOW_TRACKING_URI"] = tracking
            try:
                _wait_for(f"http://127.0.0.1:{port}/api/health", seconds=120)
                print("servers up; running `mmpipe demo` (about a minute or two)", flush=True)
                done = subprocess.run(["mmpipe", "demo", str(work / "demo")], env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"mmpipe demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
                report = max((work / "demo" / "runs").glob("*/report.html"), key=lambda path: path.stat().st_mtime)
                _shoot(args.chromium, report.as_uri(), args.out / "report.png", (1100, 2600), Path(temp))
                flow_run = _pipeline_run_id(port)
                ui = f"http://127.0.0.1:{port}/runs/flow-run/{flow_run}"
                _shoot(args.chromium, ui, args.out / "prefect-run.png", (1400, 900), Path(temp), wait_ms=15000)
                for key in ARTIFACTS:  # the newest version of each artifact
                    keyed = artifact_key(key, work / "demo" / "data")
                    artifact = _api(port, "artifacts/filter", {"artifacts": {"key": {"any_": [keyed]}},
                                                               "sort": "CREATED_DESC", "limit": 1})[0]
                    _shoot(args.chromium, f"http://127.0.0.1:{port}/artifacts/artifact/{artifact['id']}",
                           args.out / f"prefect-{key}.png", (1400, 1000), Path(temp), wait_ms=15000)
                _shoot_scoring(args, work, env, port, Path(temp))
                _shoot_tuning(args, work, env, port, Path(temp))
                mlflow_run = next(line.split("MLflow: ", 1)[1].split(",", 1)[0]
                                  for line in done.stdout.splitlines() if line.startswith("MLflow: "))
                _shoot(args.chromium, mlflow_run, args.out / "mlflow-run.png", (1400, 1000), Path(temp),
                       wait_ms=20000)
            finally:
                server.terminate()
                server.wait(timeout=30)
    print(f"wrote {', '.join(sorted(path.name for path in args.out.glob('*.png')))} in {args.out}")


def _shoot_scoring(args, work: Path, env: dict, port: int, temp: Path) -> None:
    """The demo's champion scores its sample darkened to a quarter of its brightness: the drift artifacts."""
    from flows.artifacts import DRIFT_CHART, SCORING_SUMMARY, source_artifact_key
    from tests.fixtures.files import darkened_copy

    dark = darkened_copy(work / "demo" / "sample" / "manifest.csv", work / "dark")
    done = subprocess.run(["mmpipe", "score", str(dark), "--runs", str(work / "demo" / "runs"), "--data",
                           str(work / "demo" / "data")], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"mmpipe score failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = next((work / "demo" / "scores").glob("*/report.html"))
    _shoot(args.chromium, report.as_uri(), args.out / "scoring-report.png", (1100, 1900), temp)
    for name in (SCORING_SUMMARY, DRIFT_CHART):
        key = source_artifact_key(name, dark)
        artifact = _api(port, "artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                   "limit": 1})[0]
        _shoot(args.chromium, f"http://127.0.0.1:{port}/artifacts/artifact/{artifact['id']}",
               args.out / f"prefect-{name}.png", (1400, 1100), temp, wait_ms=15000)


# A short search on the demo's data (8 trials of at most 10 epochs, pruning from the third trial's third epoch):
# enough to show pruned trials and the charts, in about three minutes.
TUNING = {"MMPIPE_TRAIN__EPOCHS": "10", "MMPIPE_TUNE__PRUNE_AFTER_TRIALS": "2", "MMPIPE_TUNE__PRUNE_WARMUP_EPOCHS": "3"}


def _shoot_tuning(args, work: Path, env: dict, port: int, temp: Path) -> None:
    """`mmpipe tune` on the demo's data: its output (printed), the study's artifacts and its flow run."""
    from flows.artifacts import TUNING_CHART, TUNING_STUDY

    data, runs = work / "demo" / "data", work / "demo" / "runs"
    done = subprocess.run(["mmpipe", "tune", "--data", str(data), "--runs", str(runs), "--trials", "8"],
                          env={**env, **TUNING}, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"mmpipe tune failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(done.stdout, flush=True)
    for name in (TUNING_STUDY, f"{TUNING_CHART}-epochs"):
        artifact = _api(port, "artifacts/filter", {"artifacts": {"key": {"any_": [artifact_key(name, data)]}},
                                                   "sort": "CREATED_DESC", "limit": 1})[0]
        _shoot(args.chromium, f"http://127.0.0.1:{port}/artifacts/artifact/{artifact['id']}",
               args.out / f"prefect-{name}.png", (1400, 1000), temp, wait_ms=15000)
    flow_run = _api(port, "flow_runs/filter", {"flows": {"name": {"any_": ["tune"]}}, "sort": "START_TIME_DESC",
                                               "limit": 1})[0]["id"]
    _shoot(args.chromium, f"http://127.0.0.1:{port}/runs/flow-run/{flow_run}", args.out / "prefect-tune-run.png",
           (1400, 900), temp, wait_ms=15000)


def _shoot(chromium: str, url: str, out: Path, size: tuple[int, int], temp: Path, wait_ms: int = 2000) -> None:
    """One screenshot; `wait_ms` of virtual time lets a single-page app fetch and draw before the shot."""
    profile = Path(tempfile.mkdtemp(dir=temp))
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url], check=True,
                   capture_output=True, timeout=180)
    print(f"{out.name}: {url}", flush=True)


def _pipeline_run_id(port: int) -> str:
    """The newest `pipeline` flow run on the server."""
    runs = _api(port, "flow_runs/filter", {"flows": {"name": {"any_": ["pipeline"]}}, "sort": "START_TIME_DESC",
                                           "limit": 1})
    if not runs:
        sys.exit("the server has no pipeline run: did `mmpipe demo` use it (PREFECT_API_URL)?")
    return runs[0]["id"]


def _api(port: int, path: str, body: dict) -> list[dict]:
    """POST a filter to the server's REST API."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    sys.exit(f"the Prefect server did not answer at {url} within {seconds:.0f} s")


if __name__ == "__main__":
    main()

"""Train a list of runs in one fresh process (`python -m tests.train.train_jobs SPEC.json`).

Splitting the CPU into logical devices is possible only before TensorFlow starts in a process, and
the test session's has long started: the mirrored tests train here. SPEC is
{"data_dir": ..., "jobs": [{"runs": DIR, "overrides": {...}, "stop_after": N, "resume": true}]};
`stop_after` interrupts a run after that epoch (a kill, after its checkpoint is written), `resume`
continues the last interrupted run in `runs`. What each run wrote is read back by the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmpipe.train import train
from tests.fixtures.datasets import run_config
from tests.fixtures.training import StopAfter


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    interrupted: dict[str, str] = {}
    for job in spec["jobs"]:
        config = run_config(Path(spec["data_dir"]), Path(job["runs"]), **job["overrides"])
        if job.get("resume"):
            train(config, resume=interrupted.pop(job["runs"]))
        elif job.get("stop_after"):
            try:
                train(config, callbacks=[StopAfter(job["stop_after"])])
            except KeyboardInterrupt:
                interrupted[job["runs"]] = max(path.name for path in Path(job["runs"]).iterdir())
        else:
            train(config)


if __name__ == "__main__":
    main(sys.argv[1])

"""How far a flow is, said in its run logger's records for the command that started it (a terminal's progress
bar, or plain lines): `(done, total, what)` under PROGRESS_EXTRA; the UI shows the same lines as logs."""

from __future__ import annotations

from prefect import get_run_logger

PROGRESS_EXTRA = "mmpipe_progress"  # (done, total, what): how far a stage is
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # where those records are logged


def stage(what: str) -> None:
    """Say which stage starts (the progress shows it until the stage reports its own counts)."""
    get_run_logger().info("stage: %s", what, extra={PROGRESS_EXTRA: (0, None, what)})


"""The test session: Prefect's environment defaults first, then the shared fixtures (tests/fixtures)."""

import os

from flows.environment import prepare_prefect

prepare_prefect()  # before anything imports Prefect

pytest_plugins = ["tests.fixtures.datasets", "tests.fixtures.buckets", "tests.fixtures.tracking"]

# Each worker builds its own session fixtures (a Prefect server, the trained runs: about 30 s of one core), and a
# training test already keeps two cores busy: past four workers that costs more than it gains.
MOST_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: the cores this process may run on (a container's share, not the host's), at most MOST_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MOST_WORKERS)


def pytest_unconfigure(config):
    """A temporary Prefect server that a flow started on its own is stopped at exit, after pytest has closed
    the stream Prefect's console handler writes to: its goodbye line would print a logging traceback."""
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)

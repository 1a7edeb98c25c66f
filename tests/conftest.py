"""The test session: Prefect's environment defaults first, then the shared fixtures (tests/fixtures)."""

import os

import pytest

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


SLOW_TEST_S = 10.0  # what a slow test without its own estimate counts for


@pytest.hookimpl(trylast=True)  # after tests/fixtures/datasets.py marked what is slow
def pytest_collection_modifyitems(items):
    """The costliest files first: workers take whole files in this order, so the long ones start early and the
    many quick files fill in at the end, and the workers finish together (the same order in every worker: xdist
    requires it). A file costs the seconds its slow tests say (`@pytest.mark.slow(seconds=70)`, measured with
    `pytest --durations`), else SLOW_TEST_S for each slow test."""
    def file_of(item) -> str:
        return item.nodeid.split("::", 1)[0]

    cost: dict[str, float] = {}
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(file_of(item), len(order))
        marker = item.get_closest_marker("slow")
        seconds = 0.0 if marker is None else marker.kwargs.get("seconds", SLOW_TEST_S)
        cost[file_of(item)] = cost.get(file_of(item), 0.0) + seconds
    items.sort(key=lambda item: (-cost[file_of(item)], order[file_of(item)]))  # stable: a file's tests keep order


def pytest_unconfigure(config):
    """A temporary Prefect server that a flow started on its own is stopped at exit, after pytest has closed
    the stream Prefect's console handler writes to: its goodbye line would print a logging traceback."""
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)

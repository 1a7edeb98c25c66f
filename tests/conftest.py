"""The test session: Prefect's environment defaults first, then the shared fixtures (tests/fixtures)."""

from flows.environment import prepare_prefect

prepare_prefect()  # before anything imports Prefect

pytest_plugins = ["tests.fixtures.datasets", "tests.fixtures.buckets"]


def pytest_unconfigure(config):
    """A temporary Prefect server that a flow started on its own is stopped at exit, after pytest has closed
    the stream Prefect's console handler writes to: its goodbye line would print a logging traceback."""
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)

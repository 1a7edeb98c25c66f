"""The test session: Prefect's environment defaults first, then the shared fixtures (tests/fixtures)."""

from flows.environment import prepare_prefect

prepare_prefect()  # before anything imports Prefect

pytest_plugins = ["tests.fixtures.datasets"]

"""Prefect flows: thin wiring over the mmpipe core, one module per flow."""

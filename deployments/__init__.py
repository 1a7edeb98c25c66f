"""Prefect deployments of the mmpipe flows: `mmpipe serve` (serve.py) and prefect.yaml."""

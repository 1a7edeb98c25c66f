"""The project contracts: the suites every mmpipe dataset must pass, shipped with mmpipe (see README.md here)."""

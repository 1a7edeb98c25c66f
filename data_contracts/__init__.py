"""The project's data contracts, shipped with mmpipe as the default suites (see README.md here)."""

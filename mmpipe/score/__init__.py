"""Scoring new data with a run: the same cleaning as ingest, the run's model, and drift against what it learned.

    from mmpipe.score import score_source
    scoring = score_source("new/manifest.csv", "mmpipe-runs/RUN_ID", config)
"""

from mmpipe.score.runner import ScoreSteps, score_source

__all__ = ["ScoreSteps", "score_source"]

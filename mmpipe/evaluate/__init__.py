"""Evaluation: score a run on held-out data (score.py, metrics.py), report it (report.py), and decide
champion/challenger promotion (promote.py)."""

from mmpipe.evaluate.score import EvaluationError, evaluate_run, existing_evaluation

__all__ = ["EvaluationError", "evaluate_run", "existing_evaluation"]

"""Tuning: a hyperparameter search per dataset. space.py reads `[tune.space]` into Optuna's parameters, checked
against the settings they search; study.py keeps the Optuna study in the run store and trains each trial as an
ordinary run (pruned early, resumed after a kill); results.py tells what the search found and draws its charts."""

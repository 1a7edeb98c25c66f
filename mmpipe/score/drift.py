"""Has new data drifted from what the run learned? One test per feature, suited to its kind.

A number (text length, brightness, ...) is compared with the two-sample Kolmogorov-Smirnov test, a category
(image format, predicted class) with a chi-square test of the two tables of counts. Either kind of test
finds any difference at all on enough rows, so a feature drifts only when the difference is also large
enough to matter: a KS statistic of at least `score.drift_min_ks`, a population stability index (PSI) of
at least `score.drift_min_psi` (0.2 is the usual "significant shift"). The significance level
`score.drift_alpha` is shared by the features tested (Bonferroni), so on data like the training data the
whole verdict is a false alarm at most that often.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mmpipe.config import ScoreConfig
from mmpipe.score.features import CATEGORICAL, NUMERIC, SLICED

_PSI_FLOOR = 1e-4  # a category one side never has: a share this small, not log(0)
# Features where only a rise is drift: more unknown words than held-out rows have is new language; fewer is
# data the vocabulary was fitted on (the training rows themselves), not a change.
ONLY_A_RISE = frozenset({"oov_rate"})


def judge_drift(reference: dict[str, Any], current: dict[str, np.ndarray], config: ScoreConfig) -> dict[str, Any]:
    """{"detected", "features": {name: {"statistic", "threshold", "drifted", "test", "p_value", ...}}, "note"}."""
    if "missing" in reference:
        return {"detected": False, "features": {}, "note": f"drift not judged: {reference['missing']}"}
    rows = len(next(iter(current.values()), []))
    if rows < config.drift_min_rows:
        return {"detected": False, "features": {},
                "note": f"drift not judged: {rows} scored rows, fewer than score.drift_min_rows = "
                        f"{config.drift_min_rows}"}
    known = reference["features"]
    tested = [name for name in (*NUMERIC, *CATEGORICAL) if name in known and name in current]
    alpha = config.drift_alpha / max(1, len(tested))
    features = {}
    for name in tested:
        if name in NUMERIC:
            features[name] = _numeric(np.array([np.nan if v is None else v for v in known[name]], dtype=np.float64),
                                      np.asarray(current[name], dtype=np.float64), alpha, config.drift_min_ks,
                                      "greater" if name in ONLY_A_RISE else "two-sided")
        else:
            features[name] = _categorical(list(known[name]), list(current[name]), alpha, config.drift_min_psi)
    drifted = [name for name, found in features.items() if found["drifted"]]
    note = (f"drifted: {', '.join(drifted)}" if drifted else "no feature drifted") + \
        f" (each tested at {alpha:.4g}, the shared level {config.drift_alpha} over {len(tested)} features)"
    return {"detected": bool(drifted), "features": features, "note": note}


def judge_slices(reference: dict[str, Any], current: dict[str, np.ndarray], slices: dict[str, np.ndarray],
                 config: ScoreConfig) -> dict[str, dict[str, Any]]:
    """Drift within each slice of the `evaluate.slice_by` columns: {column: {value: verdict}} for every value with
    at least `score.drift_min_rows` rows on both sides, on the train sample's own features (SLICED). The level is
    shared by the slices as well, so slicing adds no false alarms to the whole verdict."""
    kept = reference.get("slices") or {}
    judged = {(name, value): (np.asarray(kept[name], dtype=object) == value, values == value)
              for name, values in slices.items() if name in kept for value in sorted(set(values.tolist()))}
    judged = {key: masks for key, masks in judged.items()
              if min(int(masks[0].sum()), int(masks[1].sum())) >= config.drift_min_rows}
    shared = config.model_copy(update={"drift_alpha": config.drift_alpha / max(1, len(judged))})
    found: dict[str, dict[str, Any]] = {}
    for (name, value), (before, after) in judged.items():
        part = {"features": {feature: [item for item, inside in zip(reference["features"][feature], before,
                                                                    strict=True) if inside]
                             for feature in SLICED if feature in reference["features"]}}
        verdict = judge_drift(part, {feature: current[feature][after] for feature in SLICED if feature in current},
                              shared)
        found.setdefault(name, {})[value] = verdict
    return found


def _numeric(reference: np.ndarray, current: np.ndarray, alpha: float, minimum: float,
             alternative: str) -> dict[str, Any]:
    """KS of the two samples; `alternative="greater"`: only current values above the reference's count (its
    CDF below the reference's)."""
    from scipy.stats import ks_2samp

    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(reference) < 2 or len(current) < 2:
        return {"test": "ks", "statistic": None, "threshold": minimum, "p_value": None, "drifted": False,
                "note": "too few values to compare"}
    found = ks_2samp(reference, current, alternative=alternative)
    statistic, p_value = float(found.statistic), float(found.pvalue)
    test = "ks" if alternative == "two-sided" else "ks (a rise only)"
    return {"test": test, "statistic": round(statistic, 4), "threshold": minimum, "p_value": p_value,
            "drifted": bool(p_value < alpha and statistic >= minimum),
            "reference_median": float(np.median(reference)), "current_median": float(np.median(current))}


def _categorical(reference: list, current: list, alpha: float, minimum: float) -> dict[str, Any]:
    from scipy.stats import chi2_contingency

    sides = [Counter(map(str, reference)), Counter(map(str, current))]
    names = sorted(set(sides[0]) | set(sides[1]))
    counts = np.array([[side[name] for name in names] for side in sides])
    if counts.sum(axis=1).min() == 0:
        return {"test": "chi2", "statistic": None, "threshold": minimum, "p_value": None, "drifted": False,
                "note": "nothing to compare"}
    shares = np.maximum(counts / counts.sum(axis=1, keepdims=True), _PSI_FLOOR)
    psi = float(((shares[1] - shares[0]) * np.log(shares[1] / shares[0])).sum())
    p_value = 1.0 if len(names) < 2 else float(chi2_contingency(counts[:, counts.sum(axis=0) > 0]).pvalue)
    return {"test": "chi2", "statistic": round(psi, 4), "threshold": minimum, "p_value": p_value,
            "drifted": bool(p_value < alpha and psi >= minimum),
            "reference_shares": dict(zip(names, np.round(counts[0] / counts[0].sum(), 4).tolist(), strict=True)),
            "current_shares": dict(zip(names, np.round(counts[1] / counts[1].sum(), 4).tolist(), strict=True))}

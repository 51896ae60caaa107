"""Bootstrap confidence intervals over test images, and the paired bootstrap of a difference.

The percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
ch. 13): the test images are drawn with replacement ``n_boot`` times (1000 by default, from a
seeded ``numpy.random.default_rng``), the metric is recomputed on each resample and the 2.5th
and 97.5th percentiles of those values bound the 95 % interval. With labels the draw is
stratified: every stratum (a class, or a label pattern) is resampled to its own size, so each
resample keeps the test split's class balance and a per-class AUROC stays defined.

The paired bootstrap (the same resample of images applied to both models) gives the interval
of a difference in a metric and a two-sided p-value: twice the smaller share of resampled
differences on either side of zero (capped at 1), the usual bootstrap test of "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
MIN_STRATUM = 2  # label patterns rarer than this are pooled into one stratum


def method(n_boot: int = N_BOOT, seed: int = 0, stratified: str | None = None) -> dict:
    """The record of how an interval was made (written beside every ``ci95``)."""
    return {
        "method": "percentile bootstrap over test images",
        "level": LEVEL,
        "resamples": int(n_boot),
        "seed": int(seed),
        "stratified_by": stratified,
    }


def strata_of(labels: np.ndarray | None) -> np.ndarray | None:
    """Stratum id per image: the class of integer targets (N,), the row's label pattern of
    0/1 targets (N, C) (patterns seen fewer than 2 times pooled), or None without labels."""
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        return np.unique(y.reshape(len(y)), return_inverse=True)[1]
    keys = np.unique(np.nan_to_num(y.astype(np.float64), nan=-9.0), axis=0, return_inverse=True)
    ids = np.asarray(keys[1]).reshape(-1)
    counts = np.bincount(ids)
    return np.where(counts[ids] < MIN_STRATUM, -1, ids)


def resample_indices(
    n: int, strata: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0
) -> np.ndarray:
    """(n_boot, n) int64 indices: each row one bootstrap resample of ``range(n)``, drawn
    within each stratum to that stratum's size when ``strata`` (N,) is given."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty test set")
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    strata = np.asarray(strata).reshape(n)
    parts = []
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        parts.append(members[rng.integers(0, len(members), size=(n_boot, len(members)))])
    return np.concatenate(parts, axis=1)


def _interval(values: np.ndarray) -> list[float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    tail = (1.0 - LEVEL) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return [float(lo), float(hi)]


def ci_of_mean(values: np.ndarray, idx: np.ndarray) -> list[float] | None:
    """Interval of the (NaN-ignoring) mean of per-image ``values`` (N,) over resamples
    ``idx`` (B, N); vectorised."""
    v = np.asarray(values, dtype=np.float64)[idx]
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ok, v, 0.0).sum(axis=1) / ok.sum(axis=1)
    return _interval(means)


def ci_of_stat(stat: Callable[[np.ndarray], float], idx: np.ndarray) -> list[float] | None:
    """Interval of ``stat(indices)`` (e.g. an AUROC of the resampled rows) over ``idx``."""
    return _interval(np.array([stat(row) for row in idx], dtype=np.float64))


def paired_diff(
    stat_a: Callable[[np.ndarray], float],
    stat_b: Callable[[np.ndarray], float],
    n: int,
    strata: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``stat_b - stat_a`` over the same ``n`` test images.

    ``stat_*(indices)`` compute the metric of each model on the image subset ``indices``
    (with repeats). Returns ``diff`` (on all images), ``ci95`` ([low, high] or None),
    ``p_value`` (two-sided, None when undefined) and ``n``.
    """
    every = np.arange(n)
    diff = float(stat_b(every) - stat_a(every))
    idx = resample_indices(n, strata, n_boot, seed)
    d = np.array([stat_b(row) - stat_a(row) for row in idx], dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0 or not math.isfinite(diff):
        return {"diff": finite(diff), "ci95": None, "p_value": None, "n": int(n)}
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {"diff": diff, "ci95": _interval(d), "p_value": p, "n": int(n)}


def finite(value: Any) -> Any:
    """A float, or None when it is NaN or infinite (strict JSON has no NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None

"""Label-fraction subsets (1%, 10%, 100%), deterministic and stratified."""

from __future__ import annotations

import numpy as np


def sample_fraction(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row positions of a ``fraction`` subset of ``targets``.

    ``targets`` is (N,) class ids or (N, C) multi-hot. Single-label data is sampled per
    class (each class keeps round(fraction * n_c) rows, at least one). Multi-label data first
    takes one random positive of every class that has any, then fills up to
    round(fraction * N) uniformly: so every class keeps positives even at 1%.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(targets)
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if targets.ndim == 1 or targets.shape[1] == 1:
        return _per_class(targets.reshape(n, -1)[:, 0], fraction, rng)
    return _multilabel(targets, fraction, rng)


def _per_class(classes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    chosen = []
    for value in np.unique(classes):
        rows = np.flatnonzero(classes == value)
        take = max(1, int(round(fraction * len(rows))))
        chosen.append(rng.choice(rows, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def _multilabel(targets: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    n = len(targets)
    want = max(1, int(round(fraction * n)))
    picked: set[int] = set()
    for c in range(targets.shape[1]):
        positives = np.flatnonzero(targets[:, c] > 0)
        if len(positives) and not picked.intersection(positives.tolist()):
            picked.add(int(rng.choice(positives)))
    rest = np.setdiff1d(np.arange(n), np.fromiter(picked, dtype=np.int64, count=len(picked)))
    fill = max(0, want - len(picked))
    extra = rng.choice(rest, size=min(fill, len(rest)), replace=False)
    return np.sort(np.concatenate([np.fromiter(picked, dtype=np.int64), extra]))

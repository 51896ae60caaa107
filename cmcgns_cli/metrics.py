"""Downstream metrics: AUROC and accuracy through scikit-learn (mAP and Dice join later)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score


def auroc(y_true: np.ndarray, y_score: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-class AUROC and their macro mean for (N, C) targets in {0, 1} and scores.

    A class whose test targets are all one value has no AUROC: it is reported as NaN and
    left out of the macro mean (scikit-learn would raise).
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(len(y_score), -1)
    out: dict[str, float] = {}
    for c, name in enumerate(names):
        col = y_true[:, c]
        keep = ~np.isnan(col)
        if len(np.unique(col[keep])) < 2:
            out[name] = float("nan")
            continue
        out[name] = float(roc_auc_score(col[keep], y_score[keep, c]))
    valid = [v for v in out.values() if not np.isnan(v)]
    out["macro_auroc"] = float(np.mean(valid)) if valid else float("nan")
    return out


def accuracy(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against integer class targets."""
    return float(accuracy_score(np.asarray(y_true, dtype=np.int64), np.argmax(logits, axis=1)))

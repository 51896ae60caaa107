"""Train / validate / test splits: the MGCA protocol and a leak-free grouped variant.

``mgca`` reproduces MGCA's preprocessing (scikit-learn ``train_test_split`` with
``random_state=0`` over the rows in file order); ``grouped`` splits whole groups
(patients, or images where rows are per region) with the same fractions and seed, so no
group lands in two splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROTOCOLS = ("mgca", "grouped")


def _tts(n: int, test_size: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, test) of ``train_test_split(range(n), test_size, random_state)``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    if n < 2:
        return idx, idx[:0]
    a, b = train_test_split(idx, test_size=test_size, random_state=seed)
    return np.asarray(a), np.asarray(b)


def split_70_15_15(n: int, seed: int = 0) -> list[str]:
    """MGCA for RSNA / SIIM: 70 % train, then the 30 % halved into test and validate.

    ``train, rest = tts(df, test_size=0.3); test, valid = tts(rest, test_size=0.5)``.
    """
    out = ["train"] * n
    _, rest = _tts(n, 0.3, seed)
    if len(rest) >= 2:
        t, v = _tts(len(rest), 0.5, seed)
        for i in rest[t]:
            out[i] = "test"
        for i in rest[v]:
            out[i] = "validate"
    else:
        for i in rest:
            out[i] = "test"
    return out


def split_train_valid(n: int, valid_fraction: float = 0.2, seed: int = 0) -> list[str]:
    """MGCA for COVIDx / Object-CXR: ``train, valid = tts(df, test_size=0.2)``."""
    out = ["train"] * n
    _, v = _tts(n, valid_fraction, seed)
    for i in v:
        out[i] = "validate"
    return out


def grouped(groups: Sequence[str], row_split: callable, seed: int = 0) -> list[str]:  # type: ignore[valid-type]
    """Apply a row splitter to the unique groups (first-seen order) and spread it back."""
    order: dict[str, int] = {}
    for g in groups:
        order.setdefault(g, len(order))
    per_group = row_split(len(order), seed=seed)
    return [per_group[order[g]] for g in groups]

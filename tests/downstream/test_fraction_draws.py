"""Label-fraction subsets are seeded draws for every kind of task, not the first rows:
single-label classes (rsna-cls, covidx), the has-a-box / has-a-mask strata of detection and
segmentation, and the authors' legacy-generator draw of the dense tasks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from cmcgns_cli.downstream.fractions import sample_fraction
from cmcgns_cli.downstream.pools import dense_subset


def _per_class_rows(classes: np.ndarray, rows: np.ndarray, value: int) -> np.ndarray:
    return rows[classes[rows] == value]


def test_single_label_fraction_differs_between_seeds_and_is_spread_over_each_class():
    classes = np.repeat([0, 1, 2], [300, 100, 60])
    seen = {0: set(), 1: set(), 2: set()}
    draws = set()
    for seed in range(20):
        rows = sample_fraction(classes, 0.1, seed)
        draws.add(tuple(rows.tolist()))
        for c in seen:
            seen[c].update(_per_class_rows(classes, rows, c).tolist())
    assert len(draws) == 20  # every seed its own subset (--seeds N retrains different ones)
    # 20 uniform draws of 10 % leave a given row out with probability 0.9 ** 20 = 0.12, so
    # about 88 % of each class is seen; taking the first rows would show 10 % only
    for c, size in ((0, 300), (1, 100), (2, 60)):
        assert len(seen[c]) / size > 0.6
    # the draw is not ordered: rows come from the whole class, not its front
    one = sample_fraction(classes, 0.1, 0)
    assert _per_class_rows(classes, one, 0).max() > 150  # class 0 spans rows 0..299


def test_dense_stratified_draw_depends_on_the_seed():
    """Detection / segmentation strata are 0/1 flags (has a box); the stratified sampler
    draws within each, seeded."""
    flags = np.zeros(200, dtype=np.int64)
    flags[::4] = 1  # 50 positives, 150 negatives
    prepared = SimpleNamespace(manifest=pd.DataFrame({"id": [str(i) for i in range(200)]}))
    train = np.arange(200)
    a, _ = dense_subset(prepared, "rsna-det", train, flags, 0.1, 0, "stratified", "dense_order")
    b, _ = dense_subset(prepared, "rsna-det", train, flags, 0.1, 1, "stratified", "dense_order")
    assert len(a) == len(b) == 20 and int(flags[a].sum()) == 5  # round(0.1 * 50) positives
    assert not np.array_equal(a, b)
    first_neg = np.flatnonzero(flags == 0)[:15]
    first_pos = np.flatnonzero(flags == 1)[:5]
    assert not np.array_equal(a[flags[a] == 0], first_neg)
    assert not np.array_equal(a[flags[a] == 1], first_pos)


def test_dense_mgca_draw_is_the_authors_seeded_legacy_choice():
    """The authors' dense subsets: np.random.seed(seed); np.random.choice(n, int(f * n),
    replace=False) over the training rows in table order (here the manifest order)."""
    prepared = SimpleNamespace(manifest=pd.DataFrame({"id": [str(i) for i in range(300)]}))
    train = np.arange(100, 300)  # not starting at 0: positions map back to rows
    flags = np.zeros(300, dtype=np.int64)
    for seed in (0, 7):
        got, info = dense_subset(prepared, "rsna-det", train, flags, 0.1, seed, "mgca", "x")
        np.random.seed(seed)
        want = np.sort(train[np.random.choice(200, 20, replace=False)])
        assert np.array_equal(got, want)
        assert info["n_pool"] == 200
    first, _ = dense_subset(prepared, "rsna-det", train, flags, 0.1, 0, "mgca", "x")
    again, _ = dense_subset(prepared, "rsna-det", train, flags, 0.1, 1, "mgca", "x")
    assert not np.array_equal(first, again) and not np.array_equal(first, train[:20])

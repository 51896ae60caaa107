"""The bootstrap interval is a 95 % one: its bounds are the 2.5th and 97.5th percentiles of
the resampled values, checked on resamples whose statistics are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli import bootstrap
from cmcgns_cli.downstream.intervals import attach_ci


def _one_value_resamples(n: int) -> tuple[np.ndarray, np.ndarray]:
    """values 0..n-1 and n resamples of one image each: resample b's mean is exactly b."""
    return np.arange(n, dtype=np.float64), np.arange(n).reshape(n, 1)


def test_mean_interval_bounds_are_the_2_5th_and_97_5th_percentiles_by_hand():
    values, idx = _one_value_resamples(1000)
    lo, hi = bootstrap.ci_of_mean(values, idx)
    # the sorted means are 0..999; the p-th percentile (linear interpolation between closest
    # ranks, Hyndman & Fan type 7) sits at rank p/100 * 999: 0.025 * 999 = 24.975 and
    # 0.975 * 999 = 974.025 (a 90 % interval would give 49.95 and 949.05)
    assert lo == pytest.approx(24.975, abs=1e-9)
    assert hi == pytest.approx(974.025, abs=1e-9)


def test_stat_interval_and_paired_difference_use_the_same_95_percent_bounds():
    values, idx = _one_value_resamples(1000)
    lo, hi = bootstrap.ci_of_stat(lambda rows: float(values[rows].mean()), idx)
    assert (lo, hi) == pytest.approx((24.975, 974.025), abs=1e-9)
    result = {"metric": "m", "per_image": {"kind": "mean", "values": {"m": values}}}
    attach_ci(result, n_boot=4000, seed=3)
    assert result["ci95_method"]["level"] == 0.95


def test_interval_covers_95_percent_of_its_own_resampled_means():
    """The share of resampled means inside the interval is the interval's level: 95 % of
    4000 (within the two resamples a percentile bound may fall on), not 90 %."""
    x = np.random.default_rng(7).exponential(1.0, size=300)  # skewed: no symmetry to lean on
    idx = bootstrap.resample_indices(len(x), None, n_boot=4000, seed=5)
    lo, hi = bootstrap.ci_of_mean(x, idx)
    means = x[idx].mean(axis=1)  # the resampled means, computed here directly
    inside = float(np.mean((means >= lo) & (means <= hi)))
    assert inside == pytest.approx(0.95, abs=0.002)
    below = float(np.mean(means < lo))
    assert below == pytest.approx(0.025, abs=0.002)  # equal tails on a skewed distribution


def test_paired_difference_interval_is_95_percent():
    shift = np.arange(1000, dtype=np.float64)
    # stat_b - stat_a on a one-image resample [b] is exactly b; on every image it is the mean
    out = bootstrap.paired_diff(
        lambda rows: 0.0, lambda rows: float(shift[rows].mean()), 1000, n_boot=1000, seed=0
    )
    lo, hi = out["ci95"]
    d = np.sort(shift[bootstrap.resample_indices(1000, None, 1000, 0)].mean(axis=1))
    # rank 24.975 and 974.025 of the 1000 sorted resampled differences, interpolated
    assert lo == pytest.approx(d[24] + 0.975 * (d[25] - d[24]))
    assert hi == pytest.approx(d[974] + 0.025 * (d[975] - d[974]))


def test_paired_p_value_is_two_sided():
    """The two-sided p-value is twice the smaller tail share of the resampled differences.
    Here a resample's difference is +1 when its first drawn image is among the first 100 of
    1000 and -1 otherwise: about 10 % of resamples are positive, so p is about 0.2 (a
    one-sided share would report 0.1)."""
    n, n_boot, seed = 1000, 2000, 4

    def diff_of(rows: np.ndarray) -> float:
        return 1.0 if rows[0] < 100 else -1.0

    out = bootstrap.paired_diff(lambda rows: 0.0, diff_of, n, n_boot=n_boot, seed=seed)
    first = bootstrap.resample_indices(n, None, n_boot, seed)[:, 0]  # the same seeded draws
    positive = float(np.mean(first < 100))
    assert 0.08 < positive < 0.12
    assert out["p_value"] == pytest.approx(2 * positive)
    assert out["diff"] == 1.0  # on all images the first row is image 0


def test_rare_label_patterns_are_pooled_into_one_stratum():
    # patterns: [1,0] x 5, [0,1] x 2, [1,1] x 1, [0,0] x 1 -> the last two (seen once) pool
    y = np.array([[1, 0]] * 5 + [[0, 1]] * 2 + [[1, 1]] + [[0, 0]], dtype=float)
    s = bootstrap.strata_of(y)
    assert s[7] == s[8] == -1
    assert len({int(v) for v in s[:5]}) == 1 and len({int(v) for v in s[5:7]}) == 1
    assert s[0] != s[5] and -1 not in (s[0], s[5])  # a pattern seen twice keeps its stratum
    classes = bootstrap.strata_of(np.array([2, 0, 2, 1]))
    assert classes.tolist() == [2, 0, 2, 1]  # single-label: the class itself (ranked)

"""Label fractions are deterministic and stratified; metrics equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from cmcgns_cli.downstream.fractions import sample_fraction
from cmcgns_cli.metrics import accuracy, auroc


def _multilabel(n: int = 1000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.3, 0.1, 0.02, 0.005, 0.2])
    return (rng.random((n, 5)) < prevalence).astype(np.float32)


def test_fraction_is_deterministic_and_seed_dependent() -> None:
    y = _multilabel()
    a, b = sample_fraction(y, 0.01, seed=3), sample_fraction(y, 0.01, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_fraction(y, 0.01, seed=4))
    assert len(a) == 10 and len(np.unique(a)) == 10


def test_multilabel_fraction_keeps_a_positive_of_every_class() -> None:
    y = _multilabel()
    for seed in range(20):
        rows = sample_fraction(y, 0.01, seed)
        has_any = y.sum(0) > 0
        assert (y[rows].sum(0)[has_any] > 0).all()


def test_single_label_fraction_is_stratified() -> None:
    classes = np.repeat([0, 1, 2], [800, 150, 50])
    rows = sample_fraction(classes, 0.1, seed=0)
    counts = np.bincount(classes[rows], minlength=3)
    assert counts.tolist() == [80, 15, 5]
    tiny = sample_fraction(classes, 0.001, seed=0)
    assert set(classes[tiny].tolist()) == {0, 1, 2}  # each class keeps at least one


def test_full_fraction_is_everything() -> None:
    assert np.array_equal(sample_fraction(np.zeros(7), 1.0, 0), np.arange(7))
    with pytest.raises(ValueError):
        sample_fraction(np.zeros(7), 0.0, 0)


def test_auroc_equals_sklearn_macro() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.3).astype(float)
    s = rng.random((200, 5)) + 0.5 * y
    ours = auroc(y, s, list("abcde"))
    assert ours["macro_auroc"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert ours["c"] == pytest.approx(roc_auc_score(y[:, 2], s[:, 2]))


def test_auroc_skips_a_class_without_both_labels() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.2], [0.4, 0.9]])
    ours = auroc(y, s, ["a", "b"])
    assert np.isnan(ours["b"])
    assert ours["macro_auroc"] == pytest.approx(1.0)


def test_accuracy_equals_sklearn() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 3))
    y = rng.integers(0, 3, 50)
    assert accuracy(y, logits) == pytest.approx(accuracy_score(y, logits.argmax(1)))


def test_seed_std_is_the_sample_standard_deviation() -> None:
    from cmcgns_cli.downstream.seed_summary import seed_std, summarise_seeds

    # sqrt(((1-2.5)^2 + (2-2.5)^2 + (3-2.5)^2 + (4-2.5)^2) / 3) = sqrt(5/3)
    assert seed_std(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(1.2909944487358056)
    # an undefined seed is left out: std of (1, 3) = sqrt(2)
    assert seed_std(np.array([1.0, np.nan, 3.0])) == pytest.approx(1.4142135623730951)
    assert seed_std(np.array([0.7])) is None
    runs = [
        {"task": "t", "metric": "m", "protocol": {"seed": s}, "metrics": {"m": v, "n": 8}}
        for s, v in enumerate([1.0, 2.0, 3.0, 4.0])
    ]
    summary = summarise_seeds(runs)
    assert summary["mean"] == {"m": 2.5, "n": 8}
    assert summary["std"]["m"] == pytest.approx(1.2909944487358056)
    # four seeds: value and metrics are the mean (2.5, not the first seed's 1.0), every seed kept
    assert summary["value"] == 2.5 and summary["metrics"] == {"m": 2.5, "n": 8}
    assert summary["n_seeds"] == 4
    assert [(e["seed"], e["value"]) for e in summary["seeds"]] == [(0, 1.0), (1, 2.0), (2, 3.0),
                                                                   (3, 4.0)]  # fmt: skip
    one = summarise_seeds(runs[2:3])  # one seed: its value and protocol, no spread
    assert one["value"] == 3.0 and one["protocol"] == {"seed": 2} and one["std"]["m"] is None


def test_auroc_with_tied_scores_equals_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    for n in (5, 40, 301):
        y = (rng.random((n, 3)) < 0.3).astype(np.float32)
        y[0], y[1] = 1.0, 0.0  # both values present in every column
        s = rng.integers(0, 4, size=(n, 3)).astype(np.float64)  # many ties
        ours = auroc(y, s, ["a", "b", "c"])
        for c, name in enumerate("abc"):
            assert ours[name] == pytest.approx(roc_auc_score(y[:, c], s[:, c]), abs=1e-12)
    # by hand: positives score 0.8, 0.4; negatives 0.4, 0.1 -> pairs won 1 + 1 + 0.5 + 1 of 4
    hand = auroc(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.4, 0.1]), ["x"])
    assert hand["x"] == 0.875

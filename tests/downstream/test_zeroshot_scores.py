"""Zero-shot scores by hand: cos(image, positive prompt) - cos(image, negative prompt), so a
lost negative prompt changes the number, not only a margin over random weights."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.downstream.zeroshot import zeroshot_scores


def test_scores_subtract_the_negative_prompt_by_hand():
    s = 1 / np.sqrt(2)
    img = np.array([[1.0, 0.0, 0.0], [0.0, s, s]])  # two unit image vectors
    pos = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # class 0, class 1 positives
    neg = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])  # their negatives (unit length)
    got = zeroshot_scores(img, pos, neg)
    # image 0: class 0: 1 - 0 = 1; class 1: 0 - 0.6 = -0.6
    # image 1: class 0: 0 - s = -0.7071; class 1: s - 0.8 s = 0.2 s = 0.1414
    want = np.array([[1.0, -0.6], [-s, 0.2 * s]])
    assert got.shape == (2, 2)
    assert got == pytest.approx(want, abs=1e-12)
    # without the negatives image 0 would score 0 for class 1, not -0.6
    assert got[0, 1] < 0

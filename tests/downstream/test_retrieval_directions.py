"""``evaluate --task retrieval`` ranks reports for each image (rows of image @ report.T) and
images for each report (its columns): a hand-made, non-symmetric similarity matrix whose two
directions score differently."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.downstream.retrieval import retrieval_metrics

# image i . report j (rows: images, columns: reports); pair i is (image i, report i)
SIMS = np.array(
    [
        [0.9, 0.1, 0.0, 0.2],
        [0.8, 0.5, 0.0, 0.1],
        [0.1, 0.2, 0.3, 0.0],
        [0.0, 0.6, 0.4, 0.7],
    ]
)


def _embeddings(sims: np.ndarray = SIMS) -> tuple[np.ndarray, np.ndarray]:
    """img = identity, txt = sims.T, so that img @ txt.T is ``sims`` exactly."""
    return np.eye(len(sims)), sims.T.copy()


def test_both_directions_by_hand():
    m = retrieval_metrics(*_embeddings())
    # image -> report (rows): image 0 -> report 0 (hit); image 1 -> report 0 (miss); image
    # 2 -> report 2 (hit); image 3 -> report 3 (0.7 > 0.6, hit): R@1 = 3/4
    assert m["i2t_R@1"] == pytest.approx(0.75)
    # report -> image (columns): report 0 -> image 0 (0.9, hit); report 1 -> image 3 (0.6 >
    # 0.5, miss); report 2 -> image 3 (0.4 > 0.3, miss); report 3 -> image 3 (hit): 2/4
    assert m["t2i_R@1"] == pytest.approx(0.5)
    # K = 5 and 10 exceed the 4 reports: the whole gallery, every query hits
    for k in (5, 10):
        assert m[f"i2t_R@{k}"] == m[f"t2i_R@{k}"] == pytest.approx(1.0)


def test_one_changed_column_moves_only_the_report_to_image_score():
    sims = SIMS.copy()
    sims[0, 3] = 0.8  # report 3 now finds image 0 first; image 0 still finds report 0 (0.9)
    m = retrieval_metrics(*_embeddings(sims))
    assert m["i2t_R@1"] == pytest.approx(0.75)
    assert m["t2i_R@1"] == pytest.approx(0.25)  # only report 0 finds its image


def test_identical_reports_count_as_hits_in_the_report_to_image_direction():
    # reports 1, 2 and 3 are the same text (equal keys): finding image 3 is a hit for each
    keys = np.array([0, 1, 1, 1])
    m = retrieval_metrics(*_embeddings(), keys)
    # i2t: image 1 -> report 0 (key 0 != 1) is still the only miss: 3/4
    # t2i: reports 1 and 2 -> image 3 (key 1) are now hits: 4/4
    assert m["i2t_R@1"] == pytest.approx(0.75)
    assert m["t2i_R@1"] == pytest.approx(1.0)

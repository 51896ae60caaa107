"""Grounding regions reach the model-input frame through the eval transform's resize and
CENTRE crop: a hand computation, and agreement with the image pipeline itself (the same
rectangle drawn into the picture lands where the mapped region lands)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from cmcgns_cli.downstream.grounding import to_model_space
from cmcgns_cli.embedding.inputs import ImagePrep


def test_centre_crop_by_hand():
    region = np.zeros((1, 12, 12), bool)
    region[0, 3:5, 6:10] = True  # rows 3-4, columns 6-9: non-square, off the diagonal
    out = to_model_space(region, 12, 8)  # no resize; crop 8 of 12 starts at (12 - 8) // 2 = 2
    want = np.zeros((8, 8), bool)
    want[1:3, 4:8] = True  # shifted up and left by 2
    assert out.shape == (1, 8, 8)
    assert np.array_equal(out[0], want)


def test_region_lands_where_the_image_pipeline_puts_the_same_rectangle():
    size, image_size, crop = 40, 50, 32  # resize x 1.25, then crop 32 from (9, 9)
    picture = np.zeros((size, size), np.uint8)
    picture[6:14, 22:36] = 255  # rows 6-13, columns 22-35
    region = picture[None] > 0
    cfg = SimpleNamespace(data=SimpleNamespace(image_size=image_size, crop_size=crop))
    seen = ImagePrep(cfg, size).tensor(picture)[0].numpy() > 0.0  # [-1, 1]: bright > 0
    mapped = to_model_space(region, image_size, crop)[0]
    assert seen.shape == mapped.shape == (crop, crop)
    iou = (seen & mapped).sum() / (seen | mapped).sum()
    assert iou > 0.75, iou  # the two resizes differ only on the half-covered edge pixels

    def box(a: np.ndarray) -> tuple[int, int, int, int]:
        rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
        return rows.min(), rows.max(), cols.min(), cols.max()

    assert np.abs(np.subtract(box(mapped), box(seen))).max() <= 1
    # by hand: rows 6-13 cover 6..14, x 1.25 -> 7.5..17.5, minus the crop's 9 -> -1.5..8.5:
    # pixel rows 0-8 (row 8 half covered, kept at >= 0.5); columns 22..36 -> 27.5..45 ->
    # 18.5..36, cut at 32: columns 18 (half) to 31
    assert box(mapped) == (0, 8, 18, 31)

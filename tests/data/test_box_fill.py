"""Box fill and box / mask mapping on non-square, off-diagonal boxes and non-square images,
where an x/y swap, a rounding slip or a lost padding shows."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.data import imageio
from tests.data.box_fill import filled_boxes


def test_box_fill_by_hand_on_a_wide_box_with_fractional_edges():
    # x 1.5 .. 5.2 (columns 1-5 touched), y 0.25 .. 2.0 (rows 0-1): 2 rows x 5 columns
    got = imageio.boxes_mask([[1.5, 0.25, 3.7, 1.75]], 7)
    want = np.zeros((7, 7), np.uint8)
    want[0:2, 1:6] = 1
    np.testing.assert_array_equal(got, want)
    assert got.sum() == 10 and got.T.sum() == 10 and not np.array_equal(got, got.T)


def test_box_fill_clips_at_the_border_and_keeps_sub_pixel_boxes():
    got = imageio.boxes_mask([[5.5, -2.0, 4.0, 3.5], [2.2, 4.4, 0.3, 0.2]], 7)
    want = np.zeros((7, 7), np.uint8)
    want[0:2, 5:7] = 1  # columns 5.5 .. 9.5 -> 5, 6; rows -2 .. 1.5 -> 0, 1
    want[4, 2] = 1  # a 0.3 x 0.2 box inside pixel (4, 2) still marks it
    np.testing.assert_array_equal(got, want)


def test_box_fill_agrees_with_the_independent_overlap_rule_on_random_boxes():
    rng = np.random.default_rng(11)
    for _ in range(50):
        boxes = [
            [rng.uniform(-5, 30), rng.uniform(-5, 30), rng.uniform(0.1, 15), rng.uniform(0.1, 9)]
            for _ in range(rng.integers(1, 4))
        ]
        np.testing.assert_array_equal(imageio.boxes_mask(boxes, 32), filled_boxes(boxes, 32))


def test_box_and_mask_mapping_on_a_wide_picture():
    # a 100 x 160 (h x w) picture into 40 px: scale 0.25, new 25 x 40, pad_y = 7, pad_x = 0
    tf = imageio.letterbox_transform(100, 160, 40)
    assert (tf.new_h, tf.new_w, tf.pad_x, tf.pad_y) == (25, 40, 0, 7)
    [box] = imageio.map_boxes([[120, 8, 32, 60]], tf)  # x 120, y 8, 32 wide, 60 tall
    assert box == pytest.approx([30.0, 9.0, 8.0, 15.0])  # x 120/4, y 8/4 + 7, w 8, h 15
    full = np.zeros((100, 160), np.uint8)
    full[8:68, 120:152] = 1  # the same box as pixels
    m = imageio.map_mask(full, tf, 40)
    want = np.zeros((40, 40), np.uint8)
    want[9:24, 30:38] = 1  # rows 2 + 7 .. 17 + 7, columns 30 .. 38: exact at scale 1/4
    np.testing.assert_array_equal(m, want)

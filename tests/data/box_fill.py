"""An independent box-fill rule for checking prepared masks: pixel (row r, column c) is the
open square (c, c + 1) x (r, r + 1); it is set when a box [x, y, w, h] (x = column) overlaps
it, i.e. x < c + 1 and x + w > c, and y < r + 1 and y + h > r. Computed by broadcasting
over every pixel, not by slicing, so it shares no code or arithmetic with the package."""

from __future__ import annotations

import numpy as np


def filled_boxes(boxes: list[list[float]], size: int) -> np.ndarray:
    """uint8 (size, size) 0/1: the union of ``boxes`` under the overlap rule above."""
    cols = np.arange(size, dtype=np.float64)[None, :]
    rows = np.arange(size, dtype=np.float64)[:, None]
    out = np.zeros((size, size), dtype=bool)
    for x, y, w, h in boxes:
        in_x = (x < cols + 1) & (x + w > cols)
        in_y = (y < rows + 1) & (y + h > rows)
        out |= in_x & in_y
    return out.astype(np.uint8)

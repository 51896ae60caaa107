"""jpeg_size reads (height, width) from the header: baseline and progressive JPEGs, and
None for what is not a JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cmcgns_cli.data import imageio


def _jpeg(h: int, w: int, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), dtype=np.uint8)).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_baseline_and_progressive_sizes():
    assert imageio.jpeg_size(_jpeg(37, 91)) == (37, 91)
    assert imageio.jpeg_size(_jpeg(120, 64, progressive=True)) == (120, 64)


def test_header_only_stream_is_enough_and_non_jpeg_is_none():
    data = _jpeg(50, 70)
    # cut the stream right after the start-of-scan header: no entropy-coded data is left,
    # the size (from the frame header) still is
    sos = data.index(b"\xff\xda")
    assert imageio.jpeg_size(data[: sos + 10]) == (50, 70)
    png = io.BytesIO()
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(png, "PNG")
    assert imageio.jpeg_size(png.getvalue()) is None
    assert imageio.jpeg_size(b"\xff\xd8\xff") is None

"""Decode any chest X-ray file to uint8 grayscale and letterbox it to a square.

One job: bytes on disk -> ``uint8 (H, W)`` -> ``uint8 (S, S)`` plus the transform that
maps original pixels to prepared pixels (``x' = x * scale + pad_x``).

- DICOM through pydicom, in the standard's order (PS3.4 grayscale pipeline), each stage
  once: photometric interpretation (YBR_* converted to RGB once, by pydicom 3's
  ``as_rgb`` default, then luma), modality LUT, then the VOI LUT or window (first value
  when several are given; LINEAR, LINEAR_EXACT and SIGMOID functions), any bit depth to
  uint8 by that window (full data range when the file has none; 8-bit data without a
  window is kept as stored), then the presentation stage: MONOCHROME1 or Presentation LUT
  Shape INVERSE inverted once. Compressed transfer syntaxes through pydicom's own decoders
  and the installed pylibjpeg plugins, first frame of multi-frame files. A file without
  preamble / ``DICM`` / file meta is read with ``force`` and the standard's default
  transfer syntax; every assumption is returned in ``Decoded.fallbacks``.
- JPEG through Pillow (libjpeg): grayscale; a stream cut short is ``truncated_image``
  because the decoder says so, bytes after the end-of-image marker are ignored.
- PNG / anything else OpenCV reads: grayscale; 16-bit PNGs scaled by their range.
- EXIF Orientation (JPEG APP1, PNG eXIf, TIFF, WebP) is applied, so the image is upright
  as viewers show it; ``orig_h`` / ``orig_w`` are the upright size.
- Large JPEGs are decoded at 1/2, 1/4 or 1/8 resolution (libjpeg's DCT scaling, Pillow's
  ``draft``) when the reduced image's longer side is still at least
  ``REDUCE_MIN_RATIO`` times the output size; the final resize uses the ORIGINAL size, so
  the geometry (scale, padding, box mapping) is identical with and without reduction.

Failures raise :class:`ImageError` whose ``reason`` is one of ``writer.SKIP_REASONS``.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Decoded and ImageError live in decoded.py and DICOM decoding in dicomio.py (one job: the
# standard's pixel pipeline); these names are re-exported because callers import them here.
from cmcgns_cli.data.decoded import Decoded, ImageError
from cmcgns_cli.data.dicomio import _minmax_u8, decode_dicom, dicom_to_uint8, read_dicom
from cmcgns_cli.data.dicomtags import not_radiograph

# The reduced decode is taken only while the decoded longer side stays >= this many times
# the output side (measured in bench/bench_prepare.py: mean |diff| well under 2 grey levels).
REDUCE_MIN_RATIO = 2.0
REDUCE_FACTORS = (8, 4, 2)
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

cv2.setNumThreads(1)  # one decoder per process; --workers gives the parallelism


@dataclass(frozen=True)
class Transform:
    """Original pixels -> prepared pixels: ``x' = x * scale + pad_x`` (same for y)."""

    scale: float
    pad_x: int
    pad_y: int
    orig_h: int
    orig_w: int
    new_h: int
    new_w: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "scale": float(self.scale),
            "pad_x": int(self.pad_x),
            "pad_y": int(self.pad_y),
            "orig_h": int(self.orig_h),
            "orig_w": int(self.orig_w),
        }


def letterbox_transform(orig_h: int, orig_w: int, size: int) -> Transform:
    """Longer side to ``size``, the shorter scaled alike, centred on a zero square."""
    scale = size / max(orig_h, orig_w)
    new_h = min(size, max(1, round(orig_h * scale)))
    new_w = min(size, max(1, round(orig_w * scale)))
    return Transform(
        scale=scale,
        pad_x=(size - new_w) // 2,
        pad_y=(size - new_h) // 2,
        orig_h=orig_h,
        orig_w=orig_w,
        new_h=new_h,
        new_w=new_w,
    )


def letterbox(image: np.ndarray, tf: Transform, size: int) -> np.ndarray:
    """Resize ``image`` (any resolution of the original) to ``tf``'s box and pad it."""
    h, w = image.shape[:2]
    if (h, w) != (tf.new_h, tf.new_w):
        shrinking = tf.new_h < h or tf.new_w < w
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (tf.new_w, tf.new_h), interpolation=interp)
    out = np.zeros((size, size), dtype=np.uint8)
    out[tf.pad_y : tf.pad_y + tf.new_h, tf.pad_x : tf.pad_x + tf.new_w] = image
    return out


def map_boxes(boxes: list[list[float]], tf: Transform) -> list[list[float]]:
    """``[x, y, w, h]`` in original pixels -> prepared pixels (same transform as the image)."""
    s = tf.scale
    return [
        [float(x) * s + tf.pad_x, float(y) * s + tf.pad_y, float(w) * s, float(h) * s]
        for x, y, w, h in boxes
    ]


@dataclass(frozen=True)
class ClippedBoxes:
    """What :func:`clip_boxes` kept: ``boxes`` ``[x, y, w, h]`` (original px), the index of
    each in the input (``keep``), and how many were clipped or dropped."""

    boxes: list[list[float]]
    keep: list[int]
    clipped: int
    dropped: int


def clip_boxes(boxes: list[list[float]], orig_h: int, orig_w: int) -> ClippedBoxes:
    """Clip ``[x, y, w, h]`` boxes (original pixels, x = column) to the picture
    ``0..orig_w`` x ``0..orig_h``; a box with no area left (wholly outside, zero or negative
    width or height, not finite) is dropped. A box is counted as clipped when any edge
    moved. Annotation tools let boxes reach past the image edge (Object-CXR, RSNA); a box
    the picture does not show is no positive to train or score."""
    kept: list[list[float]] = []
    keep: list[int] = []
    clipped = dropped = 0
    for i, (x, y, w, h) in enumerate(boxes):
        x0, y0, x1, y1 = float(x), float(y), float(x) + float(w), float(y) + float(h)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            dropped += 1
            continue
        cx0, cy0 = min(max(x0, 0.0), orig_w), min(max(y0, 0.0), orig_h)
        cx1, cy1 = min(max(x1, 0.0), orig_w), min(max(y1, 0.0), orig_h)
        if cx1 <= cx0 or cy1 <= cy0:
            dropped += 1
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            clipped += 1
        kept.append([cx0, cy0, cx1 - cx0, cy1 - cy0])
        keep.append(i)
    return ClippedBoxes(kept, keep, clipped, dropped)


def map_mask(mask: np.ndarray, tf: Transform, size: int) -> np.ndarray:
    """A 0/1 mask at original resolution -> 0/1 uint8 (size, size), area-averaged at 0.5."""
    m = mask.astype(np.float32)
    if m.shape != (tf.new_h, tf.new_w):
        shrinking = tf.new_h < m.shape[0]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        m = cv2.resize(m, (tf.new_w, tf.new_h), interpolation=interp)
    out = np.zeros((size, size), dtype=np.uint8)
    out[tf.pad_y : tf.pad_y + tf.new_h, tf.pad_x : tf.pad_x + tf.new_w] = m >= 0.5
    return out


def boxes_mask(boxes_prepared: list[list[float]], size: int) -> np.ndarray:
    """Filled boxes ``[x, y, w, h]`` (prepared pixels, x = column) as a 0/1 uint8
    (size, size) mask. Every pixel a box touches is filled (floor of the start, ceiling of
    the end), so a box shrunk to a fraction of a pixel still marks its pixel; prepare's
    masks and the box-filled segmentation targets both use this one rule."""
    out = np.zeros((size, size), dtype=np.uint8)
    for x, y, w, h in boxes_prepared:
        x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
        x1, y1 = min(size, math.ceil(x + w)), min(size, math.ceil(y + h))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = 1
    return out


# ---------------------------------------------------------------------------------------
# Decoding


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError("missing_file", str(path)) from None
    except IsADirectoryError:
        raise ImageError("unreadable_image", f"{path} is a directory") from None
    except OSError as exc:
        raise ImageError("unreadable_image", str(exc)) from None
    if not data:
        raise ImageError("empty_file", str(path))
    return data


def is_dicom(path: str | os.PathLike[str], data: bytes) -> bool:
    """A DICOM file: the ``DICM`` prefix after the preamble, a DICOM suffix, or a bare data
    set (no preamble and no file meta) that starts with a group 0002 / 0008 element."""
    if len(data) > 132 and data[128:132] == b"DICM":
        return True
    if str(path).lower().endswith(DICOM_SUFFIXES):
        return True
    return data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00"


def decode(
    path: str | os.PathLike[str], *, size: int | None = None, reduce: bool = True
) -> Decoded:
    """Decode one file. ``size`` (the output side) enables the reduced JPEG decode."""
    data = read_bytes(path)
    if is_dicom(path, data):
        return decode_dicom(path)
    if data[:2] == b"\xff\xd8":
        return _decode_jpeg(data, size=size if reduce else None)
    return _decode_other(data)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) in pixels of a JPEG as stored (before any EXIF rotation), read by
    Pillow from the header only (no pixel decode); None when ``data`` is not a JPEG Pillow
    can open."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return None
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return (h, w) if h and w else None


def reduce_factor(orig_h: int, orig_w: int, size: int | None) -> int:
    """The largest DCT reduction that keeps the longer side >= REDUCE_MIN_RATIO * size."""
    if not size:
        return 1
    longer = max(orig_h, orig_w)
    for f in REDUCE_FACTORS:
        if longer / f >= REDUCE_MIN_RATIO * size:
            return f
    return 1


# EXIF Orientation (tag 0x0112, TIFF 6.0 / Exif 2.32 section 4.6.4): the stored pixels ->
# the picture as viewers show it. 5-8 swap height and width.
EXIF_ORIENTATION_TAG = 0x0112


def apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright for an EXIF Orientation value (1-8; others: unchanged).

    2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90
    clockwise, 7 transverse, 8 rotate 90 counter-clockwise (as Pillow's ``exif_transpose``).
    """
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.T,
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].T,
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(img)) if op else img


def _exif_orientation(im: object) -> int:
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still fine
        return 1
    return value if 1 <= value <= 8 else 1


def _decode_jpeg(data: bytes, *, size: int | None) -> Decoded:
    """JPEG through Pillow's libjpeg: DCT-reduced draft, then a full decode that raises on a
    truncated stream (bytes after the end-of-image marker are ignored, as decoders do)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        w0, h0 = im.size
        orientation = _exif_orientation(im)
        f = reduce_factor(h0, w0, size)
        im.draft("L", (max(1, w0 // f), max(1, h0 // f)) if f > 1 else (w0, h0))
        im.load()
    except OSError as exc:
        msg = str(exc)
        reason = "truncated_image" if "truncated" in msg.lower() else "unreadable_image"
        raise ImageError(reason, f"JPEG cannot be decoded ({msg})") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError("unreadable_image", f"JPEG cannot be decoded ({exc})") from None
    if im.mode != "L":
        im = im.convert("L")
    img = np.asarray(im)
    reduced = max(1, round(w0 / img.shape[1]))
    img = apply_exif_orientation(img, orientation)
    if orientation >= 5:
        h0, w0 = w0, h0
    return Decoded(image=img, orig_h=h0, orig_w=w0, reduced=reduced, orientation=orientation)


def _decode_other(data: bytes) -> Decoded:
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        # judged after decoding failed: a PNG cut before its IEND chunk is truncated
        if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data:
            raise ImageError("truncated_image", "PNG has no IEND chunk")
        # JPEGs are routed by content, so a broken ".jpg" without JPEG bytes lands here
        raise ImageError(
            "unreadable_image", "not a decodable image (no JPEG, PNG or other image content)"
        )
    img = _to_gray(img)
    if img.dtype != np.uint8:
        img = _minmax_u8(img.astype(np.float64))
    orientation = _orientation_of(data)
    img = apply_exif_orientation(img, orientation)
    return Decoded(image=img, orig_h=img.shape[0], orig_w=img.shape[1], orientation=orientation)


def _orientation_of(data: bytes) -> int:
    """EXIF Orientation of a PNG (eXIf chunk), TIFF or WebP, read by Pillow; 1 if none."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _exif_orientation(im)
    except Exception:  # noqa: BLE001 - a format Pillow does not know: no orientation
        return 1


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[:, :, 0]
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def load_prepared_image(
    path: str | os.PathLike[str], size: int, *, reduce: bool = True
) -> tuple[np.ndarray, Transform, Decoded]:
    """Decode and letterbox in one call: ``(uint8 (size, size), transform, decoded)``."""
    dec = decode(path, size=size, reduce=reduce)
    tf = letterbox_transform(dec.orig_h, dec.orig_w, size)
    return letterbox(dec.image, tf, size), tf, dec


__all__ = [
    "Decoded",
    "ImageError",
    "Transform",
    "apply_exif_orientation",
    "clip_boxes",
    "decode",
    "decode_dicom",
    "dicom_to_uint8",
    "not_radiograph",
    "letterbox",
    "letterbox_transform",
    "load_prepared_image",
    "map_boxes",
    "map_mask",
    "read_dicom",
]

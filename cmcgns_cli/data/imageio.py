"""Decode any chest X-ray file to uint8 grayscale and letterbox it to a square.

One job: bytes on disk -> ``uint8 (H, W)`` -> ``uint8 (S, S)`` plus the transform that
maps original pixels to prepared pixels (``x' = x * scale + pad_x``).

- DICOM through pydicom: modality LUT, then the VOI LUT or window (first value when
  several are given; LINEAR, LINEAR_EXACT and SIGMOID functions), any bit depth to uint8
  by that window (full data range when the file has none; 8-bit data without a window is
  kept as stored), MONOCHROME1 inverted, compressed transfer syntaxes through pydicom's
  own decoders and the installed pylibjpeg plugins, first frame of multi-frame files.
- JPEG / PNG / anything else OpenCV reads: grayscale; 16-bit PNGs scaled by their range.
- Large JPEGs are decoded at 1/2, 1/4 or 1/8 resolution (libjpeg's DCT scaling, OpenCV's
  ``IMREAD_REDUCED_GRAYSCALE_*``) when the reduced image's longer side is still at least
  ``REDUCE_MIN_RATIO`` times the output size; the final resize uses the ORIGINAL size, so
  the geometry (scale, padding, box mapping) is identical with and without reduction.

Failures raise :class:`ImageError` whose ``reason`` is one of ``writer.SKIP_REASONS``.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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


class ImageError(Exception):
    """An input that cannot become an image; ``reason`` is a short fixed string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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
    """Filled boxes (prepared pixels) as a 0/1 uint8 (size, size) mask."""
    out = np.zeros((size, size), dtype=np.uint8)
    for x, y, w, h in boxes_prepared:
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(size, round(x + w)), min(size, round(y + h))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = 1
    return out


# ---------------------------------------------------------------------------------------
# Decoding


@dataclass
class Decoded:
    image: np.ndarray  # uint8 (h, w): the original, or a reduced decode of it
    orig_h: int
    orig_w: int
    reduced: int = 1  # 1, 2, 4 or 8
    view: str = ""  # DICOM ViewPosition when present


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
    return (len(data) > 132 and data[128:132] == b"DICM") or str(path).lower().endswith(
        DICOM_SUFFIXES
    )


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
    """(height, width) from a JPEG's SOF marker without decoding, or None."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (h, w) if h and w else None
        i += 2 + length
    return None


def _jpeg_complete(data: bytes) -> bool:
    tail = data[-64:].rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def reduce_factor(orig_h: int, orig_w: int, size: int | None) -> int:
    """The largest DCT reduction that keeps the longer side >= REDUCE_MIN_RATIO * size."""
    if not size:
        return 1
    longer = max(orig_h, orig_w)
    for f in REDUCE_FACTORS:
        if longer / f >= REDUCE_MIN_RATIO * size:
            return f
    return 1


def _decode_jpeg(data: bytes, *, size: int | None) -> Decoded:
    if not _jpeg_complete(data):
        raise ImageError("truncated_image", "JPEG has no end-of-image marker")
    hw = jpeg_size(data)
    if hw is None:
        raise ImageError("unreadable_image", "JPEG header has no frame size")
    f = reduce_factor(hw[0], hw[1], size)
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = _REDUCED_FLAGS[f] if f > 1 else cv2.IMREAD_GRAYSCALE
    img = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ImageError("unreadable_image", "OpenCV could not decode the JPEG")
    return Decoded(image=img, orig_h=hw[0], orig_w=hw[1], reduced=f)


def _decode_other(data: bytes) -> Decoded:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        raise ImageError("truncated_image", "PNG has no IEND chunk")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ImageError("unreadable_image", "OpenCV could not decode the file")
    img = _to_gray(img)
    if img.dtype != np.uint8:
        img = _minmax_u8(img.astype(np.float64))
    return Decoded(image=img, orig_h=img.shape[0], orig_w=img.shape[1])


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[:, :, 0]
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _minmax_u8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(np.rint((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def decode_dicom(path: str | os.PathLike[str]) -> Decoded:
    # pydicom warns (and logs) about every oddity of a bad file; the skip reason says it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        return _decode_dicom(path)


def _decode_dicom(path: str | os.PathLike[str]) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error) as exc:
        raise ImageError("unreadable_image", f"not a readable DICOM ({exc})") from None
    if not any(el.tag.group != 0x0002 for el in ds):
        raise ImageError("unreadable_image", "DICOM header holds no data set")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageError("no_pixel_data", "DICOM has no PixelData")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # truncated data, unsupported syntax, missing plugin
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = msg.lower()
        short = ("less than expected", "length", "truncat", "end of")
        reason = "truncated_image" if any(k in low for k in short) else "unreadable_image"
        raise ImageError(reason, f"pixel data cannot be decoded ({msg})") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 and arr.ndim >= 3:
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour: pydicom returns RGB when it converted YBR
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = cv2.cvtColor(
            arr.astype(np.uint8) if arr.dtype != np.uint8 else arr, cv2.COLOR_RGB2GRAY
        )
    img = dicom_to_uint8(ds, arr)
    if photometric == "MONOCHROME1":
        img = 255 - img
    view = str(getattr(ds, "ViewPosition", "") or "").strip()
    return Decoded(image=img, orig_h=img.shape[0], orig_w=img.shape[1], view=view)


def dicom_to_uint8(ds: object, arr: np.ndarray) -> np.ndarray:
    """Modality LUT, then VOI LUT or window, then uint8 (see the module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    values = apply_modality_lut(arr, ds) if has_rescale else arr
    voi_seq = getattr(ds, "VOILUTSequence", None)
    if voi_seq:
        lut_item = voi_seq[0]
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        raw = lut_item.LUTData
        if isinstance(raw, bytes | bytearray):
            bits = int(lut_item.LUTDescriptor[2])
            lut = np.frombuffer(raw, dtype="<u2" if bits > 8 else "u1").astype(np.float64)
        else:
            lut = np.asarray(raw, dtype=np.float64).ravel()
        return _scale_range(out.astype(np.float64), float(lut.min()), float(lut.max()))
    center = getattr(ds, "WindowCenter", None)
    width = getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        c, w = _first(center), _first(width)
        if w > 0:
            fn = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
            return _window(values.astype(np.float64), c, w, fn)
    if arr.dtype == np.uint8 and not has_rescale:
        return arr.astype(np.uint8, copy=False)
    return _minmax_u8(values.astype(np.float64))


def _scale_range(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _window(v: np.ndarray, c: float, w: float, fn: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window to [0, 1], then to 0..255."""
    if fn == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (v - c) / w))
    elif fn == "LINEAR_EXACT":
        y = (v - c) / w + 0.5
    else:
        if w < 1:
            w = 1.0
        y = (v - (c - 0.5)) / max(w - 1.0, 1e-9) + 0.5
    return np.clip(np.rint(np.clip(y, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def load_prepared_image(
    path: str | os.PathLike[str], size: int, *, reduce: bool = True
) -> tuple[np.ndarray, Transform, Decoded]:
    """Decode and letterbox in one call: ``(uint8 (size, size), transform, decoded)``."""
    dec = decode(path, size=size, reduce=reduce)
    tf = letterbox_transform(dec.orig_h, dec.orig_w, size)
    return letterbox(dec.image, tf, size), tf, dec

"""DICOM pixels -> uint8 grey, interpreted once, in the standard's order.

PS3.4 grayscale pipeline, each stage once, with pydicom's own helpers where they exist:
photometric interpretation (YBR_* -> RGB by pydicom 3's ``as_rgb`` default, then luma),
modality LUT (``apply_modality_lut``), VOI LUT (``apply_voi_lut``) or the first window
(PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID), then the presentation stage
(MONOCHROME1 or Presentation LUT Shape INVERSE: one inversion). Files without preamble /
``DICM`` / file meta are read with ``force``; assumptions are returned as fallbacks.
Failures raise :class:`cmcgns_cli.data.decoded.ImageError` (re-exported by ``imageio``).
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import Any

import cv2
import numpy as np

from cmcgns_cli.data.decoded import Decoded, ImageError
from cmcgns_cli.data.dicomtags import drop_empty_elements, header_tags


def _image_error(reason: str, detail: str) -> Exception:
    return ImageError(reason, detail)


def _minmax_u8(arr: np.ndarray) -> np.ndarray:
    """``arr``'s own min..max stretched onto 0..255 uint8 (all zero when constant)."""
    return _scale_range(arr, float(np.min(arr)), float(np.max(arr)))


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def decode_dicom(path: str | os.PathLike[str]) -> Any:
    """Decode a DICOM file (see the module docstring); raises :class:`ImageError`."""
    # pydicom warns about every oddity of a bad file; the skip reason says it. Its logger is
    # left alone: it belongs to the application, not to this library.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_dicom(path)


def read_dicom(path: str | os.PathLike[str]) -> tuple[Any, list[str]]:
    """``(dataset, fallbacks)``: a file without preamble / ``DICM`` / file meta is read with
    ``force=True``; a missing Transfer Syntax UID is taken from the encoding the data set was
    read with (Implicit VR Little Endian is the DICOM default, PS3.5 section 10.1). Each
    assumption is one short string in ``fallbacks``. Raises :class:`ImageError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    errors = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error)
    fallbacks: list[str] = []
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except errors as exc:
            raise _image_error("unreadable_image", f"not a readable DICOM ({exc})") from None
        fallbacks.append("no_preamble_or_file_meta:read_with_force")
    except errors as exc:
        raise _image_error("unreadable_image", f"not a readable DICOM ({exc})") from None
    if not any(el.tag.group != 0x0002 for el in ds):
        raise _image_error("unreadable_image", "DICOM header holds no data set")
    empty = drop_empty_elements(ds)
    if empty:
        fallbacks.append("empty_elements_ignored:" + ",".join(empty))
    meta = ds.file_meta if hasattr(ds, "file_meta") else None
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if implicit is None:
            implicit, little = True, True
        uid = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        from pydicom.dataset import FileMetaDataset

        if meta is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid
        fallbacks.append(f"transfer_syntax_assumed:{uid.name.replace(' ', '_')}")
    # Image Pixel module elements a bare data set may lack: take the value every
    # grey radiograph has, and say so.
    if "PixelData" in ds:
        defaults = (
            ("SamplesPerPixel", 1),
            ("PhotometricInterpretation", "MONOCHROME2"),
            ("PixelRepresentation", 0),
        )
        for keyword, value in defaults:
            if keyword not in ds:
                setattr(ds, keyword, value)
                fallbacks.append(f"{keyword}_assumed:{value}")
        if "BitsAllocated" in ds and "BitsStored" not in ds:
            ds.BitsStored = ds.BitsAllocated
            fallbacks.append(f"BitsStored_assumed:{ds.BitsAllocated}")
        if "BitsStored" in ds and "HighBit" not in ds:
            ds.HighBit = int(ds.BitsStored) - 1
            fallbacks.append(f"HighBit_assumed:{ds.HighBit}")
    # Rescale Slope and Intercept come as a pair (PS3.3 C.11.1.1); pydicom applies neither
    # when one is missing, so the missing one takes its identity value.
    if ("RescaleSlope" in ds) != ("RescaleIntercept" in ds):
        keyword, value = ("RescaleIntercept", 0) if "RescaleSlope" in ds else ("RescaleSlope", 1)
        setattr(ds, keyword, value)
        fallbacks.append(f"{keyword}_assumed:{value}")
    return ds, fallbacks


def _decode_dicom(path: str | os.PathLike[str]) -> Any:
    ds, fallbacks = read_dicom(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise _image_error("no_pixel_data", "DICOM has no PixelData")
    try:
        # pydicom 3 returns YBR_* data (native or JPEG, with or without JFIF) already
        # converted to RGB (``as_rgb=True``, its default): the colour space is converted
        # exactly once, here, by pydicom.
        arr = ds.pixel_array
    except Exception as exc:  # truncated data, unsupported syntax, missing plugin
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = msg.lower()
        short = ("less than expected", "length", "truncat", "end of")
        reason = "truncated_image" if any(k in low for k in short) else "unreadable_image"
        raise _image_error(reason, f"pixel data cannot be decoded ({msg})") from None
    arr, note = first_frame(ds, arr)
    if note:
        fallbacks.append(note)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour, RGB (see above): luma as OpenCV computes it (ITU-R BT.601)
        rgb = arr if arr.dtype == np.uint8 else _minmax_u8(arr.astype(np.float64))
        img = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        img = presentation(ds, photometric, dicom_to_uint8(ds, arr))
    view = str(getattr(ds, "ViewPosition", "") or "").strip()
    return Decoded(
        image=img,
        orig_h=img.shape[0],
        orig_w=img.shape[1],
        view=view,
        fallbacks=fallbacks,
        tags=header_tags(ds),
    )


def first_frame(ds: Any, arr: np.ndarray) -> tuple[np.ndarray, str]:
    """``(frame, note)``: the first frame of a multi-frame ``arr`` and a note naming the
    frame count, or ``(arr, "")`` for one frame. pydicom returns every frame the pixel data
    holds even when Number of Frames is absent or says fewer ((frames, rows, columns) for
    one sample per pixel, (frames, rows, columns, 3) for three): frames are counted from the
    array's shape against Samples per Pixel, not from the header."""
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frame_ndim = 2 if samples == 1 else 3
    if arr.ndim <= frame_ndim:
        return arr, ""
    n = int(arr.shape[0])
    declared = int(getattr(ds, "NumberOfFrames", 1) or 1)
    kind = "frames" if declared == n else f"undeclared_frames(declared_{declared})"
    return arr[0], f"{kind}:took_first_of_{n}"


def presentation(ds: Any, photometric: str, img: np.ndarray) -> np.ndarray:
    """The presentation stage on the uint8 VOI output, applied once.

    A Presentation LUT Sequence (PS3.3 C.11.4) maps the full VOI output range 0..255 onto
    its entries (P-values rescaled from the LUT's bit depth to 0..255; the LUT already
    encodes the polarity). pydicom's ``apply_presentation_lut`` is not used for this: it
    stretches the data's own min..max onto the LUT, which changes the contrast of every
    image that does not span the whole range. Without a sequence: the inversion of
    :func:`_inverted`.
    """
    if "PresentationLUTSequence" in ds:
        item = ds.PresentationLUTSequence[0]
        n, _, bits = (int(v) for v in item.LUTDescriptor)
        n = 65536 if n == 0 else n
        raw = item.LUTData
        if isinstance(raw, bytes | bytearray):
            lut = np.frombuffer(raw, dtype="<u2" if bits > 8 else "u1")[:n]
        else:
            lut = np.asarray(raw, dtype=np.int64).ravel()[:n]
        idx = np.rint(img.astype(np.float64) * ((len(lut) - 1) / 255.0)).astype(np.int64)
        out = lut.astype(np.float64)[idx]
        return np.clip(np.rint(out * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)
    return 255 - img if _inverted(ds, photometric) else img


def _inverted(ds: Any, photometric: str) -> bool:
    """Presentation stage, applied once (PS3.3 C.11.6.1, C.8.11.6.1.2): the output is the
    inverse of the VOI output for Presentation LUT Shape INVERSE, and for MONOCHROME1
    (whose Presentation LUT Shape the standard sets to INVERSE: one inversion, not two)."""
    shape = str(getattr(ds, "PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


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
    """``lo``..``hi`` onto 0..255 uint8, rounded, values outside clipped."""
    if hi <= lo:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _window(v: np.ndarray, c: float, w: float, fn: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window (centre ``c``, width ``w`` in modality units) onto
    0..255 uint8, computed by ``pydicom.pixels.apply_windowing`` with an 8-bit unsigned
    output range. An unknown VOI LUT Function is read as LINEAR (its default), and a LINEAR
    width below 1 as 1 (the standard requires >= 1; pydicom would raise)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    fn = fn if fn in ("LINEAR_EXACT", "SIGMOID") else "LINEAR"
    window = Dataset()
    window.PhotometricInterpretation = "MONOCHROME2"
    window.PixelRepresentation = 0
    window.BitsStored = 8  # output range y_min..y_max = 0..255
    window.WindowCenter = c
    window.WindowWidth = max(w, 1.0) if fn == "LINEAR" else w
    window.VOILUTFunction = fn
    out = apply_windowing(np.asarray(v, dtype=np.float64), window)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

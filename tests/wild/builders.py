"""Inputs as they turn up in users' data, built byte by byte for the tests.

Each builder writes one condition of README "Inputs from the wild" (pictures with EXIF
orientation, JPEG with trailing bytes, YBR JPEG DICOMs, bare DICOM data sets, Windows
paths, COVIDx lines with spaces, the two SIIM RLE forms). Expected values are computed
here independently of cmcgns (hand loops, Pillow, pydicom's writer).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def picture(h: int = 96, w: int = 80, seed: int = 0) -> np.ndarray:
    """uint8 (h, w): gradients, a bright disc and a dark bar, so a turn or flip shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 30 + 120 * (xx / (w - 1)) + 60 * (yy / (h - 1))
    cy, cx = rng.uniform(0.25, 0.4) * h, rng.uniform(0.25, 0.4) * w
    img += 70 * (((yy - cy) ** 2 + (xx - cx) ** 2) < (0.12 * min(h, w)) ** 2)
    img[int(0.75 * h) : int(0.85 * h), int(0.5 * w) :] = 10
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 97) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _segments_after_soi(data: bytes) -> tuple[bytes, bytes]:
    """(APP0 segment or b"", the rest after it) of a JPEG that starts with SOI."""
    assert data[:2] == b"\xff\xd8"
    if data[2:4] == b"\xff\xe0":
        (n,) = struct.unpack(">H", data[4:6])
        return data[2 : 4 + n], data[4 + n :]
    return b"", data[2:]


def drop_app0(data: bytes) -> bytes:
    """The same JPEG without its JFIF APP0 segment."""
    return b"\xff\xd8" + _segments_after_soi(data)[1]


def exif_app1(orientation: int) -> bytes:
    """An Exif APP1 segment whose IFD0 holds only Orientation (0x0112, SHORT) (Exif 2.32)."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + b"\x00" * 4
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_orientation(data: bytes, orientation: int) -> bytes:
    """A JPEG whose JFIF APP0 is replaced by an Exif APP1 carrying ``orientation``."""
    return b"\xff\xd8" + exif_app1(orientation) + _segments_after_soi(data)[1]


# stored pixels for an upright picture under each EXIF orientation: the inverse of the
# viewer's transform (2, 3, 4, 5, 7 are their own inverse; 6 and 8 invert each other)
STORED_FOR = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, -1),
}


def viewer_shows(data: bytes) -> np.ndarray:
    """What an EXIF-aware viewer shows (Pillow's ``exif_transpose``), uint8 grey."""
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))


def png_with_orientation(img: np.ndarray, orientation: int) -> bytes:
    """A PNG (eXIf chunk, written by Pillow) holding ``img`` and an Orientation tag."""
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# DICOM


def dicom_dataset(arr: np.ndarray, *, photometric: str = "MONOCHROME2", samples: int = 1):
    """A Secondary Capture data set holding native ``arr`` (uint8, (h, w) or (h, w, 3))."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "WILD"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return ds


def save_dicom(ds, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def ybr_jpeg_dicom(grey: np.ndarray, *, keep_jfif: bool, subsampling: int = 1):
    """JPEG Baseline, 3 samples, YBR_FULL_422 (as scanners store colour JPEG) of a grey
    picture; Pillow writes the JPEG (``subsampling`` 1 = 4:2:2, 2 = 4:2:0)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=97, subsampling=subsampling)
    data = buf.getvalue() if keep_jfif else drop_app0(buf.getvalue())
    ds = dicom_dataset(rgb, photometric="YBR_FULL_422", samples=3)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    return ds


def ybr_full_native_dicom(grey: np.ndarray):
    """Uncompressed YBR_FULL: Y = the grey level, Cb = Cr = 128 (PS3.3 C.7.6.3.1.2)."""
    ybr = np.stack([grey, np.full_like(grey, 128), np.full_like(grey, 128)], axis=2)
    return dicom_dataset(ybr, photometric="YBR_FULL", samples=3)


def bare_dataset_bytes(ds, *, implicit: bool = True) -> bytes:
    """The data set only: no 128-byte preamble, no ``DICM``, no file meta group."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    body = ds.copy()
    del body.file_meta
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, body)
    return fp.getvalue()


# ---------------------------------------------------------------------------------------
# SIIM run-length encodings, written with plain loops over the column-major pixels


def column_major(mask: np.ndarray) -> list[int]:
    h, w = mask.shape
    return [int(mask[y, x] > 0) for x in range(w) for y in range(h)]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(0-based start, length) of each run of ones, column-major."""
    flat, out, i = column_major(mask), [], 0
    while i < len(flat):
        if flat[i]:
            j = i
            while j < len(flat) and flat[j]:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


def rle_relative(mask: np.ndarray) -> str:
    """Stage-1 form: each start is the gap after the end of the previous run."""
    out, prev_end = [], 0
    for s, n in runs(mask):
        out += [s - prev_end, n]
        prev_end = s + n
    return " ".join(map(str, out)) if out else "-1"


def rle_absolute(mask: np.ndarray, base: int = 1) -> str:
    """Stage-2 / Kaggle form: each start is a ``base``-based pixel index."""
    out = []
    for s, n in runs(mask):
        out += [s + base, n]
    return " ".join(map(str, out)) if out else "-1"


def blob(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1e-9)

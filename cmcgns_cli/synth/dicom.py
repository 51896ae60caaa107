"""Real DICOM files (pydicom) with deterministic UIDs: no timestamps, no random UUIDs.

Variants exercise readers' paths: MONOCHROME1 (stored inverted), 12-bit with VOI LUT
window tags, RLE Lossless and JPEG 2000 Lossless compression (both encodable here:
RLE natively in pydicom, JPEG 2000 through pylibjpeg-openjpeg).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

SOP_CLASS_CR = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, as the challenge files use


def det_uid(prefix: str, *parts: object) -> str:
    """A valid UID derived only from `parts` (same parts, same UID)."""
    return generate_uid(prefix=prefix, entropy_srcs=[str(p) for p in parts])


@dataclass
class DicomVariant:
    photometric: str = "MONOCHROME2"  # or MONOCHROME1 (pixels stored inverted)
    bits: int = 8  # 8, or 12 stored in 16 with a window
    window: bool = False  # WindowCenter / WindowWidth present
    compress: str = ""  # "" | "rle" | "j2k"


def write_dicom(
    path: Path,
    image: np.ndarray,
    *,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    patient_id: str,
    view: str,
    sex: str,
    age: int,
    variant: DicomVariant,
) -> None:
    """Write `image` (uint8 grayscale, MONOCHROME2 sense) as one DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS_CR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASS_CR
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = variant.photometric
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.PixelSpacing = [0.168, 0.168]
    ds.PixelRepresentation = 0
    arr = image.astype(np.uint16) if variant.bits > 8 else image.copy()
    top = 255
    if variant.bits > 8:
        # 12-bit: spread the 8-bit values over 0..4095; the window maps them back
        arr = arr * 16 + 8
        top = 4095
    if variant.photometric == "MONOCHROME1":
        arr = (top - arr).astype(arr.dtype)
    ds.BitsAllocated = 16 if variant.bits > 8 else 8
    ds.BitsStored = variant.bits
    ds.HighBit = variant.bits - 1
    if variant.window:
        ds.WindowCenter = f"{(top + 1) / 2:.1f}"
        ds.WindowWidth = f"{top + 1:.1f}"
        ds.VOILUTFunction = "LINEAR"
    ds.LossyImageCompression = "00"
    if variant.compress == "rle":
        ds.compress(RLELossless, arr, generate_instance_uid=False)
    elif variant.compress == "j2k":
        ds.compress(JPEG2000Lossless, arr, generate_instance_uid=False)
    else:
        ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)

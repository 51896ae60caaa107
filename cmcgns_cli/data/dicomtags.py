"""DICOM header values: empty elements read as absent, the tags recorded per image
(modality, body part, patient, study), and which modalities are radiographs."""

from __future__ import annotations

import os
import warnings
from typing import Any

# A LUT item needs both of these to mean anything (PS3.3 C.11.1, C.11.2, C.11.4).
_LUT_SEQUENCES = ("ModalityLUTSequence", "VOILUTSequence", "PresentationLUTSequence")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes | bytearray):
        return not value.strip() if isinstance(value, str) else len(value) == 0
    try:
        return len(value) == 0  # type: ignore[arg-type]
    except TypeError:
        return False


def drop_empty_elements(ds: Any) -> list[str]:
    """Remove, in place, every element of ``ds`` that is present with an empty value, so
    the pipeline reads it as absent and takes the next stage or the standard's default
    (an empty Rescale Slope is no rescale, an empty VOI LUT is the window). A Modality,
    VOI or Presentation LUT Sequence item whose LUT Descriptor or LUT Data is empty is
    removed with it, and a sequence left without items too. Pixel data is never touched.

    Returns the keywords (or tags) removed, in data set order; DICOM PS3.5 section 7.4
    allows a zero-length value for type 2 and 3 elements, which real files also use for
    type 1 ones.
    """
    removed: list[str] = []
    for elem in list(ds):
        if elem.tag.group == 0x0002 or elem.keyword in _PIXEL_KEYWORDS:
            continue
        name = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            if elem.keyword in _LUT_SEQUENCES:
                kept = [
                    item
                    for item in elem.value
                    if not _is_empty(item.get("LUTDescriptor"))
                    and not _is_empty(item.get("LUTData"))
                ]
                if len(kept) != len(elem.value):
                    removed.append(f"{name}.LUT")
                    elem.value = kept
            if len(elem.value) == 0:
                del ds[elem.tag]
                removed.append(name)
            continue
        try:
            value = elem.value
        except Exception:  # an undecodable value: leave it for the stage that reads it
            continue
        if _is_empty(value):
            del ds[elem.tag]
            removed.append(name)
    return removed


# DICOM attributes recorded per image: (Decoded.tags key, keyword)
HEADER_TAGS = (
    ("modality", "Modality"),
    ("body_part", "BodyPartExamined"),
    ("patient_id", "PatientID"),
    ("study_uid", "StudyInstanceUID"),
)
# Projection radiography modalities (PS3.3 C.7.3.1.1.1): computed (CR), digital (DX),
# radiographic imaging (RG) and the retired / vendor DR.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "DR")


def header_tags(ds: Any) -> dict[str, str]:
    """``{key: value}`` of :data:`HEADER_TAGS` that ``ds`` holds with a non-blank value
    (strings stripped; Modality and Body Part Examined upper-cased, as the standard's
    defined terms are)."""
    out: dict[str, str] = {}
    for key, keyword in HEADER_TAGS:
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            out[key] = value.upper() if key in ("modality", "body_part") else value
    return out


def file_header_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """:func:`header_tags` of a DICOM file, read without its pixel data; ``{}`` for a file
    that is not a readable DICOM (the decoder names the problem later)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return header_tags(ds)
    except Exception:  # any unreadable header: no tags, the decode step reports the file
        return {}


def not_radiograph(tags: dict[str, str]) -> str:
    """The skip detail for a DICOM whose Modality is present and not a projection
    radiograph (:data:`RADIOGRAPH_MODALITIES`), or ``""`` (a radiograph, or no Modality:
    bare data sets and converted files often lack it, and they are kept)."""
    modality = tags.get("modality", "")
    if not modality or modality in RADIOGRAPH_MODALITIES:
        return ""
    return (
        f"Modality {modality} is not a radiograph ({', '.join(RADIOGRAPH_MODALITIES)}); "
        "--any-modality keeps it"
    )

"""One manifest row per kept image, for ``prepare``: its ids, split, transform, DICOM
header values, boxes clipped to the picture, and ``source_path`` relative to ``--src``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cmcgns_cli.data import imageio
from cmcgns_cli.data.readers.base import Item, ReaderResult


def keep_boxes(item: Item, clip: imageio.ClippedBoxes) -> None:
    """Replace ``item``'s boxes by the clipped ones, and keep the matching entries of its
    per-box lists (``box_labels``, ``box_*`` extras of the same length)."""
    n = len(item.boxes or [])
    if item.box_labels is not None and len(item.box_labels) == n:
        item.box_labels = [item.box_labels[i] for i in clip.keep]
    for key, value in item.extra.items():
        if key.startswith("box_") and isinstance(value, list) and len(value) == n:
            item.extra[key] = [value[i] for i in clip.keep]
    item.boxes = clip.boxes


def relative_source(path: str, src: Path) -> str:
    """``path`` relative to ``src`` with ``/`` separators (``..`` steps when it lies outside
    ``src``; unchanged when blank or on another drive), so that a prepared dataset names
    no local folders and moves between machines."""
    if not path:
        return ""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(src))
    except ValueError:  # Windows: another drive
        return str(path)
    return Path(rel).as_posix()


def manifest_row(
    item: Item, rec: dict[str, Any], result: ReaderResult, src: Path
) -> dict[str, Any]:
    """The manifest row of ``item`` from its journal record ``rec`` (transform, view, DICOM
    tags). A blank patient / study id takes the DICOM PatientID / StudyInstanceUID, and
    ``patient_source`` says where the patient id came from (``csv`` or ``layout``: the
    raw layout; ``dicom``: the file's header; blank: none). Boxes are mapped to prepared
    pixels (``x' = x * scale + pad_x``)."""
    tf = rec["tf"]
    tags = rec.get("tags") or {}
    patient, study = item.patient_id, item.study_id
    if not patient and tags.get("patient_id"):
        patient = tags["patient_id"]
    if not study and tags.get("study_uid"):
        study = tags["study_uid"]
    row: dict[str, Any] = {
        "id": item.id,
        "split": item.split,
        "patient_id": patient,
        "study_id": study,
        "view": item.view or (rec.get("view") or "").upper(),
        "source_path": relative_source(item.source_path, src),
        **tf,
        # DICOM header values, blank when the file has none (or is not a DICOM)
        "modality": tags.get("modality", ""),
        "body_part": tags.get("body_part", ""),
        # how the file was read: EXIF orientation applied, DICOM defaults assumed
        "exif_orientation": int(rec.get("orientation", 1)),
        "decode_fallback": str(rec.get("fallbacks", "")),
    }
    if result.paired:
        row["sentences"] = list(item.sentences or [])
    if item.labels is not None:
        row["labels"] = [float(v) for v in item.labels]
    if item.boxes is not None:
        s, px, py = tf["scale"], tf["pad_x"], tf["pad_y"]
        row["boxes"] = [[x * s + px, y * s + py, w * s, h * s] for x, y, w, h in item.boxes]
        row["box_labels"] = [int(v) for v in (item.box_labels or [0] * len(item.boxes))]
    for k, v in item.extra.items():
        row[k] = v
    if "patient_source" not in row:
        row["patient_source"] = (
            "dicom" if patient and not item.patient_id else ("layout" if patient else "")
        )
    return row


def manifest_frame(rows: list[dict[str, Any]], result: ReaderResult) -> pd.DataFrame:
    """``rows`` as the manifest DataFrame; id-like and DICOM text columns as ``str``."""
    base = [
        "id",
        "split",
        "patient_id",
        "study_id",
        "view",
        "source_path",
        "scale",
        "pad_x",
        "pad_y",
        "orig_h",
        "orig_w",
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in base})
    for c in ("id", "split", "patient_id", "study_id", "view", "source_path"):
        df[c] = df[c].astype(object).map(str)
    for c in ("modality", "body_part", "patient_source"):
        if c in df:
            df[c] = df[c].fillna("").astype(object).map(str)
    return df

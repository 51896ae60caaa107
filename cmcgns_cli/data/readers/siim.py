"""SIIM-ACR Pneumothorax (stage 1): DICOM tree, masks from the RLE rows, pneumothorax label."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data import splits
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, read_csv_checked
from cmcgns_cli.data.rle import RleEncoding, detect_rle_encoding

RLE_CSV = "train-rle.csv"
IMAGES = "dicom-images-train"


def rle_decode(rle: str, height: int, width: int, encoding: str = "relative") -> np.ndarray:
    """SIIM RLE -> 0/1 uint8 (height, width); see :func:`cmcgns_cli.data.rle.rle_decode`.

    ``encoding``: ``relative`` (stage-1: each start is the gap after the previous run),
    ``absolute-1`` / ``absolute-0`` (each start a pixel index). Raises ValueError.
    """
    from cmcgns_cli.data.rle import rle_decode as _decode

    return _decode(rle, height, width, encoding)


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode` (for tests and the synthetic world): ``-1`` if empty."""
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    if not flat.any():
        return "-1"
    diff = np.diff(np.concatenate([[0], flat, [0]]))
    starts, ends = np.flatnonzero(diff == 1), np.flatnonzero(diff == -1)
    out, prev = [], 0
    for s, e in zip(starts, ends, strict=True):
        out += [int(s - prev), int(e - s)]
        prev = e
    return " ".join(map(str, out))


def _index_dicoms(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(".dcm"):
                found.setdefault(name[:-4], os.path.join(dirpath, name))
    return found


def _detect_encoding(
    csv_path: Path, ids: list[str], rles: list[str], paths: dict[str, str]
) -> RleEncoding:
    """The file's RLE encoding, with the image size read from one positive DICOM header."""
    n_pixels = None
    for image_id, rle in zip(ids, rles, strict=True):
        if rle not in ("", "-1") and image_id in paths:
            try:
                import pydicom

                ds = pydicom.dcmread(paths[image_id], stop_before_pixels=True, force=True)
                n_pixels = int(ds.Rows) * int(ds.Columns)
            except Exception:  # noqa: BLE001 - size unknown: detection works without it
                n_pixels = None
            break
    return detect_rle_encoding(rles, n_pixels=n_pixels, source=str(csv_path))


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    protocol = options.get("protocol", "mgca")
    df = read_csv_checked(src / RLE_CSV, ["ImageId", "EncodedPixels"])
    paths = _index_dicoms(src / IMAGES)
    ids = [s.strip() for s in df["ImageId"]]
    rles = [s.strip() for s in df["EncodedPixels"]]
    if protocol == "grouped":
        split_of = splits.grouped(ids, splits.split_70_15_15, seed=0)
        row_order = list(range(len(ids)))
    else:  # MGCA splits the CSV rows: an image with several rows can land in two splits
        split_of, row_order = mgca.split_70_15_15_ordered(len(ids))
    # an image's position in its published split table = that of its first row there
    first_pos: dict[tuple[str, str], int] = {}
    for image_id, split, pos in zip(ids, split_of, row_order, strict=True):
        key = (image_id, split)
        first_pos[key] = min(pos, first_pos.get(key, pos))
    # one item per (ImageId, split), first-seen order; its mask = union of its rows there
    groups: dict[tuple[str, str], list[str]] = {}
    skipped: list[Skip] = []
    for image_id, rle, split in zip(ids, rles, split_of, strict=True):
        if not image_id:
            skipped.append(Skip("", "", "missing_value:ImageId"))
            continue
        groups.setdefault((image_id, split), []).append(rle)
    encoding = _detect_encoding(src / RLE_CSV, ids, rles, paths)
    items: list[Item] = []
    for (image_id, split), rle_list in groups.items():
        path = paths.get(image_id, str(src / IMAGES / f"{image_id}.dcm"))
        if any(r == "" for r in rle_list):
            skipped.append(Skip(image_id, path, "missing_value:EncodedPixels"))
            continue
        positive = any(r != "-1" for r in rle_list)
        items.append(
            Item(
                id=image_id,
                source_path=path,
                split=split,
                patient_id=image_id,
                study_id=image_id,
                labels=[1.0 if positive else 0.0],
                mask=("rle", [r for r in rle_list if r != "-1"], encoding.spec),
                extra={"mgca_order": first_pos[(image_id, split)]},
            )
        )
    desc = (
        "scikit-learn train_test_split(test_size=0.3, random_state=0) -> train 70%; the rest "
        "train_test_split(test_size=0.5, random_state=0) -> test / validate (MGCA)"
    )
    desc += (
        ", over unique ImageIds (leak-free)"
        if protocol == "grouped"
        else ", over CSV rows as MGCA does: an image with several RLE rows may appear in two "
        "splits, each with the union of that split's rows"
    )
    meta = {
        "label_names": ["Pneumothorax"],
        "label_policy": "1 when any RLE row of the image is not -1",
        "split_description": desc,
        "masks": "union of the image's RLE rows, 0/1",
        "rle_encoding": encoding.as_dict(),
        "train_pool": "segmentation trains on a balanced pool drawn at finetune time: every "
        "positive training image plus as many negative training images, drawn with numpy's "
        "legacy generator seeded with the run seed (the authors' SIIM dataset); label "
        "fractions are drawn from that pool; validate and test keep all their images",
    }
    return ReaderResult(items=items, skipped=skipped, meta=meta, masks=True)

"""SIIM-ACR Pneumothorax (stage 1): DICOM tree, masks from the RLE rows, pneumothorax label."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data import splits
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, read_csv_checked

RLE_CSV = "train-rle.csv"
IMAGES = "dicom-images-train"


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """SIIM RLE -> 0/1 uint8 (height, width).

    Pairs ``start length``; each start is relative to the end of the previous run;
    pixels count down the columns first. ``-1`` or blank -> empty. Raises ValueError.
    """
    mask = np.zeros(width * height, dtype=np.uint8)
    text = str(rle).strip()
    if text in ("", "-1"):
        return mask.reshape(width, height).T.copy()
    nums = [int(t) for t in text.split()]
    if len(nums) % 2:
        raise ValueError("odd number of RLE values")
    pos = 0
    for start, length in zip(nums[0::2], nums[1::2], strict=True):
        if start < 0 or length < 0:
            raise ValueError("negative RLE value")
        pos += start
        if pos + length > mask.size:
            raise ValueError("RLE run past the end of the image")
        mask[pos : pos + length] = 1
        pos += length
    return mask.reshape(width, height).T.copy()


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
                mask=("rle", [r for r in rle_list if r != "-1"]),
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
        "train_pool": "segmentation trains on a balanced pool drawn at finetune time: every "
        "positive training image plus as many negative training images, drawn with numpy's "
        "legacy generator seeded with the run seed (the authors' SIIM dataset); label "
        "fractions are drawn from that pool; validate and test keep all their images",
    }
    return ReaderResult(items=items, skipped=skipped, meta=meta, masks=True)

"""What `evaluate --task grounding-*` scores: (image row, phrases, class, region) items.

- ``grounding-rsna``: test images with at least one opacity box; the region is the union of
  the boxes (``masks.npy``, the boxes filled); class ``Pneumonia``.
- ``grounding-siim``: test images with a non-empty pneumothorax mask; class ``Pneumothorax``.
- ``grounding-mscxr``: the rows of an MS-CXR annotation CSV (``--annotations``) whose
  ``dicom_id`` is an image of the prepared mimic dataset; boxes of the same phrase on the
  same image are one region; the phrase is the row's ``label_text``, the class its
  ``category_name``.

RSNA and SIIM have no reports, so the phrase is a template per class: the positive prompts
of the zero-shot prompt set (``--prompts`` replaces them, as for zero-shot).

MS-CXR CSV columns read (v1.1.0 names): ``dicom_id`` (the MIMIC-CXR image id, the prepared
manifest's ``id``), ``label_text`` (the phrase), ``x, y, w, h`` (box top-left corner and size
in original-image pixels), ``image_width, image_height`` (the original size: boxes are
rescaled when it differs from the size prepare read), optional ``category_name`` (the
finding class; ``all`` when absent). Other columns (``path``, ``split``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.errors import BadInputError

MSCXR_REQUIRED = ("dicom_id", "label_text", "x", "y", "w", "h")
TEMPLATE_CLASS = {"grounding-rsna": "Pneumonia", "grounding-siim": "Pneumothorax"}
DATASET = {"grounding-rsna": "rsna", "grounding-siim": "siim", "grounding-mscxr": "mimic"}


@dataclass
class Items:
    """Grounding items: ``rows`` (N,) prepared rows, ``phrases`` N lists of sentences
    (maps are averaged over a list), ``classes`` N names, ``regions`` (N, S, S) bool in
    prepared pixels, and ``skipped`` reasons -> counts."""

    rows: np.ndarray
    phrases: list[list[str]]
    classes: list[str]
    regions: np.ndarray
    skipped: dict[str, int]


def check_dataset(task: str, prepared: Prepared) -> None:
    found = prepared.meta.get("dataset")
    if found not in (DATASET[task], "folder"):
        raise BadInputError(
            f"{prepared.root / 'meta.json'}: task {task} needs a prepared {DATASET[task]} "
            f"dataset, this one is {found!r}"
        )


def template_items(task: str, prepared: Prepared, prompts: dict) -> Items:
    """Test images with a non-empty region, each with its class's positive prompts."""
    from cmcgns_cli.downstream.dense import mask_targets

    masks = mask_targets(prepared)
    rows = prepared.split_indices("test")
    keep = np.asarray([bool(np.asarray(masks[int(r)]).any()) for r in rows], dtype=bool)
    cls = TEMPLATE_CLASS[task]
    phrases = list(prompts[cls]["positive"])
    chosen = rows[keep]
    regions = np.stack([np.asarray(masks[int(r)]) > 0 for r in chosen]) if len(chosen) else None
    return Items(
        rows=chosen,
        phrases=[phrases] * len(chosen),
        classes=[cls] * len(chosen),
        regions=regions if regions is not None else np.zeros((0, 1, 1), bool),
        skipped={"no_region": int((~keep).sum())},
    )


def read_mscxr(path: Path) -> pd.DataFrame:
    """The annotation CSV, checked for the columns this task needs."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"--annotations {path}: no such file")
    try:
        df = pd.read_csv(path, dtype={"dicom_id": str})
    except Exception as exc:  # noqa: BLE001 - any parse error is bad input
        raise BadInputError(f"{path}: cannot read as CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in MSCXR_REQUIRED if c not in df.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)} (MS-CXR format)")
    bad = df[list("xywh")].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise BadInputError(
            f"{path}: row {int(np.flatnonzero(bad)[0]) + 2}: x, y, w, h not numeric"
        )
    return df


def mscxr_items(prepared: Prepared, path: Path) -> Items:
    """Regions of the annotation CSV's phrases on the prepared images they name."""
    df = read_mscxr(path)
    m = prepared.manifest
    where = {str(i): k for k, i in enumerate(m["id"].astype(str))}
    size = prepared.image_size
    rows, phrases, classes, regions = [], [], [], []
    skipped = {"image_not_in_prepared_data": 0, "box_outside_image": 0}
    for (dicom, text), grp in df.groupby(["dicom_id", "label_text"], sort=True):
        r = where.get(str(dicom))
        if r is None:
            skipped["image_not_in_prepared_data"] += len(grp)
            continue
        region = np.zeros((size, size), bool)
        sx = sy = 1.0
        ow, oh = float(m["orig_w"].iat[r]), float(m["orig_h"].iat[r])
        if "image_width" in grp and pd.notna(grp["image_width"].iat[0]):
            sx, sy = ow / float(grp["image_width"].iat[0]), oh / float(grp["image_height"].iat[0])
        scale, px, py = float(m["scale"].iat[r]), float(m["pad_x"].iat[r]), float(m["pad_y"].iat[r])
        for x, y, w, h in grp[list("xywh")].astype(float).to_numpy():
            x0 = int(np.floor(x * sx * scale + px))
            y0 = int(np.floor(y * sy * scale + py))
            x1 = int(np.ceil((x + w) * sx * scale + px))
            y1 = int(np.ceil((y + h) * sy * scale + py))
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
            if x1 <= x0 or y1 <= y0:
                skipped["box_outside_image"] += 1
                continue
            region[y0:y1, x0:x1] = True
        if not region.any():
            continue
        rows.append(r)
        phrases.append([str(text)])
        cat = grp["category_name"].iat[0] if "category_name" in grp else "all"
        classes.append(str(cat) if pd.notna(cat) else "all")
        regions.append(region)
    return Items(
        rows=np.asarray(rows, dtype=np.int64),
        phrases=phrases,
        classes=classes,
        regions=np.stack(regions) if regions else np.zeros((0, size, size), bool),
        skipped=skipped,
    )

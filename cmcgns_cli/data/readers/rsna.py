"""RSNA Pneumonia Detection (stage 2): one image per patientId, Target, boxes, box masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, read_csv_checked

LABELS = "stage_2_train_labels.csv"
IMAGES = "stage_2_train_images"


def _num(v: str) -> float | None:
    try:
        return float(v) if v.strip() else None
    except ValueError:
        return None


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    cols = ["patientId", "x", "y", "width", "height", "Target"]
    df = read_csv_checked(src / LABELS, cols)
    skipped: list[Skip] = []
    # MGCA: groupby("patientId") (sorted by patientId), boxes as lists, Target = any box.
    grouped: dict[str, dict[str, Any]] = {}
    for pid, x, y, w, h, target in df[cols].itertuples(index=False):
        pid = pid.strip()
        path = str(src / IMAGES / f"{pid}.dcm")
        if not pid:
            skipped.append(Skip("", path, "missing_value:patientId"))
            continue
        g = grouped.setdefault(pid, {"boxes": [], "target": 0.0, "bad": None})
        t = _num(target)
        if t is None:
            g["bad"] = "missing_value:Target"
            continue
        box = [_num(x), _num(y), _num(w), _num(h)]
        if t >= 1:
            if any(v is None for v in box):
                g["bad"] = "missing_value:x"
                continue
            g["boxes"].append([float(v) for v in box])  # type: ignore[arg-type]
            g["target"] = 1.0
    pids = sorted(grouped)
    # Grouping by patient already keeps every patient in one split: mgca == grouped here.
    split_of, order_of = mgca.split_70_15_15_ordered(len(pids))
    # Detection and segmentation use the authors' own split of the same patients.
    dense_of, dense_order = mgca.rsna_dense_split(len(pids))
    items: list[Item] = []
    for k, (pid, split) in enumerate(zip(pids, split_of, strict=True)):
        g = grouped[pid]
        path = str(src / IMAGES / f"{pid}.dcm")
        if g["bad"]:
            skipped.append(Skip(pid, path, g["bad"]))
            continue
        items.append(
            Item(
                id=pid,
                source_path=path,
                split=split,
                patient_id=pid,
                study_id=pid,
                labels=[g["target"]],
                boxes=g["boxes"],
                box_labels=[0] * len(g["boxes"]),
                mask=("boxes",),
                extra={
                    "mgca_order": order_of[k],
                    "dense_split": dense_of[k],
                    "dense_order": dense_order[k],
                },
            )
        )
    holdout = mgca.rsna_dense_holdout(len(pids))
    dense_desc = (
        f"train_test_split(test_size={holdout}, random_state=0) over the {len(pids)} patients "
        f"(10,674 of 26,684 in the authors' code, scaled to this patient count), the held-out "
        "part train_test_split(test_size=0.5, random_state=0): first half test, second validate"
    )
    meta = {
        "label_names": ["Pneumonia"],
        "box_classes": ["Lung Opacity"],
        "label_policy": "Target = 1 when the patient has any box (stage_2_train_labels.csv).",
        "split_description": "rows grouped by patientId (sorted), then scikit-learn "
        "train_test_split(test_size=0.3, random_state=0) -> train 70%; the rest "
        "train_test_split(test_size=0.5, random_state=0) -> test 15% / validate 15% (MGCA). "
        "Grouping by patient makes this leak-free, so --protocol grouped is the same. "
        f"Detection and segmentation (column dense_split): {dense_desc}.",
        "masks": "boxes filled, 0/1",
    }
    return ReaderResult(items=items, skipped=skipped, meta=meta, masks=True)

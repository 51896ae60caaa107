"""Can a split score the task's metric? Checked before finetuning, not discovered after.

The best epoch is the one with the best validate score; when the validate split has no
positive for the task's metric (AUROC needs a positive and a negative of some label, mAP
needs a ground-truth box, Dice a non-empty mask), every epoch scores NaN and selection
would run on ``-inf`` (and keep the untrained head). Finetune says so in one warning line
naming the split and what it lacks, and keeps the LAST epoch (the fit functions take the
latest epoch while no validate score is finite); ``best_validate`` is then ``null`` in
finetune.json with its reason. A test split without positives gets a note: its metric
will be ``null`` in metrics.json, with the reason.
"""

from __future__ import annotations

import numpy as np

from cmcgns_cli.console import err
from cmcgns_cli.data.prepared import Prepared


def _has_target(task_name: str, kind: str, prepared: Prepared, rows: np.ndarray) -> bool:
    if kind == "detection":
        if "boxes" not in prepared.manifest:
            return False
        return any(len(b) > 0 for b in prepared.manifest["boxes"].iloc[rows])
    if kind == "segmentation":
        if prepared.masks is not None:
            return bool(any(prepared.masks[int(r)].any() for r in rows))
        if "boxes" in prepared.manifest:
            return any(len(b) > 0 for b in prepared.manifest["boxes"].iloc[rows])
        return False
    raise ValueError(f"unknown dense kind {kind!r} for {task_name}")


def _dense_rows(prepared: Prepared, split: str) -> np.ndarray:
    """The rows of ``split`` in the split detection and segmentation train and test on (it
    can differ from the classification split); none when the split is empty."""
    from cmcgns_cli.downstream.dense import dense_rows
    from cmcgns_cli.errors import BadInputError

    try:
        return dense_rows(prepared, split)
    except BadInputError:
        return np.zeros(0, dtype=np.int64)


def _cls_defined(kind: str, targets: np.ndarray, rows: np.ndarray) -> bool:
    if len(rows) == 0:
        return False
    if kind == "multiclass":
        return True  # accuracy is defined on any non-empty split
    y = np.asarray(targets)[rows]
    y = y.reshape(len(rows), -1)
    return bool(((y == 1).any(0) & (y == 0).any(0)).any())


def check_selectable(
    task_name: str,
    kind: str,
    metric: str,
    prepared: Prepared,
    *,
    targets: np.ndarray | None = None,
) -> bool:
    """Whether the validate split can score ``metric``; a warning line on stderr for each
    split (validate, test) that cannot. ``kind``: multilabel / binary / multiclass (then
    ``targets`` (N, C) or (N,) are needed) or detection / segmentation."""
    what = {
        "detection": "no ground-truth box",
        "segmentation": "no non-empty mask",
    }.get(kind, "no label with both a positive and a negative")
    selectable = True
    for split in ("validate", "test"):
        if kind in ("detection", "segmentation"):
            rows = _dense_rows(prepared, split)
            ok = len(rows) > 0 and _has_target(task_name, kind, prepared, rows)
        else:
            rows = prepared.split_indices(split)
            ok = _cls_defined(kind, targets if targets is not None else np.zeros(0), rows)
        if ok:
            continue
        detail = f"the {split} split of {prepared.root} has {len(rows)} rows and {what}"
        if split == "validate":
            selectable = False
            err.print(
                f"warning: finetune --task {task_name}: {detail}, so {metric} is undefined "
                "there and no epoch can be selected on it: the last epoch is kept",
                highlight=False,
            )
        else:
            err.print(
                f"warning: {detail}: {metric} on test will be undefined (null in "
                "metrics.json, with the reason)",
                highlight=False,
            )
    return selectable

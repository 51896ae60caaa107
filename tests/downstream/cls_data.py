"""Hand-made prepared classification datasets for the finetune CLI tests: 80 train,
20 validate and 20 test images of 32 x 32 px, one patient and study per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmcgns_cli.data.prepared import write_prepared

SPLIT = np.array(["train"] * 80 + ["validate"] * 20 + ["test"] * 20)


def write_cls_dataset(
    root: Path,
    dataset: str,
    images: np.ndarray,
    labels: list[list[float]],
    label_names: list[str],
    *,
    columns: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A prepared ``dataset`` of ``images`` (120, H, W) uint8 with per-image ``labels`` in
    the fixed split ``SPLIT``; ``columns`` adds manifest columns, ``meta`` meta.json keys."""
    n = len(SPLIT)
    manifest = pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(n)],
            "split": SPLIT,
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"s{i}" for i in range(n)],
            "view": "PA",
            "labels": labels,
            **(columns or {}),
        }
    )
    return write_prepared(
        root, dataset=dataset, manifest=manifest, images=images,
        extra_meta={"label_names": label_names, **(meta or {})},
    )  # fmt: skip

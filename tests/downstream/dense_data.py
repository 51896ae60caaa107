"""Hand-made prepared datasets for the detection and segmentation tests: dark noise with
bright rectangles as the findings (boxes, and the same boxes filled as masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmcgns_cli.data.prepared import write_prepared


def write_rect_dataset(
    root: Path, dataset: str, *, n: int = 60, size: int = 64, seed: int = 0,
    with_masks: bool = True, label: str = "opacity", empty_share: float = 0.3,
) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    masks = np.zeros_like(images)
    boxes, labels = [], []
    for i in range(n):
        k = 0 if rng.random() < empty_share else int(rng.integers(1, 3))
        row = []
        for _ in range(k):
            w, h = (int(v) for v in rng.integers(size // 6, size // 3, size=2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            images[i, y : y + h, x : x + w] = rng.integers(170, 230)
            masks[i, y : y + h, x : x + w] = 1
            row.append([float(x), float(y), float(w), float(h)])
        boxes.append(row)
        labels.append([label] * len(row))
    n_train, n_val = int(n * 0.6), int(n * 0.2)
    split = ["train"] * n_train + ["validate"] * n_val + ["test"] * (n - n_train - n_val)
    manifest = pd.DataFrame({
        "id": [f"img{i}" for i in range(n)], "split": split,
        "patient_id": [f"p{i}" for i in range(n)], "study_id": [f"s{i}" for i in range(n)],
        "view": "PA", "boxes": boxes, "box_labels": labels,
    })  # fmt: skip
    return write_prepared(
        root, dataset=dataset, manifest=manifest, images=images,
        masks=masks if with_masks else None,
    )  # fmt: skip

"""Tiny prepared paired datasets for the training tests (written with write_prepared).

Each image carries a few of five findings drawn as simple shapes, and its report has one
sentence per finding present (plus a normal sentence when none is), so the pairing is
learnable but not trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmcgns_cli.data.prepared import write_prepared

FINDINGS = [
    ("there is a left pleural effusion.", "small left effusion is seen."),
    ("the heart is enlarged.", "cardiomegaly is present."),
    ("right upper lobe opacity is noted.", "opacity in the right upper lung."),
    ("a support device is in place.", "a tube projects over the chest."),
    ("there is a small right pneumothorax.", "right apical pneumothorax is seen."),
]
NORMAL = ["the lungs are clear.", "no acute cardiopulmonary process."]


def _draw(rng: np.random.Generator, size: int, present: list[int]) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.35 + 0.1 * rng.standard_normal((size, size))
    img -= 0.25 * np.exp(-(((xx - 0.3) / 0.12) ** 2 + ((yy - 0.5) / 0.3) ** 2))  # lungs
    img -= 0.25 * np.exp(-(((xx - 0.7) / 0.12) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    for f in present:
        if f == 0:
            img[yy > 0.7 - 0.1 * rng.random()] += 0.0  # noqa: B018
            img += 0.45 * ((yy > 0.68) & (xx > 0.55))
        elif f == 1:
            img += 0.5 * np.exp(-(((xx - 0.5) / 0.18) ** 2 + ((yy - 0.6) / 0.15) ** 2))
        elif f == 2:
            img += 0.45 * np.exp(-(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.3) / 0.08) ** 2))
        elif f == 3:
            img += 0.6 * (np.abs(xx - 0.5 - 0.05 * np.sin(8 * yy)) < 0.015)
        elif f == 4:
            img -= 0.3 * ((yy < 0.3) & (xx < 0.35))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_world(
    root: Path,
    n: int = 96,
    size: int = 64,
    seed: int = 0,
    splits: tuple[float, float] = (0.7, 0.15),
) -> Path:
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for i in range(n):
        present = [f for f in range(len(FINDINGS)) if rng.random() < 0.35]
        sents = [FINDINGS[f][int(rng.integers(2))] for f in present] or list(NORMAL)
        sents = sents + ["comparison with prior study."] * int(rng.integers(0, 2))
        u = i / n
        split = "train" if u < splits[0] else "validate" if u < splits[0] + splits[1] else "test"
        rows.append(
            {
                "id": f"img{i:05d}",
                "split": split,
                "patient_id": f"p{i}",
                "study_id": f"s{i}",
                "view": "PA",
                "sentences": sents,
            }
        )
        images.append(_draw(rng, size, present))
    manifest = pd.DataFrame(rows)
    write_prepared(root, dataset="mimic", manifest=manifest, images=np.stack(images))
    return Path(root)

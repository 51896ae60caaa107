"""The prepared-dataset format (see docs/architecture.md): meta.json, manifest.parquet,
images.npy, masks.npy.

Row ``i`` of the manifest is ``images[i]``. Images are uint8 (N, S, S) opened with
``mmap_mode="r"`` so training never decodes. This module is the one place that knows the
file names; readers and writers elsewhere go through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError

FORMAT_VERSION = 1
META = "meta.json"
MANIFEST = "manifest.parquet"
IMAGES = "images.npy"
MASKS = "masks.npy"
SKIPPED = "skipped.csv"
REQUIRED_COLUMNS = ("id", "split", "patient_id", "study_id", "view")
SPLITS = ("train", "validate", "test")


@dataclass
class Prepared:
    """An opened prepared dataset."""

    root: Path
    meta: dict[str, Any]
    manifest: pd.DataFrame
    images: np.ndarray  # uint8 (N, S, S), memory-mapped
    masks: np.ndarray | None  # uint8 (N, S, S) or None

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names", []))

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of one split (``train``, ``validate``, ``test``, ``5x200``), or of
        several joined by ``+`` (``validate+test``), in manifest order."""
        values = self.manifest["split"].to_numpy()
        return np.flatnonzero(np.isin(values, split.split("+")))

    def labels_array(self) -> np.ndarray:
        """Labels as a float (N, C) array (1/0/-1/NaN), from the ``labels`` list column."""
        if "labels" not in self.manifest:
            raise BadInputError(f"{self.root / MANIFEST}: no 'labels' column in this dataset")
        return np.stack([np.asarray(v, dtype=np.float32) for v in self.manifest["labels"]])


def open_prepared(root: str | os.PathLike[str]) -> Prepared:
    """Open a prepared dataset, failing with a one-line message naming the bad file."""
    root = Path(root)
    meta_path = root / META
    if not meta_path.is_file():
        raise BadInputError(
            f"{meta_path}: not a prepared dataset (no meta.json); run cmcgns prepare"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise BadInputError(
            f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT_VERSION}"
        )
    try:
        manifest = pd.read_parquet(root / MANIFEST)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{root / MANIFEST}: cannot read ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise BadInputError(f"{root / MANIFEST}: missing column(s) {', '.join(missing)}")
    try:
        images = np.load(root / IMAGES, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{root / IMAGES}: cannot read ({exc})") from None
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(manifest):
        raise BadInputError(
            f"{root / IMAGES}: expected uint8 (N, S, S) with N={len(manifest)}, "
            f"got {images.dtype} {images.shape}"
        )
    masks = np.load(root / MASKS, mmap_mode="r") if (root / MASKS).is_file() else None
    return Prepared(root=root, meta=meta, manifest=manifest, images=images, masks=masks)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary name and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_prepared(
    root: str | os.PathLike[str],
    *,
    dataset: str,
    manifest: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray | None = None,
    extra_meta: dict[str, Any] | None = None,
    skipped: pd.DataFrame | None = None,
) -> Path:
    """Write a whole prepared dataset held in memory (small sets, tests, derived subsets).

    ``cmcgns prepare`` streams large sets instead; both produce the same files.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    _atomic_npy(root / IMAGES, images)
    if masks is not None:
        _atomic_npy(root / MASKS, np.ascontiguousarray(masks, dtype=np.uint8))
    tmp = root / f".{MANIFEST}.tmp"
    manifest.reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, root / MANIFEST)
    skipped = (
        skipped if skipped is not None else pd.DataFrame(columns=["id", "source_path", "reason"])
    )
    tmp = root / f".{SKIPPED}.tmp"
    skipped.to_csv(tmp, index=False)
    os.replace(tmp, root / SKIPPED)
    splits = manifest["split"].value_counts().to_dict() if len(manifest) else {}
    meta = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "image_size": int(images.shape[1]) if images.ndim == 3 else None,
        "count": int(len(manifest)),
        "splits": {str(k): int(v) for k, v in splits.items()},
        "skipped": int(len(skipped)),
    }
    meta.update(extra_meta or {})
    atomic_write_text(root / META, jsonio.dumps(meta, indent=2, default=str))
    return root


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)

"""Torch Datasets over a prepared dataset, for the downstream tasks.

``ImageDataset(prepared, split, size, augment)`` yields ``{"image": float (3, size, size)
normalised to mean 0.5 / std 0.5 (values in [-1, 1]), "labels": float (C,) (1/0/-1/NaN as
stored; empty when the dataset has none), "index": manifest row}`` plus ``"boxes"`` (K, 4)
``[x, y, w, h]`` in output pixels and ``"box_labels"`` (K,) for detection sets, and
``"mask"`` float (1, size, size) 0/1 for sets with masks.npy. Use :func:`collate` in the
DataLoader when boxes are present (they vary in number).

Geometry: without ``augment`` the stored S x S image is resized to ``size``; with it,
resized to ``round(size * 8 / 7)`` (256 for 224, MGCA's protocol) and a random
``size`` x ``size`` crop is taken, with boxes shifted and clipped and the mask cropped
alike. Chest X-rays are not flipped (laterality matters).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cmcgns_cli.data.prepared import Prepared, open_prepared


class ImageDataset(Dataset):
    def __init__(
        self,
        prepared: Prepared | str | os.PathLike[str],
        split: str | None = "train",
        size: int = 224,
        augment: bool = False,
        indices: np.ndarray | None = None,
        seed: int | None = None,
    ) -> None:
        self.prepared = prepared if isinstance(prepared, Prepared) else open_prepared(prepared)
        if indices is not None:
            self.indices = np.asarray(indices, dtype=np.int64)
        elif split is None:
            self.indices = np.arange(len(self.prepared), dtype=np.int64)
        else:
            self.indices = self.prepared.split_indices(split)
        self.size = int(size)
        self.augment = bool(augment)
        m = self.prepared.manifest
        self._labels = self.prepared.labels_array() if "labels" in m else None
        self._boxes = list(m["boxes"]) if "boxes" in m else None
        self._box_labels = list(m["box_labels"]) if "box_labels" in m else None
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def _geometry(self) -> tuple[int, int, int]:
        """(resized side, crop x, crop y)."""
        if not self.augment:
            return self.size, 0, 0
        big = round(self.size * 8 / 7)
        x = int(self._rng.integers(0, big - self.size + 1))
        y = int(self._rng.integers(0, big - self.size + 1))
        return big, x, y

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.indices[i])
        img = np.asarray(self.prepared.images[row])
        side, cx, cy = self._geometry()
        s_in = img.shape[0]
        if side != s_in:
            interp = cv2.INTER_AREA if side < s_in else cv2.INTER_LINEAR
            img = cv2.resize(img, (side, side), interpolation=interp)
        img = img[cy : cy + self.size, cx : cx + self.size]
        x = torch.from_numpy(img.astype(np.float32) / 255.0)
        x = ((x - 0.5) / 0.5).unsqueeze(0).expand(3, -1, -1).contiguous()
        out: dict[str, Any] = {"image": x, "index": row}
        if self._labels is not None:
            out["labels"] = torch.from_numpy(self._labels[row].astype(np.float32))
        else:
            out["labels"] = torch.zeros(0, dtype=torch.float32)
        f = side / s_in
        if self._boxes is not None:
            boxes = np.asarray(list(self._boxes[row]), dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(list(self._box_labels[row]), dtype=np.int64).reshape(-1)
            if len(boxes):
                x0 = np.clip(boxes[:, 0] * f - cx, 0, self.size)
                y0 = np.clip(boxes[:, 1] * f - cy, 0, self.size)
                x1 = np.clip((boxes[:, 0] + boxes[:, 2]) * f - cx, 0, self.size)
                y1 = np.clip((boxes[:, 1] + boxes[:, 3]) * f - cy, 0, self.size)
                keep = (x1 - x0 >= 1) & (y1 - y0 >= 1)
                boxes = np.stack([x0, y0, x1 - x0, y1 - y0], 1)[keep]
                labels = labels[keep]
            out["boxes"] = torch.from_numpy(boxes.astype(np.float32))
            out["box_labels"] = torch.from_numpy(labels)
        if self.prepared.masks is not None:
            m = np.asarray(self.prepared.masks[row])
            m = (m > 0).astype(np.uint8)
            if side != s_in:
                m = cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST)
            m = m[cy : cy + self.size, cx : cx + self.size]
            out["mask"] = torch.from_numpy(m.astype(np.float32)).unsqueeze(0)
        return out


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack fixed-size fields; keep ``boxes`` / ``box_labels`` as lists of tensors."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if key in ("boxes", "box_labels"):
            out[key] = vals
        elif key == "index":
            out[key] = torch.tensor(vals, dtype=torch.int64)
        else:
            out[key] = torch.stack(vals)
    return out

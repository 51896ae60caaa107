"""ImageDataset over prepared data: shapes, value range, labels, boxes and masks."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcgns_cli.data.datasets import ImageDataset, collate


def test_classification_items(prepared):
    out, _, _ = prepared("covidx")
    ds = ImageDataset(out, split="train", size=48)
    assert len(ds) == 16
    item = ds[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["labels"].shape == (3,) and item["labels"].sum() == 1
    assert isinstance(item["index"], int)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["labels"].shape == (4, 3)


def test_values_follow_the_stored_pixels(prepared):
    out, _, _ = prepared("covidx")
    ds = ImageDataset(out, split=None, size=64)
    item = ds[3]
    stored = np.asarray(ds.prepared.images[item["index"]], dtype=np.float32)
    np.testing.assert_allclose(item["image"][0].numpy(), (stored / 255 - 0.5) / 0.5, atol=1e-6)


def test_detection_and_segmentation_items(prepared):
    out, _, _ = prepared("rsna")
    ds = ImageDataset(out, split=None, size=32)
    rows = [i for i in range(len(ds)) if len(ds[i]["boxes"])]
    item = ds[rows[0]]
    assert item["boxes"].shape[1] == 4 and item["box_labels"].dtype == torch.int64
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) <= {0, 1}
    x, y, w, h = item["boxes"][0].tolist()
    inside = item["mask"][0, int(y + h / 2), int(x + w / 2)]
    assert inside == 1
    aug = ImageDataset(out, split=None, size=32, augment=True, seed=0)
    a = aug[rows[0]]
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (1, 32, 32)
    assert (a["boxes"][:, 2:] >= 1).all() and (a["boxes"][:, :2] >= 0).all()
    batch = collate([ds[i] for i in range(3)])
    assert isinstance(batch["boxes"], list) and batch["mask"].shape == (3, 1, 32, 32)


def test_paired_labels_with_nan(prepared):
    out, _, _ = prepared("mimic")
    item = ImageDataset(out, split="train", size=32)[0]
    assert item["labels"].shape == (14,) and torch.isnan(item["labels"]).any()

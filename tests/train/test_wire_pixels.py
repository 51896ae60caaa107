"""Batches cross to the device as 1-channel pixels (uint8 where the crop is whole bytes) and
are normalised there; the model must see exactly what the CPU collate gave before."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from cmcgns_cli.config import preset
from cmcgns_cli.data import tokenize as tk
from cmcgns_cli.data.paired import PairedDataset, collate_paired, model_images
from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.train import speed
from cmcgns_cli.train.feed import BatchFeed


def _old_transform(ds: PairedDataset, arr: np.ndarray, rng) -> torch.Tensor:
    """The CPU transform as it was before pixels crossed as bytes (float (1, crop, crop) in
    [-1, 1]), written out here as the reference."""
    img = np.asarray(arr, dtype=np.float32) * (1.0 / 255.0)
    size, crop = ds.image_size, ds.crop_size

    def resize(a, h, w):
        if a.shape == (h, w):
            return a
        shrink = a.shape[0] >= h and a.shape[1] >= w
        mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=mode)

    img = resize(img, size, size)
    if rng is None:
        top = (size - crop) // 2
        img = img[top : top + crop, top : top + crop]
    elif ds.augment == "random_crop":
        y0, x0 = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
        img = img[y0 : y0 + crop, x0 : x0 + crop]
    else:
        area = size * size * rng.uniform(0.6, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(size, max(8, int(round(math.sqrt(area * ratio)))))
        h = min(size, max(8, int(round(math.sqrt(area / ratio)))))
        y0 = int(rng.integers(0, size - h + 1))
        x0 = int(rng.integers(0, size - w + 1))
        img = resize(img[y0 : y0 + h, x0 : x0 + w], crop, crop)
        mean = float(img.mean())
        c = 1.0 + rng.uniform(-0.2, 0.2)
        b = rng.uniform(-0.1, 0.1)
        img = np.clip((img - mean) * c + mean + b, 0.0, 1.0)
    out = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    return out.sub_(0.5).div_(0.5).unsqueeze(0)


def _old_images(ds: PairedDataset, idx: list[int]) -> torch.Tensor:
    """The old collate's images: the old transform per item, stacked, repeated to 3 channels."""
    items = []
    for k in idx:
        row = int(ds.rows[k])
        rng = np.random.default_rng([ds.seed, ds.epoch, row]) if ds.augment != "none" else None
        items.append(_old_transform(ds, np.asarray(ds.images[row]), rng))
    return torch.stack(items).expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two prepared worlds of 6 seeded random-byte images: 64 px and 80 px stored."""
    root = tmp_path_factory.mktemp("wire")
    sents = ["left lung clear", "no effusion", "heart size normal"]
    tok = tk.train_wordpiece(sents, 120, root / "tok")
    out = {}
    for side in (64, 80):
        imgs = np.random.default_rng(side).integers(0, 256, (6, side, side)).astype(np.uint8)
        manifest = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "split": ["train"] * 6,
                                 "patient_id": "p", "study_id": "s", "view": "PA",
                                 "sentences": [sents[: 1 + i % 3] for i in range(6)]})  # fmt: skip
        prepared = open_prepared(write_prepared(root / f"p{side}", dataset="mimic",
                                                manifest=manifest, images=imgs))  # fmt: skip
        out[side] = (prepared, tk.token_cache(prepared, tok), tok.pad_token_id)
    return out


def _dataset(stores, side, augment, train=True, epoch=1):
    prepared, cache, _ = stores[side]
    cfg = preset("tiny")
    cfg.data.image_size, cfg.data.crop_size, cfg.data.augment = 64, 48, augment
    ds = PairedDataset(prepared, "train", cache, cfg.data, train=train, seed=3)
    ds.set_epoch(epoch)
    return ds


@pytest.mark.parametrize(
    ("side", "augment", "train", "wire_dtype"),
    [
        (64, "none", False, torch.uint8),  # validation: centre crop of the stored bytes
        (64, "random_crop", True, torch.uint8),  # the authors' transform: a window, no resize
        (64, "resized_crop", True, torch.float32),  # resize + jitter: not whole bytes
        (80, "none", False, torch.float32),  # stored 80 px resized to 64: interpolated
        (80, "random_crop", True, torch.float32),
    ],
)
def test_device_normalised_pixels_equal_the_old_cpu_collate(
    stores, side, augment, train, wire_dtype
):
    ds = _dataset(stores, side, augment, train)
    idx = list(range(len(ds)))
    batch = collate_paired([ds[k] for k in idx], stores[side][2], wire=True)
    assert "images" not in batch and batch["pixels"].dtype == wire_dtype
    assert batch["pixels"].shape == (6, 1, 48, 48)
    on_device = speed.to_device(batch, torch.device("cpu"), channels_last=False)
    want = _old_images(ds, idx)
    assert on_device["images"].shape == (6, 3, 48, 48) and on_device["images"].is_contiguous()
    # bit for bit, not only to a tolerance: the same float32 operations in the same order
    assert torch.equal(on_device["images"], want)
    # the model-ready collate (other callers) gives the same tensor
    plain = collate_paired([ds[k] for k in idx], stores[side][2])
    assert torch.equal(plain["images"], want)
    if wire_dtype == torch.uint8:  # 1 byte a pixel against 3 float32 channels: 12 x fewer
        assert batch["pixels"].nbytes * 12 == plain["images"].nbytes == 6 * 3 * 48 * 48 * 4
        values = (batch["pixels"].float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(values.expand(-1, 3, -1, -1), want, rtol=0, atol=1e-6)


def test_the_jittered_crop_is_not_whole_bytes(stores):
    """Why resized_crop ships float32: its values fall between bytes, so a uint8 copy would
    round them (by up to half a grey level, 1/255 after normalisation)."""
    ds = _dataset(stores, 64, "resized_crop")
    px = ds[0]["pixels"].double() * 255
    assert float((px - px.round()).abs().max()) > 0.1


def test_mixed_items_collate_as_float_intensities():
    a = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    b = torch.full((1, 2, 2), 0.25)
    item = {"input_ids": np.array([1, 2]), "sentence_index": np.array([-1, -1]),
            "num_sentences": 1, "index": 0}  # fmt: skip
    batch = collate_paired([{**item, "pixels": a}, {**item, "pixels": b}], wire=True)
    assert batch["pixels"].dtype == torch.float32
    torch.testing.assert_close(batch["pixels"][0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    images = model_images(batch["pixels"])
    torch.testing.assert_close(images[1], torch.full((3, 2, 2), -0.5))
    torch.testing.assert_close(images[0, 2], torch.tensor([[-1.0, 1.0], [-0.6, -0.2]]))


def test_the_trainers_loader_ships_bytes_and_the_feed_normalises(stores):
    ds = _dataset(stores, 64, "random_crop")
    feed = BatchFeed(torch.device("cpu"), 3, 1, 0, 0, stores[64][2], False, False, False)
    raw = next(iter(feed.loader(ds, train=True, epoch=1)))
    assert raw["pixels"].dtype == torch.uint8 and raw["pixels"].shape == (3, 1, 48, 48)
    idx = [int(np.flatnonzero(ds.rows == int(r))[0]) for r in raw["index"]]
    batch = feed.to_device(raw)
    assert torch.equal(batch["images"], _old_images(ds, idx))

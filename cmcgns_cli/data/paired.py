"""Image-report pairs for pretraining: a Dataset over a prepared paired dataset, and collate.

Batch contract (what ``collate_paired`` returns, and what ``CMCGNS.forward`` reads):

* ``images``: float (B, 3, H, W), grayscale repeated to 3 channels, normalised with mean 0.5
  and std 0.5 (values in [-1, 1]); with ``wire=True`` the collate gives ``pixels`` instead,
  (B, 1, H, W) before normalisation (see below), and :func:`model_images` makes ``images`` of
  it on the device;
* ``input_ids``, ``attention_mask``: long (B, L), ``[CLS] sentence0 sentence1 ... [SEP]``
  padded to the longest report of the batch;
* ``sentence_index``: long (B, L), -1 on [CLS]/[SEP]/padding, ``s`` on the tokens of sentence s;
* ``num_sentences``: long (B,);
* ``index``: long (B,), the manifest rows.

Augmentation randomness is a pure function of (seed, epoch, row), so a batch is the same
whatever the number of DataLoader workers and whether the run was resumed.

Pixels on the wire: a dataset item carries ``pixels`` (1, crop, crop), the crop before
normalisation. It is uint8 (the stored bytes) where the crop only selects stored pixels (the
prepared side equals ``data.image_size`` and the transform is the centre crop or
``random_crop``), and float32 in [0, 1] where something interpolates or scales the
intensities (a resize to ``data.image_size``, ``resized_crop``'s resize and jitter), whose
values are not whole bytes. Either way the normalised image equals, bit for bit, what
normalising on the CPU gave: ``byte * float32(1/255)``, then ``(v - 0.5) / 0.5``, in float32
(:func:`model_images`). The trainer ships a 224 px batch as 1 byte per pixel instead of 3
float32 channels (12 x fewer bytes through shared memory and PCIe; 3 x fewer on the float path).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cmcgns_cli.data.tokenize import TokenCache
from cmcgns_cli.errors import BadInputError

CROP_SCALE = (0.6, 1.0)  # random-resized-crop area share
CROP_RATIO = (3 / 4, 4 / 3)
BRIGHTNESS = 0.1  # additive, in [0, 1] intensity units
CONTRAST = 0.2  # multiplicative about the mean


class PairedDataset(Dataset):
    """Rows of one split that have at least one non-empty tokenised sentence."""

    def __init__(
        self,
        prepared: Any,
        split: str,
        tokens: TokenCache,
        data_cfg: Any,
        train: bool,
        *,
        seed: int = 0,
    ) -> None:
        self.root = Path(prepared.root)
        self._images = prepared.images
        self.split = split
        self.tokens = tokens
        self.image_size = int(data_cfg.image_size)
        self.crop_size = int(data_cfg.crop_size)
        self.max_length = int(data_cfg.max_length)
        self.max_sentences = int(data_cfg.max_sentences)
        self.augment = _augment_mode(data_cfg.augment) if train else "none"
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        if self.crop_size > self.image_size:
            raise BadInputError(
                f"data.crop_size {self.crop_size} is larger than data.image_size {self.image_size}"
            )
        rows = np.asarray(prepared.split_indices(split), dtype=np.int64)
        if len(rows) == 0:
            raise BadInputError(
                f"{self.root / 'manifest.parquet'}: no rows in split {split!r}; pretraining needs "
                "train and validate splits"
            )
        keep = np.array([tokens.row_token_count(int(r)) > 0 for r in rows], dtype=bool)
        self.rows = rows[keep]
        self.dropped = int((~keep).sum())
        if len(self.rows) == 0:
            raise BadInputError(
                f"{self.root / 'manifest.parquet'}: split {split!r} has no row with a non-empty "
                "report"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        # never pickle the memmap (that would copy the whole array into each worker)
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            from cmcgns_cli.data.prepared import IMAGES

            self._images = np.load(self.root / IMAGES, mmap_mode="r")
        return self._images

    def __getitem__(self, k: int) -> dict[str, Any]:
        row = int(self.rows[k])
        augmenting = self.augment != "none"
        rng = np.random.default_rng([self.seed, self.epoch, row]) if augmenting else None
        pixels = self.pixels(np.asarray(self.images[row]), rng)
        ids, sidx, n = self.tokens.encode(row, self.max_length, self.max_sentences)
        return {
            "pixels": pixels,
            "input_ids": ids,
            "sentence_index": sidx,
            "num_sentences": n,
            "index": row,
        }

    def pixels(self, arr: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
        """uint8 (S, S) -> the crop before normalisation, (1, crop, crop): uint8 when it only
        selects stored pixels, else float32 in [0, 1] (see the module docstring and
        :func:`crop_pixels`)."""
        return crop_pixels(arr, self.image_size, self.crop_size, self.augment, rng)

    def transform(self, arr: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
        """uint8 (S, S) -> float (1, crop, crop) in [-1, 1]: :func:`crop_pixels` normalised
        (:func:`normalise_pixels`)."""
        augment = getattr(self, "augment", "none")
        return normalise_pixels(crop_pixels(arr, self.image_size, self.crop_size, augment, rng))


def crop_pixels(
    arr: np.ndarray, size: int, crop: int, augment: str, rng: np.random.Generator | None
) -> torch.Tensor:
    """A stored image (uint8 (S, S)) -> the crop the model sees, before normalisation:
    (1, crop, crop), uint8 when the crop only selects stored pixels (``S == size`` and the
    centre crop or ``random_crop``), else float32 in [0, 1].

    ``rng`` None: the centre crop (validation, ``augment = none``). Otherwise by
    ``augment``: ``random_crop`` takes a crop x crop window at a uniformly drawn offset of
    the ``size`` letterbox, pixels untouched (the authors' training transform: a random crop,
    no resize, flip or intensity change); ``resized_crop`` takes a random area 0.6-1.0 /
    aspect 3/4-4/3 window resized to crop, then contrast x(1 +- 0.2) and brightness +- 0.1.
    The stored image is first resized to ``size`` x ``size`` when its side differs (OpenCV,
    on the float intensities: the result is not whole bytes, so that crop ships as float32).
    """
    exact = (
        arr.dtype == np.uint8
        and arr.shape == (size, size)
        and (rng is None or augment == "random_crop")
    )
    # the bytes themselves where nothing interpolates; else float intensities, as always
    img = arr if exact else _resize(np.asarray(arr, dtype=np.float32) * (1.0 / 255.0), size, size)
    if rng is None:
        top = (size - crop) // 2
        img = img[top : top + crop, top : top + crop]
    elif augment == "random_crop":
        y0, x0 = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
        img = img[y0 : y0 + crop, x0 : x0 + crop]
    else:
        area = size * size * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w = min(size, max(8, int(round(math.sqrt(area * ratio)))))
        h = min(size, max(8, int(round(math.sqrt(area / ratio)))))
        y0 = int(rng.integers(0, size - h + 1))
        x0 = int(rng.integers(0, size - w + 1))
        img = _resize(img[y0 : y0 + h, x0 : x0 + w], crop, crop)
        mean = float(img.mean())
        c = 1.0 + rng.uniform(-CONTRAST, CONTRAST)
        b = rng.uniform(-BRIGHTNESS, BRIGHTNESS)
        img = np.clip((img - mean) * c + mean + b, 0.0, 1.0)
    if exact:  # a copy: the window may be a read-only view of the memory-mapped file
        return torch.from_numpy(np.array(img, dtype=np.uint8, order="C")).unsqueeze(0)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).unsqueeze(0)


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (any shape; uint8 bytes or float32 intensities in [0, 1]) -> float32 of the same
    shape in [-1, 1]: ``byte * float32(1/255)`` for uint8, then ``(v - 0.5) / 0.5`` (mean 0.5,
    std 0.5, the authors' normalisation). A new tensor; runs on the tensor's device."""
    x = pixels.float().mul_(1.0 / 255.0) if pixels.dtype == torch.uint8 else pixels.float()
    return x.sub(0.5).div_(0.5)


def model_images(pixels: torch.Tensor) -> torch.Tensor:
    """A ``pixels`` batch (B, 1, H, W), uint8 or float32 in [0, 1] -> the model's ``images``:
    float32 (B, 3, H, W), normalised (:func:`normalise_pixels`), the grey channel repeated
    to 3, contiguous (what the stock 3-channel backbones read). Runs on the tensor's device:
    the trainer calls it after the copy, so the batch crosses as 1 channel."""
    if pixels.dim() != 4 or pixels.shape[1] != 1:
        raise ValueError(f"pixels must be (B, 1, H, W), not {tuple(pixels.shape)}")
    return normalise_pixels(pixels).expand(-1, 3, -1, -1).contiguous()


AUGMENTS = ("random_crop", "resized_crop", "none")


def _augment_mode(value: Any) -> str:
    """``data.augment`` as one of AUGMENTS (a bool from an old caller: True = resized_crop,
    the only augmentation there was). Raises BadInputError on anything else."""
    if isinstance(value, bool):
        return "resized_crop" if value else "none"
    if value not in AUGMENTS:
        raise BadInputError(f"data.augment must be one of {', '.join(AUGMENTS)}, not {value!r}")
    return str(value)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """OpenCV resize (area when shrinking, bilinear when enlarging): fast and thread-free,
    where torch's antialiased interpolate slows to tens of ms on a busy 2-core machine."""
    import cv2

    if img.shape[0] == h and img.shape[1] == w:
        return img
    shrink = img.shape[0] >= h and img.shape[1] >= w
    return cv2.resize(
        np.ascontiguousarray(img),
        (w, h),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )


def collate_paired(
    items: list[dict[str, Any]], pad_id: int = 0, *, wire: bool = False
) -> dict[str, torch.Tensor]:
    """Stack images and pad token sequences to the longest of the batch.

    ``wire`` False: ``images`` float32 (B, 3, H, W) in [-1, 1], ready for the model. ``wire``
    True: ``pixels`` (B, 1, H, W) as the items carry them (uint8, or float32 in [0, 1] when
    any item is float), for :func:`model_images` on the device after the copy."""
    b = len(items)
    length = max(len(it["input_ids"]) for it in items)
    input_ids = torch.full((b, length), int(pad_id), dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    sentence_index = torch.full((b, length), -1, dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        input_ids[i, :n] = torch.from_numpy(it["input_ids"])
        attention[i, :n] = 1
        sentence_index[i, :n] = torch.from_numpy(it["sentence_index"])
    pixels = [it["pixels"] for it in items]
    if any(p.dtype != torch.uint8 for p in pixels):  # one dtype per batch: bytes -> [0, 1]
        pixels = [p.float().mul_(1.0 / 255.0) if p.dtype == torch.uint8 else p for p in pixels]
    stacked = torch.stack(pixels)
    return {
        **({"pixels": stacked} if wire else {"images": model_images(stacked)}),
        "input_ids": input_ids,
        "attention_mask": attention,
        "sentence_index": sentence_index,
        "num_sentences": torch.tensor([it["num_sentences"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


class PadCollate:
    """Picklable ``collate_fn`` bound to a pad id (for DataLoader workers); ``wire`` as in
    :func:`collate_paired`."""

    def __init__(self, pad_id: int, wire: bool = False) -> None:
        self.pad_id = int(pad_id)
        self.wire = bool(wire)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_paired(items, self.pad_id, wire=self.wire)


class EpochSampler(Sampler[int]):
    """A shuffling sampler whose order is a pure function of (seed, epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        perm = np.random.default_rng([self.seed, 7919, self.epoch]).permutation(self.n)
        return iter(perm.tolist())


class DistributedEpochSampler(Sampler[int]):
    """This rank's share of :class:`EpochSampler`'s order (torch's DistributedSampler role).

    The epoch permutation (a pure function of (seed, epoch): ``set_epoch`` reseeds it) is cut
    into global batches of ``batch_size * world`` items; rank ``r`` takes the ``r``-th
    contiguous ``batch_size`` slice of each. So the ranks' micro-batches at step t, stacked in
    rank order, are exactly the one-process batch of size ``batch_size * world`` at step t,
    whatever the world size; the incomplete last global batch is dropped.
    """

    def __init__(
        self, n: int, seed: int, batch_size: int, world: int, rank: int, shuffle: bool = True
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.base = EpochSampler(n, seed, shuffle)
        self.batch_size, self.world, self.rank = int(batch_size), int(world), int(rank)
        self.global_batches = int(n) // (self.batch_size * self.world)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.global_batches * self.batch_size

    def __iter__(self):
        order = list(self.base)
        gb, b = self.batch_size * self.world, self.batch_size
        out: list[int] = []
        for g in range(self.global_batches):
            start = g * gb + self.rank * b
            out.extend(order[start : start + b])
        return iter(out)

"""How batches reach the model during pretraining: the epoch's loader, the device move and
the autocast context, shared by the training steps and the validation pass.

The training order is a pure function of ``train.seed`` and the epoch (``EpochSampler``; one
shard per rank under DDP, ``DistributedEpochSampler``), so a resume can replay an epoch minus
the batches it already trained (``skip``, see ``train/stop.py``).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcgns_cli.data.paired import DistributedEpochSampler, EpochSampler, PadCollate, PairedDataset
from cmcgns_cli.train import dist, speed, stop


@dataclass(frozen=True)
class BatchFeed:
    """Loader settings of one run.

    ``batch_size`` is per process; ``world`` the number of processes; ``drop_last`` drops a
    partial last training batch (always under DDP, so every rank steps together); ``amp``
    turns on bf16 autocast (CUDA only); ``channels_last`` moves images to NHWC (CUDA only).
    """

    device: torch.device
    batch_size: int
    world: int
    seed: int
    workers: int
    pad_id: int
    drop_last: bool
    amp: bool
    channels_last: bool

    def loader(self, ds: PairedDataset, *, train: bool, epoch: int, skip: int = 0) -> DataLoader:
        """The DataLoader of ``epoch`` over ``ds`` (shuffled when ``train``), starting after
        ``skip`` samples (a resumed mid-epoch checkpoint)."""
        ds.set_epoch(epoch)
        if train and self.world > 1:
            sampler: Any = DistributedEpochSampler(
                len(ds), self.seed, self.batch_size, self.world, dist.rank()
            )
        else:
            sampler = EpochSampler(len(ds), self.seed, shuffle=train)
        sampler.set_epoch(epoch)
        if skip:
            sampler = stop.SkipSampler(sampler, skip)
        gen = torch.Generator()
        gen.manual_seed(self.seed * 100_003 + epoch)
        cuda = self.device.type == "cuda"
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=self.workers,
            collate_fn=PadCollate(self.pad_id, wire=True),  # 1-channel pixels: see to_device
            generator=gen,
            worker_init_fn=seed_worker,
            pin_memory=cuda,
            prefetch_factor=4 if cuda and self.workers > 0 else None,
        )

    def to_device(self, batch: dict[str, Any], *, across_ranks: bool = True) -> dict[str, Any]:
        """``batch`` on the run's device: the loader's 1-channel ``pixels`` become the model's
        normalised 3-channel ``images`` there (NHWC when ``channels_last``), and
        ``sentence_slots`` is set to the batch's most sentences.

        The sentence count is read on the host before the copy (free); the model's static
        fallback on a device would pad every report to ``data.max_sentences`` (about 80 %
        padding in MIMIC-CXR-sized reports; padded slots are masked, so the count changes
        no loss). Under DDP with ``across_ranks`` the ranks agree on the largest count (one
        MAX all-reduce of a scalar on the host, ``dist.max_over_ranks``) so that the gathered
        sentence tensors line up; every rank must then call this at the same step. The
        validation pass (rank 0 alone) passes ``across_ranks=False``."""
        n = batch.get("num_sentences")
        if isinstance(n, torch.Tensor) and n.device.type == "cpu":
            slots = max(1, int(n.max())) if n.numel() else 1
            if self.world > 1 and across_ranks:
                slots = dist.max_over_ranks(slots)
            batch["sentence_slots"] = slots
        return speed.to_device(batch, self.device, self.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when ``amp``; a no-op otherwise."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy's and Python's RNGs from the worker's torch seed, and
    OpenCV limited to one thread (the worker processes are the parallelism)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    try:  # one OpenCV thread per worker: ranks x workers x cores threads oversubscribe a node
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass

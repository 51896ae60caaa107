"""Stopping pretraining on SIGINT/SIGTERM without losing a step (see ``interrupts.py``).

After each optimizer step the loop asks :func:`agreed`; when a signal arrived it writes a
checkpoint of that very step (``Trainer.write_checkpoint``; ``progress.epoch_micro`` records how
many micro-batches of the epoch are done) and raises :class:`~cmcgns_cli.interrupts.Interrupted`.
A resume replays the epoch's fixed order (a pure function of seed and epoch) minus the
batches already trained (:class:`SkipSampler`), with the RNG state of that step, so it repeats
the uninterrupted run's losses.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Sampler

from cmcgns_cli import interrupts
from cmcgns_cli.train import dist


def agreed(world: int, device: torch.device) -> bool:
    """True when a SIGINT/SIGTERM arrived (on any rank: one all-reduce under DDP)."""
    flag = interrupts.requested() is not None
    if world > 1:
        t = torch.tensor([float(flag)], device=device)
        flag = bool(dist.all_reduce_sum(t).item() > 0)
    return flag


def raise_interrupted(run: Path, step: int, stage: int, epoch: int) -> None:
    """Raise the one-line Interrupted (exit 130 for SIGINT, 143 for SIGTERM)."""
    signum = interrupts.requested() or signal.SIGTERM  # another rank's signal under DDP
    raise interrupts.Interrupted(
        signum,
        f"interrupted at stage {stage}, epoch {epoch}, step {step}; "
        f"resume with: cmcgns pretrain --resume {run}",
    )


class SkipSampler(Sampler[int]):
    """``base`` without its first ``skip`` indices (the batches a mid-epoch resume skips)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, int(skip)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

"""Stopping pretraining on SIGINT/SIGTERM without losing a step (see ``interrupts.py``).

After each optimizer step the loop asks :func:`agreed`; when a signal arrived it writes a
checkpoint of that very step (:func:`save_mid_epoch`: ``progress.epoch_micro`` records how
many micro-batches of the epoch are done) and raises :class:`~cmcgns_cli.interrupts.Interrupted`.
A resume replays the epoch's fixed order (a pure function of seed and epoch) minus the
batches already trained (:class:`SkipSampler`), with the RNG state of that step, so it repeats
the uninterrupted run's losses.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from cmcgns_cli import interrupts
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist


def agreed(trainer: Any) -> bool:  # noqa: ANN401
    """True when a SIGINT/SIGTERM arrived (on any rank: one all-reduce under DDP)."""
    flag = interrupts.requested() is not None
    if trainer.world > 1:
        t = torch.tensor([float(flag)], device=trainer.device)
        flag = bool(dist.all_reduce_sum(t).item() > 0)
    return flag


def save_mid_epoch(trainer: Any, micro_done: int) -> None:  # noqa: ANN401
    """Checkpoint the current step inside an epoch (rank 0 writes, all ranks wait)."""
    trainer.prog.epoch_micro = int(micro_done)
    trainer.prog.recent = list(trainer.recent)
    if dist.is_main():
        trainer.prog.metrics_bytes = trainer._metrics_size()
        assert trainer.optimizer is not None
        ckpt.save_checkpoint(
            trainer.run,
            model_state=trainer.model.state_dict(),
            optimizer=trainer.optimizer,
            scaler=trainer.scaler,
            progress=trainer.prog.to_dict(),
        )
    dist.barrier()


def raise_interrupted(trainer: Any, stage: int, epoch: int) -> None:  # noqa: ANN401
    """Raise the one-line Interrupted (exit 130 for SIGINT, 143 for SIGTERM)."""
    signum = interrupts.requested() or signal.SIGTERM  # another rank's signal under DDP
    raise interrupts.Interrupted(
        signum,
        f"interrupted at stage {stage}, epoch {epoch}, step {trainer.prog.step}; "
        f"resume with: cmcgns pretrain --resume {trainer.run}",
    )


class SkipSampler(Sampler[int]):
    """``base`` without its first ``skip`` indices (the batches a mid-epoch resume skips)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, int(skip)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

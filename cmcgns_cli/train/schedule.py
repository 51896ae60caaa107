"""Per-stage learning-rate schedule: linear warm-up, then cosine decay to zero (the authors'
training schedule)."""

from __future__ import annotations

import math


def lr_at(
    step: int, *, total_steps: int, warmup_steps: int, peak_lr: float, start_lr: float
) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a stage.

    Steps ``0 .. warmup_steps-1`` rise linearly from ``start_lr`` towards ``peak_lr``; the rest
    follow a half cosine from ``peak_lr`` down to 0 at ``total_steps``.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps))
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up length in optimizer steps (at most the whole stage)."""
    return min(total_steps, int(round(warmup_epochs * steps_per_epoch)))

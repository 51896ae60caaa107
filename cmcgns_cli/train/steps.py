"""One epoch of optimizer steps of the pretraining loop, split out of ``loop.py``: the
micro-batches of the epoch (from a mid-epoch checkpoint's position on a resume), gradient
accumulation (DDP's ``no_sync`` on all but the group's last micro-batch), the non-finite
checks, clipping, the warm-up + cosine lr per step, the step records (flushed, with one host
read, every ``sync_every`` steps) and the stop check at each flush.

``_after_step`` is the hook called after every logged step; tests replace it to simulate a
crash or a signal at a chosen step.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Protocol

import torch

from cmcgns_cli import interrupts
from cmcgns_cli.config import TrainConfig
from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.train import display, dist, stop
from cmcgns_cli.train.epoch_end import TrainerState, fail_nonfinite
from cmcgns_cli.train.feed import BatchFeed
from cmcgns_cli.train.optim import grad_norm_step
from cmcgns_cli.train.records import TERMS, StepBuffer
from cmcgns_cli.train.schedule import lr_at


class StepState(TrainerState, Protocol):
    """What these functions read and write of ``loop.Trainer`` beyond ``TrainerState``:
    named here, rather than the class imported, so that ``loop.py`` -> ``steps.py`` is the
    only arrow between them."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    feed: BatchFeed
    train_ds: PairedDataset
    tc: TrainConfig
    batch_size: int
    micro_per_epoch: int
    accumulate: int
    sync_every: int


def _after_step(trainer: StepState, record: dict[str, Any]) -> None:
    """Hook called after every logged optimizer step (tests use it to simulate a crash)."""


def train_epoch(self: StepState, stage: int, total: int, warmup: int, bar: Any, task: Any) -> None:
    """Train one epoch of ``stage`` (``total`` optimizer steps in the stage, ``warmup`` of
    them warm-up; ``bar`` / ``task`` the Rich progress bar and its row): micro-batches with
    gradient accumulation, lr per step, the step records flushed every ``sync_every`` steps,
    the stop check at each flush. From ``prog.epoch_micro`` on when resuming mid-epoch."""
    model, net, opt = self.model, self.net, self.optimizer
    assert opt is not None
    model.train()
    gepoch = self.prog.epoch
    start = int(self.prog.epoch_micro)  # > 0 when resuming a mid-epoch checkpoint
    skip = start * self.batch_size
    loader = self.feed.loader(self.train_ds, train=True, epoch=gepoch, skip=skip)
    n_micro = self.micro_per_epoch
    buf = StepBuffer()
    group_start = start
    t0 = time.perf_counter()
    pairs = 0
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader, start=start):
        if i >= n_micro:
            break
        if i % self.accumulate == 0:
            group_start = i
        group = min(self.accumulate, n_micro - group_start)
        last_micro = i - group_start + 1 >= group
        batch = self.feed.to_device(batch)
        sync = net.no_sync() if (net is not model and not last_micro) else contextlib.nullcontext()
        with sync:
            with self.feed.autocast():
                out = net(batch, stage=stage)
            loss = out["loss"]
            if self.sync_every == 1:  # every rank stops, or none (see dist.any_rank)
                bad = not bool(torch.isfinite(loss.detach()).all())
                if dist.any_rank(bad, self.device):
                    fail_nonfinite(self.log, self.prog, self.run, stage, out, "loss")
            (loss.float() / group).backward()
        buf.add(out)
        pairs += int(batch["images"].shape[0]) * self.world
        if not last_micro:
            continue
        grad_norm = grad_norm_step(model.parameters(), float(self.tc.grad_clip or 0.0))
        if self.sync_every == 1 and not math.isfinite(float(grad_norm)):
            fail_nonfinite(self.log, self.prog, self.run, stage, out, "gradient norm")
        lr = lr_at(
            self.prog.stage_step,
            total_steps=total,
            warmup_steps=warmup,
            peak_lr=float(self.tc.lr),
            start_lr=float(self.tc.warmup_start_lr),
        )
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.prog.step += 1
        self.prog.stage_step += 1
        meta = {
            "kind": "train",
            "step": self.prog.step,
            "stage": stage,
            "epoch": gepoch + 1,
            "stage_step": self.prog.stage_step,
            "lr": lr,
            "clipped": grad_norm is not None,
        }
        buf.close_step(meta, grad_norm)
        done = self.prog.stage_step >= total or i + 1 >= n_micro
        # one process reads the flag every step; several agree on it at flush points
        halt = self.world == 1 and interrupts.requested() is not None
        if len(buf.pending) >= self.sync_every or done or halt:
            records = buf.flush()  # the one host read of this window
            dt = time.perf_counter() - t0
            for record in records:
                record["pairs_per_s"] = pairs / dt if dt > 0 else None
                _check_record(self, stage, record)
                self.log.write(record)
                _track(self, record)
                if dist.is_main():
                    parts = display.info_parts(record, stage)
                    info = " ".join(parts.values())
                    bar.update(task, completed=record["stage_step"], info=info, parts=parts)
                _after_step(self, record)
            pairs, t0 = 0, time.perf_counter()
            if not done and stop.agreed(self.world, self.device):
                self.prog.epoch_micro = i + 1
                if dist.is_main():
                    self.write_checkpoint()
                dist.barrier()
                stop.raise_interrupted(self.run, self.prog.step, stage, gepoch + 1)
        if self.prog.stage_step >= total:
            break


def _check_record(self: StepState, stage: int, record: dict[str, Any]) -> None:
    for key, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
        v = record.get(key)
        if v is not None and not math.isfinite(v):
            self.prog.step = record["step"] - 1
            self.prog.stage_step = record["stage_step"] - 1
            fail_nonfinite(self.log, self.prog, self.run, stage, record, what)


def _track(self: StepState, record: dict[str, Any]) -> None:
    if record["stage_step"] <= 3:  # the stage's starting loss: mean of its first 3 steps
        n = record["stage_step"]
        for k in TERMS:
            if k in record and record[k] is not None:
                prev = self.prog.stage_first.get(f"{record['stage']}:{k}", 0.0)
                self.prog.stage_first[f"{record['stage']}:{k}"] = prev + (record[k] - prev) / n
    self.recent.append(record)
    self.recent = self.recent[-3:]

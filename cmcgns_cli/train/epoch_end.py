"""End of an epoch (the validation record; best/ and the resume checkpoint, rank 0 only),
the run summary, and the non-finite stop, split out of ``loop.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from cmcgns_cli.console import err
from cmcgns_cli.errors import RunFailedError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist
from cmcgns_cli.train.records import TERMS, MetricsLog, Progress, kmeans_initialized, scalar


class TrainerState(Protocol):
    """What these functions read and write of ``loop.Trainer``: named here, rather than the
    class imported, so that ``loop.py`` -> ``epoch_end.py`` is the only arrow between them."""

    model: torch.nn.Module
    prog: Progress
    log: MetricsLog
    run: Path
    device: torch.device
    world: int
    last_val: dict[str, Any]
    recent: list[dict[str, float]]
    export_encoder: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None

    def stage_epochs(self, stage: int) -> int: ...

    def write_checkpoint(self) -> None: ...


def end_epoch(self: TrainerState, stage: int, val: dict[str, Any]) -> None:
    """Close an epoch of ``stage`` with its validation values ``val`` (``validate.validate``):
    log the ``val`` record, update the per-stage loss means and history, and on rank 0 save
    best/ (when the validation loss is the stage's lowest) and the resume checkpoint."""
    state = self.model.state_dict()
    vloss = float(val.get("val_loss", float("nan")))
    is_best = math.isfinite(vloss) and (self.prog.best_val is None or vloss < self.prog.best_val)
    record = {
        "kind": "val",
        "step": self.prog.step,
        "stage": stage,
        "epoch": self.prog.epoch,
        **val,
        "best": is_best,
    }
    self.log.write(record)
    self.last_val = record
    if dist.is_main():
        err.print(
            f"stage {stage} epoch {self.prog.stage_epoch}/{self.stage_epochs(stage)}: "
            f"val loss {vloss:.4f}, i2t top-1 {val['val_top1_i2t']:.3f}"
            + (" (best)" if is_best else "")
        )
    last_train = self.recent[-1] if self.recent else {}
    for k in TERMS:
        vals = [r[k] for r in self.recent if r.get("stage") == stage and r.get(k) is not None]
        if vals:
            self.prog.stage_last[f"{stage}:{k}"] = sum(vals) / len(vals)
    self.prog.history.append(
        {
            "stage": stage,
            "epoch": self.prog.epoch,
            "step": self.prog.step,
            "train_loss": last_train.get("loss"),
            "val_loss": vloss,
            "val_top1_i2t": val["val_top1_i2t"],
            "kmeans_initialized": kmeans_initialized(state),
        }
    )
    if is_best:
        self.prog.best_val = vloss
        self.prog.best_epoch = self.prog.epoch
    if dist.is_main():
        _save(self, stage, state, val, is_best)
    dist.barrier()  # the checkpoint is on disk before any rank reads it


def _save(
    self: TrainerState, stage: int, state: dict[str, Any], val: dict[str, Any], is_best: bool
) -> None:
    if is_best:
        enc = self.export_encoder(self.model) if self.export_encoder else None
        ckpt.save_best(
            self.run,
            model_state=state,
            encoder_state=enc,
            meta={"stage": stage, "epoch": self.prog.epoch, "step": self.prog.step, **val},
        )
    self.write_checkpoint()


def summary(self: TrainerState, wall: float) -> dict[str, Any]:
    """The run summary ``pretrain --json`` prints: steps, epochs, ``wall_s`` (seconds), the
    final train terms, each stage's first-3-step and last-3-step mean loss, the last and best
    validation values, whether the k-means is initialised, the last ``pairs_per_s``."""
    state = self.model.state_dict()
    out: dict[str, Any] = {
        "run_dir": str(self.run),
        "device": str(self.device),
        "world_size": self.world,
        "steps": self.prog.step,
        "epochs": self.prog.epoch,
        "stage": self.prog.stage,
        "wall_s": round(wall, 1),
    }
    last = self.recent[-1] if self.recent else {}
    for k in TERMS:
        if k in last:
            out[f"final_{k}"] = last[k]
    for stage in (1, 2):
        if f"{stage}:loss" in self.prog.stage_first:
            out[f"stage{stage}_loss_start"] = self.prog.stage_first[f"{stage}:loss"]
        if f"{stage}:loss" in self.prog.stage_last:
            out[f"stage{stage}_loss_end"] = self.prog.stage_last[f"{stage}:loss"]
    if self.last_val:
        for k in ("val_loss", "val_top1_i2t", "val_top1_t2i"):
            out[k] = self.last_val.get(k)
    out["best_val_loss"] = self.prog.best_val
    out["best_epoch"] = self.prog.best_epoch
    out["kmeans_initialized"] = kmeans_initialized(state)
    if "pairs_per_s" in last:
        out["pairs_per_s"] = last["pairs_per_s"]
    return out


def fail_nonfinite(
    log: MetricsLog, prog: Progress, run: Path, stage: int, out: dict[str, Any], what: str
) -> None:
    """Log an ``error`` record with the step's terms and raise RunFailedError naming the
    non-finite terms (``what`` when none of ``out`` is) and the intact checkpoint in ``run``."""
    terms = {k: scalar(v) for k, v in out.items() if scalar(v) is not None}
    terms = {k: v for k, v in terms.items() if k not in ("step", "stage", "epoch", "stage_step")}
    bad = [k for k, v in terms.items() if not math.isfinite(v)] or [what]
    log.write(
        {
            "kind": "error",
            "step": prog.step + 1,
            "stage": stage,
            "error": f"non-finite {what}",
            **{k: str(v) for k, v in terms.items()},
        }
    )
    last = (
        f"the last checkpoint (step {prog.step - prog.stage_step}"
        if (run / ckpt.MODEL).is_file()
        else "no checkpoint was written yet ("
    )
    raise RunFailedError(
        f"non-finite {what} at stage {stage}, step {prog.step + 1} "
        f"(non-finite: {', '.join(bad)}); the run stopped without saving this epoch; "
        f"{last}) in {run} is intact; try a lower --lr or train.grad_clip"
    )

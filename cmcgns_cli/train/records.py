"""What the loop records: run progress, per-step loss records, and the k-means state readers.

:class:`StepBuffer` keeps a step's loss terms on the device and turns them into numbers only at
a flush (every step on CPU, where reading is free; every ``train.log_every`` steps on CUDA), so
the hot path has no host-device sync. A flush also averages the terms over ranks (one
all-reduce), which gives the global-batch values (see ``train/ddp.py`` for the loss scaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli import jsonio
from cmcgns_cli.losses.global_loss import COLLAPSE_KEYS
from cmcgns_cli.losses.local_text import HEALTH_KEYS
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist

# NaN in the model's output -> null in the records: cluster health until the k-means is used,
# the collapse gauges (losses.global_loss.mean_pairwise_cos) for a 1-pair batch
NULLABLE_KEYS = (*HEALTH_KEYS, "cluster_feature_cos", *COLLAPSE_KEYS)
TERMS = ("loss", "global", "local_image", "local_text", "cluster_fn", "recon", "acc_i2t", "acc_t2i")


def kmeans_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the k-means buffers in a model state dict."""
    marks = ("kmeans", "centroid", "cluster")
    return [
        k
        for k in state
        if any(m in k.lower() for m in marks)
        and not k.endswith("weight")
        and not k.endswith("bias")
    ]


def kmeans_initialized(state: dict[str, torch.Tensor]) -> bool | None:
    """The k-means ``initialized`` flag of a model state dict; None when it has no k-means."""
    for k in kmeans_keys(state):
        if "initiali" in k.lower():
            return bool(state[k].detach().float().reshape(-1)[0].item() > 0)
    return None


def scalar(v: Any) -> float | None:  # noqa: ANN401
    """``v`` as a Python float when it is a one-element tensor or a number, else None
    (reading a CUDA tensor syncs the device)."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        return float(v.detach().float().item())
    if isinstance(v, bool | int | float):
        return float(v)
    return None


@dataclass
class Progress:
    """What a checkpoint records about where the run is (state/progress.json)."""

    stage: int = 1
    stage_epoch: int = 0  # epochs completed in the current stage
    epoch: int = 0  # epochs completed in the whole run
    step: int = 0  # optimizer steps in the whole run
    stage_step: int = 0  # optimizer steps in the current stage
    stage_done: bool = False
    best_val: float | None = None
    best_epoch: int | None = None
    metrics_bytes: int = 0
    stage_first: dict[str, float] = field(default_factory=dict)  # mean of a stage's first 3 steps
    stage_last: dict[str, float] = field(default_factory=dict)  # mean of its last 3 steps
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch summaries
    world_size: int = 1  # processes that wrote this progress (resume may change it)
    # micro-batches of the current epoch already trained: > 0 only in a checkpoint written
    # mid-epoch by an interruption (resume skips them in the epoch's fixed order)
    epoch_micro: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)  # the last 3 step records

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (the checkpoint's progress.json)."""
        return dict(self.__dict__)


class StepBuffer:
    """Loss terms of the current optimizer step (summed on the device over micro-batches) and
    of the steps not yet flushed."""

    def __init__(self) -> None:
        self.keys: list[str] | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0
        self.pending: list[tuple[dict[str, Any], torch.Tensor]] = []

    def add(self, out: dict[str, Any]) -> None:
        """Add one micro-batch's model output: its one-element tensors, kept on the device."""
        if self.keys is None:
            self.keys = [
                k for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1
            ]
        vec = torch.stack([out[k].detach().float().reshape(()) for k in self.keys])
        self.sum = vec if self.sum is None else self.sum + vec
        self.count += 1

    def close_step(self, meta: dict[str, Any], grad_norm: torch.Tensor | None) -> None:
        """End the optimizer step: its micro-batch mean and ``grad_norm`` (None when not
        clipped) join the pending steps with ``meta`` (step, stage, epoch, lr, ...)."""
        assert self.sum is not None
        extra = torch.full((1,), float("nan"), device=self.sum.device)
        if grad_norm is not None:
            extra = grad_norm.detach().float().reshape(1).to(self.sum.device)
        self.pending.append((meta, torch.cat([self.sum / self.count, extra])))
        self.sum, self.count = None, 0

    def flush(self) -> list[dict[str, Any]]:
        """The pending steps as records (rank-averaged terms); one device read for all."""
        if not self.pending:
            return []
        assert self.keys is not None
        stacked = torch.stack([v for _, v in self.pending])
        if dist.world_size() > 1:
            stacked = dist.all_reduce_sum(stacked) / dist.world_size()
        rows = stacked.cpu().tolist()
        records = []
        for (meta, _), row in zip(self.pending, rows, strict=True):
            rec = dict(meta)
            rec.update(zip(self.keys, row[:-1], strict=True))
            for k in NULLABLE_KEYS:  # NaN = the k-means was not used on this step (or n < 2)
                if k in rec and rec[k] != rec[k]:
                    rec[k] = None
            if meta.get("clipped"):
                rec["grad_norm"] = row[-1]
            rec.pop("clipped", None)
            records.append(rec)
        self.pending = []
        return records


class MetricsLog:
    """Appends records to ``<run>/metrics.jsonl`` (one JSON object per line, flushed at once)
    and mirrors them to TensorBoard when ``tensorboard`` names a directory. Rank 0 only: on
    other ranks :meth:`write` does nothing."""

    def __init__(self, run: Path, tensorboard: str | None = None) -> None:
        self.path = Path(run) / ckpt.METRICS
        self.tensorboard = tensorboard
        self._fh: Any = None
        self._tb: Any = None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable) as one line."""
        if not dist.is_main():
            return
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(jsonio.dumps(record) + "\n")
        self._fh.flush()
        if self.tensorboard:
            if self._tb is None:
                from cmcgns_cli.train.tensorboard import TensorBoardLog

                self._tb = TensorBoardLog(self.tensorboard)
            self._tb.write(record)

    def size(self) -> int:
        """Bytes of metrics.jsonl written so far (a checkpoint stores it to truncate on
        resume)."""
        if self._fh is not None:
            self._fh.flush()
        return self.path.stat().st_size if self.path.is_file() else 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

"""The two-stage pretraining loop: plain PyTorch, one process (CPU or one GPU) or DDP.

Stage 1 trains without CM-MIR, stage 2 adds it, each with its own AdamW and its own
warm-up + cosine schedule (the authors' training schedule). Stage 2 starts from the best stage-1
weights; the
k-means buffers survive the switch (if the best stage-1 weights predate the k-means
initialisation, the latest k-means state is carried over) and any resume (they are model
buffers, saved in every checkpoint).

"Best" means the lowest mean validation loss within the current stage (stage-2 losses
include the reconstruction term, so stages are not compared with each other).

Distributed (``train/ddp.py``, ``train/dist.py``): ``train.batch_size`` is per process, a step
consumes ``batch_size * world`` pairs, rank 0 alone validates, logs and writes checkpoints.
Helpers live beside this file: ``records.py`` (progress, step records), ``validate.py``,
``retrieval.py``, ``speed.py`` (channels_last, checkpointing, compile).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch.utils.data import DataLoader

from cmcgns_cli import interrupts, jsonio
from cmcgns_cli.console import err, progress
from cmcgns_cli.data.paired import DistributedEpochSampler, EpochSampler, PadCollate, PairedDataset
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import ddp, dist, speed, stop
from cmcgns_cli.train.epoch_end import end_epoch, fail_nonfinite, summary
from cmcgns_cli.train.records import (
    SHORT,  # noqa: F401 - re-exported
    TERMS,
    Progress,
    StepBuffer,
    fmt_info,
    kmeans_initialized,
    kmeans_keys,
)
from cmcgns_cli.train.retrieval import (  # noqa: F401 - re-exported for callers of loop
    evaluate_retrieval,
    global_embeddings,
    report_keys,
    retrieval_top1,
)
from cmcgns_cli.train.schedule import lr_at, warmup_steps_for
from cmcgns_cli.train.validate import validate

__all__ = ["Progress", "Trainer", "evaluate_retrieval", "global_embeddings", "retrieval_top1"]


def _after_step(trainer: Trainer, record: dict[str, Any]) -> None:
    """Hook called after every optimizer step (tests use it to simulate a crash)."""


class Trainer:
    def __init__(
        self,
        cfg: Any,
        model: torch.nn.Module,
        train_ds: PairedDataset,
        val_ds: PairedDataset,
        run: Path,
        device: torch.device,
        *,
        export_encoder: Any = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.train_ds = train_ds
        self.val_ds = val_ds
        self.run = Path(run)
        self.device = device
        self.export_encoder = export_encoder
        self.tc = cfg.train
        self.pad_id = train_ds.tokens.pad_id
        self.world = dist.world_size()
        self.batch_size = int(self.tc.batch_size)  # per process
        self.accumulate = max(1, int(self.tc.accumulate))
        global_batch = self.batch_size * self.world
        self.drop_last = self.world > 1 or len(train_ds) >= self.batch_size
        self.micro_per_epoch = (
            len(train_ds) // global_batch
            if self.drop_last
            else math.ceil(len(train_ds) / self.batch_size)
        )
        if self.micro_per_epoch == 0:
            raise BadInputError(
                f"{len(train_ds)} train pairs are fewer than one global batch "
                f"({self.batch_size} x {self.world} processes); lower --batch-size"
            )
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.accumulate)
        self.use_amp = bool(self.tc.amp) and device.type == "cuda"
        self.channels_last = bool(self.tc.channels_last) and device.type == "cuda"
        # CPU: reading a number is free, so check and log every step; CUDA: every log_every
        self.sync_every = 1 if device.type != "cuda" else max(1, int(self.tc.log_every))
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no scaling
        self.prog = Progress(world_size=self.world)
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_keys = report_keys(val_ds)
        self._metrics_fh: Any = None
        self._tb: Any = None  # TensorBoardLog when train.tensorboard names a directory
        self.last_val: dict[str, Any] = {}
        self.recent: list[dict[str, float]] = []
        self.net: torch.nn.Module = model  # the DDP wrapper under torchrun
        self.applied: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers

    def stage_epochs(self, stage: int) -> int:
        return int(self.tc.stage1_epochs if stage == 1 else self.tc.stage2_epochs)

    def stage_total_steps(self, stage: int) -> int:
        total = self.stage_epochs(stage) * self.steps_per_epoch
        if self.tc.max_steps is not None:
            total = min(total, int(self.tc.max_steps))
        return max(total, 0)

    def _autocast(self) -> Any:
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.world > 1:  # every rank pads to the same sentence slots (gathered columns)
            batch["sentence_slots"] = int(self.cfg.data.max_sentences)
        return speed.to_device(batch, self.device, self.channels_last)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        kw = {"fused": True} if self.device.type == "cuda" else {}
        return torch.optim.AdamW(
            params, lr=float(self.tc.lr), weight_decay=float(self.tc.weight_decay), **kw
        )

    def _loader(self, ds: PairedDataset, *, train: bool, epoch: int, skip: int = 0) -> DataLoader:
        ds.set_epoch(epoch)
        if train and self.world > 1:
            sampler: Any = DistributedEpochSampler(
                len(ds), int(self.tc.seed), self.batch_size, self.world, dist.rank()
            )
        else:
            sampler = EpochSampler(len(ds), int(self.tc.seed), shuffle=train)
        sampler.set_epoch(epoch)
        if skip:
            sampler = stop.SkipSampler(sampler, skip)
        gen = torch.Generator()
        gen.manual_seed(int(self.tc.seed) * 100_003 + epoch)
        workers = int(self.cfg.data.workers)
        cuda = self.device.type == "cuda"
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=workers,
            collate_fn=PadCollate(self.pad_id),
            generator=gen,
            worker_init_fn=_seed_worker,
            pin_memory=cuda,
            prefetch_factor=4 if cuda and workers > 0 else None,
        )

    def _log(self, record: dict[str, Any]) -> None:
        if not dist.is_main():
            return
        if self._metrics_fh is None:
            self._metrics_fh = open(self.run / ckpt.METRICS, "a", encoding="utf-8")  # noqa: SIM115
        self._metrics_fh.write(jsonio.dumps(record) + "\n")
        self._metrics_fh.flush()
        tb_dir = getattr(self.tc, "tensorboard", None)
        if tb_dir:
            if self._tb is None:
                from cmcgns_cli.train.tensorboard import TensorBoardLog

                self._tb = TensorBoardLog(tb_dir)
            self._tb.write(record)

    def _metrics_size(self) -> int:
        if self._metrics_fh is not None:
            self._metrics_fh.flush()
        path = self.run / ckpt.METRICS
        return path.stat().st_size if path.is_file() else 0

    def close(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # ------------------------------------------------------------------ resume

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        p = state["progress"]
        self.prog = Progress(**{k: v for k, v in p.items() if k in Progress.__dataclass_fields__})
        if not self.prog.stage_done:
            self.optimizer = self._new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        if dist.rank() > 0:  # rank 0's RNG state was saved; the others need their own streams
            torch.manual_seed(int(self.tc.seed) + 7919 * dist.rank() + self.prog.step)
        if int(p.get("world_size", 1)) != self.world:
            # put the schedule at the same point of the stage in steps of the new global
            # batch; a partial epoch (an interruption's checkpoint) is trained again
            self.prog.epoch_micro = 0
            self.prog.stage_step = min(
                self.prog.stage_epoch * self.steps_per_epoch,
                self.stage_total_steps(self.prog.stage),
            )
            err.print(
                f"resuming a world-size-{p.get('world_size', 1)} checkpoint with {self.world} "
                f"process(es): stage step set to {self.prog.stage_step}"
            )
        self.prog.world_size = self.world
        self.recent = list(self.prog.recent)
        if dist.is_main():
            ckpt.truncate_metrics(self.run, int(self.prog.metrics_bytes))

    # ------------------------------------------------------------------ run

    def fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.model.to(self.device)
        self.applied = speed.apply(self.model, self.tc, self.device, self.world)
        ddp.install(self.model)
        try:
            for stage in (1, 2):
                runnable = self.stage_epochs(stage) > 0 and self.stage_total_steps(stage) > 0
                if stage < self.prog.stage or not runnable:
                    continue
                if stage == self.prog.stage:
                    if self.prog.stage_done:
                        continue
                    if self.optimizer is None:  # a fresh run
                        self.optimizer = self._new_optimizer()
                else:
                    self._enter_stage(stage)
                self.net = ddp.wrap(self.model, self.device)  # per stage: the used set differs
                self._run_stage(stage)
        finally:
            self.close()
        return self._summary(time.perf_counter() - start)

    def _enter_stage(self, stage: int) -> None:
        """Switch to ``stage``: best weights of the previous stage, fresh optimizer."""
        best = self.run / ckpt.BEST / ckpt.MODEL
        if self.prog.epoch > 0 and best.is_file():
            current = self.model.state_dict()
            loaded = ckpt.load_weights(best)
            if kmeans_initialized(loaded) is False and kmeans_initialized(current):
                for k in kmeans_keys(current):
                    loaded[k] = current[k].detach().clone()
            self.model.load_state_dict(loaded, strict=True)
            if dist.is_main():
                err.print(
                    f"stage {stage}: starting from the best stage-{stage - 1} weights ({best})"
                )
        dist.sync_module_state(self.model)  # rank 0's weights (also without a shared disk)
        self.prog.stage = stage
        self.prog.stage_epoch = 0
        self.prog.stage_step = 0
        self.prog.stage_done = False
        self.prog.best_val = None
        self.prog.best_epoch = None
        self.optimizer = self._new_optimizer()

    def _run_stage(self, stage: int) -> None:
        epochs = self.stage_epochs(stage)
        total = self.stage_total_steps(stage)
        warmup = warmup_steps_for(float(self.tc.warmup_epochs), self.steps_per_epoch, total)
        bar = progress(
            TextColumn("{task.fields[info]}", markup=False, style="cyan"),
        )
        with bar if dist.is_main() else contextlib.nullcontext():
            task = bar.add_task(
                f"stage {stage}", total=total, completed=self.prog.stage_step, info=""
            )
            while self.prog.stage_epoch < epochs and self.prog.stage_step < total:
                self._train_epoch(stage, total, warmup, bar, task)
                val = validate(self, stage)
                self.prog.epoch_micro = 0
                self.prog.stage_epoch += 1
                self.prog.epoch += 1
                if self.prog.stage_epoch >= epochs or self.prog.stage_step >= total:
                    self.prog.stage_done = True
                self._end_epoch(stage, val)
                if stop.agreed(self):  # the epoch-end checkpoint is already on disk
                    stop.raise_interrupted(self, stage, self.prog.epoch)

    def _train_epoch(self, stage: int, total: int, warmup: int, bar: Any, task: Any) -> None:
        model, net, opt = self.model, self.net, self.optimizer
        assert opt is not None
        model.train()
        gepoch = self.prog.epoch
        start = int(self.prog.epoch_micro)  # > 0 when resuming a mid-epoch checkpoint
        skip = start * self.batch_size
        loader = self._loader(self.train_ds, train=True, epoch=gepoch, skip=skip)
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
            batch = self._to_device(batch)
            sync = (
                net.no_sync() if (net is not model and not last_micro) else contextlib.nullcontext()
            )
            with sync:
                with self._autocast():
                    out = net(batch, stage=stage)
                loss = out["loss"]
                if self.sync_every == 1 and not torch.isfinite(loss.detach()).all():
                    self._fail_nonfinite(stage, out, "loss")
                (loss.float() / group).backward()
            buf.add(out)
            pairs += int(batch["images"].shape[0]) * self.world
            if not last_micro:
                continue
            grad_norm = None
            if self.tc.grad_clip and self.tc.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), float(self.tc.grad_clip)
                )
                if self.sync_every == 1 and not math.isfinite(float(grad_norm)):
                    self._fail_nonfinite(stage, out, "gradient norm")
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
                    self._check_record(stage, record)
                    self._log(record)
                    self._track(record)
                    if dist.is_main():
                        bar.update(
                            task, completed=record["stage_step"], info=fmt_info(record, stage)
                        )
                    _after_step(self, record)
                pairs, t0 = 0, time.perf_counter()
                if not done and stop.agreed(self):
                    stop.save_mid_epoch(self, i + 1)
                    stop.raise_interrupted(self, stage, gepoch + 1)
            if self.prog.stage_step >= total:
                break

    def _check_record(self, stage: int, record: dict[str, Any]) -> None:
        for key, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
            v = record.get(key)
            if v is not None and not math.isfinite(v):
                self.prog.step = record["step"] - 1
                self.prog.stage_step = record["stage_step"] - 1
                self._fail_nonfinite(stage, record, what)

    def _track(self, record: dict[str, Any]) -> None:
        if record["stage_step"] <= 3:  # the stage's starting loss: mean of its first 3 steps
            n = record["stage_step"]
            for k in TERMS:
                if k in record and record[k] is not None:
                    prev = self.prog.stage_first.get(f"{record['stage']}:{k}", 0.0)
                    self.prog.stage_first[f"{record['stage']}:{k}"] = prev + (record[k] - prev) / n
        self.recent.append(record)
        self.recent = self.recent[-3:]

    def _fail_nonfinite(self, stage: int, out: dict[str, Any], what: str) -> None:
        fail_nonfinite(self, stage, out, what)

    def _end_epoch(self, stage: int, val: dict[str, Any]) -> None:
        end_epoch(self, stage, val)

    def _summary(self, wall: float) -> dict[str, Any]:
        return summary(self, wall)


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)

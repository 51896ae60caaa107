"""The two-stage pretraining loop: plain PyTorch, one process (CPU or one GPU) or DDP.

Stage 1 trains without CM-MIR, stage 2 adds it (arXiv 2506.11674, as the authors' code does),
each with its own optimizer (``train.optimizer``: the authors' Adam, or AdamW) and its own
warm-up + cosine schedule (the authors' training schedule). Stage 2 continues from the last
stage-1 weights (``train.stage2_init = last``, what the authors' run did) or reloads the best
(``best``); the k-means buffers survive the switch (if the best stage-1 weights predate the
k-means initialisation, the latest k-means state is carried over) and any resume (they are
model buffers, saved in every checkpoint).

"Best" means the lowest mean validation loss within the current stage (stage-2 losses
include the reconstruction term, so stages are not compared with each other).

Distributed (``train/ddp.py``, ``train/dist.py``): ``train.batch_size`` is per process, a step
consumes ``batch_size * world`` pairs, rank 0 alone validates, logs and writes checkpoints.
Beside it: ``steps.py`` (one epoch's optimizer steps), ``feed.py`` (batches), ``records.py``
(progress, metrics.jsonl), ``validate.py``, ``epoch_end.py`` (checkpoints, summary, non-finite
stop), ``stop.py`` (signals), ``speed.py``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.config import Config
from cmcgns_cli.console import err, progress
from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.outdir import check_space
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import ddp, display, dist, health, speed, stop
from cmcgns_cli.train.epoch_end import end_epoch, summary
from cmcgns_cli.train.feed import BatchFeed
from cmcgns_cli.train.optim import build_optimizer
from cmcgns_cli.train.records import MetricsLog, Progress, kmeans_initialized, kmeans_keys
from cmcgns_cli.train.retrieval import report_keys
from cmcgns_cli.train.schedule import warmup_steps_for
from cmcgns_cli.train.steps import train_epoch
from cmcgns_cli.train.validate import validate

__all__ = ["Trainer"]


class Trainer:
    """Pretrains ``model`` on ``train_ds`` in two stages, validating on ``val_ds`` after
    every epoch and writing the run directory ``run`` (metrics.jsonl, the resume checkpoint,
    best/).

    ``cfg.train`` gives the schedule (epochs per stage, per-process batch size, accumulation,
    lr, warm-up, clipping, seed); ``export_encoder(model)``, when given, returns the image
    encoder's state dict saved beside the best weights. Public state a caller may read:
    ``prog`` (:class:`~cmcgns_cli.train.records.Progress`: stage, step, epoch, best),
    ``steps_per_epoch``, ``batch_size``, ``feed`` (:class:`~cmcgns_cli.train.feed.BatchFeed`)
    and ``log`` (:class:`~cmcgns_cli.train.records.MetricsLog`).

    Raises :class:`~cmcgns_cli.errors.BadInputError` when ``train_ds`` holds fewer pairs than
    one global batch.
    """

    def __init__(
        self,
        cfg: Config,
        model: torch.nn.Module,
        train_ds: PairedDataset,
        val_ds: PairedDataset,
        run: Path,
        device: torch.device,
        *,
        export_encoder: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.train_ds = train_ds
        self.val_ds = val_ds
        self.run = Path(run)
        self.device = device
        self.export_encoder = export_encoder
        self.tc = cfg.train
        self.world = dist.world_size()
        self.batch_size = int(self.tc.batch_size)  # per process
        self.accumulate = max(1, int(self.tc.accumulate))
        global_batch = self.batch_size * self.world
        drop_last = self.world > 1 or len(train_ds) >= self.batch_size
        self.micro_per_epoch = (
            len(train_ds) // global_batch
            if drop_last
            else math.ceil(len(train_ds) / self.batch_size)
        )
        if self.micro_per_epoch == 0:
            raise BadInputError(
                f"{len(train_ds)} train pairs are fewer than one global batch "
                f"({self.batch_size} x {self.world} processes); lower --batch-size"
            )
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.accumulate)
        # pairs in one global InfoNCE: the health check's plateau is log of it (a train split
        # smaller than one batch is one batch of all its pairs)
        self.global_batch = global_batch if drop_last else len(train_ds)
        cuda = device.type == "cuda"
        self.feed = BatchFeed(
            device=device,
            batch_size=self.batch_size,
            world=self.world,
            seed=int(self.tc.seed),
            workers=int(cfg.data.workers),
            pad_id=train_ds.tokens.pad_id,
            drop_last=drop_last,
            amp=bool(self.tc.amp) and cuda,
            channels_last=bool(self.tc.channels_last) and cuda,
        )
        # CPU: reading a number is free, so check and log every step; CUDA: every log_every
        self.sync_every = 1 if not cuda else max(1, int(self.tc.log_every))
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no scaling
        self.prog = Progress(world_size=self.world)
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_keys = report_keys(val_ds)
        self.log = MetricsLog(self.run, getattr(self.tc, "tensorboard", None))
        self.last_val: dict[str, Any] = {}
        self.recent: list[dict[str, float]] = []  # the last 3 train records
        self.net: torch.nn.Module = model  # the DDP wrapper under torchrun
        # the one device move, before any optimizer exists: a resume's optimizer state then
        # loads onto its parameters' device (``Module.to`` would leave it behind)
        self.model.to(self.device)
        self.applied: dict[str, Any] = speed.apply(self.model, self.tc, self.device, self.world)

    # ------------------------------------------------------------------ helpers

    def stage_epochs(self, stage: int) -> int:
        """Configured epochs of ``stage`` (1 or 2)."""
        return int(self.tc.stage1_epochs if stage == 1 else self.tc.stage2_epochs)

    def stage_total_steps(self, stage: int) -> int:
        """Optimizer steps of ``stage``: epochs x steps per epoch, capped by train.max_steps."""
        total = self.stage_epochs(stage) * self.steps_per_epoch
        if self.tc.max_steps is not None:
            total = min(total, int(self.tc.max_steps))
        return max(total, 0)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return build_optimizer(
            params,
            str(self.tc.optimizer),
            float(self.tc.lr),
            float(self.tc.weight_decay),
            self.device,
        )

    def write_checkpoint(self) -> None:
        """Write the resume checkpoint of the current step (call on rank 0 only): model,
        optimizer, scaler, progress (with the metrics.jsonl size and the recent records)."""
        self.prog.metrics_bytes = self.log.size()
        self.prog.recent = list(self.recent)
        assert self.optimizer is not None
        ckpt.save_checkpoint(
            self.run,
            model_state=self.model.state_dict(),
            optimizer=self.optimizer,
            scaler=self.scaler,
            progress=self.prog.to_dict(),
        )

    def close(self) -> None:
        """Close metrics.jsonl and the TensorBoard writer."""
        self.log.close()

    # ------------------------------------------------------------------ resume

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a resume checkpoint ``state`` (``checkpoint.load_resume``): model
        weights (strict), progress, the optimizer (unless its stage was finished), scaler and
        RNG state; metrics.jsonl is cut back to the checkpoint's size. A checkpoint written
        with another world size restarts the interrupted epoch at the same point of the
        stage's schedule, counted in steps of the new global batch.
        """
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
        # a finished run keeps the closing summary record written after its last checkpoint
        if dist.is_main() and not self.complete():
            ckpt.truncate_metrics(self.run, int(self.prog.metrics_bytes))

    def complete(self) -> bool:
        """True when the (restored) run has no step left in any stage it has to run."""
        last = max((st for st in (1, 2) if self.stage_total_steps(st) > 0), default=0)
        return self.prog.stage > last or (self.prog.stage == last and self.prog.stage_done)

    # ------------------------------------------------------------------ run

    def fit(self) -> dict[str, Any]:
        """Train the stages still to do (both for a fresh run; from ``prog`` after
        :meth:`restore`) and return the run summary (steps, epochs, wall time in s, first and
        last loss per stage, last and best validation values; see ``epoch_end.summary``)
        and, on rank 0, ``health`` (``train/health.py``: each stage's last epoch judged for
        collapse), also appended to metrics.jsonl as a ``summary`` record.

        Raises :class:`~cmcgns_cli.errors.RunFailedError` on a non-finite loss or gradient
        norm and :class:`~cmcgns_cli.interrupts.Interrupted` after SIGINT/SIGTERM (a
        checkpoint of the last finished step is written first).
        """
        start = time.perf_counter()
        ddp.install(self.model)
        ran = False  # a resume of a finished run trains nothing and appends no summary
        try:
            for stage in (1, 2):
                # no steps (0 epochs, or a 0 step cap): nothing to run in this stage
                if stage < self.prog.stage or self.stage_total_steps(stage) == 0:
                    continue
                if stage == self.prog.stage:
                    if self.prog.stage_done:
                        continue
                    if self.optimizer is None:  # a fresh run
                        self.optimizer = self._new_optimizer()
                else:
                    self._enter_stage(stage)
                # per stage: the used set differs
                if not ran and dist.is_main():
                    # room for a checkpoint before the first step, not after an epoch
                    check_space(
                        self.run,
                        ckpt.first_checkpoint_bytes(self.model, run=self.run),
                        "the checkpoints",
                        ckpt.resume_advice(self.run),
                    )
                self.net = ddp.wrap(self.model, self.device, accumulate=self.accumulate)
                if not ran and dist.is_main():  # once per command, before the first bar
                    err.print(display.legend_line(), markup=False, highlight=False, soft_wrap=True)
                ran = True
                self._run_stage(stage)
        finally:
            self.close()
        result = summary(self, time.perf_counter() - start)
        if dist.is_main():  # the gauges are in rank 0's metrics.jsonl
            result["health"] = health.judge_run(
                health.read_train_records(self.log.path),
                self.global_batch,
                health.run_warm_starts(self.run, self.cfg.model, self.cfg.loss.variant),
            )
            if ran:
                self.log.write({"kind": "summary", "step": self.prog.step, **result})
            self.close()
        return result

    def _enter_stage(self, stage: int) -> None:
        """Switch to ``stage``: the previous stage's last weights (``train.stage2_init =
        last``) or its best (``best``), and a fresh optimizer."""
        best = self.run / ckpt.BEST / ckpt.MODEL
        # rank 0 reads best/ and broadcasts it below: on a network filesystem another node
        # could see a just-replaced best/ stale, or not at all
        best_start = self.tc.stage2_init == "best" and self.prog.epoch > 0
        if dist.is_main() and best_start and best.is_file():
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
        elif dist.is_main() and self.prog.epoch > 0:
            err.print(f"stage {stage}: continuing from the last stage-{stage - 1} weights")
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
        bar = progress(*display.columns())
        with bar if dist.is_main() else contextlib.nullcontext():
            task = bar.add_task(
                f"stage {stage}", total=total, completed=self.prog.stage_step, info="", parts={}
            )
            while self.prog.stage_epoch < epochs and self.prog.stage_step < total:
                train_epoch(self, stage, total, warmup, bar, task)
                val = validate(self.model, self.feed, self.val_ds, self.val_keys, stage)
                self.prog.epoch_micro = 0
                self.prog.stage_epoch += 1
                self.prog.epoch += 1
                if self.prog.stage_epoch >= epochs or self.prog.stage_step >= total:
                    self.prog.stage_done = True
                end_epoch(self, stage, val)
                if self.prog.stage_done and dist.is_main():
                    self._report_health(stage)
                if stop.agreed(self.world, self.device):  # the epoch-end checkpoint is on disk
                    stop.raise_interrupted(self.run, self.prog.step, stage, self.prog.epoch)

    def _report_health(self, stage: int) -> None:
        """Print one line judging the finished ``stage``'s health (``train/health.py``)."""
        records = [r for r in health.read_train_records(self.log.path) if r["stage"] == stage]
        verdict = health.judge_stage(records, self.global_batch)
        err.print(
            health.describe(
                verdict,
                stage,
                health.run_warm_starts(self.run, self.cfg.model, self.cfg.loss.variant),
            ),
            highlight=False,
            soft_wrap=True,
        )

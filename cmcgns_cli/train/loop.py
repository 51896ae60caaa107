"""The two-stage pretraining loop: plain PyTorch, one process, CPU or one GPU.

Stage 1 trains without CM-MIR, stage 2 adds it, each with its own AdamW and its own
warm-up + cosine schedule (paper.md). Stage 2 starts from the best stage-1 weights; the
k-means buffers survive the switch (if the best stage-1 weights predate the k-means
initialisation, the latest k-means state is carried over) and any resume (they are model
buffers, saved in every checkpoint).

"Best" means the lowest mean validation loss within the current stage (stage-2 losses
include the reconstruction term, so stages are not compared with each other).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch.utils.data import DataLoader

from cmcgns_cli.console import err, progress
from cmcgns_cli.data.paired import EpochSampler, PadCollate, PairedDataset
from cmcgns_cli.errors import RunFailedError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist
from cmcgns_cli.train.schedule import lr_at, warmup_steps_for

TERMS = ("loss", "global", "local_image", "local_text", "cluster_fn", "recon", "acc_i2t", "acc_t2i")
SHORT = {
    "global": "glob",
    "local_image": "li",
    "local_text": "lt",
    "cluster_fn": "cfn",
    "recon": "rec",
    "acc_i2t": "i2t",
    "acc_t2i": "t2i",
}


def _after_step(trainer: Trainer, record: dict[str, Any]) -> None:
    """Hook called after every optimizer step (tests use it to simulate a crash)."""


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
    for k in kmeans_keys(state):
        if "initiali" in k.lower():
            return bool(state[k].detach().float().reshape(-1)[0].item() > 0)
    return None


def _scalar(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        return float(v.detach().float().item())
    if isinstance(v, bool | int | float):
        return float(v)
    return None


def _pick_global(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        for k in ("global", "global_emb", "embedding", "emb"):
            if k in x:
                return x[k]
        raise RunFailedError(f"encoder output has no 'global' entry (keys: {sorted(x)})")
    if isinstance(x, list | tuple):
        return x[0]
    raise RunFailedError(f"cannot read a global embedding from {type(x).__name__}")


def global_embeddings(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised global image and report embeddings of a batch."""
    img = _pick_global(model.encode_image(batch["images"]))
    txt = _pick_global(
        model.encode_text(
            batch["input_ids"],
            batch["attention_mask"],
            batch["sentence_index"],
            batch["num_sentences"],
        )
    )
    img = torch.nn.functional.normalize(img.float(), dim=-1)
    txt = torch.nn.functional.normalize(txt.float(), dim=-1)
    return img, txt


def retrieval_top1(
    img: torch.Tensor, txt: torch.Tensor, keys: np.ndarray | None = None, chunk: int = 1024
) -> tuple[float, float]:
    """Image-to-report and report-to-image top-1 by cosine within one set of pairs.

    A retrieved item counts as correct when it is the true partner or carries the same
    report text (``keys`` equal): identical reports cannot be told apart.
    """
    n = img.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    keys_t = torch.as_tensor(np.arange(n) if keys is None else np.asarray(keys, dtype=np.int64))
    hits_i2t = 0
    hits_t2i = 0
    for a in range(0, n, chunk):
        sims = img[a : a + chunk] @ txt.T
        pred = sims.argmax(dim=1).cpu()
        hits_i2t += int((keys_t[pred] == keys_t[a : a + chunk]).sum())
        sims_t = txt[a : a + chunk] @ img.T
        pred_t = sims_t.argmax(dim=1).cpu()
        hits_t2i += int((keys_t[pred_t] == keys_t[a : a + chunk]).sum())
    return hits_i2t / n, hits_t2i / n


def report_keys(dataset: PairedDataset) -> np.ndarray:
    """One integer per dataset item; equal for items whose kept report tokens are equal."""
    seen: dict[bytes, int] = {}
    out = np.empty(len(dataset), dtype=np.int64)
    for i, row in enumerate(dataset.rows):
        ids, _, _ = dataset.tokens.encode(int(row), dataset.max_length, dataset.max_sentences)
        out[i] = seen.setdefault(ids.tobytes(), len(seen))
    return out


@torch.no_grad()
def evaluate_retrieval(
    model: torch.nn.Module,
    dataset: PairedDataset,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> dict[str, float]:
    """Retrieval top-1 (both directions) over all pairs of ``dataset`` (eval transforms)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=PadCollate(dataset.tokens.pad_id),
    )
    imgs, txts = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        i, t = global_embeddings(model, batch)
        imgs.append(i)
        txts.append(t)
    model.train(was_training)
    i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), report_keys(dataset))
    return {"top1_i2t": i2t, "top1_t2i": t2i, "pairs": len(dataset)}


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        self.batch_size = int(self.tc.batch_size)
        self.accumulate = max(1, int(self.tc.accumulate))
        self.drop_last = len(train_ds) >= self.batch_size
        self.micro_per_epoch = (
            len(train_ds) // self.batch_size
            if self.drop_last
            else math.ceil(len(train_ds) / self.batch_size)
        )
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.accumulate)
        self.use_amp = bool(self.tc.amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no scaling
        self.prog = Progress()
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_keys = report_keys(val_ds)
        self._metrics_fh: Any = None
        self.last_val: dict[str, Any] = {}
        self.recent: list[dict[str, float]] = []

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

    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            params, lr=float(self.tc.lr), weight_decay=float(self.tc.weight_decay)
        )

    def _loader(self, ds: PairedDataset, *, train: bool, epoch: int) -> DataLoader:
        ds.set_epoch(epoch)
        sampler = EpochSampler(len(ds), int(self.tc.seed), shuffle=train)
        sampler.set_epoch(epoch)
        gen = torch.Generator()
        gen.manual_seed(int(self.tc.seed) * 100_003 + epoch)
        workers = int(self.cfg.data.workers)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=workers,
            collate_fn=PadCollate(self.pad_id),
            generator=gen,
            worker_init_fn=_seed_worker,
            pin_memory=self.device.type == "cuda",
        )

    def _log(self, record: dict[str, Any]) -> None:
        if not dist.is_main():
            return
        if self._metrics_fh is None:
            self._metrics_fh = open(self.run / ckpt.METRICS, "a", encoding="utf-8")  # noqa: SIM115
        self._metrics_fh.write(json.dumps(record) + "\n")
        self._metrics_fh.flush()

    def _metrics_size(self) -> int:
        if self._metrics_fh is not None:
            self._metrics_fh.flush()
        path = self.run / ckpt.METRICS
        return path.stat().st_size if path.is_file() else 0

    def close(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

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
        ckpt.truncate_metrics(self.run, int(self.prog.metrics_bytes))

    # ------------------------------------------------------------------ run

    def fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.model.to(self.device)
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
            err.print(f"stage {stage}: starting from the best stage-{stage - 1} weights ({best})")
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
        bar = progress(TextColumn("{task.fields[info]}", markup=False, style="cyan"))
        with bar:
            task = bar.add_task(
                f"stage {stage}", total=total, completed=self.prog.stage_step, info=""
            )
            while self.prog.stage_epoch < epochs and self.prog.stage_step < total:
                self._train_epoch(stage, total, warmup, bar, task)
                val = self._validate(stage)
                self.prog.stage_epoch += 1
                self.prog.epoch += 1
                if self.prog.stage_epoch >= epochs or self.prog.stage_step >= total:
                    self.prog.stage_done = True
                self._end_epoch(stage, val)

    def _train_epoch(self, stage: int, total: int, warmup: int, bar: Any, task: Any) -> None:
        model, opt = self.model, self.optimizer
        assert opt is not None
        model.train()
        gepoch = self.prog.epoch
        loader = self._loader(self.train_ds, train=True, epoch=gepoch)
        n_micro = self.micro_per_epoch
        sums: dict[str, float] = {}
        count = 0
        group_start = 0
        t0 = time.perf_counter()
        pairs = 0
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            if i % self.accumulate == 0:
                group_start = i
            group = min(self.accumulate, n_micro - group_start)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self._autocast():
                out = model(batch, stage=stage)
            loss = out["loss"]
            if not torch.isfinite(loss.detach()).all():
                self._fail_nonfinite(stage, out, "loss")
            (loss.float() / group).backward()
            for k, v in out.items():
                s = _scalar(v)
                if s is not None:
                    sums[k] = sums.get(k, 0.0) + s
            count += 1
            pairs += int(batch["images"].shape[0])
            if i - group_start + 1 < group:
                continue
            grad_norm = None
            if self.tc.grad_clip and self.tc.grad_clip > 0:
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(self.tc.grad_clip))
                )
                if not math.isfinite(grad_norm):
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
            dt = time.perf_counter() - t0
            record: dict[str, Any] = {
                "kind": "train",
                "step": self.prog.step,
                "stage": stage,
                "epoch": gepoch + 1,
                "stage_step": self.prog.stage_step,
                "lr": lr,
            }
            record.update({k: v / count for k, v in sums.items()})
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            record["pairs_per_s"] = pairs / dt if dt > 0 else None
            self._log(record)
            self._track(record)
            bar.update(task, completed=self.prog.stage_step, info=_fmt_info(record, stage))
            _after_step(self, record)
            sums, count, pairs = {}, 0, 0
            t0 = time.perf_counter()
            if self.prog.stage_step >= total:
                break

    def _track(self, record: dict[str, Any]) -> None:
        if self.prog.stage_step <= 3:  # the stage's starting loss: mean of its first 3 steps
            n = self.prog.stage_step
            for k in TERMS:
                if k in record and record[k] is not None:
                    prev = self.prog.stage_first.get(f"{record['stage']}:{k}", 0.0)
                    self.prog.stage_first[f"{record['stage']}:{k}"] = prev + (record[k] - prev) / n
        self.recent.append(record)
        self.recent = self.recent[-3:]

    def _fail_nonfinite(self, stage: int, out: dict[str, Any], what: str) -> None:
        terms = {k: _scalar(v) for k, v in out.items() if _scalar(v) is not None}
        bad = [k for k, v in terms.items() if not math.isfinite(v)] or [what]
        self._log(
            {
                "kind": "error",
                "step": self.prog.step + 1,
                "stage": stage,
                "error": f"non-finite {what}",
                **{k: str(v) for k, v in terms.items()},
            }
        )
        last = (
            f"the last checkpoint (step {self.prog.step - self.prog.stage_step}"
            if (self.run / ckpt.MODEL).is_file()
            else "no checkpoint was written yet ("
        )
        raise RunFailedError(
            f"non-finite {what} at stage {stage}, step {self.prog.step + 1} "
            f"(non-finite: {', '.join(bad)}); the run stopped without saving this epoch; "
            f"{last}) in {self.run} is intact; try a lower --lr or train.grad_clip"
        )

    @torch.no_grad()
    def _validate(self, stage: int) -> dict[str, Any]:
        model = self.model
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        model.eval()
        loader = self._loader(self.val_ds, train=False, epoch=0)
        sums: dict[str, float] = {}
        n = 0
        imgs, txts = [], []
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            b = int(batch["images"].shape[0])
            with self._autocast():
                out = model(batch, stage=stage)
                i, t = global_embeddings(model, batch)
            imgs.append(i)
            txts.append(t)
            for k, v in out.items():
                s = _scalar(v)
                if s is not None:
                    sums[k] = sums.get(k, 0.0) + s * b
            n += b
        i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), self.val_keys)
        with torch.no_grad():  # validation never changes training state
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        model.train()
        val = {f"val_{k}": v / n for k, v in sums.items()}
        val.update({"val_top1_i2t": i2t, "val_top1_t2i": t2i, "val_pairs": n})
        return val

    def _end_epoch(self, stage: int, val: dict[str, Any]) -> None:
        state = self.model.state_dict()
        vloss = float(val.get("val_loss", float("nan")))
        is_best = math.isfinite(vloss) and (
            self.prog.best_val is None or vloss < self.prog.best_val
        )
        record = {
            "kind": "val",
            "step": self.prog.step,
            "stage": stage,
            "epoch": self.prog.epoch,
            **val,
            "best": is_best,
        }
        self._log(record)
        self.last_val = record
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
        if not dist.is_main():
            return
        if is_best:
            self.prog.best_val = vloss
            self.prog.best_epoch = self.prog.epoch
            enc = self.export_encoder(self.model) if self.export_encoder else None
            ckpt.save_best(
                self.run,
                model_state=state,
                encoder_state=enc,
                meta={"stage": stage, "epoch": self.prog.epoch, "step": self.prog.step, **val},
            )
        self.prog.metrics_bytes = self._metrics_size()
        assert self.optimizer is not None
        ckpt.save_checkpoint(
            self.run,
            model_state=state,
            optimizer=self.optimizer,
            scaler=self.scaler,
            progress=self.prog.to_dict(),
        )

    def _summary(self, wall: float) -> dict[str, Any]:
        state = self.model.state_dict()
        out: dict[str, Any] = {
            "run_dir": str(self.run),
            "device": str(self.device),
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


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _fmt_info(record: dict[str, Any], stage: int) -> str:
    parts = [f"ep {record['epoch']}", f"step {record['step']}", f"loss {record['loss']:.3f}"]
    for k in TERMS[1:]:
        if k in record and record[k] is not None and not (k == "recon" and stage == 1):
            parts.append(f"{SHORT[k]} {record[k]:.3f}")
    if record.get("pairs_per_s"):
        parts.append(f"{record['pairs_per_s']:.1f} pairs/s")
    return " ".join(parts)

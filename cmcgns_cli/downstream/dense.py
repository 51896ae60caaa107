"""What detection and segmentation share: inputs, targets, frozen-feature caching, the
training loop with best-on-validation selection, and the finetune record.

Geometry: the whole prepared image (S x S) is resized to the encoder's crop size (the size
it was pretrained at; no crop, so no box or mask is cut) and predictions are mapped back to
prepared-image pixels before scoring, so metrics and COCO files are in manifest pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch import nn

from cmcgns_cli import interrupts, jsonio
from cmcgns_cli.console import err, progress
from cmcgns_cli.data.prepared import Prepared, atomic_write_text
from cmcgns_cli.downstream.encoder import EncoderSource, resolve_source
from cmcgns_cli.downstream.features import to_model_input
from cmcgns_cli.downstream.pools import dense_subset, resolve_sampler
from cmcgns_cli.downstream.tasks import DenseTask
from cmcgns_cli.errors import BadInputError, RunFailedError

FINETUNE_FILE = "finetune.json"
CACHE_BUDGET_BYTES = 2 << 30  # frozen features kept in memory (float16) up to this size


def input_size(source: EncoderSource, prepared_size: int) -> int:
    """The encoder's pretraining crop size, or less when the prepared images are smaller
    (rounded down to a multiple of 32, the ResNet's total stride); never upsampled."""
    size = min(int(source.crop_size), max(32, prepared_size // 32 * 32))
    if size % 32:
        raise BadInputError(f"encoder input size {size} must be a multiple of 32 for {source.arch}")
    return size


def model_input(prepared: Prepared, rows: np.ndarray, size: int) -> torch.Tensor:
    """Whole prepared images of ``rows`` -> (B, 3, size, size) in [-1, 1]."""
    return to_model_input(prepared.images[np.asarray(rows)], size, size)


def box_targets(
    prepared: Prepared, task: DenseTask
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Per row: boxes (n, 4) [x, y, w, h] in prepared pixels, class indices (n,), and the
    class names (sorted distinct ``box_labels``; the task's class when there are none)."""
    m = prepared.manifest
    if "boxes" not in m:
        raise BadInputError(
            f"{prepared.root / 'manifest.parquet'}: no 'boxes' column for {task.name}"
        )
    boxes = [
        np.asarray(list(b) if b is not None else [], dtype=np.float32).reshape(-1, 4)
        for b in m["boxes"]
    ]
    if "box_labels" in m:
        raw = [[str(v) for v in (lab if lab is not None else [])] for lab in m["box_labels"]]
    else:
        raw = [[task.default_class] * len(b) for b in boxes]
    names = sorted({v for row in raw for v in row}) or [task.default_class]
    index = {n: i for i, n in enumerate(names)}
    labels = []
    for i, (b, row) in enumerate(zip(boxes, raw, strict=True)):
        if len(row) != len(b):
            raise BadInputError(
                f"{prepared.root / 'manifest.parquet'}: row {m['id'].iloc[i]}: "
                f"{len(b)} boxes but {len(row)} box_labels"
            )
        labels.append(np.asarray([index[v] for v in row], dtype=np.int64))
    return boxes, labels, names


def mask_targets(prepared: Prepared) -> np.ndarray:
    """Binary masks (N, S, S) uint8: masks.npy, or boxes filled when there is no masks.npy
    (:func:`cmcgns_cli.data.imageio.boxes_mask`, as prepare fills them)."""
    if prepared.masks is not None:
        if prepared.masks.shape != prepared.images.shape:
            raise BadInputError(
                f"{prepared.root / 'masks.npy'}: shape {prepared.masks.shape}, "
                f"images are {prepared.images.shape}"
            )
        return prepared.masks
    if "boxes" not in prepared.manifest:
        raise BadInputError(
            f"{prepared.root}: no masks.npy (and no boxes to fill) for segmentation"
        )
    from cmcgns_cli.data.imageio import boxes_mask

    # the same rasterisation as prepare's masks (every pixel a box touches)
    size = int(prepared.images.shape[-1])
    masks = np.zeros(prepared.images.shape, dtype=np.uint8)
    for i, boxes in enumerate(prepared.manifest["boxes"]):
        flat = np.asarray(list(boxes) if boxes is not None else [], float).reshape(-1, 4)
        masks[i] = boxes_mask(flat.tolist(), size)
    return masks


class FeatureCache:
    """Frozen-encoder outputs per row, computed once and held in memory as float16 while
    they fit in ``CACHE_BUDGET_BYTES``; beyond that, recomputed under no_grad each time."""

    def __init__(self, compute: Callable[[np.ndarray], list[torch.Tensor]], n_rows: int):
        self.compute = compute
        self.store: dict[int, list[torch.Tensor]] = {}
        self.bytes = 0
        self.n_rows = n_rows
        self.enabled = True

    @torch.no_grad()
    def get(self, rows: np.ndarray) -> list[torch.Tensor]:
        missing = np.array([r for r in rows if int(r) not in self.store], dtype=np.int64)
        if len(missing) == len(rows) and not self.enabled:
            return [t.float() for t in self.compute(np.asarray(rows))]
        if len(missing):
            fresh = self.compute(missing)
            per_row = sum(t[0].numel() * 2 for t in fresh)
            if self.enabled and per_row * self.n_rows > CACHE_BUDGET_BYTES:
                self.enabled = False
                err.print("note: frozen features too large to cache; recomputing each step")
            if not self.enabled:
                return [t.float() for t in self.compute(np.asarray(rows))]
            for j, r in enumerate(missing):
                self.store[int(r)] = [t[j].half().cpu() for t in fresh]
        return [
            torch.stack([self.store[int(r)][k] for r in rows]).float()
            for k in range(len(self.store[int(rows[0])]))
        ]


@dataclass
class Fit:
    best_epoch: int = -1  # the kept epoch, counted from 1 (-1: none yet)
    best_val: float = -math.inf
    history: list[dict] = field(default_factory=list)


def train(
    model: nn.Module,
    params: list[nn.Parameter],
    rows: np.ndarray,
    step_loss: Callable[[np.ndarray], dict[str, torch.Tensor]],
    validate: Callable[[], dict[str, float]],
    metric: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> Fit:
    """AdamW on mini-batches of ``rows``; after each epoch score the validation split and
    keep the best epoch's weights of ``model`` (left loaded on return)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    fit = Fit()
    best_state = None
    steps = math.ceil(len(rows) / batch_size)
    with progress(TextColumn("{task.fields[info]}", markup=False)) as bar:
        job = bar.add_task("finetune", total=epochs * steps, info="")
        for epoch in range(epochs):
            model.train()
            perm = rows[torch.randperm(len(rows), generator=gen).numpy()]
            totals: dict[str, float] = {}
            for k, start in enumerate(range(0, len(perm), batch_size)):
                interrupts.at(f"epoch {epoch + 1} of {epochs}, step {k + 1} of {steps}")
                idx = perm[start : start + batch_size]
                terms = step_loss(idx)
                if not torch.isfinite(terms["loss"]):
                    raise RunFailedError(f"epoch {epoch + 1}: loss is {float(terms['loss'])}")
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                opt.step()
                for name, v in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(v.detach()) * len(idx)
                loss_so_far = totals["loss"] / min(len(perm), start + len(idx))
                bar.update(job, advance=1, info=f"ep {epoch + 1} loss {loss_so_far:.4f}")
            model.eval()
            scores = validate()
            value = scores[metric]
            fit.history.append(
                {
                    "epoch": epoch + 1,
                    **{f"train_{k}": v / len(perm) for k, v in totals.items()},
                    **scores,
                }
            )
            # no finite validate score yet (no positive there): keep the latest epoch
            if (math.isfinite(value) and value > fit.best_val) or not math.isfinite(fit.best_val):
                fit.best_val = float(value) if math.isfinite(value) else -math.inf
                fit.best_epoch = epoch + 1  # counted from 1, as pretraining counts its epochs
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return fit


def has_target_flags(
    task: DenseTask, boxes: list[np.ndarray] | None, masks: np.ndarray | None
) -> np.ndarray:
    """(N,) 0/1: whether each row has a box / a non-empty mask (the fraction strata)."""
    if task.kind == "detection":
        return np.array([len(b) > 0 for b in boxes], dtype=np.int64)
    return (np.asarray(masks).reshape(len(masks), -1).max(1) > 0).astype(np.int64)


def split_columns(prepared: Prepared) -> tuple[str, str]:
    """(split column, published-order column) of the detection/segmentation split.

    RSNA prepared by this version carries the authors' separate detection/segmentation
    split (``dense_split``, ``dense_order``); every other dataset uses ``split``.
    """
    if "dense_split" in prepared.manifest:
        return "dense_split", "dense_order"
    return "split", "mgca_order"


def dense_rows(prepared: Prepared, split: str) -> np.ndarray:
    """Row indices of ``split`` in the detection/segmentation split. Raises BadInputError."""
    column, _ = split_columns(prepared)
    rows = np.flatnonzero(prepared.manifest[column].to_numpy() == split)
    if len(rows) == 0:
        raise BadInputError(
            f"{prepared.root / 'manifest.parquet'}: no rows in split {split!r} ({column})"
        )
    return rows


@dataclass
class Plan:
    """What detection and segmentation finetuning share before their model is built: the
    dense split's train / validate rows, the label-fraction subset ``chosen`` drawn from the
    sampler's ``pool``, the encoder source and the sampler's name."""

    train_rows: np.ndarray
    val_rows: np.ndarray
    chosen: np.ndarray
    pool: Any
    source: EncoderSource
    sampler: str


def plan(
    prepared: Prepared, task: DenseTask, flags: np.ndarray, *, fraction: float, seed: int,
    fraction_sampler: str | None, checkpoint: str, arch: str | None,
    image_weights: Path | None, allow_partial: bool, input_size: tuple[int, int] | None = None,
) -> Plan:  # fmt: skip
    """The shared set-up of a dense finetune (``flags``: per-row has-a-target, all rows).
    Seeds torch with ``seed`` last, right before the caller builds its model."""
    train_rows, val_rows = dense_rows(prepared, "train"), dense_rows(prepared, "validate")
    sampler = resolve_sampler(prepared, fraction_sampler)
    chosen, pool = dense_subset(prepared, task.name, train_rows, flags, fraction, seed, sampler,
                                split_columns(prepared)[1])  # fmt: skip
    source = resolve_source(
        checkpoint, arch, image_weights, init_seed=seed, allow_partial=allow_partial,
        input_size=input_size,
    )  # fmt: skip
    torch.manual_seed(seed)
    return Plan(train_rows, val_rows, chosen, pool, source, sampler)


def common_record(
    task: Any, data: Path, source: Any, fraction: float, seed: int, full: bool,
    hp: dict[str, Any], fit: Any, chosen: np.ndarray, flags: np.ndarray,
    train_rows: np.ndarray, val_rows: np.ndarray, sampler: str = "stratified",
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The finetune.json fields detection and segmentation share (protocol and selection)."""
    return {
        "fraction_sampler": sampler, "train_pool": pool or {},
        "task": task.name, "data": str(data), "encoder": source.to_dict(), "fraction": fraction,
        "seed": seed, "full": full, **hp,
        "n_train": int(len(chosen)), "n_train_positive": int(flags[chosen].sum()),
        "n_train_available": int(len(train_rows)), "n_validate": int(len(val_rows)),
        "best_epoch": fit.best_epoch, "best_validate": fit.best_val, "validate_metric": task.metric,
    }  # fmt: skip


def write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_text(out / FINETUNE_FILE, jsonio.dumps(record, indent=2))


def protocol(prepared: Prepared, record: dict[str, Any], n_test: int) -> dict[str, Any]:
    column, _ = split_columns(prepared)
    values = prepared.manifest[column].to_numpy()
    return {
        "data_protocol": prepared.meta.get("protocol"),
        "split_column": column,
        "fraction_sampler": record.get("fraction_sampler", "stratified"),
        "train_pool": record.get("train_pool", {}),
        "split_sizes": {s: int((values == s).sum()) for s in ("train", "validate", "test")},
        "n_test": int(n_test),
        **{k: record[k] for k in ("fraction", "seed", "epochs", "lr", "batch_size", "full")},
        "n_train": record["n_train"],
        "input_size": record["input_size"],
        "encoder": record["encoder"],
    }

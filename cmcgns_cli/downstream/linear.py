"""The linear head of the paper's linear-classification protocol, trained on features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cmcgns_cli import interrupts
from cmcgns_cli.downstream.tasks import ClsTask
from cmcgns_cli.metrics import accuracy, auroc


def score(task: ClsTask, targets: np.ndarray, logits: np.ndarray, names: list[str]) -> dict:
    """The task's metrics for logits (N, C) against targets.

    AUROC is scored on the logits themselves, in float64: it depends only on the order of
    the scores, and the sigmoid is monotone, so this is the AUROC of the probabilities
    without their rounding (in float32, logits 17 and 18 both map to probability 1.0 and
    would tie).
    """
    if task.kind == "multiclass":
        return {"accuracy": accuracy(targets, logits)}
    return auroc(targets, np.asarray(logits, dtype=np.float64), names)


def loss_fn(task: ClsTask) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.kind == "multiclass":
        return nn.CrossEntropyLoss()
    return nn.BCEWithLogitsLoss()


@dataclass
class HeadFit:
    head: nn.Linear
    best_epoch: int  # the kept epoch, counted from 1 (-1: none yet)
    best_val: float
    history: list[dict] = field(default_factory=list)


def fit_linear_head(
    task: ClsTask,
    names: list[str],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> HeadFit:
    """Adam on mini-batches of stored features; keep the epoch best on the validation split."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_tr, y_tr = torch.from_numpy(train[0]).float(), torch.from_numpy(train[1])
    x_va = torch.from_numpy(val[0]).float()
    n_out = len(names)
    head = nn.Linear(x_tr.shape[1], n_out)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    criterion = loss_fn(task)
    y_tr = y_tr.long() if task.kind == "multiclass" else y_tr.float()
    best = HeadFit(head=head, best_epoch=-1, best_val=-np.inf)
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    for epoch in range(epochs):
        interrupts.at(f"epoch {epoch + 1} of {epochs}")
        head.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            loss = criterion(head(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        with torch.no_grad():
            val_scores = score(task, val[1], head(x_va).numpy(), names)
        value = val_scores[task.metric]
        best.history.append({"epoch": epoch + 1, "train_loss": total / len(perm), **val_scores})
        # no finite validate score yet (no positive there): keep the latest epoch
        if (np.isfinite(value) and value > best.best_val) or not np.isfinite(best.best_val):
            best.best_val = float(value) if np.isfinite(value) else -np.inf
            best.best_epoch = epoch + 1  # counted from 1, as pretraining counts its epochs
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return best

"""``--full``: fine-tune the encoder together with the linear head, on images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmcgns_cli import interrupts
from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.downstream.encoder import EncoderSource
from cmcgns_cli.downstream.features import extract, to_model_input
from cmcgns_cli.downstream.linear import HeadFit, loss_fn, score
from cmcgns_cli.downstream.tasks import ClsTask


def fit_full(
    task: ClsTask,
    names: list[str],
    encoder: nn.Module,
    prepared: Prepared,
    source: EncoderSource,
    targets: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> HeadFit:
    """Train encoder + head end to end with random crops; keep the best validation epoch.

    The encoder is updated in place and left holding the best epoch's weights.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder.to(device)
    dim = extract(encoder, prepared, train_rows[:1], source, device).shape[1]
    head = nn.Linear(dim, len(names)).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    criterion = loss_fn(task)
    y = torch.from_numpy(targets)
    y = y.long() if task.kind == "multiclass" else y.float()
    span = source.image_size - source.crop_size + 1
    fit = HeadFit(head=head, best_epoch=-1, best_val=-np.inf)
    best_state = None
    for epoch in range(epochs):
        interrupts.at(f"epoch {epoch + 1} of {epochs}")
        encoder.train()
        head.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            crop = torch.randint(0, span, (len(idx), 2), generator=gen)
            x = to_model_input(prepared.images[idx], source.image_size, source.crop_size, crop)
            loss = criterion(head(encoder.features(x.to(device))[0]), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        feats = extract(encoder, prepared, val_rows, source, device)
        with torch.no_grad():
            logits = head(torch.from_numpy(feats).to(device)).cpu().numpy()
        scores = score(task, targets[val_rows], logits, names)
        fit.history.append({"epoch": epoch + 1, **scores})
        value = scores[task.metric]
        # no finite validate score yet (no positive there): keep the latest epoch
        if (np.isfinite(value) and value > fit.best_val) or not np.isfinite(fit.best_val):
            fit.best_val = float(value) if np.isfinite(value) else -np.inf
            fit.best_epoch = epoch + 1  # counted from 1, as pretraining counts its epochs
            best_state = (_copy(encoder), _copy(head))
    if best_state is not None:
        encoder.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    head.cpu()
    encoder.cpu()
    return fit


def _copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}

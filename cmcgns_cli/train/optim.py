"""The pretraining optimizer (``train.optimizer``) and the gradient-norm step
(``train.grad_clip``).

``adam`` is what the authors' run used: ``torch.optim.Adam`` with ``weight_decay``, which adds
``weight_decay * p`` to the gradient before the moment estimates (L2 regularisation through
Adam's per-parameter scaling). ``adamw`` (the clean form) decays the weights directly,
``p <- p - lr * weight_decay * p``, outside the moments (Loshchilov & Hutter, ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adam", "adamw")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float,
    device: torch.device,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``name == "adam"``) or ``AdamW`` (``"adamw"``) over ``params``
    with default betas (0.9, 0.999) and eps 1e-8, ``lr`` and ``weight_decay``; the fused
    kernel on CUDA (the same arithmetic in one launch). Raises ValueError on another name."""
    kw = {"fused": True} if device.type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=float(lr), weight_decay=float(weight_decay), **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(lr), weight_decay=float(weight_decay), **kw)
    raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")


def grad_norm_step(params: Iterable[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """The global L2 norm of the gradients of ``params`` (a 0-d float tensor on their device),
    computed before any clipping. With ``clip`` > 0 the gradients are then scaled so their
    global norm is at most ``clip`` (``torch.nn.utils.clip_grad_norm_``); with 0 they are left
    untouched (the authors' run clips nothing), and the norm is still returned so the
    non-finite check and the logged ``grad_norm`` work either way."""
    params = [p for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, float(clip))
    if not params:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm([p.grad for p in params])

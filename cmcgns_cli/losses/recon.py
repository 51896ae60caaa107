"""CM-MIR masking and reconstruction loss (Cross-Modal Masked Image Reconstruction, the CM-CGNS
paper, arXiv 2506.11674).

Two switches (LossConfig):
- ``mask_mode``: "channels" (authors' code, default) drops each feature channel per sample
  independently with probability ``mask_ratio`` (a Bernoulli draw, no rescaling; the same
  channels at every patch), so the dropped count is Binomial(D, ratio); "patches" (clean) drops
  exactly ``round(mask_ratio * P)`` whole patches, as "masked local image regions" in the
  abstract.
- ``tokens`` (the authors' ViT rule, selected by ``model.vit_cmmir = authors``, not a
  ``loss.mask_mode`` value): each token dropped per sample with probability ``mask_ratio``
  (a Bernoulli draw), the kept ones multiplied by 1 / (1 - ratio) (x2 at 0.5).
- ``recon_region``: "all" (authors, default) takes the L1 over the whole image; "masked" (clean)
  only over pixels of masked patches. Channel masking touches every patch, so with
  ``mask_mode="channels"`` the masked region is the whole image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_keep_mask(
    b: int, n: int, ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """(b, n) bool, True = kept; exactly ``round(ratio * n)`` False per row (random, no loop)."""
    n_mask = int(round(ratio * n))
    order = torch.rand(b, n, device=device, generator=generator).argsort(dim=1)
    return order >= n_mask  # positions ranked below n_mask are masked


def mask_local_features(
    local: Tensor, ratio: float, mode: str, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Mask ``local`` (B, P, D). Returns ``(masked_local, patch_masked (B, P) bool)``;
    ``patch_masked`` marks patches whose features were (partly) removed."""
    b, p, d = local.shape
    if mode == "channels":
        u = torch.rand(b, d, device=local.device, generator=generator)
        keep = u >= ratio  # (B, D): each channel dropped with probability ``ratio``
        masked = local * keep[:, None, :].to(local.dtype)
        patch_masked = (~keep).any(dim=1, keepdim=True).expand(b, p)
    elif mode == "tokens":  # the authors' ViT rule: Bernoulli per token, kept ones rescaled
        keep = torch.rand(b, p, device=local.device, generator=generator) >= ratio  # (B, P)
        scale = 1.0 / (1.0 - ratio) if ratio < 1.0 else 0.0  # ratio 1 drops every token
        masked = local * (keep[:, :, None].to(local.dtype) * scale)
        patch_masked = ~keep
    elif mode == "patches":
        keep = random_keep_mask(b, p, ratio, local.device, generator)  # (B, P)
        masked = local * keep[:, :, None].to(local.dtype)
        patch_masked = ~keep
    else:
        raise ValueError(f"mask_mode must be channels, patches or tokens, not {mode!r}")
    return masked, patch_masked


def reconstruction_target(images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """The 3-channel target (B, 3, H, W): the normalised input image (values in [-1, 1]), as in
    the authors' code; a 1-channel input is repeated to 3 channels. Resized (bilinear) to
    ``size`` when the decoder's output size differs from the input's."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    return images


def reconstruction_loss(
    pred: Tensor,
    target: Tensor,
    patch_masked: Tensor,
    grid: tuple[int, int],
    region: str = "all",
    scale: float = 10.0,
) -> Tensor:
    """CM-MIR loss (the authors' code): ``scale`` x L1(pred, target) over the whole image ("all")
    or over the pixels of masked patches only ("masked"; nearest-upsampled patch mask).

    ``pred`` and ``target`` (B, C, H, W); ``patch_masked`` (B, h * w) bool on the ``grid``
    (h, w). A 4 x 4 target that is 3 on its top-left 2 x 2 quadrant and 1 elsewhere, against
    a zero prediction: mean |error| = (4 * 3 + 12 * 1) / 16 = 1.5; over the masked top-left
    patch of a 2 x 2 grid it is 3:

    >>> target = torch.ones(1, 3, 4, 4)
    >>> target[..., :2, :2] = 3.0
    >>> masked = torch.tensor([[True, False, False, False]])
    >>> reconstruction_loss(torch.zeros(1, 3, 4, 4), target, masked, (2, 2)).item()
    15.0
    >>> reconstruction_loss(torch.zeros(1, 3, 4, 4), target, masked, (2, 2), "masked").item()
    30.0
    """
    err = (pred.float() - target.float()).abs()
    if region == "all":
        return scale * err.mean()
    if region != "masked":
        raise ValueError(f"recon_region must be all or masked, not {region!r}")
    b = patch_masked.shape[0]
    pm = patch_masked.view(b, 1, grid[0], grid[1]).float()
    pix = F.interpolate(pm, size=err.shape[-2:], mode="nearest")
    return scale * (err * pix).sum() / (pix.sum() * err.shape[1]).clamp(min=1.0)

"""CM-MIR masking and reconstruction loss (paper.md item 5): both switches."""

from __future__ import annotations

import torch

from cmcgns_cli.losses import mask_local_features, reconstruction_loss, reconstruction_target


def test_channel_masking_drops_whole_channels_per_sample() -> None:
    torch.manual_seed(0)
    local = torch.randn(3, 4, 10) + 5.0  # no accidental zeros
    masked, patch_masked = mask_local_features(local, 0.5, "channels")
    for b in range(3):
        dropped = [d for d in range(10) if bool((masked[b, :, d] == 0).all())]
        assert len(dropped) == 5  # exactly ratio * D channels, the same at every patch
        kept = [d for d in range(10) if d not in dropped]
        assert torch.equal(masked[b][:, kept], local[b][:, kept])
    assert bool(patch_masked.all())  # every patch lost channels


def test_patch_masking_drops_whole_patches() -> None:
    torch.manual_seed(0)
    local = torch.randn(2, 8, 5) + 5.0
    masked, patch_masked = mask_local_features(local, 0.5, "patches")
    for b in range(2):
        assert int(patch_masked[b].sum()) == 4
        for p in range(8):
            if patch_masked[b, p]:
                assert bool((masked[b, p] == 0).all())
            else:
                assert torch.equal(masked[b, p], local[b, p])


def test_reconstruction_loss_all_and_masked_regions() -> None:
    torch.manual_seed(1)
    pred = torch.rand(2, 1, 4, 4) * 2 - 1
    target = torch.rand(2, 1, 4, 4) * 2 - 1
    patch_masked = torch.tensor([[True, False, False, True], [False, False, False, True]])
    grid = (2, 2)
    loss_all = reconstruction_loss(pred, target, patch_masked, grid, "all", 10.0)
    assert abs(float(loss_all) - 10.0 * float((pred - target).abs().mean())) < 1e-5
    # masked: only pixels of masked patches (each patch = 2x2 pixels here)
    num = den = 0.0
    for b in range(2):
        for p in range(4):
            if not patch_masked[b, p]:
                continue
            r, c = divmod(p, 2)
            block = (
                pred[b, 0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
                - target[b, 0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
            ).abs()
            num += float(block.sum())
            den += 4
    loss_m = reconstruction_loss(pred, target, patch_masked, grid, "masked", 10.0)
    assert abs(float(loss_m) - 10.0 * num / den) < 1e-5


def test_reconstruction_target_is_grayscale_in_range() -> None:
    img = torch.rand(2, 3, 5, 5) * 2 - 1
    t = reconstruction_target(img)
    assert t.shape == (2, 1, 5, 5) and float(t.abs().max()) <= 1.0

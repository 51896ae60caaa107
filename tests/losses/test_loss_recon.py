"""CM-MIR masking and reconstruction loss (CM-MIR): both switches."""

from __future__ import annotations

import math

import torch

from cmcgns_cli.losses import mask_local_features, reconstruction_loss, reconstruction_target


def test_channel_masking_drops_whole_channels_per_sample_without_rescaling() -> None:
    torch.manual_seed(0)
    local = torch.randn(3, 4, 10) + 5.0  # no accidental zeros
    masked, patch_masked = mask_local_features(local, 0.5, "channels")
    for b in range(3):
        dropped = [d for d in range(10) if bool((masked[b, :, d] == 0).all())]
        kept = [d for d in range(10) if d not in dropped]
        # the same channels at every patch, the kept ones untouched (no 1 / (1 - p) rescale)
        assert int((masked[b] == 0).sum()) == 4 * len(dropped)
        assert torch.equal(masked[b][:, kept], local[b][:, kept])


def test_dropped_channel_count_is_binomial_d_half() -> None:
    """Each channel is dropped independently with p = 0.5 (the authors' Bernoulli draw), so
    the dropped count per sample is Binomial(D, 0.5), not exactly D / 2."""
    d, b = 12, 20000
    gen = torch.Generator().manual_seed(1)
    masked, _ = mask_local_features(torch.ones(b, 1, d), 0.5, "channels", gen)
    counts = (masked[:, 0] == 0).sum(dim=1)
    freq = torch.bincount(counts, minlength=d + 1).double() / b
    pmf = torch.tensor([math.comb(d, k) * 0.5**d for k in range(d + 1)], dtype=torch.float64)
    assert float((freq - pmf).abs().max()) < 0.01  # sd of each frequency < 0.0036 here
    assert abs(float(counts.double().mean()) - d / 2) < 0.05
    assert abs(float(counts.double().var()) - d / 4) < 0.15
    assert float(freq[d // 2]) < 0.3  # exactly D / 2 only about 23 % of the time


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


def test_reconstruction_target_is_the_three_channel_input() -> None:
    img = torch.rand(2, 3, 5, 5) * 2 - 1
    assert torch.equal(reconstruction_target(img), img)
    gray = torch.rand(2, 1, 5, 5) * 2 - 1
    t = reconstruction_target(gray)
    assert t.shape == (2, 3, 5, 5) and all(torch.equal(t[:, c], gray[:, 0]) for c in range(3))
    # resized to the decoder's output when sizes differ: a constant image stays constant
    const = torch.full((1, 3, 5, 5), 0.25)
    r = reconstruction_target(const, (8, 8))
    assert r.shape == (1, 3, 8, 8) and torch.allclose(r, torch.full_like(r, 0.25))

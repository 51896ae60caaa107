"""The reconstruction target is resized bilinearly (half-pixel centres, as
``align_corners=False``) when the decoder's output size differs from the input's: checked
on ramps, where every interpolation gives a different answer, against hand computations and
OpenCV's INTER_LINEAR (the same half-pixel rule, computed by another library)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from cmcgns_cli.losses.recon import reconstruction_target


def test_downsampling_a_ramp_averages_each_two_by_two_block():
    ramp = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)  # x[r, c] = 4 r + c
    out = reconstruction_target(ramp, (2, 2))
    # output pixel i samples the input at (i + 0.5) * 2 - 0.5 = 0.5 or 2.5: halfway between
    # two pixels each way, so the mean of a 2 x 2 block: (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5,
    # (8+9+12+13)/4 = 10.5, (10+11+14+15)/4 = 12.5 (nearest would give 0, 2, 8, 10)
    want = torch.tensor([[2.5, 4.5], [10.5, 12.5]])
    assert out.shape == (1, 3, 2, 2)
    for c in range(3):
        assert torch.allclose(out[0, c], want)


def test_upsampling_a_non_symmetric_ramp_by_hand():
    img = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)  # steps 1 across, 2 down
    out = reconstruction_target(img, (4, 4))[0, 0]
    # sample positions (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]:
    # 0, 0.25, 0.75, 1; value = x + 2 y
    pos = torch.tensor([0.0, 0.25, 0.75, 1.0])
    want = pos[None, :] + 2 * pos[:, None]
    assert torch.allclose(out, want)


def test_non_square_resize_matches_opencv_inter_linear():
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, size=(6, 10)).astype(np.float32)
    out = reconstruction_target(torch.from_numpy(img).view(1, 1, 6, 10), (9, 15))[0, 0]
    ref = cv2.resize(img, (15, 9), interpolation=cv2.INTER_LINEAR)  # dsize is (width, height)
    assert np.abs(out.numpy() - ref).max() < 1e-5

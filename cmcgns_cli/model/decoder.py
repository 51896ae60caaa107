"""CM-MIR decoder (paper.md item 5): masked patch features + text-to-image context -> image.

ResNet path: the (B, 2D, h, w) map of [masked local | t2i context] goes through a 1x1 conv and
a stack of (nearest x2 upsample, 3x3 conv, BN, ReLU) stages up to the crop size, then a 3x3 conv
to ONE channel (chest X-rays are grayscale; the target is the channel mean of the input) and
tanh (the input is normalised to [-1, 1]). A final bilinear interpolate makes the output exactly
H x W for sizes that are not a power of two times the grid.
ViT path: the masked tokens are fused with the context by cross-attention (tokens query the
context), refined by a small transformer, then decoded by the same conv stack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _num_stages(crop_size: int, stride: int) -> int:
    grid = max(crop_size // stride, 1)
    return max(math.ceil(math.log2(crop_size / grid)), 1)


class ConvUpDecoder(nn.Module):
    """(B, C_in, h, w) -> (B, 1, H, W) in [-1, 1]; x2 upsampling per stage."""

    def __init__(self, in_channels: int, channels: int, stages: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)]
        c = channels
        for _ in range(stages):
            nxt = max(c // 2, 16)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, nxt, 3, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.ReLU(inplace=True),
            ]
            c = nxt
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, fmap: Tensor, size: tuple[int, int]) -> Tensor:
        out = self.net(fmap)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return torch.tanh(out)


class CMMIRDecoder(nn.Module):
    """Decode [masked local features ; t2i context] (both (B, P, D)) to a (B, 1, H, W) image."""

    def __init__(self, kind: str, dim: int, channels: int, crop_size: int, stride: int):
        super().__init__()
        self.kind = kind
        if kind == "vit":
            heads = 4 if dim % 4 == 0 else 1
            self.fuse_in = nn.Linear(2 * dim, dim)
            self.fuse_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=2 * dim, batch_first=True, norm_first=True
            )
            self.transformer = nn.TransformerEncoder(
                layer, num_layers=2, enable_nested_tensor=False
            )
            in_ch = dim
        else:
            in_ch = 2 * dim
        self.conv = ConvUpDecoder(in_ch, channels, _num_stages(crop_size, stride))

    def forward(
        self, masked_local: Tensor, context: Tensor, grid: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        b, p, _ = masked_local.shape
        if self.kind == "vit":
            x = self.fuse_in(torch.cat([masked_local, context], dim=-1))
            x = x + self.fuse_attn(x, context, context, need_weights=False)[0]
            tokens = self.transformer(x)
        else:
            tokens = torch.cat([masked_local, context], dim=-1)
        fmap = tokens.transpose(1, 2).reshape(b, tokens.shape[-1], grid[0], grid[1])
        return self.conv(fmap, size)

"""CLIP-style attention pooling of a ResNet feature map into the global image vector.

The authors' ResNet-50 path (arXiv 2506.11674, their image encoder) does not average the
7 x 7 layer4 map: it prepends the map's mean as an extra token, adds a learned positional
embedding (one row per token, drawn N(0, 1) / sqrt(C)), and runs one multi-head attention
(8 heads, separate q / k / v projections and an output projection, all C -> C) whose output
at the mean token is the global vector, as in CLIP's ``AttentionPool2d`` (Radford et al.
2021). ``model.image_pool = attention`` selects it; ``mean`` keeps the plain average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_POOL_HEADS = 8  # the authors' value for ResNet-50


def resnet_grid(crop_size: int, stride: int = 32) -> int:
    """Side of a torchvision ResNet's last map for a square ``crop_size`` input: each of its
    five stride-2 steps rounds up, so ceil(crop / 32) (7 at 224 px)."""
    return max(math.ceil(crop_size / stride), 1)


class AttentionPool2d(nn.Module):
    """(B, C, h, w) -> (B, C): attention of the mean token over [mean; the h * w cells].

    ``grid`` (h, w) sizes the positional embedding ((h * w + 1, C)); a map of another size
    gets the cell rows bilinearly resized (the mean token's row is kept). Parameters:
    (h * w + 1) * C + 4 * (C * C + C), 16.9 M for C = 2048 on a 7 x 7 grid. Raises
    ``ValueError`` when ``heads`` does not divide ``dim``.
    """

    def __init__(self, dim: int, grid: tuple[int, int], heads: int = IMAGE_POOL_HEADS):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention pool: {heads} heads do not divide {dim} channels")
        self.grid = (int(grid[0]), int(grid[1]))
        self.heads = heads
        n = self.grid[0] * self.grid[1] + 1
        self.positional_embedding = nn.Parameter(torch.randn(n, dim) / dim**0.5)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.c_proj = nn.Linear(dim, dim)

    def _pos(self, h: int, w: int) -> Tensor:
        if (h, w) == self.grid:
            return self.positional_embedding
        d = self.positional_embedding.shape[-1]
        cells = self.positional_embedding[1:].T.reshape(1, d, *self.grid)
        cells = F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([self.positional_embedding[:1], cells.reshape(d, h * w).T], dim=0)

    def forward(self, fmap: Tensor) -> Tensor:
        b, c, h, w = fmap.shape
        x = fmap.flatten(2).transpose(1, 2)  # (B, hw, C): cells in row-major order
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self._pos(h, w).to(x.dtype)
        d = c // self.heads
        # only the mean token's output is kept, so only its query is computed
        q = self.q_proj(x[:, :1]).view(b, 1, self.heads, d).transpose(1, 2)
        k = self.k_proj(x).view(b, -1, self.heads, d).transpose(1, 2)
        v = self.v_proj(x).view(b, -1, self.heads, d).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, d)
        return self.c_proj(pooled.transpose(1, 2).reshape(b, c))

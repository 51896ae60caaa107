"""CM-MIR decoder (arXiv 2506.11674, cross-modal masked image reconstruction), laid out as in
the authors' code: masked patch features + text-to-image context -> a 3-channel image.

ResNet path: the masked local features and the t2i context, each (B, P, D) laid out on the
h x w patch grid, are concatenated along channels (B, 2D, h, w), then ``stages`` blocks of
conv 3x3 -> ReLU -> bilinear x2 with C, C/2, C/4, ... and finally 3 output channels (C = 512
and five stages at 224 px: 512, 256, 128, 64, 3; 7 -> 224 px), then tanh (the input is
normalised to [-1, 1]).
The authors' last conv is followed by a ReLU before the upsampling and tanh, so their
predictions are never negative while the target is; ``final_relu=True`` reproduces it (default,
``loss.recon_final_relu``), ``False`` drops that ReLU (``clean``).
ViT path, ``vit_cmmir = "authors"`` (default, as the authors' code runs it): a multi-head
fusion attention (queries = masked image tokens, keys / values = t2i context, no residual),
a learned positional embedding that starts at zero, then ONE post-norm transformer decoder
layer (8 heads, feed-forward 2048, dropout 0.1) applied six times, whose memory is its own
input (the fused tokens) and which reads the (B, P, D) tokens as sequence-first, so that
its attention runs across the batch axis at each token position; then the conv head with 4
stages (512, 256, 128, 3 at 14 -> 224 px). ``"clean"``: the fusion has a residual to the
masked tokens, the positional embedding starts truncated-normal (std 0.02), and a 6-layer
batch-first decoder (separate weights) attends over the tokens with the t2i context as
memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VIT_DECODER_LAYERS = 6
VIT_DECODER_FFN = 2048


def _num_stages(crop_size: int, stride: int) -> int:
    grid = max(crop_size // stride, 1)
    return max(math.ceil(math.log2(crop_size / grid)), 1)


def stage_channels(channels: int, stages: int) -> list[int]:
    """Output channels of each stage: C, C/2, ... (at least 8), and 3 for the last."""
    return [max(channels >> i, 8) for i in range(stages - 1)] + [3]


class ConvUpDecoder(nn.Module):
    """(B, C_in, h, w) -> (B, 3, h * 2^stages, w * 2^stages) in [-1, 1]: per stage conv 3x3 ->
    ReLU -> bilinear x2; tanh at the end. ``final_relu``: keep the ReLU after the last conv.
    ``align_corners``: the upsampling's corner alignment (the authors' decoder: True, which
    maps the corner pixels of each map onto each other; False samples at pixel centres)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stages: int,
        final_relu: bool = True,
        align_corners: bool = True,
    ):
        super().__init__()
        outs = stage_channels(channels, stages)
        self.convs = nn.ModuleList()
        c = in_channels
        for nxt in outs:
            self.convs.append(nn.Conv2d(c, nxt, 3, padding=1))
            c = nxt
        self.final_relu = final_relu
        self.align_corners = align_corners

    def forward(self, fmap: Tensor) -> Tensor:
        x = fmap
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last or self.final_relu:
                x = F.relu(x)
            x = F.interpolate(
                x, scale_factor=2.0, mode="bilinear", align_corners=self.align_corners
            )
        return torch.tanh(x)


class CMMIRDecoder(nn.Module):
    """Decode [masked local features ; t2i context] (both (B, P, D)) to a (B, 3, H', W') image
    with H' = grid_h * 2^stages (224 for ResNet-50 and ViT-B/16 at 224 px input)."""

    def __init__(
        self,
        kind: str,
        dim: int,
        channels: int,
        crop_size: int,
        stride: int,
        final_relu: bool = True,
        align_corners: bool = True,
        vit_cmmir: str = "authors",
    ):
        super().__init__()
        self.kind = kind
        self.vit_authors = kind == "vit" and vit_cmmir == "authors"
        stages = _num_stages(crop_size, stride)
        if kind == "vit":
            heads = 8 if dim % 8 == 0 else 1
            grid = max(crop_size // stride, 1)
            self.fuse_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.grid = grid
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
            if self.vit_authors:
                # one layer object, applied VIT_DECODER_LAYERS times (shared weights)
                self.layer = nn.TransformerDecoderLayer(
                    dim, heads, dim_feedforward=VIT_DECODER_FFN, batch_first=False
                )
            else:
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
                layer = nn.TransformerDecoderLayer(
                    dim, heads, dim_feedforward=VIT_DECODER_FFN, batch_first=True
                )
                self.transformer = nn.TransformerDecoder(layer, num_layers=VIT_DECODER_LAYERS)
            in_ch = dim
        else:
            in_ch = 2 * dim
        self.conv = ConvUpDecoder(in_ch, channels, stages, final_relu, align_corners)

    def _pos(self, grid: tuple[int, int]) -> Tensor:
        """The learned positional embedding, bilinearly resized for another patch grid."""
        if tuple(grid) == (self.grid, self.grid):
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        pos = self.pos_embed.view(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=tuple(grid), mode="bilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def forward(self, masked_local: Tensor, context: Tensor, grid: tuple[int, int]) -> Tensor:
        """``masked_local`` (B, P, D), the image's local features with masked patches zeroed;
        ``context`` (B, P, D), the text-to-image attention output for each patch; ``grid`` the
        patch grid (h, w) with h * w = P. Returns the reconstruction (B, 3, h * 2^n, w * 2^n)
        in [-1, 1] (tanh), n = the number of upsampling stages (the CM-MIR decoder of
        arXiv 2506.11674 as the authors' code lays it out: concatenation + convolutions for
        ResNet, attention fusion + a transformer decoder for ViT)."""
        b = masked_local.shape[0]
        if self.vit_authors:
            x = self.fuse_attn(masked_local, context, context, need_weights=False)[0]
            tokens = memory = x + self._pos(grid)
            for _ in range(VIT_DECODER_LAYERS):
                # (B, P, D) read as (sequence B, batch P, D), as the authors' code feeds it
                tokens = self.layer(tokens, memory)
        elif self.kind == "vit":
            x = masked_local + self.fuse_attn(masked_local, context, context, need_weights=False)[0]
            tokens = self.transformer(x + self._pos(grid), context)
        else:
            tokens = torch.cat([masked_local, context], dim=-1)
        fmap = tokens.transpose(1, 2).reshape(b, tokens.shape[-1], grid[0], grid[1])
        return self.conv(fmap)

"""A small YOLOv3-style detector over a frozen ResNet's last three stages.

Layout of a prediction map at one scale: (B, A, H, W, 5 + K) with, per anchor and cell,
``tx, ty`` (centre offsets in the cell, through a sigmoid), ``tw, th`` (log size relative to
the anchor), an objectness logit and K class logits.

Anchors: YOLOv3's fixed COCO defaults, in input pixels at every input size, as darknet keeps
them: the strides 8 / 16 / 32 do not shrink with the input, so scaling the anchors by
size / 416 (this project's earlier rule) made them small against the cells (at 64 px every
box went to the 2 x 2 and 4 x 4 maps); no k-means. Each ground-truth box is assigned to the
one of the nine anchors whose shape overlaps it best (IoU of width/height, centres
aligned), at that anchor's scale, in the cell holding its centre. Losses (summed, divided
by the batch size):
  * box: BCE of sigmoid(tx, ty) against the fractional centre offset plus MSE of tw, th
    against log(w / anchor_w), log(h / anchor_h), weighted by (2 - w * h / size^2) as in
    YOLOv3, at assigned anchors only;
  * objectness: BCE everywhere; 1 at assigned anchors, 0 elsewhere, except predictions
    whose decoded box already overlaps a ground truth with IoU > 0.5 (ignored, YOLOv3);
  * class: BCE of the K class logits at assigned anchors.
Inference: sigmoid(obj) * sigmoid(cls) scores, a score floor, then class-wise NMS
(``torchvision.ops.batched_nms``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert

STAGES = ("layer2", "layer3", "layer4")  # strides 8, 16, 32
STRIDES = (8, 16, 32)
# YOLOv3 defaults (pixels at 416 px input), small to large; three per scale.
DEFAULT_ANCHORS_416 = (
    (10, 13), (16, 30), (33, 23),
    (30, 61), (62, 45), (59, 119),
    (116, 90), (156, 198), (373, 326),
)  # fmt: skip
IGNORE_IOU = 0.5


def default_anchors(input_size: int) -> Tensor:
    """(3 scales, 3 anchors, 2) float32 anchor widths/heights in input pixels: YOLOv3's at
    any ``input_size`` (kept in step with the fixed strides 8 / 16 / 32, as darknet does)."""
    del input_size  # the anchors do not depend on it (see the module doc)
    return torch.tensor(DEFAULT_ANCHORS_416, dtype=torch.float32).view(3, 3, 2)


class WarmBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose running statistics follow the batches from the first step: momentum
    1 / (batches seen + 1) (a cumulative average) until that falls to 0.1. A short finetune
    (a dozen steps at 1 % of the labels) otherwise evaluates with running variances still
    near their initial 1, 10-30x the head's real variances. Same state-dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.track_running_stats:
            self.momentum = max(0.1, 1.0 / (int(self.num_batches_tracked) + 1))
        return super().forward(x)


def _conv(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        WarmBatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
    )


class YoloHead(nn.Module):
    """YOLOv3 neck and heads: a top-down path over (C3, C4, C5) and one output per scale."""

    def __init__(
        self, in_channels: tuple[int, int, int], num_classes: int, width: int | None = None
    ):
        super().__init__()
        width = width or max(32, in_channels[2] // 16)  # 128 for ResNet-50, 32 for 512-d
        self.num_classes = num_classes
        out = 3 * (5 + num_classes)
        c3, c4, c5 = in_channels
        w = width
        self.lateral = nn.ModuleList([_conv(c, w, 1) for c in (c3, c4, c5)])
        self.smooth = nn.ModuleList(
            [nn.Sequential(_conv(w, 2 * w, 3), _conv(2 * w, w, 1)) for _ in range(3)]
        )
        self.out = nn.ModuleList([nn.Conv2d(w, out, 1) for _ in range(3)])
        for conv in self.out:  # start with a low objectness so the first steps are calm
            nn.init.zeros_(conv.weight)
            with torch.no_grad():
                conv.bias.zero_()
                conv.bias.view(3, 5 + num_classes)[:, 4] = -4.0

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """``feats``: the stride-8, -16 and -32 maps -> three (B, 3, H, W, 5 + K) maps."""
        lat = [m(f) for m, f in zip(self.lateral, feats, strict=True)]
        maps: list[Tensor] = [None, None, None]  # type: ignore[list-item]
        top = None
        for i in (2, 1, 0):  # coarse to fine, as YOLOv3
            x = lat[i] if top is None else lat[i] + F.interpolate(top, size=lat[i].shape[-2:])
            top = self.smooth[i](x)
            y = self.out[i](top)
            b, _, h, w = y.shape
            maps[i] = y.view(b, 3, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)
        return maps


# --- encoding and decoding ------------------------------------------------------------------


def encode(cxcywh: Tensor, anchor_wh: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Boxes (..., 4) as (cx, cy, w, h) -> (cell (..., 2) long (gx, gy), targets (..., 4))
    with targets (fx, fy, tw, th): the centre's fraction inside the cell and the log size
    relative to ``anchor_wh`` (..., 2)."""
    centre = cxcywh[..., :2] / stride
    cell = centre.floor()
    frac = centre - cell
    twh = torch.log(cxcywh[..., 2:].clamp(min=1e-6) / anchor_wh)
    return cell.long(), torch.cat([frac, twh], dim=-1)


def decode(raw: Tensor, anchors: Tensor, stride: int) -> Tensor:
    """Raw (B, 3, H, W, >=4) map at one scale -> boxes (B, 3, H, W, 4) as (cx, cy, w, h)."""
    _, _, h, w, _ = raw.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij"
    )
    grid = torch.stack([gx, gy], dim=-1).to(raw.dtype)  # (H, W, 2)
    xy = (grid + torch.sigmoid(raw[..., :2])) * stride
    wh = anchors.to(raw)[None, :, None, None, :] * torch.exp(raw[..., 2:4].clamp(max=10.0))
    return torch.cat([xy, wh], dim=-1)


def _wh_iou(wh_a: Tensor, wh_b: Tensor) -> Tensor:
    """IoU of boxes sharing a centre: (..., 2) x (M, 2) -> (..., M)."""
    inter = torch.minimum(wh_a[..., None, :], wh_b).prod(-1)
    return inter / (wh_a.prod(-1)[..., None] + wh_b.prod(-1) - inter)


def _batched_iou(a: Tensor, b: Tensor) -> Tensor:
    """xyxy (B, N, 4) x (B, G, 4) -> (B, N, G)."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp(min=1e-9)


def build_targets(
    gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, shapes: list[tuple[int, int]],
    anchors: Tensor,
) -> list[dict[str, Tensor]]:  # fmt: skip
    """Assign padded ground truth to anchors; vectorised over images and boxes.

    ``gt_boxes`` (B, G, 4) as (cx, cy, w, h) in input pixels, ``gt_labels`` (B, G) long,
    ``gt_valid`` (B, G) bool; ``shapes`` the (H, W) of the three maps. Returns per scale a
    dict with ``obj`` (B, 3, H, W) 0/1 targets, ``box`` (B, 3, H, W, 4) encoded targets,
    ``cls`` (B, 3, H, W) label (valid where obj is 1) and ``weight`` (B, 3, H, W) box-loss
    weights. A later box written to an occupied anchor/cell replaces the earlier one.
    """
    flat = anchors.view(9, 2).to(gt_boxes)
    best = _wh_iou(gt_boxes[..., 2:], flat).argmax(-1)  # (B, G) in 0..8
    size = torch.tensor([shapes[0][1] * STRIDES[0], shapes[0][0] * STRIDES[0]]).to(gt_boxes)
    out = []
    for s, ((h, w), stride) in enumerate(zip(shapes, STRIDES, strict=True)):
        b_idx, g_idx = torch.nonzero(gt_valid & (best // 3 == s), as_tuple=True)
        a_idx = best[b_idx, g_idx] % 3
        boxes = gt_boxes[b_idx, g_idx]
        cell, enc = encode(boxes, anchors[s, a_idx].to(gt_boxes), stride)
        gx, gy = cell[:, 0].clamp(0, w - 1), cell[:, 1].clamp(0, h - 1)
        batch = gt_boxes.shape[0]
        tgt = {
            "obj": gt_boxes.new_zeros(batch, 3, h, w),
            "box": gt_boxes.new_zeros(batch, 3, h, w, 4),
            "cls": torch.zeros(batch, 3, h, w, dtype=torch.long, device=gt_boxes.device),
            "weight": gt_boxes.new_zeros(batch, 3, h, w),
        }
        tgt["obj"][b_idx, a_idx, gy, gx] = 1.0
        tgt["box"][b_idx, a_idx, gy, gx] = enc
        tgt["cls"][b_idx, a_idx, gy, gx] = gt_labels[b_idx, g_idx]
        area = (boxes[:, 2] * boxes[:, 3]) / (size[0] * size[1])
        tgt["weight"][b_idx, a_idx, gy, gx] = 2.0 - area
        out.append(tgt)
    return out


def yolo_loss(
    preds: list[Tensor], gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, anchors: Tensor
) -> dict[str, Tensor]:
    """The YOLOv3 losses of module doc, for ``preds`` from :class:`YoloHead`."""
    shapes = [tuple(p.shape[2:4]) for p in preds]
    targets = build_targets(gt_boxes, gt_labels, gt_valid, shapes, anchors)
    batch = preds[0].shape[0]
    gt_xyxy = box_convert(gt_boxes, "cxcywh", "xyxy")
    terms = {"box": preds[0].new_zeros(()), "obj": preds[0].new_zeros(()),
             "cls": preds[0].new_zeros(())}  # fmt: skip
    for s, (raw, tgt) in enumerate(zip(preds, targets, strict=True)):
        pos = tgt["obj"] > 0
        with torch.no_grad():  # YOLOv3's ignore rule
            boxes = box_convert(decode(raw, anchors[s], STRIDES[s]), "cxcywh", "xyxy")
            iou = _batched_iou(boxes.view(batch, -1, 4), gt_xyxy)  # (B, N, G)
            iou = iou.masked_fill(~gt_valid[:, None, :], 0.0)
            ignore = (iou.amax(-1) if iou.shape[-1] else iou.new_zeros(iou.shape[:2])) > IGNORE_IOU
            ignore = ignore.view(pos.shape) & ~pos
        obj_bce = F.binary_cross_entropy_with_logits(raw[..., 4], tgt["obj"], reduction="none")
        terms["obj"] = terms["obj"] + obj_bce[~ignore].sum()
        if pos.any():
            p, t, wgt = raw[pos], tgt["box"][pos], tgt["weight"][pos]
            xy = F.binary_cross_entropy_with_logits(p[:, :2], t[:, :2], reduction="none").sum(1)
            wh = F.mse_loss(p[:, 2:4], t[:, 2:4], reduction="none").sum(1)
            terms["box"] = terms["box"] + (wgt * (xy + wh)).sum()
            onehot = F.one_hot(tgt["cls"][pos], raw.shape[-1] - 5).to(raw)
            terms["cls"] = terms["cls"] + F.binary_cross_entropy_with_logits(
                p[:, 5:], onehot, reduction="sum"
            )
    terms = {k: v / batch for k, v in terms.items()}
    terms["loss"] = terms["box"] + terms["obj"] + terms["cls"]
    return terms


@torch.no_grad()
def postprocess(
    preds: list[Tensor], anchors: Tensor, *, score_floor: float = 0.01, iou: float = 0.5,
    max_dets: int = 100, pre_nms: int = 1000,
) -> list[tuple[Tensor, Tensor, Tensor]]:  # fmt: skip
    """Per image: (boxes (n, 4) xyxy in input pixels, scores (n,), labels (n,))."""
    boxes, scores = [], []
    for s, raw in enumerate(preds):
        b = raw.shape[0]
        boxes.append(
            box_convert(decode(raw, anchors[s], STRIDES[s]), "cxcywh", "xyxy").view(b, -1, 4)
        )
        prob = torch.sigmoid(raw[..., 4:5]) * torch.sigmoid(raw[..., 5:])
        scores.append(prob.view(b, -1, raw.shape[-1] - 5))
    all_boxes, all_scores = torch.cat(boxes, 1), torch.cat(scores, 1)  # (B, N, 4), (B, N, K)
    out = []
    for img_boxes, img_scores in zip(all_boxes, all_scores, strict=True):
        k = img_scores.shape[1]
        flat = img_scores.reshape(-1)
        keep = torch.nonzero(flat > score_floor).squeeze(1)
        keep = keep[flat[keep].argsort(descending=True)[:pre_nms]]
        cand_boxes, labels, sc = img_boxes[keep // k], keep % k, flat[keep]
        kept = batched_nms(cand_boxes, sc, labels, iou)[:max_dets]
        out.append((cand_boxes[kept], sc[kept], labels[kept]))
    return out

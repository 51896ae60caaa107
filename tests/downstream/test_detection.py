"""YOLO target assignment, loss, encode/decode and NMS on hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from cmcgns_cli.downstream.yolo import (
    STRIDES,
    YoloHead,
    build_targets,
    decode,
    default_anchors,
    encode,
    postprocess,
    yolo_loss,
)

ANCHORS = torch.tensor(
    [[[4, 4], [8, 4], [4, 8]], [[12, 12], [16, 8], [8, 16]], [[32, 32], [48, 24], [24, 48]]],
    dtype=torch.float32,
)
SHAPES = [(8, 8), (4, 4), (2, 2)]  # a 64 px input
# Image 0: one box (cx 20, cy 12, w 15, h 8): best shape match is anchor (16, 8) (IoU
# 120/128), scale 1 (stride 16), cell (1, 0), offsets (0.25, 0.75). Image 1: no box.
GT = torch.tensor([[[20.0, 12.0, 15.0, 8.0]], [[0.0, 0.0, 0.0, 0.0]]])
LABELS = torch.tensor([[1], [0]])
VALID = torch.tensor([[True], [False]])


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_target_assignment() -> None:
    tgt = build_targets(GT, LABELS, VALID, SHAPES, ANCHORS)
    assert [int(t["obj"].sum()) for t in tgt] == [0, 1, 0]
    assert tgt[1]["obj"][0, 1, 0, 1] == 1.0  # image 0, anchor 1, row 0, column 1
    assert tgt[1]["box"][0, 1, 0, 1].tolist() == pytest.approx([0.25, 0.75, math.log(15 / 16), 0.0])
    assert tgt[1]["cls"][0, 1, 0, 1] == 1
    assert tgt[1]["weight"][0, 1, 0, 1] == pytest.approx(2 - 15 * 8 / 64**2)


def _perfect_preds(num_classes: int = 2) -> list[torch.Tensor]:
    preds = [torch.zeros(2, 3, h, w, 5 + num_classes) for h, w in SHAPES]
    for p in preds:
        p[..., 4] = -30.0  # confident "no object"
        p[..., 5:] = -30.0
    cell = preds[1][0, 1, 0, 1]
    cell[:4] = torch.tensor([_logit(0.25), _logit(0.75), math.log(15 / 16), 0.0])
    cell[4] = 30.0
    cell[6] = 30.0  # class 1
    return preds


def test_loss_on_perfect_prediction_is_the_offset_entropy() -> None:
    terms = yolo_loss(_perfect_preds(), GT, LABELS, VALID, ANCHORS)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected_box = (2 - 15 * 8 / 64**2) * 2 * entropy / 2  # two BCE terms, batch of 2
    assert float(terms["box"]) == pytest.approx(expected_box, rel=1e-5)
    assert float(terms["obj"]) < 1e-6 and float(terms["cls"]) < 1e-6
    # Moving the box off target raises the loss; gradients reach only the assigned anchor.
    preds = [p.clone().requires_grad_(True) for p in _perfect_preds()]
    with torch.no_grad():
        preds[1][0, 1, 0, 1, 2] += 0.5
    terms = yolo_loss(preds, GT, LABELS, VALID, ANCHORS)
    assert float(terms["box"].detach()) > expected_box + 0.1
    terms["box"].backward()
    grad = preds[1].grad[..., :4].abs().sum(-1)
    assert torch.nonzero(grad).tolist() == [[0, 1, 0, 1]]


def test_obj_loss_all_zero_logits_counts_cells() -> None:
    preds = [torch.zeros(2, 3, h, w, 7) for h, w in SHAPES]
    preds[1][0, 1, 0, 1, 2] = 5.0  # assigned anchor: decoded box huge, so IoU small anyway
    terms = yolo_loss(preds, GT, LABELS, VALID, ANCHORS)
    cells = 2 * 3 * sum(h * w for h, w in SHAPES)
    # Every non-ignored cell costs log 2; ignored ones (decoded IoU > 0.5 with the box) none.
    n_counted = round(float(terms["obj"]) * 2 / math.log(2))
    assert cells - 12 <= n_counted <= cells


def test_decode_inverts_encode() -> None:
    gen = torch.Generator().manual_seed(0)
    size = 128
    anchors = default_anchors(size)
    for s, stride in enumerate(STRIDES):
        n = size // stride
        boxes = torch.rand(20, 4, generator=gen) * torch.tensor(
            [size, size, 60, 60]
        ) + torch.tensor([0, 0, 4, 4])
        boxes[:, :2] = boxes[:, :2].clamp(max=size - 1e-3)
        a = torch.randint(0, 3, (20,), generator=gen)
        cell, enc = encode(boxes, anchors[s, a], stride)
        for i in range(20):  # one box per map, so the inverse is read back unambiguously
            raw = torch.zeros(1, 3, n, n, 4)
            gx, gy = cell[i].tolist()
            raw[0, a[i], gy, gx] = torch.cat(
                [torch.logit(enc[i, :2].clamp(1e-6, 1 - 1e-6)), enc[i, 2:]]
            )
            back = decode(raw, anchors[s], stride)[0, a[i], gy, gx]
            assert back.tolist() == pytest.approx(boxes[i].tolist(), abs=1e-3)


def test_postprocess_nms_keeps_best_of_overlapping() -> None:
    preds = _perfect_preds()
    # A second, slightly weaker detection of the same box at a neighbouring anchor.
    preds[1][0, 2, 0, 1, :4] = torch.tensor(
        [_logit(0.25), _logit(0.75), math.log(15 / 8), math.log(8 / 16)]
    )
    preds[1][0, 2, 0, 1, 4] = 2.0
    preds[1][0, 2, 0, 1, 6] = 30.0
    out = postprocess(preds, ANCHORS)
    boxes, scores, labels = out[0]
    assert len(boxes) == 1 and labels.tolist() == [1]
    assert boxes[0].tolist() == pytest.approx([12.5, 8.0, 27.5, 16.0], abs=1e-3)
    assert len(out[1][0]) == 0


def test_head_shapes() -> None:
    head = YoloHead((128, 256, 512), num_classes=2)
    maps = head([torch.zeros(2, 128, 8, 8), torch.zeros(2, 256, 4, 4), torch.zeros(2, 512, 2, 2)])
    assert [tuple(m.shape) for m in maps] == [(2, 3, 8, 8, 7), (2, 3, 4, 4, 7), (2, 3, 2, 2, 7)]


def test_default_anchors_stay_in_input_pixels_so_small_boxes_use_the_fine_map() -> None:
    # darknet's rule: the strides do not change with the input, so neither do the anchors
    a64, a416 = default_anchors(64), default_anchors(416)
    assert torch.equal(a64, a416) and a64[0, 0].tolist() == [10.0, 13.0]
    # 64 px input: a 12 x 14 px box (the size of the test world's boxes) goes to stride 8;
    # with the earlier size / 416 scaling every anchor was under 2 cells wide and it went
    # to the 2 x 2 map
    shapes = [(8, 8), (4, 4), (2, 2)]
    box = torch.tensor([[[30.0, 30.0, 12.0, 14.0]]])
    ones = torch.ones(1, 1, dtype=torch.bool)
    targets = build_targets(box, torch.zeros(1, 1, dtype=torch.long), ones, shapes, a64)
    assert [int(t["obj"].sum()) for t in targets] == [1, 0, 0]
    old = build_targets(box, torch.zeros(1, 1, dtype=torch.long), ones, shapes, a64 * 64 / 416)
    assert [int(t["obj"].sum()) for t in old] == [0, 0, 1]


def test_head_batchnorm_running_stats_follow_the_first_batches() -> None:
    from cmcgns_cli.downstream.yolo import WarmBatchNorm2d

    bn = WarmBatchNorm2d(4).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 5, 5, generator=gen) * 0.1 + 2.0
    bn(x)  # first batch: the running statistics are that batch's (momentum 1)
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True))
    y = torch.randn(8, 4, 5, 5, generator=gen) * 0.1 - 2.0
    bn(y)  # second: the mean of the two batches (momentum 1/2)
    torch.testing.assert_close(bn.running_mean, (x.mean(dim=(0, 2, 3)) + y.mean(dim=(0, 2, 3))) / 2)
    for _ in range(20):
        bn(y)
    assert bn.momentum == 0.1  # then the usual exponential average
    plain = torch.nn.BatchNorm2d(4)
    assert bn.state_dict().keys() == plain.state_dict().keys()

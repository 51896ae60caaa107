"""Detection boxes move between the prepared frame and the model-input frame at the
paper's setting (256 px prepared, 224 px input: scale 224 / 256 = 0.875), checked against
hand computations on non-square, off-centre boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcgns_cli.downstream import detection
from cmcgns_cli.downstream.detection import Detector, _padded_gt


def _detector_at(prepared_size: int, input_size: int, monkeypatch, boxes_xyxy: torch.Tensor):
    """A Detector whose head is skipped: postprocess returns ``boxes_xyxy`` (input pixels)."""
    det = Detector.__new__(Detector)  # no encoder: only the frame mapping is under test
    det.size = input_size
    det.scale = input_size / prepared_size  # as Detector.__init__ sets it
    det.head = torch.nn.Identity()
    det.anchors = torch.zeros(3, 3, 2)
    det.features = lambda rows, training: [torch.zeros(len(rows), 1)]
    n = len(boxes_xyxy)

    def fake_postprocess(preds, anchors):
        b = preds[0].shape[0]
        return [(boxes_xyxy.clone(), torch.full((n,), 0.9), torch.zeros(n)) for _ in range(b)]

    monkeypatch.setattr(detection, "postprocess", fake_postprocess)
    return det


def test_predicted_boxes_are_divided_back_to_prepared_pixels(monkeypatch):
    # two boxes in 224 px input pixels (x0, y0, x1, y1); prepared = input / 0.875 = * 8 / 7
    boxes = torch.tensor([[14.0, 28.0, 70.0, 112.0], [161.0, 7.0, 210.0, 21.0]])
    det = _detector_at(256, 224, monkeypatch, boxes)
    ((xywh, scores, labels),) = det.predict(np.array([0]))
    # by hand: x 14 * 8/7 = 16, y 28 * 8/7 = 32, w 56 * 8/7 = 64, h 84 * 8/7 = 96;
    #          x 161 * 8/7 = 184, y 7 * 8/7 = 8, w 49 * 8/7 = 56, h 14 * 8/7 = 16
    assert xywh == pytest.approx(np.array([[16, 32, 64, 96], [184, 8, 56, 16]]), abs=1e-4)


def test_boxes_outside_the_input_are_clamped_before_mapping(monkeypatch):
    det = _detector_at(256, 224, monkeypatch, torch.tensor([[-7.0, 210.0, 231.0, 238.0]]))
    ((xywh, _, _),) = det.predict(np.array([0]))
    # clamped to [0, 224] in input pixels: (0, 210, 224, 224) -> x 0, y 240, w 256, h 16
    assert xywh == pytest.approx(np.array([[0, 240, 256, 16]]), abs=1e-4)


def test_ground_truth_is_scaled_into_input_pixels_as_centre_and_size():
    boxes = [np.array([[16.0, 32.0, 64.0, 96.0]], dtype=np.float32), np.zeros((0, 4), np.float32)]
    labels = [np.array([1]), np.zeros(0, dtype=np.int64)]
    gt, lab, valid = _padded_gt(boxes, labels, np.array([0, 1]), 224 / 256, torch.device("cpu"))
    # prepared xywh (16, 32, 64, 96) * 0.875 = (14, 28, 56, 84): centre (42, 70), size 56 x 84
    assert gt[0, 0].tolist() == pytest.approx([42.0, 70.0, 56.0, 84.0])
    assert lab[0, 0].item() == 1 and valid.tolist() == [[True], [False]]

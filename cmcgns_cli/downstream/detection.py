"""Detection (``rsna-det``, ``object-cxr-det``): the YOLOv3-style head of ``yolo.py`` on the
frozen pretrained ResNet (``--full`` trains the backbone too), scored by COCO mAP.

Defaults (the published MGCA detection protocol the paper follows): 50 epochs, AdamW lr 1e-3,
batch 16; the epoch with the best validation
mAP is kept. ``evaluate`` writes ``metrics.json``, ``coco_gt.json`` and
``coco_predictions.json`` (prepared-image pixels) so the numbers can be re-scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from cmcgns_cli import jsonio
from cmcgns_cli.data.prepared import Prepared, atomic_write_text, open_prepared
from cmcgns_cli.downstream import dense
from cmcgns_cli.downstream.classification import (
    finetune_bytes,
    load_finetune_record,
    write_metrics,
    write_subset_and_history,
)
from cmcgns_cli.downstream.det_bootstrap import MapResampler
from cmcgns_cli.downstream.det_mgca import MgcaImages, mgca_postprocess, scored_images
from cmcgns_cli.downstream.encoder import EncoderSource, build_encoder
from cmcgns_cli.downstream.intervals import attach_ci
from cmcgns_cli.downstream.pools import data_protocol
from cmcgns_cli.downstream.selectable import check_selectable
from cmcgns_cli.downstream.tasks import get_dense_task
from cmcgns_cli.downstream.yolo import STAGES, YoloHead, default_anchors, postprocess, yolo_loss
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.metrics import coco_detections, coco_ground_truth, mean_average_precision
from cmcgns_cli.outdir import RERUN, check_space
from cmcgns_cli.train.checkpoint import load_weights, save_weights

DEFAULTS = {"epochs": 50, "lr": 1e-3, "batch_size": 16}
PRED_BATCH = 32


class Detector:
    """Encoder + head + anchors, with the plumbing from prepared rows to boxes."""

    def __init__(self, encoder, source: EncoderSource, num_classes: int, full: bool,
                 prepared: Prepared, device: torch.device):  # fmt: skip
        if encoder.kind != "resnet":
            raise BadInputError(f"detection needs a ResNet encoder; {source.arch} has no stages")
        self.encoder, self.full, self.prepared, self.device = encoder, full, prepared, device
        self.size = dense.input_size(source, prepared.image_size)
        self.scale = self.size / prepared.image_size  # prepared pixels -> input pixels
        self.anchors = default_anchors(self.size).to(device)
        encoder.to(device).eval()
        encoder.requires_grad_(full)
        with torch.no_grad():
            probe = encoder.stages(torch.zeros(1, 3, self.size, self.size, device=device))
        self.head = YoloHead(tuple(probe[k].shape[1] for k in STAGES), num_classes).to(device)
        self.cache = dense.FeatureCache(self._stages, len(prepared))

    def _stages(self, rows: np.ndarray) -> list[torch.Tensor]:
        x = dense.model_input(self.prepared, rows, self.size).to(self.device)
        maps = self.encoder.stages(x)
        return [maps[k] for k in STAGES]

    def features(self, rows: np.ndarray, training: bool) -> list[torch.Tensor]:
        if self.full:
            self.encoder.train(training)
            with torch.set_grad_enabled(training):
                return self._stages(rows)
        return [t.to(self.device) for t in self.cache.get(rows)]

    def module(self) -> torch.nn.Module:
        parts = {"head": self.head}
        if self.full:
            parts["encoder"] = self.encoder
        return torch.nn.ModuleDict(parts)

    @torch.no_grad()
    def predict(
        self, rows: np.ndarray, authors_rule: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per row: boxes (n, 4) [x, y, w, h] in prepared pixels, scores, class indices.

        ``authors_rule``: the published evaluation's decoding (objectness >= 0.5, its NMS;
        ``det_mgca.mgca_postprocess``) instead of this project's (``yolo.postprocess``)."""
        self.head.eval()
        decoder = mgca_postprocess if authors_rule else postprocess
        out = []
        for start in range(0, len(rows), PRED_BATCH):
            idx = rows[start : start + PRED_BATCH]
            preds = self.head(self.features(idx, training=False))
            for boxes, scores, labels in decoder(preds, self.anchors):
                # the authors score their boxes unclipped; this project clips to the image
                boxes = boxes if authors_rule else boxes.clamp(0, self.size)
                xywh = box_convert(boxes, "xyxy", "xywh") / self.scale
                out.append((xywh.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()))
        return out


def _padded_gt(boxes: list[np.ndarray], labels: list[np.ndarray], rows: np.ndarray, scale: float,
               device: torch.device) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """(B, G, 4) cxcywh in input pixels, (B, G) labels, (B, G) valid, G = most boxes in batch."""
    g = max(1, max(len(boxes[r]) for r in rows))
    gt = torch.zeros(len(rows), g, 4)
    lab = torch.zeros(len(rows), g, dtype=torch.long)
    valid = torch.zeros(len(rows), g, dtype=torch.bool)
    for i, r in enumerate(rows):  # padding only; the loss itself is vectorised
        n = len(boxes[r])
        if n:
            gt[i, :n] = box_convert(torch.from_numpy(boxes[r]) * scale, "xywh", "cxcywh")
            lab[i, :n] = torch.from_numpy(labels[r])
            valid[i, :n] = True
    valid &= (gt[..., 2] > 0) & (gt[..., 3] > 0)
    return gt.to(device), lab.to(device), valid.to(device)


def score_detections(prepared: Prepared, rows: np.ndarray, preds: list, boxes: list,
                     labels: list, names: list[str]) -> tuple[dict, dict, list[dict]]:  # fmt: skip
    """(metrics, COCO ground truth, COCO detections) for ``rows``."""
    ids = prepared.manifest["id"].iloc[rows].astype(str).tolist()
    gt = coco_ground_truth(ids, [boxes[r] for r in rows], [labels[r] for r in rows], names)
    dets = coco_detections([p[0] for p in preds], [p[1] for p in preds], [p[2] for p in preds])
    return mean_average_precision(gt, dets), gt, dets


COCO_RULE = (
    "pycocotools over all test images (images without a box count: their detections are "
    "false positives; a missed box is a miss); detections: sigmoid(objectness) x "
    "sigmoid(class) > 0.01, class-wise NMS at IoU 0.5, at most 100 per image"
)
MGCA_RULE = (
    "the published evaluation: detections with objectness >= 0.5, NMS at IoU 0.5 (darknet "
    "+1 pixel IoU), only test images with at least one box and one detection scored, "
    "torchmetrics 0.8 MeanAveragePrecision arithmetic (float32 recall points)"
)


def _authors_map(
    test_rows: np.ndarray, boxes: list, labels: list, authors: list
) -> tuple[MgcaImages, np.ndarray]:
    """(the matches of every test image under the authors' rule, positions of the images
    that rule scores). Boxes go to xyxy in prepared pixels (IoU does not depend on scale)."""

    def xyxy(b: np.ndarray) -> np.ndarray:
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)

    gt_boxes = [xyxy(boxes[int(r)]) for r in test_rows]
    gt_labels = [labels[int(r)] for r in test_rows]
    mg = MgcaImages(gt_boxes, gt_labels, [xyxy(p[0]) for p in authors],
                    [p[1] for p in authors], [p[2] for p in authors])  # fmt: skip
    scored = scored_images([len(b) for b in gt_boxes], [len(p[0]) for p in authors])
    return mg, scored


def unscored_reason(n_box: list[int] | np.ndarray, n_det: list[int] | np.ndarray) -> str:
    """Why the published rule gives no mAP: it scores only the test images with at least one
    ground-truth box and one detection at objectness >= 0.5, and none has both. ``n_box`` /
    ``n_det``: per test image, its boxes / its detections under that rule. The counts name
    which side is empty (no box in the split, or a detector below the threshold)."""
    has_box, has_det = np.asarray(n_box) > 0, np.asarray(n_det) > 0
    return (
        "the published (mgca) rule scored no image: it scores only test images with both a "
        f"ground-truth box and a detection with objectness >= 0.5; of {len(has_box)} test "
        f"images {int(has_box.sum())} have a box, {int(has_det.sum())} have such a "
        f"detection, {int((has_box & has_det).sum())} both (map_coco scores all of them)"
    )


def finetune_det(
    *, task_name: str, data: Path, checkpoint: str, out: Path, fraction: float, full: bool,
    arch: str | None, image_weights: Path | None, epochs: int | None, lr: float | None,
    batch_size: int | None, seed: int, device: torch.device, fraction_sampler: str | None = None,
    allow_partial: bool = False,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    prepared = open_prepared(data)
    task = get_dense_task(task_name, prepared)
    check_selectable(task_name, task.kind, task.metric, prepared)
    boxes, labels, names = dense.box_targets(prepared, task)
    flags = dense.has_target_flags(task, boxes, None)
    p = dense.plan(prepared, task, flags, fraction=fraction, seed=seed,
                   fraction_sampler=fraction_sampler, checkpoint=checkpoint, arch=arch,
                   image_weights=image_weights, allow_partial=allow_partial,
                   input_size=input_size)  # fmt: skip
    train_rows, val_rows, chosen, pool = p.train_rows, p.val_rows, p.chosen, p.pool
    source, sampler = p.source, p.sampler
    det = Detector(build_encoder(source), source, len(names), full, prepared, device)
    hp = {k: v if v is not None else DEFAULTS[k]
          for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size))}  # fmt: skip

    def step(idx: np.ndarray) -> dict[str, torch.Tensor]:
        gt, lab, valid = _padded_gt(boxes, labels, idx, det.scale, device)
        return yolo_loss(det.head(det.features(idx, training=True)), gt, lab, valid, det.anchors)

    def validate() -> dict[str, float]:
        return score_detections(prepared, val_rows, det.predict(val_rows), boxes, labels, names)[0]

    module = det.module()
    params = [p for p in module.parameters() if p.requires_grad]
    keep_encoder = full or source.weights_file is None
    # room for what this writes, before training rather than after it
    weights = [det.head.state_dict(), *([det.encoder.state_dict()] if keep_encoder else [])]
    check_space(out, finetune_bytes(weights, prepared, chosen), "the finetuned weights", RERUN)
    fit = dense.train(module, params, chosen, step, validate, task.metric, seed=seed, **hp)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "head.safetensors", det.head.state_dict())
    # A random-init encoder is saved too: evaluate then does not depend on torch's init code
    # drawing the same weights from the recorded seed on another version.
    if keep_encoder:
        save_weights(out / "encoder.safetensors", det.encoder.state_dict())
    write_subset_and_history(out, prepared, chosen, fit.history)
    record = {
        **dense.common_record(task, data, source, fraction, seed, full, hp, fit, chosen, flags,
                              train_rows, val_rows, sampler, pool),
        "saved_encoder": keep_encoder, "class_names": names, "input_size": det.size,
        "data_image_size": int(prepared.image_size),  # px; evaluate warns on other data
        "anchors": det.anchors.cpu().tolist(), "anchors_rule": "YOLOv3 defaults (input pixels)",
    }  # fmt: skip
    dense.write_record(out, record)
    return record


def evaluate_det(task_name: str, data: Path, finetuned: Path, device: torch.device,
                 save_examples: int = 0, out: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Score on the test split; write metrics.json, the COCO files and the examples in ``out``
    (default: beside the head)."""
    finetuned = Path(finetuned)
    dest = Path(out) if out is not None else finetuned
    dest.mkdir(parents=True, exist_ok=True)
    record = load_finetune_record(finetuned, task_name)
    prepared = open_prepared(data)
    task = get_dense_task(task_name, prepared)
    boxes, labels, names = dense.box_targets(prepared, task)
    if names != record["class_names"]:
        known = set(record["class_names"])
        if not set(names) <= known:
            raise BadInputError(
                f"{data}: box classes {names} differ from training's {record['class_names']}"
            )
        index = {n: i for i, n in enumerate(record["class_names"])}
        labels = [np.asarray([index[names[v]] for v in lab], dtype=np.int64) for lab in labels]
        names = record["class_names"]
    test_rows = dense.dense_rows(prepared, "test")
    source = EncoderSource(**record["encoder"])
    encoder = build_encoder(source)
    if record["saved_encoder"]:
        encoder.load_state_dict(load_weights(finetuned / "encoder.safetensors"))
    det = Detector(encoder, source, len(names), False, prepared, device)
    if record.get("anchors") is not None:  # decode with the anchors the head was trained on
        det.anchors = torch.tensor(record["anchors"], dtype=torch.float32, device=device)
    det.head.load_state_dict(load_weights(finetuned / "head.safetensors"))
    det.head.to(device)
    preds = det.predict(test_rows)
    coco, gt, dets = score_detections(prepared, test_rows, preds, boxes, labels, names)
    atomic_write_text(dest / "coco_gt.json", jsonio.dumps(gt))
    atomic_write_text(dest / "coco_predictions.json", jsonio.dumps(dets))
    has_box = np.array([len(boxes[int(r)]) > 0 for r in test_rows])
    coco_fn = MapResampler(gt, dets)
    coco_set = {"fn": coco_fn, "n": len(test_rows), "strata": has_box, "strata_name": "has a box"}
    metrics = {
        "map": coco["map"], "map50": coco["map50"], "map_images_scored": len(test_rows),
        "map_coco": coco["map"], "map50_coco": coco["map50"],
        "map_coco_images_scored": len(test_rows),
    }  # fmt: skip
    rules = {"map": COCO_RULE, "map_coco": COCO_RULE}
    sets, headline = {"map_coco": coco_set, "map": coco_set}, coco_fn
    null_reasons: dict[str, str] = {}
    if data_protocol(prepared) == "mgca":
        authors = det.predict(test_rows, authors_rule=True)
        mg, scored = _authors_map(test_rows, boxes, labels, authors)
        metrics.update({**mg.scores(scored), "map_images_scored": len(scored)})
        if len(scored) == 0:
            why = unscored_reason([len(boxes[int(r)]) for r in test_rows],
                                  [len(p[0]) for p in authors])  # fmt: skip
            rules["map"] = f"{MGCA_RULE}; null here: {why}"
            # the null map (and the headline value) carry this reason, not the generic one
            null_reasons = {"map": why, "map50": why}
            if task.metric in null_reasons:
                null_reasons["value"] = why
        else:
            rules["map"] = MGCA_RULE
        sets["map"] = {"fn": lambda idx: mg(scored[idx]), "n": len(scored), "strata": None,
                       "strata_name": None}  # fmt: skip
        is_scored = np.isin(np.arange(len(test_rows)), scored)

        def headline(idx: np.ndarray) -> float:  # compare: the rule applied to a resample
            return mg(idx[is_scored[idx]])

    result = {
        **({"null_reasons": null_reasons} if null_reasons else {}),
        "task": task.name, "metric": task.metric, "value": metrics[task.metric],
        "metrics": metrics, "metric_rules": rules, "iou_thresholds": "0.4:0.05:0.75",
        "files": {"ground_truth": "coco_gt.json", "predictions": "coco_predictions.json"},
        "protocol": dense.protocol(prepared, record, len(test_rows)),
        "per_image": {
            "kind": "stat", "fns": {task.metric: headline}, "n": len(test_rows),
            "strata": has_box, "strata_name": "has a box", "sets": sets,
        },
    }  # fmt: skip
    write_metrics(dest, attach_ci(result))
    if save_examples:
        from cmcgns_cli.downstream.examples import save_box_examples

        save_box_examples(
            dest / "examples", prepared, test_rows, boxes, preds, names, save_examples
        )
    return result

"""Segmentation (``siim-seg``, ``rsna-seg``): a U-Net on the frozen pretrained encoder.

ResNets: segmentation-models-pytorch's ``Unet`` whose encoder receives our
``image_encoder.safetensors`` weights (torchvision keys minus ``fc``; loaded strictly, no key
may be missing). ``resnet50``/``resnet18`` use smp's own encoders; ``resnet_tiny``
(torchvision ``ResNet(BasicBlock, [1, 1, 1, 1])``) uses smp's ``ResNetEncoder`` class built
with those layers, so the decoder is the same code. ViTs: patch tokens -> a progressive-
upsampling decoder (SETR-PUP style, four x2 steps).

Loss (paper): 10 x focal (gamma 2) + soft Dice. Metric: mean over test images of per-image
Dice at probability 0.5, an empty truth scoring 1 when the prediction is empty, else 0.
Defaults: 50 epochs, AdamW lr 5e-4, batch 16; best validation Dice kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from cmcgns_cli.data.prepared import Prepared, open_prepared
from cmcgns_cli.downstream import dense
from cmcgns_cli.downstream.classification import (
    finetune_bytes,
    load_finetune_record,
    write_metrics,
    write_subset_and_history,
)
from cmcgns_cli.downstream.encoder import EncoderSource, build_encoder
from cmcgns_cli.downstream.intervals import attach_ci
from cmcgns_cli.downstream.pools import data_protocol
from cmcgns_cli.downstream.selectable import check_selectable
from cmcgns_cli.downstream.tasks import get_dense_task
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.metrics import dice, dice_batch_mean, dice_per_image
from cmcgns_cli.outdir import RERUN, check_space
from cmcgns_cli.train.checkpoint import load_weights, save_weights

DEFAULTS = {"epochs": 50, "lr": 5e-4, "batch_size": 16}
FOCAL_WEIGHT = 10.0
PRED_BATCH = 32


def smp_unet(arch: str) -> nn.Module:
    """smp's U-Net (one output channel) with a ResNet encoder matching ``arch``, no weights."""
    import segmentation_models_pytorch as smp

    if arch in ("resnet50", "resnet18"):
        return smp.Unet(arch, encoder_weights=None, classes=1)
    if arch == "resnet_tiny":
        from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
        from torchvision.models.resnet import BasicBlock

        # Test-sized arch: a lighter decoder than smp's default (256, ..., 16) channels.
        unet = smp.Unet("resnet18", encoder_weights=None, classes=1,
                        decoder_channels=(64, 32, 16, 16, 8))  # fmt: skip
        unet.encoder = ResNetEncoder(
            out_channels=list(unet.encoder.out_channels), depth=5, block=BasicBlock,
            layers=[1, 1, 1, 1],
        )  # fmt: skip
        return unet
    raise BadInputError(f"no U-Net encoder for {arch}")


def load_into_unet(unet: nn.Module, backbone_state: dict[str, Tensor]) -> None:
    """Our torchvision-keyed encoder weights into ``unet.encoder``; ``fc`` dropped. Raises
    when any key is missing or unexpected."""
    state = {k: v for k, v in backbone_state.items() if not k.startswith("fc.")}
    # nn.Module's own method: smp's override returns None instead of the key lists.
    missing, unexpected = nn.Module.load_state_dict(unet.encoder, state, strict=False)
    if missing or unexpected:
        raise BadInputError(
            f"encoder weights do not fit the U-Net encoder: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )


class PUPDecoder(nn.Module):
    """Progressive upsampling: four (conv3x3, BN, ReLU, x2 upsample) steps, then 1x1 conv."""

    def __init__(self, in_dim: int, width: int = 128, steps: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_dim
        for _ in range(steps):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="bilinear")]  # fmt: skip
            c = width
        layers.append(nn.Conv2d(width, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class SegNet(nn.Module):
    """Encoder (frozen unless ``full``) + decoder; ``encode`` and ``decode`` split so the
    frozen encoder's outputs can be cached."""

    def __init__(self, encoder, source: EncoderSource):
        super().__init__()
        self.kind = encoder.kind
        if encoder.kind == "resnet":
            self.unet = smp_unet(source.arch)
            load_into_unet(self.unet, encoder.backbone.state_dict())
            self.encoder_prefix = "unet.encoder."
        else:
            self.vit = encoder
            self.pup = PUPDecoder(encoder.out_dim)
            self.encoder_prefix = "vit."

    @property
    def encoder_module(self) -> nn.Module:
        return self.unet.encoder if self.kind == "resnet" else self.vit

    def encode(self, x: Tensor) -> list[Tensor]:
        if self.kind == "resnet":
            return list(self.unet.encoder(x)[1:])  # stem, layer1..layer4
        _, tokens, (h, w) = self.vit.features(x)
        return [tokens.transpose(1, 2).reshape(len(x), -1, h, w)]

    def decode(self, feats: list[Tensor], size: int) -> Tensor:
        """(B, 1, size, size) logits."""
        if self.kind == "resnet":
            stub = feats[0].new_empty(len(feats[0]), 0, size, size)  # smp reads only its shape
            return self.unet.segmentation_head(self.unet.decoder([stub, *feats]))
        logits = self.pup(feats[0])
        return (
            logits
            if logits.shape[-1] == size
            else F.interpolate(logits, size=(size, size), mode="bilinear")
        )

    def head_state(self, full: bool) -> dict[str, Tensor]:
        return {
            k: v
            for k, v in self.state_dict().items()
            if full or not k.startswith(self.encoder_prefix)
        }


def mixed_loss(logits: Tensor, target: Tensor) -> dict[str, Tensor]:
    """10 x focal (gamma 2, no alpha) + (1 - soft Dice over the batch)."""
    focal = sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0, reduction="mean")
    prob = torch.sigmoid(logits)
    soft_dice = (2 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
    loss = FOCAL_WEIGHT * focal + (1.0 - soft_dice)
    return {"loss": loss, "focal": focal.detach(), "dice_loss": (1.0 - soft_dice).detach()}


class Segmenter:
    def __init__(self, net: SegNet, source: EncoderSource, full: bool, prepared: Prepared,
                 device: torch.device):  # fmt: skip
        self.net, self.full, self.prepared, self.device = net.to(device), full, prepared, device
        self.size = dense.input_size(source, prepared.image_size)
        net.encoder_module.requires_grad_(full)
        net.encoder_module.eval()
        self.cache = dense.FeatureCache(self._encode, len(prepared))

    def _encode(self, rows: np.ndarray) -> list[Tensor]:
        return self.net.encode(dense.model_input(self.prepared, rows, self.size).to(self.device))

    def logits(self, rows: np.ndarray, training: bool) -> Tensor:
        if self.full:
            self.net.encoder_module.train(training)
            feats = self._encode(rows)
        else:
            self.net.encoder_module.eval()
            feats = [t.to(self.device) for t in self.cache.get(rows)]
        return self.net.decode(feats, self.size)

    def target(self, masks: np.ndarray, rows: np.ndarray) -> Tensor:
        m = torch.from_numpy((np.asarray(masks[rows]) > 0).astype(np.float32)).unsqueeze(1)
        return F.interpolate(m, size=(self.size, self.size), mode="nearest").to(self.device)

    @torch.no_grad()
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Binary masks (n, S, S) uint8 at prepared resolution."""
        self.net.eval()
        out = []
        s = self.prepared.image_size
        for start in range(0, len(rows), PRED_BATCH):
            logit = self.logits(rows[start : start + PRED_BATCH], training=False)
            logit = F.interpolate(logit, size=(s, s), mode="bilinear", align_corners=False)
            out.append((logit[:, 0] > 0).to(torch.uint8).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, s, s), np.uint8)

    @torch.no_grad()
    def predict_input(self, rows: np.ndarray) -> np.ndarray:
        """Binary masks (n, size, size) uint8 at the model's input size (probability > 0.5,
        i.e. logit > 0), where the published evaluation scored them."""
        self.net.eval()
        out = []
        for start in range(0, len(rows), PRED_BATCH):
            logit = self.logits(rows[start : start + PRED_BATCH], training=False)
            out.append((logit[:, 0] > 0).to(torch.uint8).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size), np.uint8)


def finetune_seg(
    *, task_name: str, data: Path, checkpoint: str, out: Path, fraction: float, full: bool,
    arch: str | None, image_weights: Path | None, epochs: int | None, lr: float | None,
    batch_size: int | None, seed: int, device: torch.device, fraction_sampler: str | None = None,
    allow_partial: bool = False,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    prepared = open_prepared(data)
    task = get_dense_task(task_name, prepared)
    check_selectable(task_name, task.kind, task.metric, prepared)
    masks = dense.mask_targets(prepared)
    flags = dense.has_target_flags(task, None, masks)
    p = dense.plan(prepared, task, flags, fraction=fraction, seed=seed,
                   fraction_sampler=fraction_sampler, checkpoint=checkpoint, arch=arch,
                   image_weights=image_weights, allow_partial=allow_partial,
                   input_size=input_size)  # fmt: skip
    train_rows, val_rows, chosen, pool = p.train_rows, p.val_rows, p.chosen, p.pool
    source, sampler = p.source, p.sampler
    seg = Segmenter(SegNet(build_encoder(source), source), source, full, prepared, device)
    hp = {k: v if v is not None else DEFAULTS[k]
          for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size))}  # fmt: skip
    val_truth = np.asarray(masks[val_rows])

    def step(idx: np.ndarray) -> dict[str, Tensor]:
        return mixed_loss(seg.logits(idx, training=True), seg.target(masks, idx))

    def validate() -> dict[str, float]:
        return dice(seg.predict(val_rows), val_truth)

    params = [p for p in seg.net.parameters() if p.requires_grad]
    # A random-init encoder is saved too: evaluate then does not depend on torch's init code
    # drawing the same weights from the recorded seed on another version.
    keep_encoder = full or source.weights_file is None
    # room for what this writes, before training rather than after it
    needed = finetune_bytes([seg.net.head_state(keep_encoder)], prepared, chosen)
    check_space(out, needed, "the finetuned weights", RERUN)
    fit = dense.train(seg.net, params, chosen, step, validate, task.metric, seed=seed, **hp)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "segmenter.safetensors", seg.net.head_state(keep_encoder))
    write_subset_and_history(out, prepared, chosen, fit.history)
    record = {
        **dense.common_record(task, data, source, fraction, seed, full, hp, fit, chosen, flags,
                              train_rows, val_rows, sampler, pool),
        "input_size": seg.size, "saved_encoder": keep_encoder,
        "data_image_size": int(prepared.image_size),  # px; evaluate warns on other data
        "decoder": "smp.Unet" if seg.net.kind == "resnet" else "PUP",
        "loss": "10 x focal(gamma=2) + (1 - soft dice)",
    }  # fmt: skip
    dense.write_record(out, record)
    return record


MGCA_DICE_BATCH = 16  # the authors' segmentation batch size (their test loader keeps it)
PER_IMAGE_RULE = (
    "mean over test images of per-image Dice at the prepared resolution (probability > 0.5); "
    "an empty truth scores 1 if the prediction is empty, else 0"
)
MGCA_RULE = (
    "the published evaluation: per-image Dice at the model input size (mask resized "
    f"nearest), averaged per batch of {MGCA_DICE_BATCH} test images in split order, then "
    "over batches (the last, smaller batch weighs as one)"
)


def _mean_fn(values: np.ndarray):
    def stat(idx: np.ndarray) -> float:
        x = values[idx]
        return float(x.mean()) if len(x) else float("nan")

    return stat


def evaluate_seg(task_name: str, data: Path, finetuned: Path, device: torch.device,
                 save_examples: int = 0, out: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Score on the test split; write metrics.json and the examples in ``out`` (default:
    beside the segmenter)."""
    finetuned = Path(finetuned)
    dest = Path(out) if out is not None else finetuned
    dest.mkdir(parents=True, exist_ok=True)
    record = load_finetune_record(finetuned, task_name)
    prepared = open_prepared(data)
    task = get_dense_task(task_name, prepared)
    masks = dense.mask_targets(prepared)
    test_rows = dense.dense_rows(prepared, "test")
    source = EncoderSource(**record["encoder"])
    net = SegNet(build_encoder(source), source)
    missing, unexpected = net.load_state_dict(
        load_weights(finetuned / "segmenter.safetensors"), strict=False
    )
    bad = [k for k in missing if record["saved_encoder"] or not k.startswith(net.encoder_prefix)]
    if bad or unexpected:
        raise BadInputError(
            f"{finetuned / 'segmenter.safetensors'}: does not match "
            f"(missing {bad[:3]}, unexpected {unexpected[:3]})"
        )
    seg = Segmenter(net, source, False, prepared, device)
    pred = seg.predict(test_rows)
    truth = np.asarray(masks[test_rows])
    metrics = dice(pred, truth)
    per_image = dice_per_image(pred, truth)
    metrics["dice_per_image"] = metrics["dice"]
    has_mask = truth.reshape(len(truth), -1).any(axis=1)
    rules = {"dice_per_image": PER_IMAGE_RULE, "dice": PER_IMAGE_RULE}
    fns = {"dice": _mean_fn(per_image)}
    if data_protocol(prepared) == "mgca":
        at_input = dice_per_image(seg.predict_input(test_rows),
                                  seg.target(masks, test_rows)[:, 0].cpu().numpy())  # fmt: skip
        metrics["dice"] = dice_batch_mean(at_input, MGCA_DICE_BATCH)
        rules["dice"] = MGCA_RULE
        fns["dice"] = lambda idx: dice_batch_mean(at_input[idx], MGCA_DICE_BATCH)
    result = {
        "task": task.name, "metric": task.metric, "value": metrics[task.metric], "metrics": metrics,
        "dice_rule": rules["dice"], "metric_rules": rules,
        "protocol": dense.protocol(prepared, record, len(test_rows)),
        "per_image": {
            "kind": "stat", "fns": fns, "n": len(test_rows),
            "strata": has_mask, "strata_name": "mask present",
        },
    }  # fmt: skip
    write_metrics(dest, attach_ci(result))
    if save_examples:
        from cmcgns_cli.downstream.examples import save_mask_examples

        save_mask_examples(dest / "examples", prepared, test_rows, truth, pred, save_examples)
    return result

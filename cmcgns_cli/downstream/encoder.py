"""Build the image encoder a downstream task starts from: a pretrain run, none, or a file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.bundle import sha256_file
from cmcgns_cli.config import PRESETS, ModelConfig, preset
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_OR_BUNDLE, input_folder

ENCODER_FILE = "image_encoder.safetensors"


@dataclass
class EncoderSource:
    """Where an encoder came from, recorded in finetune.json and metrics.json."""

    checkpoint: str  # run directory, or "none"
    arch: str
    image_size: int
    crop_size: int
    weights_file: str | None
    weights_sha256: str | None
    init_seed: int = 0  # seeds the random init when there is no weights file
    allow_partial: bool = False  # --allow-partial: accept < 95 % of the encoder's tensors
    weights_load: dict[str, Any] | None = None  # the LoadReport of the last load (prefix, counts)

    @property
    def weights_key(self) -> str:
        """Identifies the encoder's weights (the random-init seed when there are none)."""
        return self.weights_sha256 or f"random-init-{self.arch}-seed{self.init_seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_source(
    checkpoint: str,
    arch: str | None,
    image_weights: Path | None,
    init_seed: int = 0,
    allow_partial: bool = False,
    input_size: tuple[int, int] | None = None,
) -> EncoderSource:
    """Work out architecture, input sizes and weights without building anything.

    ``checkpoint``: a pretrain run directory, an exported bundle (its SHA256SUMS is verified)
    or ``none`` (then ``image_weights`` in any layout :mod:`.weights` reads, or random init).
    ``input_size``: (resize, crop) in px for ``none``; default the arch's preset. A random-init
    baseline should see the pretrained run's input size, or the comparison also compares
    resolutions. Raises ``BadInputError`` when it is given with a run or bundle (a pretrained
    encoder keeps the size it was trained at) or is not 16 <= crop <= resize."""
    if checkpoint.lower() == "none":
        arch = arch or "resnet50"
        data = _preset_data_for(arch)
        resize, crop = input_size or (data.image_size, data.crop_size)
        if not 16 <= crop <= resize:
            raise BadInputError(f"--input-size {resize},{crop}: need 16 <= crop <= resize")
        weights = Path(image_weights) if image_weights else None
        if weights is not None and not weights.is_file():
            what = "is a folder, not a file" if weights.is_dir() else "file not found"
            raise BadInputError(f"{weights}: --image-weights {what}")
        return EncoderSource(
            "none", arch, int(resize), int(crop),
            str(weights) if weights else None, sha256_file(weights) if weights else None,
            init_seed, allow_partial,
        )  # fmt: skip
    if input_size is not None:
        raise BadInputError(
            f"--input-size with --checkpoint {checkpoint}: a pretrained encoder is fed at the "
            "input size of its run (config.json); --input-size is for --checkpoint none"
        )
    if image_weights is not None:
        raise BadInputError(
            f"--image-weights {image_weights} with --checkpoint {checkpoint}: give one encoder "
            "(--checkpoint none --image-weights FILE, or a run / bundle)"
        )
    run = input_folder(checkpoint, RUN_OR_BUNDLE, option="--checkpoint", needs=("config.json",))
    cfg_path, weights = run / "config.json", run / ENCODER_FILE
    if not weights.is_file():
        raise BadInputError(f"{weights}: pretrain run has no exported image encoder")
    from cmcgns_cli.bundle import is_bundle, verify_sums
    from cmcgns_cli.train.run import load_run_config

    if is_bundle(run):
        verify_sums(run)

    cfg, _ = load_run_config(run, "--checkpoint")
    if arch and arch != cfg.model.image_encoder:
        raise BadInputError(f"{cfg_path}: run uses {cfg.model.image_encoder}, --arch says {arch}")
    return EncoderSource(
        str(run), cfg.model.image_encoder, cfg.data.image_size, cfg.data.crop_size,
        str(weights), sha256_file(weights), allow_partial=allow_partial,
    )  # fmt: skip


def build_encoder(source: EncoderSource):  # -> ImageEncoder
    """The encoder described by ``source``, with its weights loaded (any layout
    :func:`.weights.load_encoder_weights` reads; the prefix and counts are printed and kept in
    ``source.weights_load``). Raises ``BadInputError`` below 95 % loaded unless
    ``source.allow_partial``."""
    from cmcgns_cli.console import err
    from cmcgns_cli.downstream.weights import load_encoder_weights
    from cmcgns_cli.model.encoders import build_image_encoder

    # A random init is drawn from a recorded seed so evaluate can rebuild the same encoder.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(source.init_seed)
        encoder = build_image_encoder(ModelConfig(image_encoder=source.arch, image_weights=None))
    if source.weights_file:
        head = ("fc.",) if encoder.kind == "resnet" else ("head.",)
        report = load_encoder_weights(
            encoder.backbone, source.weights_file, head, allow_partial=source.allow_partial
        )
        source.weights_load = report.to_dict()
        err.print(report.line(), highlight=False, soft_wrap=True)
    return encoder


def _preset_data_for(arch: str):
    for name in PRESETS:
        cfg = preset(name)
        if cfg.model.image_encoder == arch:
            return cfg.data
    return preset("paper-resnet50").data

"""Open a pretrain run for inference: config, model (eval mode, on a device) and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_OR_BUNDLE, input_folder


@dataclass
class LoadedRun:
    path: Path
    cfg: Any
    model: torch.nn.Module
    tok: Any
    device: torch.device
    weights: str  # best | last | random-init

    @property
    def image_size(self) -> int:
        return int(self.cfg.data.image_size)

    @property
    def crop_size(self) -> int:
        return int(self.cfg.data.crop_size)


def open_run(
    checkpoint: str | Path,
    device: torch.device | str = "cpu",
    *,
    random_init: bool = False,
    weights: str = "auto",
    option: str | None = None,
) -> LoadedRun:
    """Load ``checkpoint`` (a pretrain run directory, or a bundle written by ``cmcgns export``,
    whose SHA256SUMS is verified first). ``weights``: auto (best/ when the run has one, else
    the last weights), best or last. A missing run, a file, a folder without config.json or
    another ``weights`` value is bad input (:class:`BadInputError`, exit 2); ``option`` (e.g.
    ``"--checkpoint"``) is named in the message when given."""
    if weights not in ("auto", "best", "last"):
        raise BadInputError(f"weights {weights!r}: choose auto, best or last")
    from cmcgns_cli.bundle import is_bundle, load_bundle
    from cmcgns_cli.train import checkpoint as ckpt
    from cmcgns_cli.train.evaluate import load_run

    run = input_folder(checkpoint, RUN_OR_BUNDLE, option=option, needs=(ckpt.CONFIG,))
    if is_bundle(run) and not random_init:
        cfg, model, tok, _ = load_bundle(run)
        dev = torch.device(device)
        model.to(dev).eval()
        return LoadedRun(run, cfg, model, tok, dev, "bundle")
    if weights == "auto":
        weights = "best" if (run / ckpt.BEST / ckpt.MODEL).is_file() else "last"
    wfile = run / (f"{ckpt.BEST}/{ckpt.MODEL}" if weights == "best" else ckpt.MODEL)
    if not random_init and not wfile.is_file():
        raise BadInputError(f"{wfile}: the run has no model weights")
    cfg, model, tok = load_run(run, weights=weights, random_init=random_init)
    dev = torch.device(device)
    model.to(dev).eval()
    return LoadedRun(run, cfg, model, tok, dev, "random-init" if random_init else weights)

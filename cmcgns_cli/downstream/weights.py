"""Image-encoder weights from other projects: read the file, find the encoder's keys, load them.

Accepted files (``finetune --image-weights FILE``):

* a torchvision state dict (``torch.save(model.state_dict())``) or a timm one;
* a timm training checkpoint (``{"state_dict": ..., "epoch": ..., "arch": ...}``; the EMA copy
  ``state_dict_ema`` is not used);
* a PyTorch Lightning checkpoint of the MGCA / CM-CGNS family, whose ``state_dict`` holds the
  whole pretraining module: the image encoder's keys sit under a prefix such as
  ``img_encoder_q.model.``;
* a ``.safetensors`` file of any of these key layouts;
* a CLIP-style checkpoint whose visual tower is a stock torchvision ResNet or timm ViT under a
  prefix (e.g. open_clip's timm towers, ``visual.trunk.``).

The prefix is found, not configured: for every key of the file and every ``.`` boundary in it,
the part after the boundary is looked up among the encoder's own keys; the prefix that
explains the most encoder keys wins (ties: the shortest). Pickles are read with
``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, which timm's training script
saves) only: a file that needs arbitrary code to unpickle is refused, never executed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model.weight_files import WRAPPERS, first_difference, read_weights

__all__ = ["WRAPPERS", "LoadReport", "find_prefix", "load_encoder_weights", "read_weights"]

MIN_LOADED = 0.95  # below this share of the encoder's tensors, refuse (--allow-partial overrides)
# OpenAI-format CLIP towers: a ViT with a pre-norm (ln_pre) and a ResNet with an attention-pool
# head and a three-conv stem: neither is the stock torchvision ResNet / timm ViT we build.
OPENAI_CLIP_MARKERS = ("visual.ln_pre.weight", "visual.attnpool.c_proj.weight")


@dataclass
class LoadReport:
    """What loading a weights file did, as printed and recorded in finetune.json / metrics.json.

    ``loaded`` / ``expected``: encoder tensors filled / tensors the encoder has (the unused
    stock classification head excluded); ``missing``: encoder tensors not in the file (or of
    another shape, also counted in ``mismatched``); ``unexpected``: tensors under the prefix
    that the encoder does not have; ``ignored``: tensors outside the prefix (e.g. a text
    encoder)."""

    file: str
    layout: str  # state_dict | lightning | timm | wrapped:<key>
    prefix: str
    loaded: int
    expected: int
    missing: int
    unexpected: int
    mismatched: int
    ignored: int

    @property
    def fraction(self) -> float:
        return self.loaded / self.expected if self.expected else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fraction": round(self.fraction, 6)}

    def line(self) -> str:
        return (
            f"image weights {self.file}: {self.layout}, prefix {self.prefix or '(none)'!r}; "
            f"loaded {self.loaded} of {self.expected} encoder tensors "
            f"({100 * self.fraction:.1f} %), missing {self.missing}, unexpected "
            f"{self.unexpected}, shape mismatches {self.mismatched}, ignored {self.ignored}"
        )


def find_prefix(keys: list[str], own: set[str]) -> tuple[str, int]:
    """The prefix ``p`` maximising ``|{k in keys : k = p + o, o in own}|`` and that count.

    Candidate prefixes end at a ``.`` boundary (or are empty); ties go to the shortest."""
    counts: Counter[str] = Counter()
    for key in keys:
        cuts = [0] + [i + 1 for i, ch in enumerate(key) if ch == "."]
        for cut in cuts:
            if key[cut:] in own:
                counts[key[:cut]] += 1
    if not counts:
        return "", 0
    best = max(counts.values())
    prefix = min((p for p, c in counts.items() if c == best), key=len)
    return prefix, best


def load_encoder_weights(
    backbone: torch.nn.Module,
    path: str | Path,
    head_prefixes: tuple[str, ...],
    *,
    allow_partial: bool = False,
    min_loaded: float = MIN_LOADED,
) -> LoadReport:
    """Load the image-encoder part of ``path`` into ``backbone`` (a stock torchvision ResNet or
    timm ViT) and report it. Raises ``BadInputError`` when fewer than ``min_loaded`` of the
    encoder's tensors (head excluded) load or when the file holds more than ``1 - min_loaded``
    as many tensors the encoder lacks (a larger architecture), unless ``allow_partial``; and
    for OpenAI-format
    CLIP towers, whose architecture differs from the stock models."""
    path = Path(path)
    state, layout = read_weights(path)
    marker = next((m for m in OPENAI_CLIP_MARKERS if any(k.endswith(m) for k in state)), None)
    if marker is not None:
        raise BadInputError(
            f"{path}: an OpenAI-format CLIP visual tower ({marker.split('.')[1]}): its "
            "architecture (pre-norm ViT / attention-pool ResNet) is not the stock timm ViT or "
            "torchvision ResNet; convert it to one first"
        )
    own = backbone.state_dict()
    body = {k for k in own if not k.startswith(head_prefixes)}
    prefix, _ = find_prefix(list(state), set(own))
    mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    fits = {k: v for k, v in mine.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    mismatched = [k for k in mine if k in own and k not in fits]
    report = LoadReport(
        file=str(path),
        layout=layout,
        prefix=prefix,
        loaded=sum(1 for k in body if k in fits),
        expected=len(body),
        missing=sum(1 for k in body if k not in fits),
        unexpected=sum(1 for k in mine if k not in own),
        mismatched=len(mismatched),
        ignored=len(state) - len(mine),
    )
    if report.fraction < min_loaded and not allow_partial:
        first = first_difference(mine, own, head_prefixes)
        example = f"; first differing tensor {first}" if first else ""
        raise BadInputError(
            f"{path}: only {report.loaded} of {report.expected} image-encoder tensors load "
            f"({100 * report.fraction:.1f} % < {100 * min_loaded:.0f} %, prefix "
            f"{prefix or '(none)'!r}){example}; check --arch, or pass --allow-partial"
        )
    if report.unexpected > (1 - min_loaded) * report.expected and not allow_partial:
        extra = next(k for k in mine if k not in own)
        raise BadInputError(
            f"{path}: {report.unexpected} tensors under prefix {prefix or '(none)'!r} that the "
            f"image encoder does not have (e.g. {extra}): another architecture; check --arch, "
            "or pass --allow-partial"
        )
    backbone.load_state_dict(fits, strict=False)
    return report

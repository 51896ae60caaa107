"""``pretrain --init-from RUN_OR_BUNDLE [--init-parts image,text,heads]``: start a new run from
another run's or an exported bundle's weights, nothing else (no optimizer, schedule, step).

The model's state dict splits into three parts by key:

- ``image``: the image encoder, the attention pool of its feature map, its two projections
  and the global vectors' batch normalisation (``image_encoder.``, ``image_pool.``,
  ``image_global_proj.``, ``image_local_proj.``, ``image_global_norm.``): everything between
  the pixels and the image vectors, as ``text`` is for the reports;
- ``text``: the text tower (``text_encoder.``: the BERT, the token projection, the report
  pooling); taking it also takes the source's tokenizer, since a BERT's embedding rows mean
  the source vocabulary's tokens;
- ``heads``: everything else, the objective's parts: the learned temperature, the local
  cross-attention, the predictor, the CM-MIR decoder and the cross-modal k-means state
  (centroids, initialised flag, counters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.checksum import is_bundle, sha256_file, verify_sums
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_OR_BUNDLE, input_folder
from cmcgns_cli.train import checkpoint as ckpt

PARTS = ("image", "text", "heads")
PREFIXES = {
    "image": (
        "image_encoder.",
        "image_pool.",
        "image_global_proj.",
        "image_local_proj.",
        "image_global_norm.",
    ),
    "text": ("text_encoder.",),
}


def part_of(key: str) -> str:
    """The part (``image``, ``text`` or ``heads``) a model state-dict key belongs to."""
    for part, prefixes in PREFIXES.items():
        if key.startswith(prefixes):
            return part
    return "heads"


def parse_parts(text: str) -> tuple[str, ...]:
    """``--init-parts`` ("image,text") -> ("image", "text"), in the order of PARTS.

    Raises BadInputError for an empty list or an unknown part."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in PARTS]
    if bad or not names:
        raise BadInputError(
            f"--init-parts {text!r}: give a comma-separated subset of {', '.join(PARTS)}"
        )
    return tuple(p for p in PARTS if p in names)


def source_files(source: Path, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Where the weights and tokenizer of ``source`` are: ``{"kind": "bundle" | "run",
    "weights": Path, "tokenizer": Path}``. A bundle's SHA256SUMS is verified first; a run
    gives its best/ weights when it has them, else its last ones.

    Raises BadInputError when ``source`` is missing, a file, neither a run directory nor a
    bundle (no config.json; a Hugging Face text-encoder folder is named as such), has no
    weights, or (``parts`` with ``text``) a run has no tokenizer folder."""
    source = input_folder(source, RUN_OR_BUNDLE, option="--init-from", needs=(ckpt.CONFIG,))
    if is_bundle(source):
        verify_sums(source)
        return {
            "kind": "bundle",
            "weights": source / ckpt.MODEL,
            "tokenizer": source / ckpt.TOKENIZER,
        }
    model_type = _hugging_face_model_type(source / ckpt.CONFIG)
    if model_type is not None:  # e.g. a pretrain-text folder or a downloaded BERT
        raise BadInputError(
            f"--init-from {source}: a Hugging Face {model_type} folder (a text encoder alone), "
            f"not a pretrain run or an exported bundle; give it as --text-encoder {source}"
        )
    best = source / ckpt.BEST / ckpt.MODEL
    weights = best if best.is_file() else source / ckpt.MODEL
    if not weights.is_file():
        raise BadInputError(f"--init-from {source}: the run has no weights ({weights})")
    tokenizer = source / ckpt.TOKENIZER
    if "text" in parts and not tokenizer.is_dir():
        # the BERT's embedding rows are that tokenizer's ids: its text part needs it
        raise BadInputError(
            f"--init-from {source}: the run has no tokenizer ({tokenizer}), which its text "
            "part needs; --init-parts image,heads leaves the text tower out"
        )
    return {"kind": "run", "weights": weights, "tokenizer": tokenizer}


def _hugging_face_model_type(config: Path) -> str | None:
    """The ``model_type`` of a Hugging Face ``config.json`` (``"bert"``), None for any other
    file (a pretrain run's config.json has sections, no ``model_type``)."""
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = saved.get("model_type") if isinstance(saved, dict) else None
    return str(found) if found else None


def _is_global_norm(key: str) -> bool:
    """Whether ``key`` is a running statistic of ``model.global_norm`` (``image_global_norm.*``
    or ``text_encoder.global_norm.*``)."""
    return key.startswith("image_global_norm.") or ".global_norm." in key


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def select(
    model_state: dict[str, torch.Tensor],
    source_state: dict[str, torch.Tensor],
    parts: tuple[str, ...],
    where: str,
) -> dict[str, torch.Tensor]:
    """The tensors of ``source_state`` that fill ``parts`` of the model.

    Every key of the model's chosen parts must be in the source with the same shape; the
    first one (in the model's order) that is missing or differs raises BadInputError naming
    it, with both shapes; so does a source tensor of the chosen parts that the model lacks
    (its weights would be dropped silently). Keys of the source outside the chosen parts are
    ignored."""
    taken = {}
    for key, mine in model_state.items():
        if part_of(key) not in parts:
            continue
        theirs = source_state.get(key)
        if theirs is None:
            # a run from before model.global_norm, or one pretrained with none (the paper
            # presets' value), lacks only the batch normalisation's running statistics
            hint = (
                "; the source was pretrained without model.global_norm: add --set "
                "model.global_norm=none to start from it"
                if _is_global_norm(key)
                else ""
            )
            raise BadInputError(
                f"--init-from {where}: the architectures differ: tensor {key} {_shape(mine)} "
                f"is not in the source{hint}"
            )
        if tuple(theirs.shape) != tuple(mine.shape):
            raise BadInputError(
                f"--init-from {where}: the architectures differ: tensor {key} is "
                f"{_shape(theirs)} there, {_shape(mine)} here"
            )
        taken[key] = theirs
    extra = [k for k in source_state if part_of(k) in parts and k not in model_state]
    if extra:  # e.g. a batchnorm source into a none run: its statistics would be dropped
        hint = (
            "; the source was pretrained with model.global_norm=batchnorm: add --set "
            "model.global_norm=batchnorm to start from it"
            if _is_global_norm(extra[0])
            else ""
        )
        raise BadInputError(
            f"--init-from {where}: the architectures differ: tensor {extra[0]} "
            f"{_shape(source_state[extra[0]])} of the source has no place here{hint}"
        )
    if not taken:
        raise BadInputError(f"--init-from {where}: the model has no {'/'.join(parts)} tensors")
    return taken


def load_parts(
    model: torch.nn.Module, weights: Path, parts: tuple[str, ...], where: str
) -> dict[str, Any]:
    """Copy ``parts`` of the safetensors file ``weights`` into ``model`` (in place; the other
    parts keep their fresh initialisation).

    Returns the record config.json keeps: ``{"path", "weights", "sha256" (of the weights
    file, hex), "parts", "tensors" (how many were loaded)}``. Raises BadInputError on a
    mismatch (:func:`select`)."""
    state = model.state_dict()
    taken = select(state, ckpt.load_weights(weights), parts, where)
    with torch.no_grad():
        for key, value in taken.items():
            state[key].copy_(value.to(state[key].dtype))
    return {
        "path": str(Path(where).resolve()),
        "weights": str(Path(weights).resolve()),
        "sha256": sha256_file(weights),
        "parts": list(parts),
        "tensors": len(taken),
    }

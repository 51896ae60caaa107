"""Read an image-weights file (``pretrain`` / ``finetune --image-weights FILE``) into a state
dict, or refuse it in one line naming the file and what is wrong with it.

The kind of file is told from its first bytes, not its name: a torch zip archive starts
``PK``, a legacy torch pickle with the pickle protocol byte ``0x80``, and a safetensors file
with an 8-byte little-endian header length followed by its JSON header ``{`` (the
safetensors format specification). Pickles are read with ``torch.load(weights_only=True)``
(plus ``argparse.Namespace``, which timm's training script saves) only: a file that needs
arbitrary code to unpickle is refused, never executed.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import Tensor

from cmcgns_cli.errors import BadInputError

WRAPPERS = ("state_dict", "model", "module", "net", "encoder")
RESAVE = "re-save its state_dict with torch.save or as .safetensors"


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def sniff(path: Path) -> str:
    """``"torch-zip"``, ``"torch-pickle"``, ``"safetensors"``, ``"empty"`` or ``"other"``:
    the kind of weights file ``path`` is, from its first 9 bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if not head:
        return "empty"
    if head[:2] == b"PK":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-pickle"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "other"


def _first_line(exc: BaseException) -> str:
    """The first sentence of a library's message (torch appends paragraphs of advice)."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__


def _load(path: Path, kind: str) -> object:
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any read failure is a bad input file
            raise BadInputError(
                f"{path}: truncated or damaged safetensors file ({_first_line(exc)}); {RESAVE}"
            ) from None
    try:
        # timm's train.py stores its argparse Namespace beside the weights: a plain attribute
        # bag, safe to rebuild; anything else outside torch's allow-list is refused
        # (torch warns about pickle protocols on the way to its own error: one line is ours)
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad input file
        text = str(exc)
        detail = _first_line(exc)
        if "WeightsUnpickler error:" in text:  # the reason, below torch's advice paragraph
            detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        if "Weights only load failed" in text and "GLOBAL" in text:
            # a pickled object (e.g. a whole nn.Module), not a dict of tensors
            name = text.split("GLOBAL", 1)[1].split()[0]
            why = f"it pickles {name}, which torch.load(weights_only=True) refuses to run"
        elif kind == "torch-zip":
            why = f"truncated or damaged torch file ({detail})"
        else:
            why = f"truncated or damaged torch pickle ({detail})"
        raise BadInputError(f"{path}: cannot read image weights: {why}; {RESAVE}") from None


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """``(state dict, layout)`` of the weights file ``path``.

    ``layout``: ``safetensors``, ``state_dict`` (a plain torch state dict), ``lightning``,
    ``timm`` or ``wrapped:<key>`` (the state dict found under one of :data:`WRAPPERS`).

    Raises:
        BadInputError: one line naming the file and the problem: not found, empty, not a
            torch or safetensors file, truncated or damaged, a pickled object that needs
            code to load, or no state dict of tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise BadInputError(f"{path}: image weights {what}")
    kind = sniff(path)
    if kind == "empty":
        raise BadInputError(f"{path}: image weights file is empty (0 bytes)")
    if kind == "other":
        raise BadInputError(
            f"{path}: not a torch (.pt/.pth) or safetensors file; give a state dict saved "
            "with torch.save or safetensors"
        )
    obj = _load(path, kind)
    if kind == "safetensors":
        return obj, "safetensors"  # type: ignore[return-value]
    if _is_state(obj):
        return obj, "state_dict"  # type: ignore[return-value]
    if isinstance(obj, dict):
        layout = "lightning" if "pytorch-lightning_version" in obj else None
        if layout is None and "arch" in obj and "state_dict" in obj:
            layout = "timm"
        for key in WRAPPERS:
            if _is_state(obj.get(key)):
                return obj[key], layout or f"wrapped:{key}"
    held = f"a {type(obj).__name__}" + (f" of {len(obj)} items" if isinstance(obj, dict) else "")
    raise BadInputError(
        f"{path}: not a state dict: it holds {held} with no dict of tensors at the top level "
        f"or under {', '.join(WRAPPERS)}"
    )


def first_difference(
    state: dict[str, Tensor], own: dict[str, Tensor], optional: tuple[str, ...] = ()
) -> str | None:
    """The first tensor, in the encoder's own order, that ``state`` lacks or holds with
    another shape, then the first one ``state`` has that the encoder lacks; ``None`` when the
    file fits. Keys starting with ``optional`` (a classification head) may be missing.

    Returns a clause like ``"layer1.0.conv1.weight: (64, 64, 3, 3) in the file, (16, 16, 3,
    3) in the encoder"``."""
    for key, value in own.items():
        if key not in state:
            if not key.startswith(optional):
                return f"{key}: in the encoder, not in the file"
        elif tuple(state[key].shape) != tuple(value.shape):
            return (
                f"{key}: {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the encoder"
            )
    extra = next((k for k in state if k not in own), None)
    return None if extra is None else f"{extra}: in the file, not in the encoder"

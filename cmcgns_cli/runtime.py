"""Device choice shared by every subcommand."""

from __future__ import annotations

import torch

from cmcgns_cli.errors import BadInputError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA device is available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BadInputError(f"--device {name!r}: expected auto, cpu or cuda") from None

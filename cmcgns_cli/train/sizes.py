"""Bytes a file will take before it is written: the tensors of a state dict, a safetensors
file (an upper bound from its header layout), and the slack the free-space checks add on
top (a file system allocates whole blocks; torch.save adds zip records and pickles)."""

from __future__ import annotations

import json
from typing import Any

import torch

# bytes on top of the tensors' own: safetensors' JSON header, torch.save's zip records
# (64-byte aligned) and pickles, progress.json, rng.pt
MARGIN = 2**20
# bytes on top of a file's own: the file system allocates whole blocks (4 KiB on ext4 and
# xfs) and extent records; a small JSON or JSON Lines file (finetune.json) fits in it whole
SLACK = 64 * 2**10


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in ``obj`` (a tensor, or dicts / lists / tuples holding them,
    such as a state dict or an optimizer's ``state_dict()``): ``numel * element_size``
    summed, i.e. what safetensors and torch.save write for their data, headers aside."""
    if isinstance(obj, torch.Tensor):
        return int(obj.numel()) * int(obj.element_size())
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def safetensors_bytes(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> int:
    """Bytes the safetensors file of ``state_dict`` takes on disk, an upper bound: its 8-byte
    header length, the JSON header (every dtype written as wide as the widest, ``F8_E4M3``,
    every offset as wide as the file's data size, padded to 8 bytes), the tensors' bytes
    (:func:`tensor_bytes`), and :data:`SLACK`. The layout is safetensors' own (its format
    description: u64 header size, a UTF-8 JSON header, the data). Tensors may be on the
    ``meta`` device: only their shapes and dtypes are read."""
    data = tensor_bytes(state_dict)
    header: dict[str, Any] = {
        name: {"dtype": "F8_E4M3", "shape": list(t.shape), "data_offsets": [data, data]}
        for name, t in state_dict.items()
    }
    # safetensors writes the block even empty (save_weights always passes a dict)
    header["__metadata__"] = {str(k): str(v) for k, v in (metadata or {}).items()}
    text = json.dumps(header, separators=(",", ":"))  # ASCII: escapes only lengthen it
    return 8 + len(text) + 7 + data + SLACK

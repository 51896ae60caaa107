"""Float32 for the loss heads under mixed precision.

Autocast (bf16 on CUDA, as the trainer runs with ``train.amp``) lowers every matmul to bf16
whatever its inputs' dtype, so an explicit ``.float()`` before ``@`` does not keep float32.
bf16 has an 8-bit mantissa: cosines near 1 are resolved to about 0.004 and logits near 100
to 0.5. The loss heads take discrete decisions on such values (k-means assignment, the hard
negative, the false-negative mask, the farthest-point initialisation), so they run with
autocast off and with full-precision float32 matmuls (the trainer turns TF32, a 10-bit
mantissa, on for the rest of the step on CUDA); their inputs are float32 already and the cost
is small next to the encoders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, autocast

# device types torch.autocast accepts; others (``meta``) have no autocast to switch off
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "xla")


@contextlib.contextmanager
def _ieee_matmul() -> Iterator[None]:
    """float32 matmuls at full precision inside (no TF32), the previous setting restored."""
    before = torch.get_float32_matmul_precision()
    if before == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextlib.contextmanager
def full_precision(like: Tensor) -> Iterator[None]:
    """A context with autocast off on ``like``'s device type (nothing to switch off on a
    device type without autocast, e.g. ``meta``) and float32 matmuls without TF32. Tensors
    made inside keep the dtypes of their inputs."""
    kind = like.device.type
    amp = autocast(kind, enabled=False) if kind in _AUTOCAST_DEVICES else contextlib.nullcontext()
    with amp, _ieee_matmul():
        yield

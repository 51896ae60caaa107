"""Float32 for the loss heads under mixed precision.

Autocast (bf16 on CUDA, as the trainer runs with ``train.amp``) lowers every matmul to bf16
whatever its inputs' dtype, so an explicit ``.float()`` before ``@`` does not keep float32.
bf16 has an 8-bit mantissa: cosines near 1 are resolved to about 0.004 and logits near 100
to 0.5. The loss heads take discrete decisions on such values (k-means assignment, the hard
negative, the false-negative mask, the farthest-point initialisation), so they run with
autocast off; their inputs are float32 already and the cost is small next to the encoders.
"""

from __future__ import annotations

import contextlib

from torch import Tensor, autocast

# device types torch.autocast accepts; others (``meta``) have no autocast to switch off
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "xla")


def full_precision(like: Tensor) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``like``'s device type (a no-op context on a device
    type without autocast). Tensors made inside keep the dtypes of their inputs."""
    kind = like.device.type
    if kind not in _AUTOCAST_DEVICES:
        return contextlib.nullcontext()
    return autocast(kind, enabled=False)

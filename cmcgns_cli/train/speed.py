"""GPU speed switches applied to a built model (TrainConfig: channels_last, grad_checkpoint,
compile, sync_bn), without changing any state-dict key.

* channels_last: the image encoder's and the CM-MIR decoder's 4-D weights and the input
  images in NHWC (CUDA only).
* on CUDA always: ``cudnn.benchmark`` and TF32 for fp32 matmuls and convs.
* grad_checkpoint: ResNet residual blocks / ViT blocks recompute their activations in the
  backward pass (``torch.utils.checkpoint``, non-reentrant); BERT through Hugging Face's own
  ``gradient_checkpointing_enable``. BatchNorm layers inside a checkpointed block update their
  running statistics twice per step (as in timm/torchvision checkpointing).
* compile: ``nn.Module.compile`` (in place, so checkpoints keep their keys) on the ResNet stages
  / ViT blocks, the BERT encoder and the CM-MIR decoder; the loss code stays eager (it has
  host-side k-means bookkeeping).
* Fused attention: softmax attention runs through ``scaled_dot_product_attention`` already --
  BERT with ``attn_implementation="sdpa"`` (the transformers default) and the attention
  pooling through ``nn.MultiheadAttention(need_weights=False)``. The local cross-attention uses
  sigmoid weights (the authors' choice), which SDPA (softmax) cannot compute; it stays two
  batched matmuls.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cmcgns_cli.data.paired import model_images


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The image encoder's repeated blocks (ResNet residual blocks or ViT blocks)."""
    enc = getattr(model, "image_encoder", None)
    if enc is None:
        return []
    bb = enc.backbone
    if enc.kind == "resnet":
        return [
            blk for name in ("layer1", "layer2", "layer3", "layer4") for blk in getattr(bb, name)
        ]
    return list(getattr(bb, "blocks", []))


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Checkpoint every image-encoder block and the BERT layers; returns blocks wrapped."""
    n = 0
    for blk in _blocks(model):
        if not getattr(blk, "_cmcgns_ckpt", False):
            blk.forward = functools.partial(_checkpointed, blk.forward)
            blk._cmcgns_ckpt = True
            n += 1
    bert = getattr(getattr(model, "text_encoder", None), "bert", None)
    if bert is not None and hasattr(bert, "activation_checkpointing_enable"):  # transformers 5
        bert.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    elif bert is not None and hasattr(bert, "gradient_checkpointing_enable"):
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        n += int(bert.config.num_hidden_layers)
    return n


def compile_model(model: nn.Module, backend: str = "inductor") -> list[str]:
    """``nn.Module.compile`` the heavy submodules in place; returns their names."""
    names: list[str] = []
    enc = getattr(model, "image_encoder", None)
    if enc is not None:
        bb = enc.backbone
        parts = ("layer1", "layer2", "layer3", "layer4") if enc.kind == "resnet" else ("blocks",)
        for name in parts:
            if hasattr(bb, name):
                getattr(bb, name).compile(backend=backend, dynamic=False)
                names.append(f"image_encoder.backbone.{name}")
    bert = getattr(getattr(model, "text_encoder", None), "bert", None)
    if bert is not None:
        bert.compile(backend=backend, dynamic=True)  # report lengths vary per batch
        names.append("text_encoder.bert")
    dec = getattr(model, "decoder", None)
    if dec is not None:
        dec.compile(backend=backend, dynamic=False)
        names.append("decoder")
    return names


def apply(model: nn.Module, tc: Any, device: torch.device, world: int = 1) -> dict[str, Any]:  # noqa: ANN401
    """Apply the TrainConfig speed switches; returns what was applied (for the log)."""
    done: dict[str, Any] = {}
    if device.type == "cuda":
        # cuDNN picks the fastest conv algorithms for the (fixed) crop size, and fp32 matmuls
        # and convs (runs with train.amp off, the fp32 parts under autocast) use TF32
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        done["cudnn_benchmark"] = done["tf32"] = True
    if tc.channels_last and device.type == "cuda" and getattr(model, "image_encoder", None):
        model.image_encoder.to(memory_format=torch.channels_last)
        if getattr(model, "decoder", None) is not None:  # the CM-MIR decoder's 3x3 convs too
            model.decoder.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    if tc.sync_bn and device.type == "cuda" and world > 1:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        done["sync_bn"] = True
    if tc.grad_checkpoint:
        done["grad_checkpoint"] = enable_grad_checkpointing(model)
    if tc.compile:
        done["compile"] = compile_model(model, tc.compile_backend)
    return done


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict:
    """Move a (pinned) batch without blocking; images NHWC when ``channels_last``.

    A batch collated with ``wire=True`` crosses as ``pixels`` (B, 1, H, W), uint8 where the
    crop is whole bytes: the model's 3-channel normalised ``images`` are made of it here, on
    ``device`` after the copy (``data.paired.model_images``, equal to the CPU collate's)."""
    out = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
    if "pixels" in out:
        out["images"] = model_images(out.pop("pixels"))
    if channels_last and out["images"].dim() == 4:
        out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
    return out

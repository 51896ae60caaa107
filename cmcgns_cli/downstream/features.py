"""Frozen-encoder features, computed once per (encoder, dataset) and cached on disk.

Linear probing runs 50-100 epochs over a frozen encoder; running the encoder once and
training the head on stored vectors gives the same head for a fraction of the time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmcgns_cli.console import err, progress
from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.downstream.encoder import EncoderSource
from cmcgns_cli.outdir import free_bytes
from cmcgns_cli.train.sizes import SLACK


def to_model_input(
    images: np.ndarray, image_size: int, crop_size: int, crop_xy: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 (B, S, S) -> float (B, 3, crop, crop) in [-1, 1].

    Resize to ``image_size`` then crop (centre, or at ``crop_xy`` (B, 2) offsets for
    training augmentation). No flips: a flip would swap the laterality the reports name.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1) / 255.0
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if crop_xy is None:
        off = (image_size - crop_size) // 2
        x = x[..., off : off + crop_size, off : off + crop_size]
    else:
        rows = crop_xy[:, 1, None] + torch.arange(crop_size)  # (B, crop)
        cols = crop_xy[:, 0, None] + torch.arange(crop_size)
        b = torch.arange(len(x))[:, None, None]
        x = x[:, 0][b, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def extract(
    encoder: torch.nn.Module,
    prepared: Prepared,
    rows: np.ndarray,
    source: EncoderSource,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Pooled backbone features (N, C) of ``rows``, in row order."""
    encoder.eval().to(device)
    chunks = []
    with progress() as bar:
        task = bar.add_task("features", total=len(rows))
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = to_model_input(prepared.images[idx], source.image_size, source.crop_size)
            chunks.append(encoder.features(x.to(device))[0].float().cpu().numpy())
            bar.advance(task, len(idx))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def cached_features(
    encoder: torch.nn.Module,
    prepared: Prepared,
    source: EncoderSource,
    device: torch.device,
    keep_free: int = 0,
) -> np.ndarray:
    """Features of every row of ``prepared``, from ``PREPARED/.cache`` when present.

    The cache is written only when ``keep_free`` bytes (what the caller still has to write,
    e.g. a finetune's head) stay free beside it: it is optional, the results are not."""
    key = hashlib.sha256(
        f"{source.arch}|{source.weights_key}|{source.image_size}|{source.crop_size}|"
        f"{prepared.meta.get('count')}|{prepared.images.shape}".encode()
    ).hexdigest()[:16]
    path = prepared.root / ".cache" / f"features-{key}.npy"
    if path.is_file():
        return np.load(path)
    feats = extract(encoder, prepared, np.arange(len(prepared)), source, device)
    _try_save(path, feats, keep_free)
    return feats


def _try_save(path: Path, array: np.ndarray, keep_free: int = 0) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # the .npy header is 128 bytes for a 2-D float array; SLACK for the file's blocks
        needed = int(array.nbytes) + 128 + SLACK + int(keep_free)
        free = free_bytes(path.parent)
        if free < needed:
            err.print(
                f"note: not caching features in {path.parent} ({free:,} bytes free, "
                f"{needed:,} needed with the results)"
            )
            return
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only dataset or a full disk: carry on without the cache
        err.print(f"note: cannot cache features in {path.parent} ({exc.strerror})")
    finally:
        # a partial cache left by a full disk would take the room the results were given
        tmp.unlink(missing_ok=True)

"""``evaluate --save-examples N``: PNGs of test images with truth and predictions drawn on.

Ground truth is green, predictions red (boxes with their score; mask outlines). Images
with a finding come first so the pictures show something; file names are the row ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cmcgns_cli.data.prepared import Prepared

TRUTH = (40, 220, 60)
PRED = (235, 50, 40)
MIN_SIDE = 256  # small images are enlarged so the drawing stays legible


def _pick(rows: np.ndarray, positive: np.ndarray, n: int) -> list[int]:
    order = np.argsort(~positive, kind="stable")  # positives first, then row order
    return [int(i) for i in order[:n]]


def _canvas(prepared: Prepared, row: int) -> tuple[Image.Image, float]:
    img = Image.fromarray(np.asarray(prepared.images[row])).convert("RGB")
    zoom = max(1.0, MIN_SIDE / img.width)
    if zoom > 1:
        img = img.resize((round(img.width * zoom), round(img.height * zoom)), Image.NEAREST)
    return img, zoom


def _fresh(out: Path) -> None:
    """An examples folder holding only this evaluation's pictures: earlier PNGs go."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()


def _name(prepared: Prepared, row: int) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(prepared.manifest["id"].iloc[row])) + ".png"


def save_box_examples(out: Path, prepared: Prepared, rows: np.ndarray, boxes: list, preds: list,
                      names: list[str], n: int, min_score: float = 0.3) -> list[Path]:  # fmt: skip
    """``preds[i]`` belongs to ``rows[i]``: (boxes xywh, scores, labels) in prepared pixels.
    Predictions scoring below ``min_score`` are not drawn."""
    _fresh(out)
    written = []
    positive = np.array([len(boxes[r]) > 0 for r in rows])
    for i in _pick(rows, positive, n):
        row = int(rows[i])
        img, z = _canvas(prepared, row)
        draw = ImageDraw.Draw(img)
        for x, y, w, h in boxes[row]:
            draw.rectangle([x * z, y * z, (x + w) * z, (y + h) * z], outline=TRUTH, width=2)
        pb, ps, pl = preds[i]
        for (x, y, w, h), s, lab in zip(pb, ps, pl, strict=True):
            if s < min_score:
                continue
            draw.rectangle([x * z, y * z, (x + w) * z, (y + h) * z], outline=PRED, width=2)
            draw.text((x * z + 2, y * z + 2), f"{names[int(lab)]} {s:.2f}", fill=PRED)
        path = out / _name(prepared, row)
        img.save(path)
        written.append(path)
    return written


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask > 0
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def save_mask_examples(out: Path, prepared: Prepared, rows: np.ndarray, truth: np.ndarray,
                       pred: np.ndarray, n: int) -> list[Path]:  # fmt: skip
    """``truth[i]``/``pred[i]`` are the (S, S) masks of ``rows[i]``."""
    _fresh(out)
    written = []
    positive = truth.reshape(len(truth), -1).max(1) > 0 if len(truth) else np.zeros(0, bool)
    for i in _pick(rows, positive, n):
        row = int(rows[i])
        img, z = _canvas(prepared, row)
        pixels = np.array(img)
        for mask, colour in ((truth[i], TRUTH), (pred[i], PRED)):
            if z > 1:
                big = Image.fromarray((mask > 0).astype(np.uint8) * 255).resize(
                    img.size, Image.NEAREST
                )
                mask = np.asarray(big)
            pixels[_outline(mask)] = colour
        path = out / _name(prepared, row)
        Image.fromarray(pixels).save(path)
        written.append(path)
    return written

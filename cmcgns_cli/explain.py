"""`cmcgns explain`: where each sentence of a report looks in an image, the CM-MIR
reconstruction, and the k-means clusters the sentences fall in.

Writes to ``--out``:
  sentence_NN.png      the sentence-to-patch attention (the model's sigmoid cross-attention
                       of that sentence over the image patches), bilinearly upsampled and
                       drawn as a heat map over the model's input image;
  reconstruction.png   original | masked view | CM-MIR reconstruction from the masked patch
                       features and the report's text-to-image features;
  explain.json         per sentence: text, attention peak (model-input and prepared-image
                       pixels), k-means cluster and its cosine; and the files written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cmcgns_cli.console import emit_json
from cmcgns_cli.console import out as stdout
from cmcgns_cli.embedding.encode import to_device
from cmcgns_cli.embedding.inputs import ImagePrep, TextPrep, prepared_size, text_sentences
from cmcgns_cli.embedding.runs import LoadedRun, open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.runtime import resolve_device

DISPLAY = 256  # px of the longer side of the drawn panels (at least the model input)


def report_text(report: str) -> str:
    """``--report``: a path to a text file, or the report text itself."""
    path = Path(report)
    try:
        if len(report) < 4096 and path.is_file():
            return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    return report


def make_batch(run: LoadedRun, image: torch.Tensor, sentences: list[list[str]]) -> dict:
    """A model batch of B images (B, 1, H, W) and their sentence lists."""
    tp = TextPrep(run.cfg, run.tok)
    items = tp.items(sentences)
    if any(it is None for it in items):
        raise BadInputError("the report has no token the run's tokenizer knows")
    batch = tp.collate(items)
    batch["images"] = image.expand(-1, 3, -1, -1).contiguous()
    return to_device(batch, run.device)


@torch.no_grad()
def attention_grid(run: LoadedRun, batch: dict) -> tuple[torch.Tensor, tuple[int, int]]:
    """Sentence-to-patch attention (B, S, h, w) and the patch grid."""
    att = run.model.attention_maps(batch)  # (B, S, P)
    grid = run.model.encode_image(batch["images"][:1])["grid"]
    h, w = int(grid[0]), int(grid[1])
    return att.reshape(att.shape[0], att.shape[1], h, w).float().cpu(), (h, w)


def upsample(att: torch.Tensor, size: int) -> np.ndarray:
    """(S, h, w) attention -> (S, size, size) by bilinear upsampling (align_corners=False)."""
    return F.interpolate(att[None], size=(size, size), mode="bilinear", align_corners=False)[
        0
    ].numpy()


def peaks(maps: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) of each map's maximum."""
    out = []
    for m in maps:
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        out.append((int(x), int(y)))
    return out


def to_u8(image: torch.Tensor) -> np.ndarray:
    """A model input (1, H, W) in [-1, 1] -> uint8 (H, W)."""
    return np.clip((image[0].float().cpu().numpy() * 0.5 + 0.5) * 255.0, 0, 255).astype(np.uint8)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """BGR uint8: the heat map (min-max scaled, JET colours) blended over the image."""
    h = heat - heat.min()
    h = (255.0 * h / max(float(h.max()), 1e-8)).astype(np.uint8)
    colour = cv2.applyColorMap(h, cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(base, 1.0 - alpha, colour, alpha, 0.0)


def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if img.shape[0] == size:
        return img
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


@torch.no_grad()
def reconstruction(run: LoadedRun, batch: dict, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(masked-view uint8, reconstruction uint8, patch-masked (h, w) bool) for batch item 0."""
    from cmcgns_cli.losses.recon import mask_local_features

    model = run.model
    img = model.encode_image(batch["images"][:1])
    txt = model.encode_text(
        batch["input_ids"][:1],
        batch["attention_mask"][:1],
        batch["sentence_index"][:1],
        batch["num_sentences"][:1],
    )
    t2i, _ = model.cross_attention(img["local"], txt["sentences"], txt["sentence_mask"])
    gen = torch.Generator(device=img["local"].device).manual_seed(seed)
    mode = run.cfg.loss.mask_mode
    masked, patch_masked = mask_local_features(img["local"], run.cfg.loss.mask_ratio, mode, gen)
    size = tuple(batch["images"].shape[-2:])
    pred = model.decoder(masked, t2i, img["grid"])  # (1, 3, H', W')
    if tuple(pred.shape[-2:]) != size:
        pred = torch.nn.functional.interpolate(pred, size=size, mode="bilinear")
    h, w = int(img["grid"][0]), int(img["grid"][1])
    pm = patch_masked[0].reshape(h, w).cpu().numpy()
    original = to_u8(batch["images"][0, :1])
    view = original.copy()
    if mode == "patches":  # grey out the patches whose features were removed
        pix = cv2.resize(pm.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        view[pix.astype(bool)] = 128
    return view, to_u8(pred[0].mean(dim=0, keepdim=True)), pm


@torch.no_grad()
def cluster_of(run: LoadedRun, batch: dict) -> tuple[list[int | None], list[float | None]]:
    """Nearest k-means centroid (by cosine) of each sentence embedding of item 0, as in
    training's cluster assignment; None when the run has no initialised k-means."""
    km = run.model.kmeans
    txt = run.model.encode_text(
        batch["input_ids"][:1],
        batch["attention_mask"][:1],
        batch["sentence_index"][:1],
        batch["num_sentences"][:1],
    )
    n = int(txt["sentence_mask"][0].sum())
    if km is None or not bool(km.initialized):
        return [None] * n, [None] * n
    sims = km.similarities(txt["sentences"][0, :n])
    best = sims.max(dim=1)
    return best.indices.tolist(), [float(v) for v in best.values]


@torch.no_grad()
def sentence_peaks(
    run: LoadedRun, images: torch.Tensor, sentences: list[list[str]]
) -> list[list[tuple[int, int]]]:
    """Attention peak (x, y, model-input pixels) of every sentence of every image of a batch
    (B, 1, H, W): what ``explain`` marks, for measuring where sentences look."""
    batch = make_batch(run, images, sentences)
    att, _ = attention_grid(run, batch)
    size = int(images.shape[-1])
    out = []
    for b in range(att.shape[0]):
        n = int(batch["num_sentences"][b])
        out.append(peaks(upsample(att[b, :n], size)))
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _write_png(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise BadInputError(f"{path}: cannot write the PNG")


def explain_image(
    run: LoadedRun, image_path: str, text: str, out: Path, *, seed: int = 0
) -> dict[str, Any]:
    prep = ImagePrep(run.cfg, prepared_size(_extra(run.path)))
    tensor, error = prep.load(image_path)
    if tensor is None:
        raise BadInputError(f"{image_path}: cannot read the image ({error})")
    sents, reason = text_sentences(text)
    if not sents:
        raise BadInputError(f"--report: no sentence to explain ({reason})")
    batch = make_batch(run, tensor[None], [sents])
    n = int(batch["num_sentences"][0])
    sents = sents[:n]  # sentences beyond max_length / max_sentences are not seen by the model
    att, grid = attention_grid(run, batch)
    crop = int(tensor.shape[-1])
    maps = upsample(att[0, :n], crop)
    gray = to_u8(tensor)
    disp = max(DISPLAY, crop)
    out.mkdir(parents=True, exist_ok=True)
    clusters, cluster_sims = cluster_of(run, batch)
    # model-input pixel -> prepared-image pixel: undo the centre crop and the resize
    off = (run.image_size - crop) // 2
    ratio = prep.prep_size / run.image_size
    records = []
    for s, (sentence, m, (px, py)) in enumerate(zip(sents, maps, peaks(maps), strict=True)):
        name = f"sentence_{s:02d}.png"
        panel = overlay(_resize(gray, disp), _resize(m, disp))
        k = disp / crop
        cv2.drawMarker(panel, (int((px + 0.5) * k), int((py + 0.5) * k)), (255, 255, 255),
                       cv2.MARKER_CROSS, 12, 2)  # fmt: skip
        _write_png(out / name, _label(panel, sentence[:60]))
        records.append(
            {
                "index": s,
                "sentence": sentence,
                "file": name,
                "peak_xy": [px, py],
                "peak_xy_prepared": [round((px + off) * ratio, 1), round((py + off) * ratio, 1)],
                "attention_max": float(m.max()),
                "attention_mean": float(m.mean()),
                "cluster": clusters[s],
                "cluster_cos": cluster_sims[s],
            }
        )
    view, recon, pm = reconstruction(run, batch, seed)
    names = ("original", f"masked ({run.cfg.loss.mask_mode})", "CM-MIR reconstruction")
    panels = [
        _label(cv2.cvtColor(_resize(im, disp), cv2.COLOR_GRAY2BGR), name)
        for im, name in zip((gray, view, recon), names, strict=True)
    ]
    _write_png(out / "reconstruction.png", np.concatenate(panels, axis=1))
    result = {
        "image": str(image_path),
        "checkpoint": str(run.path),
        "weights": run.weights,
        "input_size": crop,
        "grid": list(grid),
        "mask_mode": run.cfg.loss.mask_mode,
        "masked_patches": int(pm.sum()),
        "sentences": records,
        "reconstruction": "reconstruction.png",
        "recon_l1": float(np.abs(recon.astype(np.float32) - gray.astype(np.float32)).mean() / 255),
    }
    (out / "explain.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _extra(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_explain(
    *,
    checkpoint: Path,
    image: str,
    report: str,
    out: Path,
    device: str,
    seed: int,
    as_json: bool,
) -> dict[str, Any]:
    run = open_run(checkpoint, resolve_device(device))
    torch.manual_seed(seed)
    result = explain_image(run, image, report_text(report), Path(out), seed=seed)
    if as_json:
        emit_json(result)
        return result
    from rich.table import Table

    table = Table(title=f"explain {image} -> {out}")
    for col in ("#", "sentence", "peak (x, y)", "cluster", "file"):
        table.add_column(col)
    for r in result["sentences"]:
        cl = "-" if r["cluster"] is None else f"{r['cluster']} ({r['cluster_cos']:.2f})"
        table.add_row(str(r["index"]), r["sentence"], str(tuple(r["peak_xy"])), cl, r["file"])
    stdout.print(table)
    return result

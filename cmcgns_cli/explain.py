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

from cmcgns_cli import jsonio
from cmcgns_cli.console import emit_json
from cmcgns_cli.console import out as stdout
from cmcgns_cli.embedding.encode import to_device
from cmcgns_cli.embedding.inputs import (
    ImagePrep,
    TextPrep,
    prepared_size,
    read_reports,
    text_sentences,
)
from cmcgns_cli.embedding.runs import LoadedRun, open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.runtime import resolve_device

DISPLAY = 256  # px of the longer side of the drawn panels (at least the model input)


def report_text(report: str, reports_format: str = "file") -> str:
    """``--report``: a path to a text file, or the report text itself.

    A file is read by ``reports_format``, the rule of ``embed --reports-format``: ``file``
    (the default) takes the whole file as the report; ``lines`` takes one report a
    non-blank line, and explain needs exactly one. Raises BadInputError."""
    path = Path(report)
    try:
        is_file = len(report) < 4096 and path.is_file()
    except OSError:
        is_file = False
    if not is_file:
        return report
    reports = read_reports(str(path), fmt=reports_format)
    if not reports:
        raise BadInputError(f"--report {path}: holds no report text")
    if len(reports) != 1:
        raise BadInputError(
            f"--report {path}: holds {len(reports)} reports with --reports-format "
            f"{reports_format} (one a line); explain takes one: give --reports-format file "
            "to read the whole file as one report"
        )
    return reports[0][1]


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


# A sentence's attention map whose range (max - min) is below this share of its mean is
# called "uninformative": a colour map stretched over it would show noise as a peak.
FLAT_RELATIVE_RANGE = 0.10


def is_uninformative(heat: np.ndarray) -> bool:
    """True when ``(max - min) < FLAT_RELATIVE_RANGE * |mean|`` (a nearly flat map)."""
    spread = float(heat.max() - heat.min())
    return spread < FLAT_RELATIVE_RANGE * max(abs(float(heat.mean())), 1e-12)


def overlay(
    gray: np.ndarray,
    heat: np.ndarray,
    alpha: float = 0.45,
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """BGR uint8: the heat map (scaled from ``lo`` to ``hi``, default its own min and max;
    JET colours) blended over the image."""  # fmt: skip
    lo = float(heat.min()) if lo is None else lo
    hi = float(heat.max()) if hi is None else hi
    h = np.clip((heat - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colour = cv2.applyColorMap((255.0 * h).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(base, 1.0 - alpha, colour, alpha, 0.0)


def colour_bar(height: int, lo: float, hi: float, width: int = 56) -> np.ndarray:
    """BGR uint8 (height, width): the JET scale from ``lo`` (bottom) to ``hi`` (top) with
    both values and the middle one written beside it."""
    bar = np.zeros((height, width, 3), np.uint8)
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(12, axis=1)
    bar[:, 2:14] = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    for frac, value in ((0.0, hi), (0.5, (lo + hi) / 2), (1.0, lo)):
        y = int(np.clip(frac * (height - 1), 10, height - 4))
        cv2.putText(bar, f"{value:.3g}", (16, y), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return bar


def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if img.shape[0] == size:
        return img
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def dropped_energy_share(local: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per patch, the share of its feature energy that masking removed: ``1 - |masked_p|^2 /
    |local_p|^2`` for (P, D) features before and after masking; float (P,) in [0, 1]."""
    energy = local.float().pow(2).sum(dim=-1)
    kept = masked.float().pow(2).sum(dim=-1)
    return (1.0 - kept / energy.clamp_min(1e-12)).clamp(0.0, 1.0)


@torch.no_grad()
def reconstruction(run: LoadedRun, batch: dict, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(masked-view BGR uint8, reconstruction uint8, patch-masked (h, w) bool, dropped
    (h, w) float, reconstruction value range (lo, hi)) for batch item 0.

    The masked view shows what the masking removed: for channel masking the share of each
    patch's feature energy (sum of squared features) that the dropped channels held, as a
    heat map with its colour bar; for patch or token masking the removed patches greyed out. The
    reconstruction is stretched to its own min..max (it is in the model's output units).
    """
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
    mode = run.model.mask_mode
    masked, patch_masked = mask_local_features(img["local"], run.cfg.loss.mask_ratio, mode, gen)
    size = tuple(batch["images"].shape[-2:])
    pred = model.decoder(masked, t2i, img["grid"])  # (1, 3, H', W')
    if tuple(pred.shape[-2:]) != size:
        pred = torch.nn.functional.interpolate(pred, size=size, mode="bilinear")
    h, w = int(img["grid"][0]), int(img["grid"][1])
    pm = patch_masked[0].reshape(h, w).cpu().numpy()
    dropped = dropped_energy_share(img["local"][0], masked[0]).reshape(h, w).cpu().numpy()
    original = to_u8(batch["images"][0, :1])
    if mode in ("patches", "tokens"):  # grey out the patches whose features were removed
        view = original.copy()
        pix = cv2.resize(pm.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        view[pix.astype(bool)] = 128
        view = cv2.cvtColor(view, cv2.COLOR_GRAY2BGR)
    else:
        share = cv2.resize(dropped.astype(np.float32), (size[1], size[0]),
                           interpolation=cv2.INTER_NEAREST)  # fmt: skip
        view = overlay(original, share, alpha=0.6, lo=0.0, hi=1.0)
    rec = pred[0].float().mean(dim=0).cpu().numpy()  # the decoder predicts 3 channels
    lo, hi = float(rec.min()), float(rec.max())
    stretched = ((rec - lo) / max(hi - lo, 1e-12) * 255.0).astype(np.uint8)
    return view, stretched, pm, dropped, (lo, hi)


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
    n_report = len(sents)
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
        flat = is_uninformative(m)
        panel = overlay(_resize(gray, disp), _resize(m, disp))
        k = disp / crop
        if flat:
            cv2.putText(panel, "uninformative (flat attention)", (4, disp - 8),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
        else:
            cv2.drawMarker(panel, (int((px + 0.5) * k), int((py + 0.5) * k)), (255, 255, 255),
                           cv2.MARKER_CROSS, 12, 2)  # fmt: skip
        panel = np.concatenate(
            [_label(panel, sentence[:60]), colour_bar(disp, float(m.min()), float(m.max()))], axis=1
        )
        _write_png(out / name, panel)
        records.append(
            {
                "index": s,
                "sentence": sentence,
                "file": name,
                "attention": "uninformative" if flat else "peaked",
                "peak_xy": None if flat else [px, py],
                "peak_xy_prepared": None
                if flat
                else [round((px + off) * ratio, 1), round((py + off) * ratio, 1)],
                "attention_min": float(m.min()),
                "attention_max": float(m.max()),
                "attention_mean": float(m.mean()),
                "cluster": clusters[s],
                "cluster_cos": cluster_sims[s],
            }
        )
    view, recon, pm, dropped, (rlo, rhi) = reconstruction(run, batch, seed)
    mode = run.model.mask_mode
    names = (
        "original",
        "masked: share of patch energy dropped" if mode == "channels" else "masked (patches)",
        f"CM-MIR reconstruction [{rlo:.2g}, {rhi:.2g}]",
    )
    bgr = (
        cv2.cvtColor(_resize(gray, disp), cv2.COLOR_GRAY2BGR),
        _resize(view, disp),
        cv2.cvtColor(_resize(recon, disp), cv2.COLOR_GRAY2BGR),
    )
    panels = [_label(im, name) for im, name in zip(bgr, names, strict=True)]
    recon_model = recon.astype(np.float32) / 255.0 * (rhi - rlo) + rlo  # back to [-1, 1] units
    gray_model = gray.astype(np.float32) / 127.5 - 1.0
    _write_png(out / "reconstruction.png", np.concatenate(panels, axis=1))
    result = {
        "image": str(image_path),
        "checkpoint": str(run.path),
        "weights": run.weights,
        "input_size": crop,
        "grid": list(grid),
        "mask_mode": run.model.mask_mode,
        "masked_patches": int(pm.sum()),
        "dropped_energy_share_mean": float(dropped.mean()),
        "reconstruction_range": [rlo, rhi],
        "flat_relative_range": FLAT_RELATIVE_RANGE,
        "sentences": records,
        "sentences_in_report": n_report,
        "sentences_lost": n_report - n,
        "reconstruction": "reconstruction.png",
        # L1 of the model's output against the input, both on the [-1, 1] model scale
        # mean |output - input| on the [0, 1] intensity scale (the output unstretched)
        "recon_l1": float(np.abs(recon_model - gray_model).mean() / 2.0),
    }
    (out / "explain.json").write_text(jsonio.dumps(result, indent=1) + "\n", encoding="utf-8")
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
    reports_format: str = "file",
) -> dict[str, Any]:
    run = open_run(checkpoint, resolve_device(device), option="--checkpoint")
    run.model.require_spatial_tokens("cmcgns explain")
    torch.manual_seed(seed)
    result = explain_image(run, image, report_text(report, reports_format), Path(out), seed=seed)
    if result["sentences_lost"]:
        from cmcgns_cli.console import err

        err.print(
            f"note: the report has {result['sentences_in_report']} sentences; the model sees "
            f"the first {len(result['sentences'])} (data.max_length "
            f"{run.cfg.data.max_length}, data.max_sentences {run.cfg.data.max_sentences})",
            highlight=False,
        )
    if as_json:
        emit_json(result)
        return result
    from rich.table import Table

    table = Table(title=f"explain {image} -> {out}")
    for col in ("#", "sentence", "peak (x, y)", "cluster", "file"):
        table.add_column(col)
    for r in result["sentences"]:
        cl = "-" if r["cluster"] is None else f"{r['cluster']} ({r['cluster_cos']:.2f})"
        peak = "uninformative" if r["peak_xy"] is None else str(tuple(r["peak_xy"]))
        table.add_row(str(r["index"]), r["sentence"], peak, cl, r["file"])
    stdout.print(table)
    return result

"""`cmcgns evaluate --task grounding-{rsna,siim,mscxr}`: does a phrase's attention point at
the finding it names?

The map scored is the one ``explain`` draws: the model's image-to-text sigmoid
cross-attention weights of the phrase (one sentence, the query) over the image patches (the
keys), ``(h, w)`` on the encoder's patch grid (arXiv 2506.11674, Sec. 3.2, the local
alignment; the weights ``sigmoid(q(T) k(V)^T / sqrt(D))`` of the authors' code). It is
bilinearly upsampled (``align_corners=False``) to the model input, the centre crop of the
prepared image resized to ``data.image_size`` (the run's eval transform). The ground-truth
region goes through the same resize (area interpolation, then >= 0.5) and crop, so map and
region are compared pixel for pixel in model-input space. A region cut away entirely by the
crop is skipped and counted. A template class with several prompts scores the mean of their
maps.

Scores per image (``grounding_metrics``): pointing game, CNR, IoU at the thresholds
0.1 ... 0.5 of the min-max scaled map (``miou`` = their mean). A score undefined on an image
(a constant map; for CNR also a map flat inside and outside the region) is null, left out of
the means and intervals, and counted by reason under ``undefined`` (``<score>_n``: the images
each mean used). Means over images overall and
per class, each with its chance level (pointing game: the mean region share of the image,
the hit rate of a uniformly random peak; CNR and mIoU: the same scores of i.i.d. uniform
noise maps on the patch grid, upsampled alike, seed 0) and a bootstrap 95 % interval over
images (``cmcgns_cli.bootstrap``, stratified by class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cmcgns_cli import bootstrap
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.downstream.grounding_data import (
    Items,
    check_dataset,
    mscxr_items,
    template_items,
)
from cmcgns_cli.downstream.grounding_metrics import (
    IOU_THRESHOLDS,
    area_fraction,
    cnr,
    iou_at_thresholds,
    pointing_game,
    undefined_reasons,
)
from cmcgns_cli.errors import BadInputError

TASKS = ("grounding-rsna", "grounding-siim", "grounding-mscxr")
HEADLINE = ("pointing_game", "cnr", "miou")
BATCH = 32


def to_model_space(regions: np.ndarray, image_size: int, crop: int) -> np.ndarray:
    """(N, S, S) bool prepared-pixel regions -> (N, crop, crop) bool, through the eval
    transform's resize to ``image_size`` and centre crop."""
    top = (image_size - crop) // 2
    out = np.zeros((len(regions), crop, crop), bool)
    for i, reg in enumerate(regions):
        r = cv2.resize(
            reg.astype(np.float32), (image_size, image_size), interpolation=cv2.INTER_AREA
        )
        out[i] = r[top : top + crop, top : top + crop] >= 0.5
    return out


@torch.no_grad()
def phrase_maps(
    run: Any, images: np.ndarray, rows: np.ndarray, phrases: list[list[str]]
) -> np.ndarray:
    """(N, crop, crop) float32 attention of each item's phrases (mean over the list) on its
    prepared image ``images[rows[i]]``."""
    from cmcgns_cli.embedding.inputs import ImagePrep
    from cmcgns_cli.explain import attention_grid, make_batch

    prep = ImagePrep(run.cfg, images.shape[1])
    crop = run.crop_size
    flat = [(i, p) for i, plist in enumerate(phrases) for p in plist]
    sums = np.zeros((len(rows), crop, crop), np.float64)
    counts = np.zeros(len(rows))
    for a in range(0, len(flat), BATCH):
        chunk = flat[a : a + BATCH]
        x = torch.stack([prep.tensor(np.asarray(images[int(rows[i])])) for i, _ in chunk])
        batch = make_batch(run, x.to(run.device), [[p] for _, p in chunk])
        att, _ = attention_grid(run, batch)  # (B, 1, h, w)
        up = F.interpolate(att[:, :1], size=(crop, crop), mode="bilinear", align_corners=False)
        for k, (i, _) in enumerate(chunk):
            sums[i] += up[k, 0].numpy()
            counts[i] += 1
    return (sums / counts[:, None, None]).astype(np.float32)


def noise_maps(n: int, grid: tuple[int, int], crop: int, seed: int = 0) -> np.ndarray:
    """(n, crop, crop) i.i.d. uniform maps on the patch grid, upsampled as the real ones."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand((n, 1, *grid), generator=g)
    return F.interpolate(noise, size=(crop, crop), mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()


def score_items(maps: np.ndarray, regions: np.ndarray) -> dict[str, Any]:
    """Per-image scores: pointing_game, cnr, iou (N, T), miou (N,), area (N,) (NaN where
    undefined), and ``undefined``: {score: (N,) reason or None}."""
    iou = iou_at_thresholds(maps, regions)  # regions are non-empty: NaN only on flat maps
    return {
        "pointing_game": pointing_game(maps, regions),
        "cnr": cnr(maps, regions),
        "iou": iou,
        "miou": iou.mean(axis=1),
        "area": area_fraction(regions),
        "undefined": undefined_reasons(maps, regions),
    }


def undefined_counts(scores: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{headline score: {reason: images}} of the per-image scores left out of the means."""
    out: dict[str, dict[str, int]] = {}
    for k in HEADLINE:
        counts: dict[str, int] = {}
        for reason in scores.get("undefined", {}).get(k, []):
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        out[k] = counts
    return out


def _mean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def summarise(
    scores: dict[str, np.ndarray],
    chance: dict[str, np.ndarray],
    classes: list[str],
    n_boot: int = bootstrap.N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Means, per-class means, chance levels and bootstrap intervals of per-image scores."""
    cls = np.asarray(classes)
    strata = bootstrap.strata_of(np.unique(cls, return_inverse=True)[1])
    idx = bootstrap.resample_indices(len(cls), strata, n_boot, seed)
    metrics: dict[str, float | int] = {k: _mean(scores[k]) for k in HEADLINE}
    for t, col in zip(IOU_THRESHOLDS, scores["iou"].T, strict=True):
        metrics[f"iou@{t}"] = _mean(col)
    chance_levels = {
        "pointing_game": _mean(scores["area"]),
        "cnr": _mean(chance["cnr"]),
        "miou": _mean(chance["miou"]),
    }
    for k, v in chance_levels.items():
        metrics[f"{k}_chance"] = v
    # counts are ints (printed as 5, not 5.0000; a mean over seeds keeps them whole)
    metrics["n"] = len(cls)
    for k in HEADLINE:  # images whose score is defined (the mean's denominator)
        metrics[f"{k}_n"] = int(np.isfinite(np.asarray(scores[k], dtype=np.float64)).sum())
    per_class = {}
    for c in sorted(set(classes)):
        sel = cls == c
        per_class[c] = {k: _mean(scores[k][sel]) for k in HEADLINE}
        per_class[c]["pointing_game_chance"] = _mean(scores["area"][sel])
        per_class[c]["n"] = int(sel.sum())
        for k in HEADLINE:
            metrics[f"{k}[{c}]"] = per_class[c][k]
    ci95 = {k: bootstrap.ci_of_mean(scores[k], idx) for k in HEADLINE}
    return {
        "metrics": metrics,
        "per_class": per_class,
        "chance": chance_levels,
        "ci95": ci95,
        "ci95_method": bootstrap.method(n_boot, seed, "class" if len(set(classes)) > 1 else None),
        "undefined": undefined_counts(scores),
    }


def items_for(
    task: str, prepared: Any, prompts_file: Path | None, annotations: Path | None
) -> Items:
    check_dataset(task, prepared)
    if task == "grounding-mscxr":
        if annotations is None:
            raise BadInputError(
                "--task grounding-mscxr needs --annotations MS_CXR_Local_Alignment_v1.1.0.csv "
                "(cmcgns synth writes one under ms-cxr/)"
            )
        return mscxr_items(prepared, annotations)
    if annotations is not None:
        raise BadInputError(f"--annotations applies to grounding-mscxr, not {task}")
    from cmcgns_cli.downstream.zeroshot import load_prompts

    return template_items(task, prepared, load_prompts(prompts_file))


def evaluate_grounding(
    task: str,
    data: Path,
    checkpoint: Path,
    dev: torch.device,
    *,
    prompts_file: Path | None = None,
    annotations: Path | None = None,
    random_init: bool = False,
    n_boot: int = bootstrap.N_BOOT,
) -> dict[str, Any]:
    """Score a pretrain run's phrase grounding on the task's items; see the module doc."""
    from cmcgns_cli.embedding.runs import open_run

    if task not in TASKS:
        raise BadInputError(f"--task {task}: choose one of {', '.join(TASKS)}")
    run = open_run(checkpoint, dev, random_init=random_init)
    run.model.require_spatial_tokens(f"--task {task}")  # before reading any data
    prepared = open_prepared(data)
    items = items_for(task, prepared, prompts_file, annotations)
    crop, size = run.crop_size, run.image_size
    regions = to_model_space(items.regions, size, crop) if len(items.rows) else items.regions
    inside = regions.reshape(len(regions), -1).any(axis=1)
    skipped = {**items.skipped, "region_outside_crop": int((~inside).sum())}
    keep = np.flatnonzero(inside)
    if len(keep) == 0:
        raise BadInputError(f"{data}: no test image with a region to ground for {task} ({skipped})")
    rows = items.rows[keep]
    phrases = [items.phrases[i] for i in keep]
    classes = [items.classes[i] for i in keep]
    regions = regions[keep]
    maps = phrase_maps(run, prepared.images, rows, phrases)
    grid = _grid(run)
    scores = score_items(maps, regions)
    chance = score_items(noise_maps(len(rows), grid, crop), regions)
    summary = summarise(scores, chance, classes, n_boot=n_boot)
    return {
        "task": task,
        "metric": "pointing_game",
        "metrics": summary["metrics"],
        "ci95": summary["ci95"],
        "ci95_method": summary["ci95_method"],
        "extra": {
            **{k: summary["metrics"][k] for k in HEADLINE},
            "per_class": summary["per_class"],
            "chance": summary["chance"],
            "undefined": summary["undefined"],
            "iou_thresholds": list(IOU_THRESHOLDS),
        },
        "per_image": {
            "kind": "mean",
            "values": {k: scores[k] for k in HEADLINE},
            "strata": classes,
            "strata_name": "class",
            "ids": prepared.manifest["id"].iloc[rows].astype(str).tolist(),
        },
        "protocol": {
            "seed": 0,
            "split": "test" if task != "grounding-mscxr" else "annotation file",
            "weights": run.weights,
            "attention": "image-to-text sigmoid cross-attention of the phrase over the patches",
            "grid": list(grid),
            "input_size": crop,
            "phrases": "label_text" if task == "grounding-mscxr" else "class prompt template",
            "annotations": str(annotations) if annotations else None,
            "skipped": skipped,
        },
    }


def _grid(run: Any) -> tuple[int, int]:
    x = torch.zeros(1, 3, run.crop_size, run.crop_size, device=run.device)
    with torch.no_grad():
        g = run.model.encode_image(x)["grid"]
    return int(g[0]), int(g[1])

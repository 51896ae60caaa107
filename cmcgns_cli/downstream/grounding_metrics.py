"""Phrase-grounding scores of attention maps against ground-truth regions, per image.

All functions take a stack of maps ``(N, H, W)`` (any real values: only their order and
spread matter) and boolean regions ``(N, H, W)`` of the same size, and return one value per
image so that means, per-class means and bootstrap intervals are computed from them.

- Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV
  2018): a hit when the map's maximum lies inside the region. The expected hit rate of a
  peak placed uniformly at random is the region's share of the image (``area_fraction``).
  When several pixels share the maximum (a flat top, common after bilinear upsampling at
  the image border) the score is the share of those pixels inside the region: the expected
  hit of a peak picked at random among them, not whichever comes first in memory.
- CNR, contrast-to-noise ratio (Boecking et al., "Making the most of text semantics to
  improve biomedical vision-language processing", ECCV 2022, the MS-CXR benchmark):
  ``|mean_in - mean_out| / sqrt(var_in + var_out)`` over the pixels inside / outside the
  region (population variances). It is unchanged by shifting or scaling the map. Undefined
  (NaN) when the region is empty or covers the whole image, or when the map is flat both
  inside and outside the region (both variances are 0). Flatness is tested exactly (the
  minimum equals the maximum on each side), not on the computed variances: those carry
  rounding noise of ~1e-33 that would turn a two-level map into a CNR of ~1e15 and a
  constant map into ~1.
- IoU of the thresholded map: the map is min-max scaled to [0, 1] per image and the pixels
  above each threshold form the predicted region.

A constant map points nowhere: all three scores are NaN for it. ``undefined_reasons`` says
why each NaN is one, so that summaries leave them out of the means and count them.
"""

from __future__ import annotations

import numpy as np

#: thresholds on the min-max scaled map for the IoU (mIoU = their mean)
IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _flat(maps: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    regions = np.asarray(regions, dtype=bool)
    if maps.shape != regions.shape or maps.ndim != 3:
        raise ValueError(f"maps {maps.shape} and regions {regions.shape} must both be (N, H, W)")
    return maps.reshape(len(maps), -1), regions.reshape(len(regions), -1)


def _constant(m: np.ndarray) -> np.ndarray:
    """(N,) bool: every pixel of the flattened map (N, P) holds the same value."""
    return m.min(axis=1) == m.max(axis=1)


def pointing_game(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(N,) float64 in [0, 1]: 1.0 / 0.0 when each map's maximum is / is not inside its
    region; with a tied maximum, the share of the tied pixels inside; NaN for a constant
    map."""
    m, r = _flat(maps, regions)
    top = m == m.max(axis=1, keepdims=True)
    hit = (top & r).sum(axis=1) / top.sum(axis=1)
    return np.where(_constant(m), np.nan, hit.astype(np.float64))


def area_fraction(regions: np.ndarray) -> np.ndarray:
    """(N,) share of the image inside each region: the pointing game's chance level."""
    r = np.asarray(regions, dtype=bool).reshape(len(regions), -1)
    return r.mean(axis=1)


def cnr(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(N,) contrast-to-noise ratio of each map between inside and outside its region."""
    m, r = _flat(maps, regions)
    n_in = r.sum(axis=1)
    n_out = r.shape[1] - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = (m * r).sum(axis=1) / n_in
        mu_out = (m * ~r).sum(axis=1) / n_out
        var_in = (((m - mu_in[:, None]) ** 2) * r).sum(axis=1) / n_in
        var_out = (((m - mu_out[:, None]) ** 2) * ~r).sum(axis=1) / n_out
        denom = np.sqrt(var_in + var_out)
        out = np.abs(mu_in - mu_out) / denom
    bad = (n_in == 0) | (n_out == 0) | ~(denom > 0) | _two_flat_sides(m, r)
    return np.where(bad, np.nan, out)


def _two_flat_sides(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(N,) bool: the map is constant inside the region and constant outside it (exactly)."""
    inf = np.inf
    flat_in = np.where(r, m, -inf).max(axis=1) == np.where(r, m, inf).min(axis=1)
    flat_out = np.where(~r, m, -inf).max(axis=1) == np.where(~r, m, inf).min(axis=1)
    return flat_in & flat_out


def undefined_reasons(maps: np.ndarray, regions: np.ndarray) -> dict[str, list[str | None]]:
    """Why each image's score is undefined: {"pointing_game" | "cnr" | "miou": (N,) list of
    a reason string, or None where the score is defined}.

    Reasons: "empty region", "region covers the image", "constant map", and for CNR alone
    "flat inside and outside the region" (two flat levels: no noise to compare against).
    """
    m, r = _flat(maps, regions)
    n_in = r.sum(axis=1)
    empty, full = n_in == 0, n_in == r.shape[1]
    const = _constant(m)
    flat2 = _two_flat_sides(m, r)

    def pick(rules: list[tuple[np.ndarray, str]]) -> list[str | None]:
        out: list[str | None] = [None] * len(m)
        for mask, reason in reversed(rules):  # the first rule that applies wins
            for i in np.flatnonzero(mask):
                out[i] = reason
        return out

    iou_rules = [(empty, "empty region"), (const, "constant map")]
    return {
        "pointing_game": pick([(const, "constant map")]),
        "cnr": pick([(empty, "empty region"), (full, "region covers the image"),
                     (const, "constant map"), (flat2, "flat inside and outside the region")]),
        "miou": pick(iou_rules),
    }  # fmt: skip


def iou_at_thresholds(
    maps: np.ndarray, regions: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS
) -> np.ndarray:
    """(N, T) IoU between ``scaled map > t`` and the region, for each threshold ``t``; NaN
    for a constant map (nothing to scale) or when both are empty."""
    m, r = _flat(maps, regions)
    lo, hi = m.min(axis=1, keepdims=True), m.max(axis=1, keepdims=True)
    span = hi - lo
    scaled = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)
    t = np.asarray(thresholds, dtype=np.float64)
    pred = scaled[:, None, :] > t[None, :, None]  # (N, T, P)
    inter = (pred & r[:, None, :]).sum(axis=2)
    union = (pred | r[:, None, :]).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    # a constant map has no scale: no thresholded region to compare (NaN, not IoU 0)
    return np.where(span > 0, iou, np.nan)

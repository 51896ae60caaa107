"""Phrase-grounding scores of attention maps against ground-truth regions, per image.

All functions take a stack of maps ``(N, H, W)`` (any real values: only their order and
spread matter) and boolean regions ``(N, H, W)`` of the same size, and return one value per
image so that means, per-class means and bootstrap intervals are computed from them.

- Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV
  2018): a hit when the map's maximum lies inside the region. The expected hit rate of a
  peak placed uniformly at random is the region's share of the image (``area_fraction``).
- CNR, contrast-to-noise ratio (Boecking et al., "Making the most of text semantics to
  improve biomedical vision-language processing", ECCV 2022, the MS-CXR benchmark):
  ``|mean_in - mean_out| / sqrt(var_in + var_out)`` over the pixels inside / outside the
  region (population variances). It is unchanged by shifting or scaling the map. Undefined
  (NaN) when the region is empty or covers the whole image, or both variances are 0.
- IoU of the thresholded map: the map is min-max scaled to [0, 1] per image and the pixels
  above each threshold form the predicted region (a constant map predicts nothing).
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


def pointing_game(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(N,) float 1.0 / 0.0: is each map's (first) maximum inside its region."""
    m, r = _flat(maps, regions)
    peak = np.argmax(m, axis=1)
    return r[np.arange(len(r)), peak].astype(np.float64)


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
    bad = (n_in == 0) | (n_out == 0) | ~(denom > 0)
    return np.where(bad, np.nan, out)


def iou_at_thresholds(
    maps: np.ndarray, regions: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS
) -> np.ndarray:
    """(N, T) IoU between ``scaled map > t`` and the region, for each threshold ``t``."""
    m, r = _flat(maps, regions)
    lo, hi = m.min(axis=1, keepdims=True), m.max(axis=1, keepdims=True)
    span = hi - lo
    scaled = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)
    t = np.asarray(thresholds, dtype=np.float64)
    pred = scaled[:, None, :] > t[None, :, None]  # (N, T, P)
    inter = (pred & r[:, None, :]).sum(axis=2)
    union = (pred | r[:, None, :]).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)

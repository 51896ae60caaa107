"""Bootstrap 95 % intervals of every evaluate task's headline metric, from its per-image data.

Each evaluate function leaves a ``per_image`` record in its result (kept out of the printed
JSON); ``stat_fns`` turns it into ``metric(indices)`` functions, so the same code gives the
intervals of ``evaluate`` (``attach_ci``) and the paired differences of ``compare``.

What is resampled: test images (classification, segmentation, zero-shot, grounding) or
query images (retrieval: image-to-report recall with the report gallery held fixed).
Strata: the class (single-label), the label pattern (multi-label), whether the image has a
mask (segmentation), whether the image has a box (detection: mAP re-pooled from
pycocotools' per-image matches, ``det_bootstrap``), the class of the phrase (grounding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cmcgns_cli import bootstrap

Stat = Callable[[np.ndarray], float]


def stat_fns(result: dict[str, Any]) -> tuple[dict[str, Stat], int, np.ndarray | None, str | None]:
    """(headline metric -> metric(indices), n, strata, what the strata are) of a result."""
    pi = result.get("per_image")
    if not pi:
        return {}, 0, None, None
    kind = pi["kind"]
    if kind == "mean":
        values = {k: np.asarray(v, dtype=np.float64) for k, v in pi["values"].items()}
        n = len(next(iter(values.values())))
        fns = {k: _mean_of(v) for k, v in values.items()}
        strata = pi.get("strata")
        codes = None if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
        return fns, n, codes, pi.get("strata_name")
    if kind == "stat":  # a metric function of image positions (detection mAP)
        strata = pi.get("strata")
        codes = None if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
        return dict(pi["fns"]), int(pi["n"]), codes, pi.get("strata_name")
    if kind == "scores":  # classification / zero-shot: recompute the metric on the rows
        y, s = np.asarray(pi["y"]), np.asarray(pi["scores"], dtype=np.float64)
        metric_fn = pi["fn"]
        key = result["metric"]
        return {key: lambda idx: metric_fn(y[idx], s[idx])}, len(y), bootstrap.strata_of(y), "label"
    raise ValueError(f"unknown per-image kind {kind!r}")


def _mean_of(v: np.ndarray) -> Stat:
    def stat(idx: np.ndarray) -> float:
        x = v[idx]
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else float("nan")

    return stat


def attach_ci(
    result: dict[str, Any], n_boot: int = bootstrap.N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Add ``ci95`` ({metric: [low, high] or None}) and ``ci95_method`` to ``result``."""
    fns, n, strata, name = stat_fns(result)
    if not fns:
        result["ci95"] = {result["metric"]: None}
        result["ci95_method"] = {"method": "none: no per-image data for this metric"}
        return result
    sets = (result.get("per_image") or {}).get("sets")
    if sets:
        return _attach_ci_sets(result, sets, n_boot, seed)
    idx = bootstrap.resample_indices(n, strata, n_boot, seed)
    result["ci95"] = {k: bootstrap.ci_of_stat(f, idx) for k, f in fns.items()}
    result["ci95_method"] = bootstrap.method(n_boot, seed, name if strata is not None else None)
    return result


def _attach_ci_sets(
    result: dict[str, Any], sets: dict[str, dict[str, Any]], n_boot: int, seed: int
) -> dict[str, Any]:
    """Intervals of metrics that each score their own image set (detection under the
    published protocol: ``map`` scores only the images it keeps, ``map_coco`` all test
    images): each set ``{"fn", "n", "strata", "strata_name"}`` is resampled on its own
    positions, so an interval resamples exactly the images its point estimate used."""
    result["ci95"], methods = {}, {}
    done: dict[int, str] = {}  # a set shared by two keys (grouped: map = map_coco) runs once
    for key, st in sets.items():
        if id(st) in done:
            result["ci95"][key], methods[key] = result["ci95"][done[id(st)]], methods[done[id(st)]]
            continue
        done[id(st)] = key
        strata = st.get("strata")
        codes = None if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
        if st["n"] < 1:
            result["ci95"][key] = None
            methods[key] = {"method": "none: no image scored", "images": 0}
            continue
        idx = bootstrap.resample_indices(int(st["n"]), codes, n_boot, seed)
        result["ci95"][key] = bootstrap.ci_of_stat(st["fn"], idx)
        methods[key] = {
            **bootstrap.method(n_boot, seed, st.get("strata_name") if codes is not None else None),
            "images": int(st["n"]),
        }
    result["ci95_method"] = methods.get(result["metric"], {})
    result["ci95_method_per_metric"] = methods
    return result


def retrieval_hits(sims: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
    """(Q,) 1.0 where a query's most similar gallery item is relevant (R@1 per query)."""
    from cmcgns_cli.metrics import _ranked_hits

    hits = _ranked_hits(sims, 1, keys, keys)
    return np.zeros(0) if hits is None else hits[:, 0].astype(np.float64)

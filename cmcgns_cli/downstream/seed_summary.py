"""The summary over finetune seeds that ``evaluate`` writes to ``metrics.json`` and prints:
per metric the mean, the sample standard deviation over seeds and the first seed's bootstrap
interval, with each seed's own values kept beside them."""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_count(results: list[dict[str, Any]], key: str) -> bool:
    return all(
        isinstance(r["metrics"][key], int) and not isinstance(r["metrics"][key], bool)
        for r in results
    )


def seed_std(values: np.ndarray) -> float | None:
    """Standard deviation over finetune seeds: the sample standard deviation (ddof = 1, the
    n - 1 denominator), which is what papers report as "mean ± std over seeds". ``values``:
    (n_seeds,) float; undefined (NaN) entries are left out. Returns None (JSON null) when
    fewer than two seeds give a defined value, since one value has no spread to estimate."""
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if finite.size >= 2 else None


def summarise_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``metrics.json`` summary of one evaluation's seeds: ``results`` holds one result
    per seed (the first seed's first; each with ``task``, ``metric``, ``metrics``,
    ``protocol`` and optionally ``ci95``, ``null_reasons``). Per metric the mean over the
    seeds (NaN entries left out; None when no seed has a value; counts stay integers when
    every seed saw the same number), :func:`seed_std` and the first seed's bootstrap
    ``ci95``; ``value*`` repeat the headline metric's numbers; ``seeds`` and ``runs`` keep
    each seed's own record."""
    keys = [k for k in results[0]["metrics"]]
    values = {k: np.array([r["metrics"][k] for r in results], dtype=float) for k in keys}
    # counts (test images, pairs) stay integers when every seed saw the same number
    counts = {k for k in keys if _is_count(results, k) and (values[k] == values[k][0]).all()}
    metric = results[0]["metric"]
    mean = {
        k: int(v[0]) if k in counts else float(np.nanmean(v)) if np.isfinite(v).any() else None
        for k, v in values.items()
    }  # fmt: skip
    first = {k: v for k, v in results[0].items() if k not in ("per_image", "extra")}
    std = {k: seed_std(v) for k, v in values.items()}
    ci95 = results[0].get("ci95")
    summary: dict[str, Any] = {
        **first,  # the first seed's record (protocol, encoder, ...) under the summary
        "task": results[0]["task"],
        "metric": metric,
        # one entry per seed: its seed, headline value and every metric
        "seeds": [
            {
                "seed": r["protocol"].get("seed"),
                "value": r["metrics"].get(metric),
                "metrics": r["metrics"],
                # this seed's own reasons for its null metrics (not the first seed's)
                **({"null_reasons": r["null_reasons"]} if r.get("null_reasons") else {}),
            }
            for r in results
        ],  # fmt: skip
        "n_seeds": len(results),
        # one shape each: `value*` keys are the headline metric's numbers (value: its mean
        # over the seeds, one seed: its own); metrics / mean / std / ci95 are dicts keyed by
        # metric name (metrics is mean under its older name)
        "value": mean.get(metric),
        "value_std": std.get(metric),
        "value_ci95": (ci95 or {}).get(metric),
        "metrics": mean,
        "mean": mean,
        "std": std,
        "ci95": ci95,
        "ci95_method": results[0].get("ci95_method"),
        "ci95_method_per_metric": results[0].get("ci95_method_per_metric"),
        "runs": [{k: v for k, v in r.items() if k not in ("per_image", "extra")} for r in results],
    }
    if len(results) > 1:
        summary["ci95_scope"] = "the first seed's predictions (bootstrap over test images)"
    return summary

"""Training pools and label-fraction draws of the two protocols.

``mgca`` draws as the authors' downstream datasets do (MGCA's code, which the CM-CGNS
paper, arXiv 2506.11674 Sec. 4, follows), over the training rows in the order of the
published split tables (manifest column ``mgca_order``, or ``dense_order`` for the RSNA
detection/segmentation split):

- classification: ``train_df.sample(frac=fraction, random_state=42)`` (pandas), whatever
  the run seed; fraction 1 keeps every row.
- detection / segmentation: ``np.random.seed(seed); np.random.choice(n, int(fraction * n),
  replace=False)`` with numpy's legacy generator and the run seed.
- SIIM segmentation first builds a balanced pool: every positive training image plus as
  many negative ones drawn with the same seeded legacy generator; the fraction is then
  drawn from the pool (positives first, then the chosen negatives, in table order),
  continuing the same generator.

``stratified`` is cmcgns's own sampler (:func:`cmcgns_cli.downstream.fractions.
sample_fraction`): every class keeps rows even at 1 %. It is the default of
``--protocol grouped``; the SIIM pool applies under both samplers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.downstream.fractions import sample_fraction
from cmcgns_cli.errors import BadInputError

SAMPLERS = ("auto", "mgca", "stratified")
CLS_SAMPLE_SEED = 42  # the authors' pandas sample(frac, random_state=42)
POOL_TASKS = ("siim-seg",)


def data_protocol(prepared: Prepared) -> str | None:
    """``mgca`` / ``grouped`` as recorded by prepare, or None (user folders, old data)."""
    record = prepared.meta.get("protocol")
    if isinstance(record, dict):
        return record.get("name")
    return (prepared.meta.get("preprocess") or {}).get("protocol")


def resolve_sampler(prepared: Prepared, requested: str | None) -> str:
    """``auto`` -> ``mgca`` for data prepared with ``--protocol mgca``, else ``stratified``.

    Raises BadInputError for an unknown name.
    """
    if requested in (None, "auto"):
        return "mgca" if data_protocol(prepared) == "mgca" else "stratified"
    if requested not in SAMPLERS:
        raise BadInputError(
            f"--fraction-sampler {requested!r}: expected one of {', '.join(SAMPLERS)}"
        )
    return requested


def published_order(prepared: Prepared, rows: np.ndarray, column: str) -> np.ndarray:
    """``rows`` sorted (stably) by their position in the published split table.

    Without the column (user folders, data prepared before it existed) the manifest order
    is kept.
    """
    rows = np.asarray(rows, dtype=np.int64)
    m = prepared.manifest
    if column not in m:
        return rows
    key = pd.to_numeric(m[column].iloc[rows], errors="coerce").to_numpy(dtype=float)
    if np.isnan(key).any():
        return rows
    return rows[np.argsort(key, kind="stable")]


def _empty(fraction: float, n: int) -> BadInputError:
    return BadInputError(
        f"--fraction {fraction}: keeps no image of the {n} training images under the mgca "
        "sampler; use a larger fraction or --fraction-sampler stratified"
    )


def cls_subset(
    prepared: Prepared, train_rows: np.ndarray, targets: np.ndarray, fraction: float,
    seed: int, sampler: str,
) -> np.ndarray:  # fmt: skip
    """Sorted manifest rows of the classification training subset. Raises BadInputError."""
    if sampler == "stratified":
        return train_rows[sample_fraction(targets[train_rows], fraction, seed)]
    ordered = published_order(prepared, train_rows, "mgca_order")
    if fraction >= 1.0:
        return np.sort(ordered)
    table = pd.DataFrame({"row": ordered})
    chosen = table.sample(frac=fraction, random_state=CLS_SAMPLE_SEED)["row"].to_numpy()
    if len(chosen) == 0:
        raise _empty(fraction, len(ordered))
    return np.sort(chosen)


def siim_pool(ordered: np.ndarray, flags: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """Balanced pool: all positives, then ``len(positives)`` negatives drawn from ``rs``
    (fewer when there are fewer negatives), both in table order. ``ordered`` (N,) rows in
    published order, ``flags`` (N,) 0/1 aligned with it."""
    pos = ordered[flags == 1]
    neg = ordered[flags == 0]
    picked = rs.choice(len(neg), size=min(len(pos), len(neg)), replace=False)
    keep = np.zeros(len(neg), dtype=bool)
    keep[picked] = True
    return np.concatenate([pos, neg[keep]])


def dense_subset(
    prepared: Prepared, task_name: str, train_rows: np.ndarray, flags: np.ndarray,
    fraction: float, seed: int, sampler: str, order_column: str,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """(sorted manifest rows of the detection/segmentation training subset, pool record).

    ``flags`` (N,) 0/1 over all manifest rows: has a box / a non-empty mask.
    Raises BadInputError when the draw keeps nothing.
    """
    ordered = published_order(prepared, train_rows, order_column)
    rs = np.random.RandomState(seed)  # == np.random.seed(seed) + np.random.* (legacy)
    info: dict[str, Any] = {"pool": "all training images", "n_pool": int(len(ordered))}
    if task_name in POOL_TASKS:
        ordered = siim_pool(ordered, flags[ordered], rs)
        info = {
            "pool": "balanced: every positive training image + as many negatives (seeded)",
            "n_pool": int(len(ordered)),
            "n_pool_positive": int(flags[ordered].sum()),
        }
    if sampler == "stratified":
        chosen = ordered[sample_fraction(flags[ordered], fraction, seed)]
    elif task_name in POOL_TASKS and fraction >= 1.0:
        chosen = ordered  # the authors draw from the pool only when data_pct != 1
    else:
        chosen = ordered[rs.choice(len(ordered), size=int(fraction * len(ordered)), replace=False)]
    if len(chosen) == 0:
        raise _empty(fraction, len(ordered))
    return np.sort(chosen), info

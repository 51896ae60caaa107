"""The published downstream protocol (``--protocol mgca``): split orders, pools and boxes.

MGCA's preprocessing (which the CM-CGNS paper, arXiv 2506.11674 Sec. 4, follows for its
downstream tables) writes each split as a table in the order scikit-learn's
``train_test_split`` returns it, and later draws label fractions by position in that
order. So besides the split of every row, this module returns its position in the
published split table (``mgca_order``): the fraction samplers in
``cmcgns_cli.downstream.fractions`` sort by it before drawing, which reproduces the
published subsets id for id.

Every function here is deterministic and depends only on the row count and its order.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

# RSNA stage 2 has 26,684 patients; the authors' detection split holds out 2 x 5,337.
RSNA_PATIENTS = 26684
RSNA_DENSE_HOLDOUT = 2 * 5337
POLYGON_BUFFER_PX = 100.0
POLYGON_TOLERANCE_PX = 10.0


def _tts(positions: np.ndarray, test_size: float | int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(positions, test_size=test_size, random_state=0)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def _assign(n: int, parts: dict[str, np.ndarray]) -> tuple[list[str], list[int]]:
    split = [""] * n
    order = [-1] * n
    for name, rows in parts.items():
        for k, i in enumerate(rows.tolist()):
            split[i], order[i] = name, k
    return split, order


def split_70_15_15_ordered(n: int) -> tuple[list[str], list[int]]:
    """MGCA's RSNA-classification / SIIM split of ``n`` rows, with each row's position.

    ``train, rest = train_test_split(rows, test_size=0.3, random_state=0)``;
    ``test, valid = train_test_split(rest, test_size=0.5, random_state=0)``.
    Returns (split per row: train / test / validate, position within its split table).
    Fewer than 2 rows: all train.
    """
    idx = np.arange(n)
    if n < 2:
        return _assign(n, {"train": idx})
    train, rest = _tts(idx, 0.3)
    if len(rest) < 2:
        return _assign(n, {"train": train, "test": rest})
    test, valid = _tts(rest, 0.5)
    return _assign(n, {"train": train, "test": test, "validate": valid})


def split_train_valid_ordered(n: int, valid_fraction: float) -> tuple[list[str], list[int]]:
    """``train, valid = train_test_split(rows, test_size=valid_fraction, random_state=0)``
    (MGCA: COVIDx 0.2, Object-CXR 0.1). Returns (split per row, position in its table)."""
    idx = np.arange(n)
    if n < 2:
        return _assign(n, {"train": idx})
    train, valid = _tts(idx, valid_fraction)
    return _assign(n, {"train": train, "validate": valid})


def rsna_dense_holdout(n: int) -> int:
    """Patients held out for RSNA detection/segmentation test + validation: 10,674 of the
    public 26,684, scaled by ``n / 26684`` on other sizes (rounded, at least 2, at most
    n - 1)."""
    if n == RSNA_PATIENTS:
        return RSNA_DENSE_HOLDOUT
    return int(min(max(round(RSNA_DENSE_HOLDOUT * n / RSNA_PATIENTS), 2), max(n - 1, 0)))


def rsna_dense_split(n: int) -> tuple[list[str], list[int]]:
    """The authors' RSNA detection/segmentation split of ``n`` patients (sorted by id).

    ``train, held = train_test_split(patients, test_size=holdout, random_state=0)``;
    ``test, valid = train_test_split(held, test_size=0.5, random_state=0)``: the FIRST
    half is the test set. ``holdout`` = :func:`rsna_dense_holdout`. Fewer than 3: all train.
    """
    idx = np.arange(n)
    if n < 3:
        return _assign(n, {"train": idx})
    train, held = _tts(idx, rsna_dense_holdout(n))
    test, valid = _tts(held, 0.5)
    return _assign(n, {"train": train, "test": test, "validate": valid})


def polylabel_box(points: np.ndarray) -> list[float]:
    """Object-CXR polygon -> ``[x, y, w, h]``, the authors' rule (their object_cxr preprocessing).

    The point list is closed into a ring as a LINE (not a filled polygon), buffered by
    100 px; the pole of inaccessibility of that shape (shapely ``polylabel``, tolerance
    10 px) is the box centre; half-width = the larger horizontal distance from the pole to
    the ring's bounding-box edges, half-height likewise vertically. The box therefore
    always contains the polygon's bounding box. ``points`` is (K, 2) or flat, pixels,
    K >= 2. The pole depends on the GEOS version behind shapely (see :func:`box_versions`).
    Raises ValueError for fewer than 2 points.
    """
    from shapely.geometry import LineString
    from shapely.ops import polylabel

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2:
        raise ValueError("a polygon needs at least 2 points")
    ring = LineString(np.concatenate([pts, pts[:1]]))
    pole = polylabel(ring.buffer(POLYGON_BUFFER_PX), tolerance=POLYGON_TOLERANCE_PX)
    c = np.array([pole.x, pole.y])
    bounds = np.asarray(ring.bounds, dtype=np.float64).reshape(2, 2)
    half = np.abs(bounds - c).max(axis=0)
    return [float(c[0] - half[0]), float(c[1] - half[1]), float(2 * half[0]), float(2 * half[1])]


def box_versions() -> dict[str, str]:
    """Versions of the libraries that decide Object-CXR polygon boxes (shapely, GEOS)."""
    try:
        import shapely

        return {"shapely": shapely.__version__, "geos": shapely.geos_version_string}
    except ImportError:  # pragma: no cover - shapely is a dependency
        return {"shapely": "not installed", "geos": "unknown"}


def library_versions() -> dict[str, str]:
    """scikit-learn / numpy / pandas versions: they decide splits and fraction draws."""
    out = {}
    for name in ("scikit-learn", "numpy", "pandas"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe(protocol: str, rules: dict[str, Any]) -> dict[str, Any]:
    """The ``protocol`` record written into meta.json (and copied into every metrics.json).

    ``rules``: the reader's split / box / pool / text rules, verbatim.
    """
    return {
        "name": protocol,
        "rules": rules,
        "fraction_sampler": DEFAULT_SAMPLER.get(protocol, "stratified"),
        "fraction_sampler_rule": SAMPLER_RULES[DEFAULT_SAMPLER.get(protocol, "stratified")],
        "versions": {**library_versions(), **box_versions()},
    }


DEFAULT_SAMPLER = {"mgca": "mgca", "grouped": "stratified"}
SAMPLER_RULES = {
    "mgca": "classification: pandas train.sample(frac=fraction, random_state=42) over the "
    "training rows in published order; detection/segmentation: numpy legacy "
    "np.random.seed(run seed); choice(n, int(fraction * n), replace=False); SIIM draws its "
    "balanced pool first with the same generator",
    "stratified": "every class keeps round(fraction * n_class) rows (at least one), numpy "
    "default_rng(run seed); multi-label: one positive per class, then uniform fill",
}

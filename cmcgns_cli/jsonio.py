"""Strict JSON for every file and stdout document the toolkit writes.

RFC 8259 JSON has no NaN or Infinity; Python's ``json`` writes them by default and strict
parsers (JavaScript's ``JSON.parse``, ``jq``, Go, Rust's serde_json) reject the file. A
metric can be undefined (AUROC with no positive, mAP with no box in the split): it is
written as ``null``, and the dict that held it gains a ``null_reasons`` field
``{key: why}``, so a reader knows the value was undefined, not forgotten.

Every writer goes through :func:`dumps` (``allow_nan=False``: a non-finite value that
slipped past :func:`strict` is a bug and raises instead of writing bad JSON).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

NULL_REASONS = "null_reasons"
REASON_NAN = "NaN: undefined for this data (e.g. no positive, or no box, in the split)"
REASON_POS_INF = "Infinity: not a finite number"
REASON_NEG_INF = "-Infinity: not a finite number (e.g. nothing to select on)"


def _reason(value: float) -> str:
    if math.isnan(value):
        return REASON_NAN
    return REASON_POS_INF if value > 0 else REASON_NEG_INF


def _scalar(value: Any) -> Any:
    """numpy / torch scalars and 0-d arrays -> Python scalars; others unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and not isinstance(value, str):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    if hasattr(value, "tolist") and not isinstance(value, str):
        return value.tolist()
    return value


def _explains(value: Any) -> bool:
    """Whether a ``null_reasons`` entry has a null to explain in ``value``."""
    return value is None or (isinstance(value, list) and any(v is None for v in value))


def strict(obj: Any, reasons: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by ``None``.

    Dicts, lists and tuples are walked; numpy / torch scalars and arrays become Python
    values. In a dict, a replaced value ``d[k]`` (or any element of a list ``d[k]``) adds
    ``d["null_reasons"][k]``: the specific reason when one is known, else why the number was
    not finite. Specific reasons come from ``reasons[k]`` and from a ``null_reasons`` dict
    the data already holds, which also explains the same key in the dicts nested below it
    (e.g. a result's ``null_reasons.map`` explains its ``metrics.map`` and its seeds'), also
    for a ``None`` the data already holds; the nearest one wins. A ``null_reasons`` entry
    whose key holds no null in its dict is dropped. Other objects are returned unchanged
    (for ``json.dumps``'s ``default``).
    """

    def walk(value: Any, notes: dict[str, str] | None, key: str, known: Mapping[str, str]) -> Any:
        value = _scalar(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            if notes is not None:
                notes.setdefault(key, known.get(key, _reason(value)))
            return None
        if isinstance(value, Mapping):
            own = value.get(NULL_REASONS)
            own = own if isinstance(own, Mapping) else {}
            inner = {**known, **own}
            mine: dict[str, str] = {}
            out = {k: walk(v, mine, str(k), inner) for k, v in value.items() if k != NULL_REASONS}
            merged = {k: str(r) for k, r in own.items() if _explains(out.get(k, 0))}
            merged.update(mine)
            # a null already in the data (e.g. a mean over seeds that had none) gets a
            # specific reason when one is known for its key; never the generic one
            merged.update({k: inner[k] for k, v in out.items() if v is None and k in inner
                           and k not in merged})  # fmt: skip
            if merged:
                out[NULL_REASONS] = merged
            return out
        if isinstance(value, list | tuple):
            return [walk(v, notes, key, known) for v in value]
        return value

    return walk(obj, None, "", dict(reasons or {}))


def dumps(
    obj: Any,
    *,
    indent: int | None = None,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    reasons: Mapping[str, str] | None = None,
) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)`` with ``allow_nan=False``: always strict
    JSON. ``default`` handles objects that are not JSON types (e.g. ``str``)."""
    return json.dumps(
        strict(obj, reasons),
        indent=indent,
        default=default,
        sort_keys=sort_keys,
        allow_nan=False,
    )


def read_lines(text: str, name: str) -> list[tuple[int, Any]]:
    """``(index, value)`` for each non-blank line of JSON Lines ``text`` (``index`` counts
    from 0 over all lines, blank ones included). A line that is not JSON raises
    :class:`~cmcgns_cli.errors.BadInputError` naming ``name`` and its 1-based line number."""
    from cmcgns_cli.errors import BadInputError

    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{name}: line {i + 1} is not JSON ({exc.msg})") from None
    return out

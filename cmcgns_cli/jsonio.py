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


def strict(obj: Any, reasons: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by ``None``.

    Dicts, lists and tuples are walked; numpy / torch scalars and arrays become Python
    values. In a dict, a replaced value ``d[k]`` (or any element of a list ``d[k]``) adds
    ``d["null_reasons"][k]``: ``reasons[k]`` when given, else why the number was not
    finite. Other objects are returned unchanged (for ``json.dumps``'s ``default``).
    """
    reasons = reasons or {}

    def walk(value: Any, notes: dict[str, str] | None, key: str) -> Any:
        value = _scalar(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            if notes is not None:
                notes.setdefault(key, reasons.get(key, _reason(value)))
            return None
        if isinstance(value, Mapping):
            mine: dict[str, str] = {}
            out = {k: walk(v, mine, str(k)) for k, v in value.items()}
            if mine:
                merged = dict(out.get(NULL_REASONS) or {})
                merged.update(mine)
                out[NULL_REASONS] = merged
            return out
        if isinstance(value, list | tuple):
            return [walk(v, notes, key) for v in value]
        return value

    return walk(obj, None, "")


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

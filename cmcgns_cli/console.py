"""Where output goes: progress and logs to stderr, results to stdout (DESIGN.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

err = Console(stderr=True)
out = Console(soft_wrap=True)


def progress(*extra_columns: Any) -> Progress:
    """A Rich progress bar on stderr with count, rate-friendly columns and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def emit_json(payload: Any) -> None:
    """Write one strict JSON document to stdout (for pipelines): NaN / Inf become null."""
    from cmcgns_cli.bootstrap import strict

    text = json.dumps(payload, default=_jsonable, sort_keys=False)
    if "NaN" in text or "Infinity" in text:  # only then pay for the recursive clean-up
        text = json.dumps(strict(json.loads(text)), allow_nan=False, sort_keys=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def kv_table(title: str, rows: Mapping[str, Any]) -> Table:
    """A two-column table for a summary."""
    table = Table(title=title)
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(str(key), _fmt(value))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

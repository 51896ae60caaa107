"""Where output goes: progress and logs to stderr, results to stdout (the CLI convention in
docs/architecture.md)."""

from __future__ import annotations

import os
import sys
import time
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

from cmcgns_cli import jsonio
from cmcgns_cli.progress_fit import FitProgress

err = Console(stderr=True)
if not err.is_terminal:  # a log file: lines are never cut to 80 columns
    err.soft_wrap = True
out = Console(soft_wrap=True)


LOG_INTERVAL_ENV = "CMCGNS_LOG_INTERVAL"  # seconds between plain log lines (default 30)


# what stays longest as the terminal narrows (cmcgns_cli.progress_fit): name, count, ETA,
# then the command's own columns, the bar and the elapsed time
PRIORITY_NAME, PRIORITY_COUNT, PRIORITY_ETA = 0, 1, 2
PRIORITY_EXTRA, PRIORITY_BAR, PRIORITY_ELAPSED = 3, 4, 99  # elapsed: first to go


def progress(*extra_columns: Any) -> Progress:
    """Progress on stderr: a Rich bar on a terminal that fits its width (whole columns are
    left out by priority, see :class:`~cmcgns_cli.progress_fit.FitProgress`), plain periodic
    lines otherwise (see :class:`PlainProgress`).

    ``extra_columns``: Rich columns shown between the count and the times, each a column
    (priority :data:`PRIORITY_EXTRA`) or a ``(column, priority)`` pair (lower = kept longer).
    """
    ranked = [c if isinstance(c, tuple) else (c, PRIORITY_EXTRA) for c in extra_columns]
    if not err.is_terminal:
        return PlainProgress(*(column for column, _ in ranked))
    return FitProgress(
        [
            (TextColumn("[bold]{task.description}"), PRIORITY_NAME),
            (BarColumn(), PRIORITY_BAR),
            (MofNCompleteColumn(), PRIORITY_COUNT),
            *ranked,
            (TimeElapsedColumn(), PRIORITY_ELAPSED),
            (TimeRemainingColumn(), PRIORITY_ETA),
        ],
        console=err,
        transient=False,
    )


class PlainProgress(Progress):
    """Progress for a stderr that is not a terminal (nohup, CI, SLURM, ``2> log``).

    Nothing is drawn; instead one plain line per task is written every ``interval_s``
    seconds (``CMCGNS_LOG_INTERVAL``, default 30; 0 = every update) and when a task
    finishes: description, done/total, the task's ``info``/``rate`` fields (pretrain: epoch,
    step, loss terms, pairs/s), elapsed time and ETA.
    """

    def __init__(self, *extra_columns: Any, interval_s: float | None = None) -> None:
        super().__init__(*extra_columns, console=err, disable=True)
        if interval_s is None:
            try:
                interval_s = float(os.environ.get(LOG_INTERVAL_ENV, "30"))
            except ValueError:
                interval_s = 30.0
        self.interval_s = max(0.0, interval_s)
        self._last: dict[Any, float] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> Any:
        task_id = super().add_task(description, *args, **kwargs)
        self._last[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: Any, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._maybe_log(task_id)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def _maybe_log(self, task_id: Any) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        if not task.finished and now - self._last.get(task_id, 0.0) < self.interval_s:
            return
        self._last[task_id] = now
        err.print(plain_line(task), markup=False, highlight=False, soft_wrap=True)


def plain_line(task: Any) -> str:
    """One log line for a Rich task: ``desc done/total (p%) fields elapsed h:mm:ss ETA h:mm:ss``."""
    total = task.total
    done = int(task.completed)
    parts = [str(task.description).replace("[bold]", "")]
    if total:
        parts.append(f"{done}/{int(total)} ({100.0 * done / total:.0f}%)")
    else:
        parts.append(str(done))
    info = task.fields.get("info")
    if info:
        parts.append(str(info))
    rate = task.fields.get("rate")
    if rate not in (None, "", "-"):
        parts.append(f"{rate}/s")
    parts.append(f"elapsed {_hms(task.elapsed)}")
    remaining = task.time_remaining
    if not task.finished:
        parts.append(f"ETA {_hms(remaining) if remaining is not None else '?'}")
    return time.strftime("[%H:%M:%S] ") + ", ".join(parts)


def _hms(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def emit_json(payload: Any) -> None:
    """Write one JSON document to stdout (for pipelines)."""
    sys.stdout.write(jsonio.dumps(payload, default=_jsonable, sort_keys=False) + "\n")
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
    # a list of plain values (e.g. pretrain's selection_splits) reads as words, not as
    # Python's ['validate', 'test']
    if isinstance(value, list | tuple) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return ", ".join(_fmt(v) for v in value) if value else "-"
    return str(value)

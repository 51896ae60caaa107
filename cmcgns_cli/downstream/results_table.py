"""What ``evaluate`` prints on a terminal: its summary as a Rich table."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def results_table(task: str, summary: dict[str, Any]) -> Table:
    """The table ``evaluate`` prints: one row per metric (mean, sd over seeds, 95 % CI)
    and a caption naming how each interval was drawn."""
    n = len(summary["seeds"])
    table = Table(title=f"{task}: test split ({n} seed{'s' if n > 1 else ''})")
    table.add_column("metric")
    table.add_column("mean" if n > 1 else "value", justify="right")
    if n > 1:
        table.add_column("std", justify="right")
    ci95 = summary.get("ci95") or {}
    if ci95:
        table.add_column("95% CI (bootstrap)", justify="right")
    for key, mean in summary["mean"].items():
        row = [key, _fmt(mean)]
        if n > 1:
            row.append(_fmt(summary["std"][key]))
        if ci95:
            ci = ci95.get(key)
            row.append(f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        table.add_row(*row)
    if ci95:
        # detection under mgca: each key resamples its own image set (or has none)
        per = summary.get("ci95_method_per_metric") or {"": summary.get("ci95_method") or {}}
        table.caption = "; ".join(
            f"95% CI{' of ' + key if key else ''}: {_ci_method(m)}" for key, m in per.items()
        ) + (" (the first seed's predictions)" if n > 1 else "")
    return table


def _ci_method(m: dict[str, Any]) -> str:
    """One interval's method in words; a key with no interval says why (``method``)."""
    if m.get("resamples") is None:
        return str(m.get("method") or "none")
    images = f" of {m['images']} images" if m.get("images") is not None else ""
    return (
        f"{m.get('method', 'bootstrap')}, {m['resamples']} resamples{images}, seed "
        f"{m.get('seed')}, stratified by {m.get('stratified_by') or 'nothing'}"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

"""`cmcgns plot RUN --out DIR`: training curves as PNG figures (matplotlib, Agg backend).

- A pretrain run (``metrics.jsonl``): one figure per record kind, ``train.png`` (every loss
  term, learning rate, retrieval accuracy, logit scale, gradient norm, throughput and any
  cluster-health figure the run logged) and ``validate.png`` (validation loss terms and
  image-to-report top-1), against the optimizer step, with the stage switch marked.
- A finetuned directory (``history.jsonl``): ``finetune.png``, the training loss terms and
  the validation scores against the epoch, the kept (best) epoch marked.

Every numeric series found in the records gets its own panel (no fixed list), so series
that other versions add to the log appear without a change here. ``figures.json`` in DIR
lists each figure's panels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import input_folder, read_json_object

INDEX_KEYS = {"kind", "step", "stage", "epoch", "stage_step"}
COLS = 3


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file; a line that is not JSON is bad input (file and line)."""
    lines = jsonio.read_lines(path.read_text(encoding="utf-8"), str(path))
    return [rec for _, rec in lines if isinstance(rec, dict)]


def numeric_series(records: list[dict[str, Any]], x_key: str) -> dict[str, tuple[list, list]]:
    """series name -> (x values, y values) for every key holding a number (not a bool) in at
    least one record; NaN / null points are left out."""
    series: dict[str, tuple[list, list]] = {}
    for rec in records:
        x = rec.get(x_key)
        if not isinstance(x, int | float):
            continue
        for k, v in rec.items():
            if k in INDEX_KEYS or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if not math.isfinite(float(v)):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(x)
            ys.append(float(v))
    return series


def draw(series: dict[str, tuple[list, list]], path: Path, title: str, x_label: str,
         marks: list[tuple[float, str]] = ()) -> list[str]:  # fmt: skip
    """One panel per series in a grid; dashed vertical lines at ``marks``; return the panel
    names in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)
    rows = max(1, math.ceil(len(names) / COLS))
    fig, axes = plt.subplots(rows, COLS, figsize=(4.2 * COLS, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        xs, ys = series[name]
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1.2)
        for x, label in marks:
            ax.axvline(x, color="grey", linestyle="--", linewidth=0.8, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.remove()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return names


def _stage_marks(records: list[dict[str, Any]]) -> list[tuple[float, str]]:
    marks, last = [], None
    for rec in records:
        stage = rec.get("stage")
        if last is not None and stage != last and isinstance(rec.get("step"), int | float):
            marks.append((float(rec["step"]) - 0.5, f"stage {stage}"))
        last = stage
    return marks


def plot_run(run: Path, out: Path) -> dict[str, Any]:
    """Write the figures of ``run`` into ``out``; return {kind, figures: [{file, panels}]}."""
    logs = ("metrics.jsonl", "history.jsonl")  # a pretrain run's, a finetuned directory's
    run = input_folder(run, "a pretrain run or a finetuned directory", needs=logs)
    out = Path(out)
    metrics, history = run / "metrics.jsonl", run / "history.jsonl"
    figures = []
    out.mkdir(parents=True, exist_ok=True)
    if metrics.is_file():
        kind = "pretrain"
        records = read_jsonl(metrics)
        train = [r for r in records if r.get("kind") == "train"]
        marks = _stage_marks(train)
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if r.get("kind") == "summary":  # the run's closing summary: one point, no curve
                continue
            groups.setdefault(str(r.get("kind", "record")), []).append(r)
        for group, recs in groups.items():
            series = numeric_series(recs, "step")
            if not series:
                continue
            name = "validate.png" if group == "val" else f"{group}.png"
            title = f"{run.name}: {'validation' if group == 'val' else group}"
            panels = draw(series, out / name, title, "step", marks)
            figures.append({"file": name, "panels": panels, "points": len(recs)})
    elif history.is_file():
        kind = "finetune"
        records = read_jsonl(history)
        series = numeric_series(records, "epoch")
        marks = []
        record_file = run / "finetune.json"
        if record_file.is_file():
            best = read_json_object(record_file).get("best_epoch")
            if isinstance(best, int | float):
                marks = [(float(best), "kept epoch")]
        if series:
            panels = draw(series, out / "finetune.png", f"{run.name}: finetune", "epoch", marks)
            figures.append({"file": "finetune.png", "panels": panels, "points": len(records)})
    if not figures:
        raise BadInputError(f"{run}: the log holds no numeric series to plot")
    result = {"run": str(run), "kind": kind, "out": str(out), "figures": figures}
    (out / "figures.json").write_text(jsonio.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def run_plot(*, run: Path, out: Path, as_json: bool) -> dict[str, Any]:
    from cmcgns_cli.console import emit_json, kv_table
    from cmcgns_cli.console import out as stdout

    result = plot_run(run, out)
    if as_json:
        emit_json(result)
    else:
        rows = {f["file"]: f"{len(f['panels'])} panels" for f in result["figures"]}
        stdout.print(kv_table(f"plot {run} ({result['kind']}) -> {out}", rows))
    return result

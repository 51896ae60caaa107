"""`cmcgns compare RUN_A RUN_B --task T --data PREPARED`: is B better than A, and by how much?

Both runs are scored exactly as ``evaluate`` scores them (finetuned directories for the
classification / segmentation tasks, pretrain runs for retrieval, zero-shot and grounding)
on the same test images; the headline metric's difference ``B - A`` gets a paired bootstrap
95 % interval and a two-sided p-value (``cmcgns_cli.bootstrap.paired_diff``): each resample
draws the same images for both runs (stratified by label where there are labels), so what
the two runs share cancels out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli import bootstrap, interrupts, jsonio
from cmcgns_cli.baseline import check_comparable
from cmcgns_cli.console import emit_json, err, kv_table
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.outdir import atomic_file, check_writable


def _score(
    task: str, data: Path, run: Path, dev: Any, prompts, annotations, scratch: Path
) -> dict[str, Any]:
    """Score ``run`` as ``evaluate`` does; the files a scorer writes go to ``scratch``, never
    into the run (compare changes nothing in the runs it compares)."""
    from cmcgns_cli.downstream import run as dispatch

    dispatch._check_task(task)
    if task in dispatch.EVAL_ONLY_TASKS:
        return dispatch._evaluate_pretrained(task, data, run, dev, prompts, annotations=annotations)
    scratch.mkdir(parents=True, exist_ok=True)
    return dispatch._evaluate_task(task, data, run, dev, 0, scratch)


def _check_heads(task: str, *runs: Path) -> None:
    """A task scored through a finetuned head: each run's finetune.json is read before either
    run is scored, so a run B that is no head for ``task`` is refused before the minutes
    that scoring A takes (load_finetune_record's one-line errors)."""
    from cmcgns_cli.downstream import run as dispatch
    from cmcgns_cli.downstream.classification import load_finetune_record

    dispatch._check_task(task)
    if task not in dispatch.EVAL_ONLY_TASKS:
        for run in runs:
            load_finetune_record(run, task)


def compare_results(
    a: dict[str, Any], b: dict[str, Any], n_boot: int = bootstrap.N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """The paired comparison of two results of the same task on the same test images."""
    from cmcgns_cli.downstream.intervals import stat_fns

    fa, na, strata, name = stat_fns(a)
    fb, nb, _, _ = stat_fns(b)
    metric = a["metric"]
    if metric not in fa or metric not in fb:
        raise BadInputError(f"task {a['task']}: its headline metric {metric} has no per-image data")
    if na != nb:
        raise BadInputError(f"the runs were scored on different test sets ({na} vs {nb} images)")
    ids_a, ids_b = a["per_image"].get("ids"), b["per_image"].get("ids")
    if ids_a is not None and ids_b is not None and list(ids_a) != list(ids_b):
        raise BadInputError("the runs were scored on different test images")
    every = np.arange(na)
    value_a, value_b = (bootstrap.finite(f[metric](every)) for f in (fa, fb))
    method = {
        **bootstrap.method(n_boot, seed, name if strata is not None else None),
        "method": "paired percentile bootstrap over test images; diff = B - A",
        "p_value": "two-sided: 2 x min(share of resampled diffs <= 0, share >= 0)",
    }
    head = {"task": a["task"], "metric": metric, "a": value_a, "b": value_b}
    if value_a is None or value_b is None:
        # one run has no value for the metric (e.g. the published detection rule scored no
        # image): there is no difference to resample; say so instead of a diff of None
        why = {"a": _null_reason(a, metric), "b": _null_reason(b, metric)}
        gaps = [f"{side.upper()} has none ({why[side]})"
                for side, v in (("a", value_a), ("b", value_b)) if v is None]  # fmt: skip
        if value_a is None and value_b is None and why["a"] == why["b"]:
            gaps = [f"A and B have none ({why['a']})"]
        cannot = f"cannot compare {metric}: " + "; ".join(gaps)
        reasons = {k: why[k] for k, v in (("a", value_a), ("b", value_b)) if v is None}
        return {
            **head, "diff": None, "ci95": None, "p_value": None, "n": int(na),
            "comparable": False, "not_comparable": cannot, "method": method,
            "null_reasons": {**reasons, "diff": cannot, "ci95": cannot, "p_value": cannot},
        }  # fmt: skip
    out = bootstrap.paired_diff(fa[metric], fb[metric], na, strata, n_boot, seed)
    return {**head, **out, "comparable": True, "method": method}


def _selection_overlap(task: str, data: Path, runs: dict[str, Path]) -> dict[str, list[str]]:
    """As ``evaluate`` does for retrieval and zero-shot: the test split of ``data`` among the
    splits that selected a run's checkpoint; one warning line on stderr per such run, and
    ``{"a": [...], "b": [...]}`` for the runs concerned."""
    from cmcgns_cli.downstream.run import selection_of
    from cmcgns_cli.task_names import EVAL_ONLY_TASKS

    if task not in EVAL_ONLY_TASKS:
        return {}
    found = {}
    for side, run in runs.items():
        who = f"run {side.upper()} ({run}): "
        overlap = selection_of(task, data, run, "test", who).get("selection_overlap")
        if overlap:
            found[side] = overlap
    return found


def _null_reason(result: dict[str, Any], metric: str) -> str:
    """Why ``result`` has no ``metric``: the scorer's own reason when it gave one."""
    known = result.get("null_reasons") or {}
    return str(known.get(metric) or f"{metric} is undefined on these test images")


def _cell(value: Any, reason: str | None = None) -> Any:
    """A table cell: the value, or ``n/a`` (with the reason) where there is none."""
    if value is None:  # the reason's first clause; the whole of it is in the note below
        return f"n/a ({reason.split(':')[0]})" if reason else "n/a"
    return value


def run_compare(
    *,
    run_a: Path,
    run_b: Path,
    task: str,
    data: Path,
    prompts: Path | None,
    annotations: Path | None,
    resamples: int,
    seed: int,
    device: str,
    as_json: bool,
    out: Path | None = None,
    allow_different: bool = False,
) -> dict[str, Any]:
    """``cmcgns compare``: print (and with ``out`` write ``OUT/compare.json``) the paired
    comparison. Nothing else is written: the runs compared stay as they were.

    Raises:
        BadInputError: bad ``resamples``, an unwritable ``out``, encoders of another
            architecture or input size without ``allow_different``, runs scored on different
            test images.
    """
    from cmcgns_cli.runtime import resolve_device

    if resamples < 1:
        raise BadInputError(f"--resamples {resamples}: must be at least 1")
    if out is not None:
        check_writable(out)
    differ = check_comparable(run_a, run_b, allow_different)
    _check_heads(task, run_a, run_b)
    dev = resolve_device(device)
    with interrupts.handle(deferred=False), tempfile.TemporaryDirectory() as scratch:
        a = _score(task, data, run_a, dev, prompts, annotations, Path(scratch) / "a")
        b = _score(task, data, run_b, dev, prompts, annotations, Path(scratch) / "b")
        result = {
            "run_a": str(run_a),
            "run_b": str(run_b),
            **compare_results(a, b, resamples, seed),
        }
    if differ:  # allowed, and said
        result["encoders_differ"] = differ
    overlap = _selection_overlap(task, data, {"a": run_a, "b": run_b})
    if overlap:
        result["selection_overlap"] = overlap
    if out is not None:
        with atomic_file(Path(out) / "compare.json") as tmp:
            tmp.write_text(jsonio.dumps(result, indent=2) + "\n", encoding="utf-8")
        err.print(f"comparison written to {Path(out) / 'compare.json'}", highlight=False)
    if as_json:
        emit_json(result)
        return result
    ci = result["ci95"]
    why = result.get("null_reasons") or {}
    rows = {
        "metric": result["metric"],
        f"A ({Path(run_a).name})": _cell(result["a"], why.get("a")),
        f"B ({Path(run_b).name})": _cell(result["b"], why.get("b")),
        "diff (B - A)": _cell(result["diff"], "cannot compare" if why.get("diff") else None),
        "95% CI (paired bootstrap)": f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a",
        "p_value": _cell(result["p_value"]),
        "n (test images)": result["n"],
    }
    stdout.print(kv_table(f"compare {task}", rows))
    if not result["comparable"]:
        err.print(f"note: {result['not_comparable']}", highlight=False, soft_wrap=True)
    return result

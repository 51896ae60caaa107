"""`cmcgns finetune` and `cmcgns evaluate`: dispatch by task, repeat over seeds, print (the
summary over seeds is ``seed_summary.py``'s)."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmcgns_cli import interrupts, jsonio
from cmcgns_cli.console import emit_json, err, kv_table
from cmcgns_cli.console import out as stdout
from cmcgns_cli.data.prepared import atomic_write_text
from cmcgns_cli.downstream import data_checks
from cmcgns_cli.downstream.classification import (
    evaluate_cls,
    finetune_cls,
    load_finetune_record,
)
from cmcgns_cli.downstream.results_table import results_table
from cmcgns_cli.downstream.seed_summary import summarise_seeds
from cmcgns_cli.downstream.tasks import CLS_TASKS, DENSE_TASKS
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.runtime import resolve_device
from cmcgns_cli.task_names import EVAL_ONLY_TASKS


def _check_task(task: str, *, finetune: bool = False) -> None:
    if task in CLS_TASKS or task in DENSE_TASKS:
        return
    if task in EVAL_ONLY_TASKS:
        if finetune:
            raise BadInputError(
                f"--task {task}: scores a pretrain run as it is; use cmcgns evaluate"
            )
        return
    known = ", ".join([*CLS_TASKS, *DENSE_TASKS, *EVAL_ONLY_TASKS])
    raise BadInputError(f"--task {task!r}: unknown task; choose one of {known}")


def run_finetune(
    *,
    task: str,
    data: Path,
    checkpoint: str,
    out: Path,
    fraction: float,
    full: bool,
    arch: str | None = None,
    image_weights: Path | None,
    epochs: int | None,
    lr: float | None,
    batch_size: int | None,
    device: str,
    seed: int,
    workers: int,
    as_json: bool,
    fraction_sampler: str | None = None,
    allow_partial: bool = False,
    overwrite: bool = False,
    input_size: tuple[int, int] | None = None,
) -> None:
    """Finetune ``task`` into ``out`` and print its record (table or JSON).

    Raises:
        BadInputError: a bad task or fraction, or ``out`` already holds a finetuned head and
            ``overwrite`` is off (its metrics would then describe another head).
    """
    _check_task(task, finetune=True)
    if not 0.0 < fraction <= 1.0:
        raise BadInputError(f"--fraction {fraction}: must be in (0, 1], e.g. 0.01, 0.1 or 1")
    _claim_out(Path(out), overwrite)
    data_checks.warn_finetune(Path(data), str(checkpoint))
    try:
        with interrupts.handle(deferred=False):
            record = _finetune_fn(task)(
                task_name=task, data=data, checkpoint=checkpoint, out=out, fraction=fraction,
                full=full, arch=arch, image_weights=image_weights, epochs=epochs, lr=lr,
                batch_size=batch_size, seed=seed, device=resolve_device(device),
                fraction_sampler=fraction_sampler, allow_partial=allow_partial,
                input_size=input_size,
            )  # fmt: skip
    except interrupts.Interrupted as exc:
        # finetuning has no resume: the head is written only when training ends
        where = str(exc).removeprefix("interrupted").strip() or "before training"
        raise interrupts.Interrupted(
            exc.signum,
            f"interrupted {where}; finetune {task} saved no head: run the same command again",
        ) from None
    if as_json:
        emit_json(record)
        return
    keys = ("fraction", "fraction_sampler", "n_train", "n_validate", "epochs", "best_epoch")
    rows = {k: record[k] for k in keys}
    metric = record.get("validate_metric") or record.get("metric") or "score"
    best = record["best_validate"]
    finite = isinstance(best, int | float) and math.isfinite(best)
    rows[f"best_validate ({metric})"] = best if finite else "n/a (see --json: null_reasons)"
    stdout.print(kv_table(f"finetune {task} -> {out}", rows))


# what a finetune leaves in its folder (and evaluate beside it): all of it describes one head
FINETUNE_OUTPUTS = ("head.safetensors", "segmenter.safetensors", "encoder.safetensors",
                    "finetune.json", "metrics.json", "train_ids.txt", "history.jsonl",
                    "coco_gt.json", "coco_predictions.json", "examples", "seeds")  # fmt: skip


def _claim_out(out: Path, overwrite: bool) -> None:
    heads = ("head.safetensors", "segmenter.safetensors", "finetune.json")
    held = [name for name in heads if (out / name).exists()]
    if held and not overwrite:
        raise BadInputError(
            f"{out}: already holds a finetuned head ({held[0]}); choose another --out or pass "
            "--overwrite to replace it and its results"
        )
    for name in FINETUNE_OUTPUTS if overwrite else ():
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_evaluate(
    *,
    task: str,
    data: Path,
    checkpoint: Path,
    seeds: int,
    save_examples: int,
    prompts: Path | None,
    device: str,
    workers: int,
    as_json: bool,
    split: str = "test",
    annotations: Path | None = None,
    out: Path | None = None,
) -> None:
    """Score ``checkpoint`` on the test split; print the table (or JSON) and write
    ``metrics.json``: in ``out`` when given (the whole summary; the evaluation's other files,
    COCO files and examples, go there too), else beside the finetuned head, or for
    retrieval / zero-shot in ``CHECKPOINT/evaluate/TASK/``."""
    _check_task(task)
    if save_examples < 0:
        raise BadInputError(f"--save-examples {save_examples}: must be 0 or more")
    if save_examples and task not in DENSE_TASKS:
        err.print("note: --save-examples applies to detection and segmentation; ignored")
    dev = resolve_device(device)
    try:
        with interrupts.handle(deferred=False):
            _run_evaluate(task, data, checkpoint, seeds, save_examples, prompts, dev, as_json,
                          split, annotations, out)  # fmt: skip
    except interrupts.Interrupted as exc:
        # nothing was published: the staged files of this evaluation are gone (see _publish)
        where = str(exc).removeprefix("interrupted").strip()
        raise interrupts.Interrupted(
            exc.signum,
            f"interrupted{' ' + where if where else ''}; evaluate {task} wrote no metrics.json "
            "(earlier results are unchanged): run the same command again",
        ) from None


def _run_evaluate(task, data, checkpoint, seeds, save_examples, prompts, dev, as_json, split,
                  annotations, out) -> None:  # fmt: skip
    if task in EVAL_ONLY_TASKS:
        data_checks.check_split(task, Path(data), split)
        if seeds > 1:
            err.print(f"note: {task} has no training randomness; --seeds {seeds} ignored")
        selection = selection_of(task, data, checkpoint, split)
        result = _with_ci(
            _evaluate_pretrained(task, data, checkpoint, dev, prompts, split, annotations)
        )
        summary = summarise_seeds([result])
        summary["protocol"] = result["protocol"]
        summary.update(result.get("extra", {}))
        summary.update(selection)
        _write_metrics(out or Path(checkpoint) / "evaluate" / task, summary)
        if as_json:
            emit_json(summary)
        else:
            stdout.print(results_table(task, summary))
        return
    if prompts is not None:
        err.print("note: --prompts applies to zeroshot-* tasks; ignored")
    if split != "test":
        raise BadInputError(f"--split {split}: finetuned tasks are scored on the test split")
    data_checks.warn_evaluate(Path(data), load_finetune_record(checkpoint, task), Path(checkpoint))
    dest = Path(out) if out is not None else Path(checkpoint)
    with _staged(dest) as stage:
        # every file of this evaluation is written to a staging folder and moved into place
        # only when all seeds are done, so an interrupted evaluation leaves no metrics.json
        # that describes fewer seeds than were asked for
        results = [_evaluate(task, data, checkpoint, dev, save_examples, stage)]
        for k, result in enumerate(_other_seeds(task, data, checkpoint, seeds, dev), 2):
            interrupts.at(f"after seed {k} of {seeds}")
            results.append(result)
        summary = summarise_seeds(results)
        atomic_write_text(stage / "metrics.json", jsonio.dumps(summary, indent=2, default=str))
        _publish(stage, dest)
    err.print(f"metrics written to {dest / 'metrics.json'}", markup=False, highlight=False)
    if as_json:
        emit_json(summary)
        return
    stdout.print(results_table(task, summary))


def selection_of(
    task: str, data: Path, checkpoint: Path, split: str, who: str = ""
) -> dict[str, Any]:
    """``selection_splits`` / ``selection_overlap`` (``selection.scored_selection``) of a
    retrieval or zero-shot evaluation, with the one-line warning on stderr when the scored
    split selected the checkpoint (grounding scores its own annotations: nothing to compare).
    ``who`` names the run in the warning when a command scores several (``compare``)."""
    import json

    from cmcgns_cli.data.prepared import META
    from cmcgns_cli.selection import overlap_warning, scored_selection

    if task.startswith("grounding-"):
        return {}
    try:
        meta = json.loads((Path(data) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the evaluation itself names what is wrong with the data
    if not isinstance(meta, dict):
        return {}
    selection = scored_selection(Path(checkpoint), Path(data), meta, split)
    warning = overlap_warning(selection, meta.get("dataset"), split)
    if warning:
        line = warning.replace("warning: ", f"warning: {who}", 1)
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    return selection


def _write_metrics(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metrics.json", jsonio.dumps(summary, indent=2, default=str))
    err.print(f"metrics written to {folder / 'metrics.json'}", markup=False, highlight=False)


@contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A fresh staging folder inside ``dest`` (hidden; removed when the block ends)."""
    stage = dest / f".evaluate-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, dest: Path) -> None:
    """Move every file and folder of ``stage`` into ``dest`` (replacing what is there),
    metrics.json last, so it is never newer than what it describes."""
    entries = sorted(stage.iterdir(), key=lambda p: p.name == "metrics.json")
    for entry in entries:
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def _other_seeds(task: str, data: Path, finetuned: Path, seeds: int, dev) -> Iterator[dict]:
    """Re-run the recorded finetune protocol with seeds seed+1 .. seed+N-1 under seeds/;
    yields each seed's result as it is done."""
    if seeds <= 1:
        return
    record = load_finetune_record(finetuned, task)
    for k in range(1, seeds):
        seed = record["seed"] + k
        sub = Path(finetuned) / "seeds" / f"seed{seed}"
        enc = record["encoder"]
        _finetune_fn(task)(
            task_name=task, data=data, checkpoint=enc["checkpoint"], out=sub,
            fraction=record["fraction"], full=record["full"], arch=enc["arch"],
            image_weights=Path(enc["weights_file"]) if enc["checkpoint"] == "none"
            and enc["weights_file"] else None,
            epochs=record["epochs"], lr=record["lr"], batch_size=record["batch_size"],
            seed=seed, device=dev, fraction_sampler=record.get("fraction_sampler", "stratified"),
            allow_partial=bool(enc.get("allow_partial", False)),
            # a random-init encoder is re-drawn at the input size the first seed used
            input_size=(int(enc["image_size"]), int(enc["crop_size"]))
            if enc["checkpoint"] == "none" else None,
        )  # fmt: skip
        yield _evaluate(task, data, sub, dev, 0)


def _finetune_fn(task: str):
    if task in CLS_TASKS:
        return finetune_cls
    if DENSE_TASKS[task].kind == "detection":
        from cmcgns_cli.downstream.detection import finetune_det

        return finetune_det
    from cmcgns_cli.downstream.segmentation import finetune_seg

    return finetune_seg


def _evaluate(
    task: str, data: Path, finetuned: Path, dev, save_examples: int, out: Path | None = None
) -> dict:
    return _with_ci(_evaluate_task(task, data, finetuned, dev, save_examples, out))


def _with_ci(result: dict) -> dict:
    """The result with its bootstrap ``ci95`` (tasks that do not add one themselves), less
    the per-image data it was computed from (functions and arrays, not for JSON)."""
    from cmcgns_cli.downstream.intervals import attach_ci

    if "ci95" not in result:
        attach_ci(result)
    result.pop("per_image", None)
    return result


def _evaluate_task(
    task: str, data: Path, finetuned: Path, dev, save_examples: int, out: Path | None = None
) -> dict:
    """One seed's result; its files go to ``out`` (default: beside the finetuned head)."""
    if task in CLS_TASKS:
        return evaluate_cls(task, data, finetuned, dev, out)
    if DENSE_TASKS[task].kind == "detection":
        from cmcgns_cli.downstream.detection import evaluate_det

        return evaluate_det(task, data, finetuned, dev, save_examples, out)
    from cmcgns_cli.downstream.segmentation import evaluate_seg

    return evaluate_seg(task, data, finetuned, dev, save_examples, out)


def _evaluate_pretrained(
    task: str,
    data: Path,
    run: Path,
    dev,
    prompts: Path | None,
    split: str = "test",
    annotations: Path | None = None,
) -> dict:
    if task.startswith("grounding-"):
        from cmcgns_cli.downstream.grounding import evaluate_grounding

        return evaluate_grounding(
            task, data, run, dev, prompts_file=prompts, annotations=annotations
        )
    if task == "retrieval":
        from cmcgns_cli.downstream.retrieval import evaluate_retrieval

        return evaluate_retrieval(data, run, dev, split=split)
    from cmcgns_cli.downstream.zeroshot import evaluate_zeroshot

    return evaluate_zeroshot(task, data, run, dev, prompts_file=prompts, split=split)

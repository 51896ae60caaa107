"""``cmcgns evaluate`` and ``compare``: score a run, and compare two runs' scores.

Each function parses its options and hands them to the module that does the work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cmcgns_cli.commands.options import (
    Device,
    DeviceOpt,
    EvaluateTask,
    JsonOpt,
    SeedOpt,
    Split,
    ThreadsOpt,
    apply_threads,
)
from cmcgns_cli.input_folder import input_folder
from cmcgns_cli.outdir import claim, command_line, keeps_nothing
from cmcgns_cli.task_names import EVAL_ONLY_TASKS


def evaluate(
    task: EvaluateTask = typer.Option(..., "--task", help="Task to score."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset with a test split."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Finetuned (or pretrain) run."),
    seeds: int = typer.Option(
        1, "--seeds", min=1, help="Repeat finetuning with N seeds: mean, std."
    ),
    save_examples: int = typer.Option(0, "--save-examples", help="Write N example PNGs."),
    prompts: Path | None = typer.Option(None, "--prompts", help="zero-shot prompts file."),
    split: Split = typer.Option(
        Split.test, "--split", help="retrieval / zeroshot-*: split to score (e.g. test, 5x200)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="grounding-mscxr: the MS-CXR annotation CSV."
    ),
    device: Device = DeviceOpt,
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader workers."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for metrics.json (default: beside the finetuned head; retrieval and "
        "zero-shot: CHECKPOINT/evaluate/TASK).",
    ),
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Score a checkpoint on the test split (AUROC, accuracy, mAP, Dice, recall)."""
    apply_threads(threads)
    from cmcgns_cli.downstream.run import run_evaluate

    # before claim() makes CHECKPOINT/evaluate/TASK below it (or says "cannot write there")
    input_folder(
        checkpoint, "a pretrain run, an exported bundle or a finetuned head",
        option="--checkpoint", needs=("config.json", "finetune.json"),
    )  # fmt: skip
    # the folder evaluate writes into: --out, or beside the head (pretrain runs: below it)
    folder = out or (
        checkpoint / "evaluate" / task.value if task.value in EVAL_ONLY_TASKS else checkpoint
    )
    option = "--out" if out is not None else "--checkpoint"
    with claim(folder, command_line(), option, started=keeps_nothing):
        run_evaluate(
            task=task.value,
            data=data,
            checkpoint=checkpoint,
            seeds=seeds,
            save_examples=save_examples,
            prompts=prompts,
            device=device.value,
            workers=workers,
            as_json=as_json,
            split=split.value,
            annotations=annotations,
            out=out,
        )


def compare(
    run_a: Path = typer.Argument(..., help="Run A (finetuned directory or pretrain run)."),
    run_b: Path = typer.Argument(..., help="Run B, compared with A: diff = B - A."),
    task: EvaluateTask = typer.Option(..., "--task", help="Task to score both runs on."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset with a test split."),
    prompts: Path | None = typer.Option(None, "--prompts", help="zero-shot / grounding prompts."),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="grounding-mscxr: the MS-CXR annotation CSV."
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples."),
    seed: int = SeedOpt,
    device: Device = DeviceOpt,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for compare.json (without it, nothing is written)."
    ),
    allow_different: bool = typer.Option(
        False,
        "--allow-different",
        help="Compare runs whose encoders differ in architecture or input size (refused "
        "without it).",
    ),
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Paired comparison of two runs on the same test images: diff, 95% CI, p-value."""
    apply_threads(threads)
    from cmcgns_cli.compare import run_compare

    run_compare(
        run_a=run_a, run_b=run_b, task=task.value, data=data, prompts=prompts,
        annotations=annotations, resamples=resamples, seed=seed, device=device.value,
        as_json=as_json, out=out, allow_different=allow_different,
    )  # fmt: skip

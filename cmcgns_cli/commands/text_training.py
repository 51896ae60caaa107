"""``cmcgns pretrain-text``: masked-language-model pretraining of a report encoder.

The function parses its options and hands them to :mod:`cmcgns_cli.train.mlm`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from cmcgns_cli.commands.options import (
    Device,
    DeviceOpt,
    JsonOpt,
    Preset,
    ThreadsOpt,
    apply_threads,
)
from cmcgns_cli.console import err
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import input_folder
from cmcgns_cli.outdir import claim, command_line


def pretrain_text(
    data: Path | None = typer.Option(
        None, "--data", help="Prepared paired dataset: its train reports train, validate scores."
    ),
    reports: str | None = typer.Option(
        None, "--reports", help="CSV (a text column), JSONL or TXT (one report a line)."
    ),
    preset_name: Preset | None = typer.Option(
        None,
        "--preset",
        help="BERT size and schedule (required except with --resume).",
        show_default=False,
    ),  # fmt: skip
    text_encoder: str | None = typer.Option(
        None,
        "--text-encoder",
        help="A local BERT folder to adapt (default: the preset's "
        "scratch BERT with a vocabulary learnt on the corpus).",
    ),  # fmt: skip
    out: Path | None = typer.Option(None, "--out", help="New folder for the trained BERT."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Cap the steps."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this folder's run."),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Passes over the corpus (default: the preset's stage-1)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Reports per step."),
    lr: float | None = typer.Option(
        None, "--lr", help="Peak learning rate (default: the preset's; 5e-5 with --text-encoder)."
    ),
    sets: list[str] = typer.Option([], "--set", help="Override one key: section.key=value."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the preset's)."),
    device: Device = DeviceOpt,
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Masked-language-model pretraining of a BERT on reports; writes a folder that
    `pretrain --text-encoder DIR` takes."""
    apply_threads(threads)
    from cmcgns_cli.config import resolve
    from cmcgns_cli.config_values import parse_set
    from cmcgns_cli.runtime import resolve_device
    from cmcgns_cli.train.mlm import ADAPT_LR, RECORD, run_pretrain_text

    if preset_name is None and resume is None:
        raise BadInputError("--preset is required (tiny, small, ...), or --resume DIR")
    if resume is not None and (data or reports or text_encoder):
        raise BadInputError("--resume continues with the folder's own corpus and BERT")
    if resume is not None and out is not None and Path(out).resolve() != Path(resume).resolve():
        raise BadInputError(
            f"--out {out} differs from --resume {resume}; a resumed run continues in its own folder"
        )
    if resume is not None:  # as pretrain: the saved config wins, and the line says so
        input_folder(resume, "a pretrain-text folder", option="--resume", needs=(RECORD,))
        given = {"--preset": preset_name, "--epochs": epochs, "--batch-size": batch_size,
                 "--lr": lr, "--set": sets, "--seed": seed, "--max-steps": max_steps}  # fmt: skip
        ignored = [name for name, value in given.items() if value]
        if ignored:
            err.print(
                f"note: {resume} continues with its own {RECORD}; not applied: "
                f"{', '.join(ignored)} (start a new --out to change them)",
                highlight=False,
                soft_wrap=True,
            )
    if text_encoder is not None and not Path(text_encoder).is_dir():
        raise BadInputError(f"--text-encoder {text_encoder}: not a local BERT folder")
    # a warm BERT adapts at ADAPT_LR unless a learning rate is given (--lr or --set train.lr)
    set_lr = "lr" in parse_set(sets or []).get("train", {})
    cfg = resolve(
        preset_name.value if preset_name is not None else "tiny",
        None,
        sets,
        cli={
            "train": {
                "stage1_epochs": epochs,
                "batch_size": batch_size,
                "lr": lr if lr is not None or set_lr else (ADAPT_LR if text_encoder else None),
                "max_steps": max_steps,
                "seed": seed,
            }
        },
    )
    folder = resume if resume is not None else out
    if folder is None:  # the run names what is missing
        claimed = contextlib.nullcontext()
    else:  # writable, no other command in it; a start that failed leaves it as it found it
        claimed = claim(
            folder, command_line(), "--resume" if resume is not None else "--out",
            started=lambda f: (f / RECORD).exists(),
        )  # fmt: skip
    with claimed:
        run_pretrain_text(
            cfg, data=data, reports=Path(reports) if reports is not None else None, out=out,
            resume=resume, as_json=as_json, text_encoder=text_encoder,
            device=resolve_device(device.value),
        )  # fmt: skip

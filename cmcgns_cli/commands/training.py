"""``cmcgns pretrain`` and ``finetune``: train (``evaluate`` and ``compare`` are in
:mod:`cmcgns_cli.commands.scoring`).

Each function parses its options and hands them to the module that does the work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cmcgns_cli.baseline import like
from cmcgns_cli.commands.options import (
    Device,
    DeviceOpt,
    FinetuneTask,
    JsonOpt,
    Preset,
    SeedOpt,
    ThreadsOpt,
    Variant,
    apply_threads,
)
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_DIR, input_folder
from cmcgns_cli.outdir import claim, command_line, keeps_nothing

if TYPE_CHECKING:
    from cmcgns_cli.config import Config


def pretrain(
    data: Path | None = typer.Option(
        None, "--data", help="Prepared paired dataset (e.g. mimic); with --resume, optional."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run directory for checkpoints and logs (--resume: that run's)."
    ),
    preset_name: Preset | None = typer.Option(
        None,
        "--preset",
        help="Required (except with --resume). tiny and small run offline with a scratch "
        "text encoder; paper-resnet50 and paper-vit need --text-encoder DIR (a local "
        "Bio_ClinicalBERT).",
        show_default=False,
    ),
    config_file: Path | None = typer.Option(None, "--config", help="TOML/YAML overrides."),
    sets: list[str] = typer.Option([], "--set", help="Override one key: section.key=value."),
    image_weights: Path | None = typer.Option(
        None,
        "--image-weights",
        help="Local torchvision/timm state dict to start from, or none (random init); "
        "required with the paper presets (docs/pretraining.md: ImageNet weights).",
    ),
    text_encoder: str | None = typer.Option(
        None, "--text-encoder", help="Local BERT directory or hub id."
    ),
    variant: Variant | None = typer.Option(
        None,
        "--variant",
        help="authors (the authors' code and training recipe, the default) or clean (the "
        "textbook ClusterNS / SimCSE forms, this project's two guards against cluster collapse, "
        "and its earlier recipe); see docs/fidelity.md.",
    ),
    stage1_epochs: int | None = typer.Option(
        None, "--stage1-epochs", min=0, help="Epochs without CM-MIR (default: the preset's)."
    ),
    stage2_epochs: int | None = typer.Option(
        None, "--stage2-epochs", min=0, help="Epochs with CM-MIR (default: the preset's)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Pairs per step and process (default: the preset's)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default: preset's)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap steps per stage."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run directory."),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        help="Start from this pretrain run's or exported bundle's weights (not its optimizer, "
        "schedule or step); the architecture must match.",
    ),
    init_parts: str = typer.Option(
        "image,text,heads",
        "--init-parts",
        help="With --init-from: which weights to take: image (encoder, pool, projections, "
        "global norm), text (BERT + pooling, with its tokenizer), heads (the rest, k-means "
        "state included).",
    ),
    resume_if_exists: bool = typer.Option(
        False,
        "--resume-if-exists",
        help="Continue --out when it already holds a checkpoint, else start it (elastic "
        "restarts re-run the same command).",
    ),
    device: Device = DeviceOpt,
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the preset's)."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    nproc: int = typer.Option(1, "--nproc", help="GPUs on this node; >1 prints torchrun."),
    tensorboard: Path | None = typer.Option(
        None, "--tensorboard", help="Also log the training records to TensorBoard here."
    ),
    strict_health: bool = typer.Option(
        False,
        "--strict-health",
        help="Exit 3 when the finished run collapsed (global loss on the InfoNCE plateau, "
        "identical report or image vectors, or one cluster in use).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config, stop."),
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Pretrain CM-CGNS (two stages: without, then with CM-MIR)."""
    apply_threads(threads)
    from cmcgns_cli.config import resolve
    from cmcgns_cli.train.init_from import parse_parts
    from cmcgns_cli.train.run import run_pretrain

    if preset_name is None and resume is None:
        raise BadInputError(
            "--preset is required: tiny or small (offline, scratch text encoder), or "
            "paper-resnet50 / paper-vit with --text-encoder DIR (a local Bio_ClinicalBERT)"
        )
    weights_none = image_weights is not None and str(image_weights).lower() == "none"
    cfg = resolve(
        # a resumed run takes its saved config; the preset only seeds the option parsing
        preset_name.value if preset_name is not None else "tiny",
        config_file,
        sets,
        cli={
            "model": {
                "image_weights": str(image_weights) if image_weights and not weights_none else None,
                "text_encoder": text_encoder,
            },
            "loss": {"variant": variant.value if variant is not None else None},
            "train": {
                "stage1_epochs": stage1_epochs,
                "stage2_epochs": stage2_epochs,
                "batch_size": batch_size,
                "lr": lr,
                "max_steps": max_steps,
                "device": device.value if device != Device.auto else None,
                "seed": seed,
                "tensorboard": str(tensorboard) if tensorboard else None,
            },
            "data": {"workers": workers},
        },
    )
    if resume is None:
        record_image_init(cfg, explicit_none=weights_none)
    if dry_run:
        sys.stdout.write(cfg.to_json() + "\n")
        return
    parts = parse_parts(init_parts)
    if init_from is None and len(parts) < 3:
        raise BadInputError("--init-parts needs --init-from RUN_OR_BUNDLE")
    given = {
        "--preset": preset_name, "--config": config_file, "--set": sets, "--variant": variant,
        "--image-weights": image_weights, "--text-encoder": text_encoder,
        "--stage1-epochs": stage1_epochs, "--stage2-epochs": stage2_epochs,
        "--batch-size": batch_size, "--lr": lr, "--max-steps": max_steps, "--seed": seed,
        "--init-from": init_from,
    }  # fmt: skip
    options = {
        "ignored_on_resume": tuple(name for name, value in given.items() if value),
        "strict_health": strict_health,
        "init_from": init_from,
        "init_parts": parts,
        "resume_if_exists": resume_if_exists,
    }
    if resume is not None:  # before claim() makes the folder
        input_folder(resume, RUN_DIR, option="--resume", needs=("config.json",))
    folder = resume if resume is not None else out
    if folder is None or nproc > 1:  # the run reports what is missing, or prints torchrun
        run_pretrain(
            cfg, data=data, out=out, resume=resume, nproc=nproc, as_json=as_json, **options
        )
        return
    with claim(folder, command_line(), "--resume" if resume is not None else "--out"):
        run_pretrain(
            cfg, data=data, out=out, resume=resume, nproc=nproc, as_json=as_json, **options
        )


def finetune(
    task: FinetuneTask = typer.Option(..., "--task", help="Downstream task."),
    data: Path = typer.Option(..., "--data", help="Prepared downstream dataset."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Pretrain run directory, exported bundle, or none (random init)."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of training labels: 0.01-1."),
    full: bool = typer.Option(False, "--full", help="Fine-tune the encoder too."),
    arch: str | None = typer.Option(
        None, "--arch", help="Encoder for --checkpoint none: resnet50 (default), resnet18, ..."
    ),
    image_weights: Path | None = typer.Option(
        None, "--image-weights", help="Start from a torchvision-compatible state dict."
    ),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Accept image weights that fill < 95 % of the encoder."
    ),
    input_size: str | None = typer.Option(
        None,
        "--input-size",
        metavar="SIZE[,CROP]",
        help="With --checkpoint none: resize (and centre-crop) images to this many px, e.g. a "
        "pretrained run's size for a fair random-init baseline (default: the arch's preset).",
    ),
    like_run: Path | None = typer.Option(
        None,
        "--like",
        help="With --checkpoint none: build the random-init encoder with this run's (pretrain "
        "run, bundle or finetuned folder) architecture and input size: a fair baseline.",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Training epochs (default: the task's protocol)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default: the task's)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Images per step (default: the task's)."
    ),
    device: Device = DeviceOpt,
    seed: int = SeedOpt,
    fraction_sampler: str = typer.Option(
        "auto",
        "--fraction-sampler",
        help="auto (the data's protocol: mgca -> mgca, else stratified), mgca or stratified.",
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader workers."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a finetuned head (and its results) in --out."
    ),
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Train a downstream head (linear probe, detector or U-Net) on a pretrained encoder."""
    apply_threads(threads)
    from cmcgns_cli.downstream.run import run_finetune

    if checkpoint is None and image_weights is None:
        raise BadInputError("give --checkpoint RUN|BUNDLE|none, or --image-weights FILE")
    size = parse_input_size(input_size)
    if like_run is not None:
        if checkpoint is None or str(checkpoint).lower() != "none":
            raise BadInputError(
                "--like RUN shapes a random-init encoder: use it with --checkpoint none"
            )
        arch, size = like(like_run, arch, size)
    # writable, no other command in it; a failed finetune leaves it as it found it
    with claim(out, command_line(), started=keeps_nothing):
        run_finetune(
            task=task.value,
            data=data,
            checkpoint=str(checkpoint) if checkpoint is not None else "none",
            out=out,
            fraction=fraction,
            full=full,
            arch=arch,
            image_weights=image_weights,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            device=device.value,
            seed=seed,
            workers=workers,
            as_json=as_json,
            fraction_sampler=fraction_sampler,
            allow_partial=allow_partial,
            overwrite=overwrite,
            input_size=size,
        )


PAPER_PRESETS = ("paper-resnet50", "paper-vit")


def record_image_init(cfg: Config, *, explicit_none: bool) -> None:
    """Check and record where the image encoder starts (a fresh run).

    A paper preset needs ``model.image_weights`` (``--image-weights FILE``) or an explicit
    ``--image-weights none``: the authors start from ImageNet (torchvision ResNet-50
    IMAGENET1K_V2; DeiT-B for the ViT), and a silent random init trains another model. A
    given file must exist; its SHA-256 goes to ``model.image_weights_sha256`` (config.json,
    the model card). Raises BadInputError (exit 2) otherwise."""
    from cmcgns_cli.bundle import sha256_file

    weights = cfg.model.image_weights
    if weights is None:
        cfg.model.image_weights_sha256 = None
        if cfg.preset in PAPER_PRESETS and not explicit_none:
            raise BadInputError(
                f"--preset {cfg.preset} starts from ImageNet weights: pass --image-weights FILE "
                "(docs/pretraining.md: saving torchvision's ResNet-50 IMAGENET1K_V2) or "
                "--image-weights none for random init"
            )
        return
    path = Path(weights)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise BadInputError(f"{path}: --image-weights {what}")
    cfg.model.image_weights_sha256 = sha256_file(path)


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``--input-size``: ``"SIZE"`` -> (SIZE, SIZE), ``"SIZE,CROP"`` -> (SIZE, CROP), in px.

    Raises:
        BadInputError: not one or two positive integers.
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise BadInputError(
            f"--input-size {text!r}: give SIZE or SIZE,CROP as positive whole px, e.g. 64"
        )
    return int(parts[0]), int(parts[-1])

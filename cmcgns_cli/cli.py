"""The ``cmcgns`` command line: one small function per subcommand, parsing only.

Each function hands its arguments to the module that does the work. Errors derived from
``CmcgnsError`` become a one-line message on stderr and exit code 1 (failed run) or 2
(bad usage or input).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from cmcgns_cli.config import PRESETS
from cmcgns_cli.console import err
from cmcgns_cli.errors import BadInputError, CmcgnsError

app = typer.Typer(
    name="cmcgns",
    help="CM-CGNS: self-supervised joint learning from chest X-rays and radiology reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from cmcgns_cli import __version__

        sys.stdout.write(f"cmcgns {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """CM-CGNS: self-supervised joint learning from chest X-rays and radiology reports."""


def _flag_type_hidden(display: Callable[..., str | None]) -> Callable[..., str | None]:
    # Typer's rich help prints a type for every option; a flag takes no value, so show none
    # (as click's own help does); long choice lists go one choice a line, so that the narrow
    # type column never breaks a choice mid-word
    def show(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        shown = display(self, ctx)
        if shown and len(shown) > 24 and shown.startswith("<") and "|" in shown:
            return "|\n".join(shown.split("|"))
        return shown

    return show


if hasattr(typer.core, "TyperOption") and hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_type_hidden(  # type: ignore[method-assign]
        typer.core.TyperOption.display_type_rich
    )


class Dataset(StrEnum):
    mimic = "mimic"
    chexpert = "chexpert"
    rsna = "rsna"
    siim = "siim"
    covidx = "covidx"
    object_cxr = "object-cxr"
    folder = "folder"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


Preset = StrEnum("Preset", {name: name for name in PRESETS})


class Variant(StrEnum):
    authors = "authors"
    clean = "clean"


class PolygonBox(StrEnum):
    pole = "pole"
    bbox = "bbox"


class EmbedFormat(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"
    npy = "npy"


class Split(StrEnum):
    train = "train"
    validate = "validate"
    test = "test"
    chexpert_5x200 = "5x200"  # CheXpert's held-out 5x200 images (--protocol mgca)


class Protocol(StrEnum):
    mgca = "mgca"
    grouped = "grouped"


TASKS = (
    "chexpert-cls",
    "rsna-cls",
    "covidx-cls",
    "rsna-det",
    "object-cxr-det",
    "siim-seg",
    "rsna-seg",
    "retrieval",
    "zeroshot-chexpert",
    "zeroshot-mimic",
    "zeroshot-rsna",
    "zeroshot-covidx",
    "grounding-rsna",
    "grounding-siim",
    "grounding-mscxr",
)

FinetuneTask = StrEnum("FinetuneTask", {t: t for t in TASKS[:7]})
EvaluateTask = StrEnum("EvaluateTask", {t: t for t in TASKS})

JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
DeviceOpt = typer.Option(Device.auto, "--device", help="auto picks CUDA when available.")
SeedOpt = typer.Option(0, "--seed", help="Random seed.")


@app.command()
def prepare(
    dataset: Dataset = typer.Argument(..., help="Which raw layout --src holds."),
    src: Path = typer.Option(..., "--src", help="The dataset as downloaded (its root folder)."),
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    size: int = typer.Option(256, "--size", min=16, help="Longer side and square size, px."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decoder processes (0 = inline)."),
    protocol: Protocol = typer.Option(
        Protocol.mgca, "--protocol", help="mgca = the paper's splits; grouped = leak-free."
    ),
    min_words: int = typer.Option(3, "--min-words", help="mimic: skip reports with fewer words."),
    polygon_box: PolygonBox = typer.Option(
        PolygonBox.pole,
        "--polygon-box",
        help="object-cxr polygons: pole (a square around the pole of inaccessibility) or "
        "bbox (the plain bounding box).",
    ),
    csv_file: Path | None = typer.Option(None, "--csv", help="folder: the CSV listing images."),
    image_col: str = typer.Option("path", "--image-col", help="folder: image path column."),
    report_col: str | None = typer.Option(None, "--report-col", help="folder: report column."),
    label_cols: str | None = typer.Option(
        None, "--label-cols", help="folder: comma-separated label columns."
    ),
    split_col: str | None = typer.Option(None, "--split-col", help="folder: split column."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a finished dataset in --out prepared with other settings (without it: "
        "refused, exit 2; the same settings are a no-op).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Turn a downloaded dataset into the prepared format (meta.json, manifest, images.npy)."""
    from cmcgns_cli.data.prepare import run_prepare

    run_prepare(
        dataset.value,
        src=src,
        out=out,
        size=size,
        workers=workers,
        options={
            "protocol": protocol.value,
            "min_words": min_words,
            "polygon_box": polygon_box.value,
            "csv": csv_file,
            "image_col": image_col,
            "report_col": report_col,
            "label_cols": label_cols.split(",") if label_cols else None,
            "split_col": split_col,
        },
        as_json=as_json,
        overwrite=overwrite,
    )


@app.command()
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
        None, "--image-weights", help="Local torchvision/timm state dict to start from."
    ),
    text_encoder: str | None = typer.Option(
        None, "--text-encoder", help="Local BERT directory or hub id."
    ),
    variant: Variant | None = typer.Option(
        None,
        "--variant",
        help="authors (the authors' code, the default) or clean (all five textbook forms).",
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
    device: Device = DeviceOpt,
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the preset's)."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    nproc: int = typer.Option(1, "--nproc", help="GPUs on this node; >1 prints torchrun."),
    tensorboard: Path | None = typer.Option(
        None, "--tensorboard", help="Also log the training records to TensorBoard here."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config, stop."),
    as_json: bool = JsonOpt,
) -> None:
    """Pretrain CM-CGNS (two stages: without, then with CM-MIR)."""
    from cmcgns_cli.config import resolve
    from cmcgns_cli.train.run import run_pretrain

    if preset_name is None and resume is None:
        raise BadInputError(
            "--preset is required: tiny or small (offline, scratch text encoder), or "
            "paper-resnet50 / paper-vit with --text-encoder DIR (a local Bio_ClinicalBERT)"
        )
    cfg = resolve(
        # a resumed run takes its saved config; the preset only seeds the option parsing
        preset_name.value if preset_name is not None else "tiny",
        config_file,
        sets,
        cli={
            "model": {
                "image_weights": str(image_weights) if image_weights else None,
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
    if dry_run:
        sys.stdout.write(cfg.to_json() + "\n")
        return
    run_pretrain(cfg, data=data, out=out, resume=resume, nproc=nproc, as_json=as_json)


@app.command()
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
    as_json: bool = JsonOpt,
) -> None:
    """Train a downstream head (linear probe, detector or U-Net) on a pretrained encoder."""
    from cmcgns_cli.downstream.run import run_finetune

    if checkpoint is None and image_weights is None:
        raise BadInputError("give --checkpoint RUN|BUNDLE|none, or --image-weights FILE")
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
    )


@app.command()
def evaluate(
    task: EvaluateTask = typer.Option(..., "--task", help="Task to score."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset with a test split."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Finetuned (or pretrain) run."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat finetuning with N seeds: mean, std."),
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
) -> None:
    """Score a checkpoint on the test split (AUROC, accuracy, mAP, Dice, recall)."""
    from cmcgns_cli.downstream.run import run_evaluate

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


@app.command()
def embed(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pretrain run directory."),
    images: str | None = typer.Option(None, "--images", help="DIR, GLOB, or - for stdin."),
    reports: str | None = typer.Option(None, "--reports", help="CSV/text file, or -."),
    out: Path | None = typer.Option(None, "--out", help=".parquet or .npy; stdout if absent."),
    fmt: EmbedFormat = typer.Option(
        EmbedFormat.jsonl, "--format", help="Output format (parquet and npy need --out)."
    ),
    local: bool = typer.Option(False, "--local", help="Also write patch/sentence vectors."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Inputs per forward pass."),
    device: Device = DeviceOpt,
    workers: int = typer.Option(0, "--workers", min=0, help="Image decoding workers."),
) -> None:
    """Turn images and/or reports into embedding vectors."""
    from cmcgns_cli.embed import run_embed

    run_embed(
        checkpoint=checkpoint,
        images=images,
        reports=reports,
        out=out,
        fmt=fmt.value,
        local=local,
        batch_size=batch_size,
        device=device.value,
        workers=workers,
    )


@app.command()
def export(
    run: Path = typer.Argument(..., help="Pretrain run directory."),
    out: Path = typer.Option(..., "--out", help="New folder for the bundle."),
    data: Path | None = typer.Option(
        None, "--data", help="The run's prepared training data, if it has moved."
    ),
    license_id: str = typer.Option("other", "--license", help="Model-card license id."),
    weights: str = typer.Option("auto", "--weights", help="auto, best or last."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a self-describing, checksummed bundle of a run (for a model hub)."""
    from cmcgns_cli.export import run_export

    run_export(run=run, out=out, data=data, license_id=license_id, weights=weights, as_json=as_json)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder for the six raw layouts."),
    n: int = typer.Option(200, "--n", min=1, help="Studies to draw."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    layouts: str | None = typer.Option(
        None, "--layouts", help="Comma-separated subset (default: all six)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Override the source image size (px, longer side)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write a synthetic chest X-ray world in the six public datasets' raw layouts."""
    from cmcgns_cli.synth import run_synth

    run_synth(
        out=out,
        n=n,
        seed=seed,
        layouts=layouts.split(",") if layouts else None,
        image_size=image_size,
        as_json=as_json,
    )


@app.command()
def demo(
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the demo (default: a temp dir)."
    ),
    synth_n: int | None = typer.Option(
        None, "--synth", min=1, help="Draw a fresh synthetic world of N studies instead."
    ),
    seed: int = SeedOpt,
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap steps per stage."),
    as_json: bool = JsonOpt,
) -> None:
    """Sample data -> prepare -> tiny pretrain, end to end on the CPU (a minute or so)."""
    from cmcgns_cli.demo import run_demo

    run_demo(out=out, synth_n=synth_n, seed=seed, max_steps=max_steps, as_json=as_json)


@app.command()
def explain(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pretrain run directory."),
    image: str = typer.Option(..., "--image", help="An image file (JPEG, PNG, DICOM)."),
    report: str = typer.Option(..., "--report", help="Report text, or a file holding it."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs and explain.json."),
    device: Device = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the CM-MIR mask."),
    as_json: bool = JsonOpt,
) -> None:
    """Per-sentence attention heat maps, the CM-MIR reconstruction and sentence clusters."""
    from cmcgns_cli.explain import run_explain

    run_explain(
        checkpoint=checkpoint,
        image=image,
        report=report,
        out=out,
        device=device.value,
        seed=seed,
        as_json=as_json,
    )


@app.command()
def clusters(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pretrain run directory."),
    data: Path = typer.Option(..., "--data", help="Prepared paired dataset."),
    split: Split = typer.Option(Split.train, "--split", help="Which split's reports."),
    limit: int = typer.Option(5000, "--limit", min=0, help="At most N reports (0 = all)."),
    top: int = typer.Option(5, "--top", min=1, help="Nearest distinct sentences per centroid."),
    out: Path | None = typer.Option(None, "--out", help="Also write the table as CSV."),
    truth: Path | None = typer.Option(
        None,
        "--truth",
        help="Synthetic world truth (OUT/truth/mimic.jsonl): adds purity, NMI and the "
        "false-negative mask's precision / recall against each sentence's finding.",
    ),
    device: Device = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """For each k-means centroid: its size and nearest sentences (what negatives are made of)."""
    from cmcgns_cli.clusters import run_clusters

    run_clusters(
        truth=truth,
        checkpoint=checkpoint,
        data=data,
        split=split.value,
        limit=limit,
        top=top,
        out=out,
        device=device.value,
        as_json=as_json,
    )


@app.command()
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
    as_json: bool = JsonOpt,
) -> None:
    """Paired comparison of two runs on the same test images: diff, 95% CI, p-value."""
    from cmcgns_cli.compare import run_compare

    run_compare(
        run_a=run_a, run_b=run_b, task=task.value, data=data, prompts=prompts,
        annotations=annotations, resamples=resamples, seed=seed, device=device.value,
        as_json=as_json,
    )  # fmt: skip


@app.command()
def plot(
    run: Path = typer.Argument(..., help="A pretrain run or a finetuned directory."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG figures."),
    as_json: bool = JsonOpt,
) -> None:
    """Training curves as PNG figures: one panel per logged series."""
    from cmcgns_cli.plot import run_plot

    run_plot(run=run, out=out, as_json=as_json)


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    from cmcgns_cli.interrupts import Interrupted

    # nothing is ever downloaded: Hugging Face libraries imported from here on stay offline
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app(standalone_mode=False, prog_name="cmcgns")
    except Interrupted as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except CmcgnsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except (typer.Abort, KeyboardInterrupt):
        # Ctrl-C in a command without its own handler (click turns it into Abort)
        err.print("interrupted", markup=False, highlight=False)
        sys.exit(130)
    except Exception as exc:
        # Usage errors from click (typer may vendor its own copy) carry show() and exit_code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            # one line, like every other error, naming where to look for the usage
            ctx = getattr(exc, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(str(exc.format_message()).split())
            err.print(f"error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        raise

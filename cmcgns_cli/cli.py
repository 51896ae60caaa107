"""The ``cmcgns`` command line: one small function per subcommand, parsing only.

Each function hands its arguments to the module that does the work. Errors derived from
``CmcgnsError`` become a one-line message on stderr and exit code 1 (failed run) or 2
(bad usage or input).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from cmcgns_cli.config import PRESETS
from cmcgns_cli.console import err
from cmcgns_cli.errors import CmcgnsError

app = typer.Typer(
    name="cmcgns",
    help="CM-CGNS: self-supervised joint learning from chest X-rays and radiology reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
)

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
    polygon_box: str = typer.Option(
        "pole", "--polygon-box", help="object-cxr polygons: pole (protocol) or bbox."
    ),
    csv_file: Path | None = typer.Option(None, "--csv", help="folder: the CSV listing images."),
    image_col: str = typer.Option("path", "--image-col", help="folder: image path column."),
    report_col: str | None = typer.Option(None, "--report-col", help="folder: report column."),
    label_cols: str | None = typer.Option(
        None, "--label-cols", help="folder: comma-separated label columns."
    ),
    split_col: str | None = typer.Option(None, "--split-col", help="folder: split column."),
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
            "polygon_box": polygon_box,
            "csv": csv_file,
            "image_col": image_col,
            "report_col": report_col,
            "label_cols": label_cols.split(",") if label_cols else None,
            "split_col": split_col,
        },
        as_json=as_json,
    )


@app.command()
def pretrain(
    data: Path | None = typer.Option(
        None, "--data", help="Prepared paired dataset (e.g. mimic); with --resume, optional."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run directory for checkpoints and logs (--resume: that run's)."
    ),
    preset_name: str = typer.Option(
        "paper-resnet50", "--preset", help=f"One of: {', '.join(PRESETS)}."
    ),
    config_file: Path | None = typer.Option(None, "--config", help="TOML/YAML overrides."),
    sets: list[str] = typer.Option([], "--set", help="Override one key: section.key=value."),
    image_weights: Path | None = typer.Option(
        None, "--image-weights", help="Local torchvision/timm state dict to start from."
    ),
    text_encoder: str | None = typer.Option(
        None, "--text-encoder", help="Local BERT directory or hub id."
    ),
    variant: str | None = typer.Option(None, "--variant", help="authors (default) or clean."),
    stage1_epochs: int | None = typer.Option(None, "--stage1-epochs"),
    stage2_epochs: int | None = typer.Option(None, "--stage2-epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap steps per stage."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue this run directory."),
    device: Device = DeviceOpt,
    seed: int | None = typer.Option(None, "--seed"),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    nproc: int = typer.Option(1, "--nproc", help="GPUs on this node; >1 prints torchrun."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config, stop."),
    as_json: bool = JsonOpt,
) -> None:
    """Pretrain CM-CGNS (two stages: without, then with CM-MIR)."""
    from cmcgns_cli.config import resolve
    from cmcgns_cli.train.run import run_pretrain

    cfg = resolve(
        preset_name,
        config_file,
        sets,
        cli={
            "model": {
                "image_weights": str(image_weights) if image_weights else None,
                "text_encoder": text_encoder,
            },
            "loss": {"variant": variant},
            "train": {
                "stage1_epochs": stage1_epochs,
                "stage2_epochs": stage2_epochs,
                "batch_size": batch_size,
                "lr": lr,
                "max_steps": max_steps,
                "device": device.value if device != Device.auto else None,
                "seed": seed,
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
    task: str = typer.Option(..., "--task", help=f"One of: {', '.join(TASKS[:7])}."),
    data: Path = typer.Option(..., "--data", help="Prepared downstream dataset."),
    checkpoint: str = typer.Option(..., "--checkpoint", help="Pretrain run directory or none."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of training labels: 0.01-1."),
    full: bool = typer.Option(False, "--full", help="Fine-tune the encoder too."),
    arch: str | None = typer.Option(
        None, "--arch", help="Encoder for --checkpoint none: resnet50 (default), resnet18, ..."
    ),
    image_weights: Path | None = typer.Option(
        None, "--image-weights", help="Start from a torchvision-compatible state dict."
    ),
    epochs: int | None = typer.Option(None, "--epochs"),
    lr: float | None = typer.Option(None, "--lr"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: Device = DeviceOpt,
    seed: int = SeedOpt,
    workers: int = typer.Option(0, "--workers"),
    as_json: bool = JsonOpt,
) -> None:
    """Train a downstream head (linear probe, detector or U-Net) on a pretrained encoder."""
    from cmcgns_cli.downstream.run import run_finetune

    run_finetune(
        task=task,
        data=data,
        checkpoint=checkpoint,
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
    )


@app.command()
def evaluate(
    task: str = typer.Option(..., "--task", help=f"One of: {', '.join(TASKS)}."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset with a test split."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Finetuned (or pretrain) run."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat finetuning with N seeds: mean, std."),
    save_examples: int = typer.Option(0, "--save-examples", help="Write N example PNGs."),
    prompts: Path | None = typer.Option(None, "--prompts", help="zero-shot prompts file."),
    device: Device = DeviceOpt,
    workers: int = typer.Option(0, "--workers"),
    as_json: bool = JsonOpt,
) -> None:
    """Score a checkpoint on the test split (AUROC, accuracy, mAP, Dice, recall)."""
    from cmcgns_cli.downstream.run import run_evaluate

    run_evaluate(
        task=task,
        data=data,
        checkpoint=checkpoint,
        seeds=seeds,
        save_examples=save_examples,
        prompts=prompts,
        device=device.value,
        workers=workers,
        as_json=as_json,
    )


@app.command()
def embed(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pretrain run directory."),
    images: str | None = typer.Option(None, "--images", help="DIR, GLOB, or - for stdin."),
    reports: str | None = typer.Option(None, "--reports", help="CSV/text file, or -."),
    out: Path | None = typer.Option(None, "--out", help=".parquet or .npy; stdout if absent."),
    fmt: str = typer.Option("jsonl", "--format", help="parquet, npy or jsonl."),
    local: bool = typer.Option(False, "--local", help="Also write patch/sentence vectors."),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: Device = DeviceOpt,
    workers: int = typer.Option(0, "--workers"),
) -> None:
    """Turn images and/or reports into embedding vectors."""
    from cmcgns_cli.embed import run_embed

    run_embed(
        checkpoint=checkpoint,
        images=images,
        reports=reports,
        out=out,
        fmt=fmt,
        local=local,
        batch_size=batch_size,
        device=device.value,
        workers=workers,
    )


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
    from cmcgns_cli.train.demo import run_demo

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
    split: str = typer.Option("train", "--split", help="train, validate or test."),
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
        split=split,
        limit=limit,
        top=top,
        out=out,
        device=device.value,
        as_json=as_json,
    )


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    try:
        app(standalone_mode=False)
    except CmcgnsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except Exception as exc:
        # Usage errors from click (typer may vendor its own copy) carry show() and exit_code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise

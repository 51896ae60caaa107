"""``cmcgns embed``, ``export``, ``explain``, ``clusters`` and ``plot``: use and inspect a run.

Each function parses its options and hands them to the module that does the work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cmcgns_cli.commands.options import (
    Device,
    DeviceOpt,
    EmbedFormat,
    JsonOpt,
    ReportsFormat,
    Split,
    ThreadsOpt,
    Weights,
    apply_threads,
)


def embed(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Pretrain run directory or exported bundle."
    ),
    images: str | None = typer.Option(None, "--images", help="DIR, GLOB, or - for stdin."),
    reports: str | None = typer.Option(None, "--reports", help="CSV/text file, or -."),
    out: Path | None = typer.Option(
        None, "--out", help=".jsonl, .parquet or .npy file; JSON Lines on stdout if absent."
    ),
    fmt: EmbedFormat = typer.Option(
        EmbedFormat.jsonl, "--format", help="Output format (parquet and npy need --out)."
    ),
    local: bool = typer.Option(False, "--local", help="Also write patch/sentence vectors."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Inputs per forward pass."),
    device: Device = DeviceOpt,
    workers: int = typer.Option(0, "--workers", min=0, help="Image decoding workers."),
    reports_format: ReportsFormat = typer.Option(
        ReportsFormat.lines,
        "--reports-format",
        help="lines: one report a line (CSV/JSON Lines by suffix); file: the whole file is "
        "one report.",
    ),
    threads: int | None = ThreadsOpt,
) -> None:
    """Turn images and/or reports into embedding vectors."""
    apply_threads(threads)
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
        reports_format=reports_format.value,
    )


def export(
    run: Path = typer.Argument(..., help="Pretrain run directory."),
    out: Path = typer.Option(..., "--out", help="New folder for the bundle."),
    data: Path | None = typer.Option(
        None, "--data", help="The run's prepared training data, if it has moved."
    ),
    license_id: str = typer.Option("other", "--license", help="Model-card license id."),
    weights: Weights = typer.Option(
        Weights.auto, "--weights", help="auto (best/ when the run has one), best or last."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write a self-describing, checksummed bundle of a run (for a model hub)."""
    from cmcgns_cli.export import run_export

    run_export(run=run, out=out, data=data, license_id=license_id, weights=weights.value,
               as_json=as_json)  # fmt: skip


def explain(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Pretrain run directory or exported bundle."
    ),
    image: str = typer.Option(..., "--image", help="An image file (JPEG, PNG, DICOM)."),
    report: str = typer.Option(..., "--report", help="Report text, or a file holding it."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs and explain.json."),
    device: Device = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the CM-MIR mask."),
    reports_format: ReportsFormat = typer.Option(
        ReportsFormat.file,
        "--reports-format",
        help="For a --report FILE: file (the whole file is the report) or lines (one report "
        "a line; the file must hold one).",
    ),
    as_json: bool = JsonOpt,
    threads: int | None = ThreadsOpt,
) -> None:
    """Per-sentence attention heat maps, the CM-MIR reconstruction and sentence clusters."""
    apply_threads(threads)
    from cmcgns_cli.explain import run_explain

    run_explain(
        checkpoint=checkpoint,
        image=image,
        report=report,
        out=out,
        device=device.value,
        seed=seed,
        as_json=as_json,
        reports_format=reports_format.value,
    )


def clusters(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Pretrain run directory or exported bundle."
    ),
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
    threads: int | None = ThreadsOpt,
) -> None:
    """For each k-means centroid: its size and nearest sentences (what negatives are made of)."""
    apply_threads(threads)
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


def plot(
    run: Path = typer.Argument(..., help="A pretrain run or a finetuned directory."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG figures."),
    as_json: bool = JsonOpt,
) -> None:
    """Training curves as PNG figures: one panel per logged series."""
    from cmcgns_cli.plot import run_plot

    run_plot(run=run, out=out, as_json=as_json)

"""``cmcgns prepare``, ``synth`` and ``demo``: the commands that make data.

Each function parses its options and hands them to the module that does the work.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cmcgns_cli.commands.options import Dataset, JsonOpt, PolygonBox, Protocol, SeedOpt


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
    any_modality: bool = typer.Option(
        False,
        "--any-modality",
        help="Keep DICOMs of every Modality (default: only radiographs CR, DX, RG, DR; others "
        "are skipped as not_radiograph).",
    ),
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
    from cmcgns_cli.outdir import claim, command_line

    with claim(out, command_line()):  # writable, and no other command in it
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
                "any_modality": any_modality,
            },
            as_json=as_json,
            overwrite=overwrite,
        )


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
    normal_share: float | None = typer.Option(
        None,
        "--normal-share",
        help="Share of MIMIC/CheXpert studies drawn normal (no finding, no device), 0-1. "
        "Default: the historical draws (about 0.27 normal). Real IU X-ray reports: 0.65.",
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
        normal_share=normal_share,
    )


def demo(
    out: Path | None = typer.Option(
        None, "--out", help="New or empty folder for the demo (default: a temp dir)."
    ),
    synth_n: int | None = typer.Option(
        None, "--synth", min=1, help="Studies in the drawn synthetic world (default 400)."
    ),
    seed: int = SeedOpt,
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Cap steps per stage."),
    as_json: bool = JsonOpt,
) -> None:
    """Draw a synthetic world, prepare it, pretrain the tiny preset, and score the pretrained
    encoder against a random-init one on held-out measures (about two minutes of CPU)."""
    from cmcgns_cli.demo import run_demo

    run_demo(out=out, synth_n=synth_n, seed=seed, max_steps=max_steps, as_json=as_json)

"""Choices and shared options of the ``cmcgns`` command line (used by ``commands/*``)."""

from __future__ import annotations

from enum import StrEnum

import typer

from cmcgns_cli.config import PRESETS
from cmcgns_cli.task_names import EVAL_ONLY_TASKS, FINETUNE_TASKS


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


class Weights(StrEnum):
    auto = "auto"  # best/ when the run has one, else the last weights
    best = "best"
    last = "last"


class PolygonBox(StrEnum):
    pole = "pole"
    bbox = "bbox"


class EmbedFormat(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"
    npy = "npy"


class ReportsFormat(StrEnum):
    """How a reports text file is read: one report a line, or the whole file as one."""

    lines = "lines"
    file = "file"


class Split(StrEnum):
    train = "train"
    validate = "validate"
    test = "test"
    chexpert_5x200 = "5x200"  # CheXpert's held-out 5x200 images (--protocol mgca)


class Protocol(StrEnum):
    mgca = "mgca"
    grouped = "grouped"


TASKS = (*FINETUNE_TASKS, *EVAL_ONLY_TASKS)

FinetuneTask = StrEnum("FinetuneTask", {t: t for t in FINETUNE_TASKS})
EvaluateTask = StrEnum("EvaluateTask", {t: t for t in TASKS})

JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
DeviceOpt = typer.Option(Device.auto, "--device", help="auto picks CUDA when available.")
SeedOpt = typer.Option(0, "--seed", help="Random seed.")
ThreadsOpt = typer.Option(
    None,
    "--threads",
    help="CPU threads for computing (default: OMP_NUM_THREADS, else the cores this process "
    "may use less the machine's load, at least 1).",
    show_default=False,
)


def apply_threads(threads: int | None) -> int:
    """``--threads``: set torch's CPU thread count (torch is imported here, not at start-up,
    so ``--help`` stays fast); see :func:`cmcgns_cli.runtime.set_threads`."""
    from cmcgns_cli.runtime import set_threads

    return set_threads(threads)

"""`cmcgns demo`: why pretrain? A fresh synthetic world, CM-CGNS pretrained on it, and the
pretrained encoder against a random-init one on held-out measures, in about two minutes of
CPU.

Stages (each timed): ``synth`` draws N MIMIC-CXR-style studies (image + report) for
pretraining and two labelled worlds for the downstream probes (CheXpert-style, 2.5 N
images; RSNA-style, 2 N images; sized so the test splits hold enough images for an AUROC
to mean something); ``prepare`` turns the three into the prepared format; ``pretrain`` runs
the ``tiny`` preset at a small image size; ``linear_probe`` trains a linear head on frozen
features of each encoder (the paper's linear classification protocol, all labels) for the
five CheXpert findings (macro AUROC) and for RSNA pneumonia (AUROC), scored on each test
split (chance 0.5); ``retrieval`` scores image-to-report recall at 10 on the MIMIC-style
test split (chance: 10 over the number of test pairs). Both encoders share the
architecture; the random one is drawn with the same seed each time. The tiny preset's
batch-normalised global vectors (``model.global_norm``) take the short run off the InfoNCE
plateau, so retrieval rises above chance too (docs/everyday.md gives the five seeds).

The demo sets torch's thread count itself (one intra-op thread: the tiny model gains
nothing from more, and on a busy 2-core machine competing threads made it several times
slower), works in ``--out`` or in a temporary folder it removes, keeps the steps' own
tables and JSON off the screen (their progress stays on stderr) and prints the measures
on stdout: a table, or with ``--json`` exactly
``{"measures": [{"name", "pretrained", "random_init", "chance"}, ...], "seconds": {...}}``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmcgns_cli.console import emit_json, err
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError

WORLD_STUDIES = 400  # drawn MIMIC-style studies (pretraining)
# probe worlds, in images per pretraining study: test splits of about 80 (CheXpert-style) and
# 120 (RSNA-style) images, where 13 made the first demo's AUROC noise
PROBE_WORLDS = {"chexpert": 2.5, "rsna": 2.0}
LAYOUT_FOLDERS = {"mimic": "mimic-cxr-jpg", "chexpert": "chexpert", "rsna": "rsna"}
PROBES = {
    "chexpert-cls": ("chexpert", "CheXpert-style 5-finding linear-probe macro AUROC"),
    "rsna-cls": ("rsna", "RSNA pneumonia linear-probe AUROC"),
}
SOURCE_SIZE = 96  # px, longer side of the drawn images
IMAGE_SIZE = 64  # px, prepared and trained
STAGE1_EPOCHS, STAGE2_EPOCHS = 5, 1
PROBE_EPOCHS = 50  # finetune's default for the linear classification protocol
RECALL_K = 10  # R@1 over a few dozen test pairs is a handful of hits: too noisy to show
OPTIONS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole"}


@contextlib.contextmanager
def _workdir(out: Path | None) -> Iterator[Path]:
    if out is None:
        with tempfile.TemporaryDirectory(prefix="cmcgns-demo-") as tmp:
            yield Path(tmp)
        return
    work = Path(out)
    if (work / "run" / "config.json").exists():
        raise BadInputError(f"{work}: already holds a demo run; choose another --out")
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise BadInputError(
            f"{work}: not an empty folder; the demo writes into a new or empty --out"
        )
    work.mkdir(parents=True, exist_ok=True)
    yield work


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        err.print(f"[bold]demo[/bold]: {what}")
        t0 = time.perf_counter()
        # the steps' own summaries (tables, JSON) are not the demo's output
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        self.seconds[name] = round(time.perf_counter() - t0, 1)


def run_demo(
    *, out: Path | None, synth_n: int | None, seed: int, max_steps: int | None, as_json: bool
) -> dict[str, Any]:
    """Run the demo; print and return ``{"measures": [...], "seconds": {...}}``.

    Raises:
        BadInputError: ``--out`` already holds a demo run.
    """
    import torch

    torch.set_num_threads(1)
    n = int(synth_n or WORLD_STUDIES)
    clock = _Clock()
    with _workdir(out) as work:
        measures = _stages(work, n, seed, max_steps, clock)
    result = {"measures": measures, "seconds": clock.seconds}
    if as_json:
        emit_json(result)
    else:
        _print(result, n)
    return result


def _stages(
    work: Path, n: int, seed: int, max_steps: int | None, clock: _Clock
) -> list[dict[str, Any]]:
    from cmcgns_cli.config import preset
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.downstream.retrieval import evaluate_retrieval
    from cmcgns_cli.runtime import resolve_device
    from cmcgns_cli.synth import run_synth
    from cmcgns_cli.train.run import run_pretrain

    device = resolve_device("auto")
    sizes = {"mimic": n, **{k: max(1, round(f * n)) for k, f in PROBE_WORLDS.items()}}
    what = f"{n} studies for pretraining, {sizes['chexpert']} + {sizes['rsna']} probe images"
    with clock.stage("synth", f"drawing a synthetic world: {what}"):
        for name, count in sizes.items():  # one world per layout: each has its own size
            run_synth(out=work / "raw" / name, n=count, seed=seed, layouts=[name],
                      image_size=SOURCE_SIZE, as_json=True)  # fmt: skip
    with clock.stage("prepare", "preparing the MIMIC-CXR, CheXpert and RSNA layouts"):
        for name, folder in LAYOUT_FOLDERS.items():
            run_prepare(name, src=work / "raw" / name / folder, out=work / name,
                        size=IMAGE_SIZE, workers=0, options=OPTIONS, as_json=True)  # fmt: skip
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = IMAGE_SIZE
    cfg.loss.num_clusters = 8
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = STAGE1_EPOCHS, STAGE2_EPOCHS
    cfg.train.seed = seed
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    run = work / "run"
    with clock.stage("pretrain", "pretraining CM-CGNS (tiny preset)"):
        run_pretrain(cfg, data=work / "mimic", out=run, resume=None, nproc=1, as_json=True)
    with clock.stage("linear_probe", "CheXpert and RSNA linear probes on frozen features"):
        measures = [_linear_probe(work, run, task, seed, device) for task in PROBES]
    with clock.stage("retrieval", "image-to-report retrieval on the held-out test split"):
        got = {
            label: evaluate_retrieval(work / "mimic", run, device, random_init=random)["metrics"]
            for label, random in (("pretrained", False), ("random_init", True))
        }
    pairs = int(got["pretrained"]["pairs"])
    measures.append(
        {
            "name": f"image-to-report R@{RECALL_K} ({pairs} held-out pairs)",
            "pretrained": round(got["pretrained"][f"i2t_R@{RECALL_K}"], 4),
            "random_init": round(got["random_init"][f"i2t_R@{RECALL_K}"], 4),
            # a random ranking puts the right report in the top K with probability K / N
            "chance": round(min(1.0, RECALL_K / max(pairs, 1)), 4),
        }
    )
    return measures


def _linear_probe(work: Path, run: Path, task: str, seed: int, device: Any) -> dict[str, Any]:
    """A linear probe of ``task`` on the pretrained and on a random-init encoder (same arch),
    as one measure: AUROC on the task's test split, chance 0.5."""
    from cmcgns_cli.downstream.classification import evaluate_cls, finetune_cls

    data, title = PROBES[task]
    scores: dict[str, float] = {}
    n_test = 0
    for label, ckpt in (("pretrained", str(run)), ("random_init", "none")):
        ft = work / f"probe-{data}-{label}"
        finetune_cls(
            task_name=task, data=work / data, checkpoint=ckpt, out=ft, fraction=1.0,
            full=False, arch="resnet_tiny", image_weights=None, epochs=PROBE_EPOCHS, lr=None,
            batch_size=None, seed=seed, device=device,
            # the random-init baseline sees the pretrained run's input size, not the preset's
            input_size=None if label == "pretrained" else (IMAGE_SIZE, IMAGE_SIZE),
        )  # fmt: skip
        result = evaluate_cls(task, work / data, ft, device)
        scores[label] = round(float(result["value"]), 4)
        n_test = int(result["protocol"]["n_test"])
    return {"name": f"{title} ({n_test} test images)", **scores, "chance": 0.5}


def _print(result: dict[str, Any], n: int) -> None:
    from rich.table import Table

    table = Table(title=f"cmcgns demo: pretrained vs random init ({n}-study synthetic world)")
    for col in ("measure", "pretrained", "random init", "chance"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for m in result["measures"]:
        table.add_row(m["name"], f"{m['pretrained']:.3f}", f"{m['random_init']:.3f}",
                      f"{m['chance']:.3f}")  # fmt: skip
    stdout.print(table)
    total = sum(result["seconds"].values())
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    stdout.print(f"time: {stages} (total {total:.0f} s)")

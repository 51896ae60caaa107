"""Why the tiny preset sat on the InfoNCE plateau on the demo's world, and what took it off:
runs with one change each, judged by the run-health gauges of their last epoch.

The world is the demo's (``cmcgns demo``: 400 synthetic MIMIC-style studies drawn at 96 px,
prepared at 64 px); each run is the demo's pretrain (tiny preset at 64 px, 8 clusters, seed 0)
for ``--epochs`` stage-1 epochs with the ``--set`` items of its row. A row may instead name a
``pretrain-text`` folder (``text=DIR``) trained first on the same world's reports. Rows named
``*_none`` are the study as first run, on the authors' model (``model.global_norm=none``);
``base`` is the tiny preset as it is now (``batchnorm``); the ``fresh*`` rows are a plain
``pretrain --preset tiny`` (its own 144 / 128 px, 16 clusters and schedule) judged on its
last stage: ``fresh`` is the preset as it is now, the other ``fresh_*`` rows start from the
preset before it dropped its random crop and took a third stage-1 epoch.

    python bench/plateau_study.py --work /tmp/plateau            # all rows, resumable
    python bench/plateau_study.py --work /tmp/plateau --rows base_none,base,fresh_none,fresh
    python bench/plateau_study.py --work /tmp/plateau --rows fresh,fresh_random_crop --seed 1

Prints one table row per run: global loss and its plateau log(32), report and image vectors'
mean pairwise cosine, clusters in use, the health status; the last line is the base row's
status. Runs already in ``--work`` are read, not retrained.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

# the rows measured before the tiny preset took model.global_norm = batchnorm: each ran the
# authors' model (no batch normalisation of the global vectors), so they pin it
_BEFORE: dict[str, list[str]] = {
    "base": [],
    "global_only": ["loss.w_local_image=0", "loss.w_local_text=0", "loss.clustering=false"],
    "no_local_image": ["loss.w_local_image=0"],
    "no_local_text": ["loss.w_local_text=0", "loss.clustering=false"],
    "no_augment": ["data.augment=false"],
    "temperature_0.5": ["loss.temperature_init=0.5"],
    "temperature_1": ["loss.temperature_init=1.0"],
    "temperature_0.5_lr_3e-3": ["loss.temperature_init=0.5", "train.lr=3e-3"],
    "global_only_temperature_1": [
        "loss.temperature_init=1.0",
        "loss.w_local_image=0",
        "loss.w_local_text=0",
        "loss.clustering=false",
    ],  # fmt: skip
    "warm_text_2ep": ["text=2"],
    "warm_text_10ep": ["text=10"],
}
# the tiny preset's data and schedule before it dropped the random crop and took a third
# stage-1 epoch (issue 26); the ``fresh_*`` rows pin them
_FRESH_BEFORE = ["data.augment=random_crop", "train.stage1_epochs=2"]
_FRESH: dict[str, list[str]] = {
    "": [],  # the tiny preset as it is now
    "_none": ["model.global_norm=none"],
    "_random_crop": [],
    "_stage1_4ep": ["train.stage1_epochs=4"],
    "_stage1_5ep": ["train.stage1_epochs=5"],
    "_lr_3e-3": ["train.lr=3e-3"],
    "_warmup_0": ["train.warmup_epochs=0"],
    "_64px": ["data.image_size=72", "data.crop_size=64"],
    "_64px_nocrop": ["data.image_size=64", "data.crop_size=64"],
    "_64px_nocrop_clean": ["data.image_size=64", "data.crop_size=64", "loss.variant=clean"],
    "_64px_nocrop_mean": ["data.image_size=64", "data.crop_size=64", "loss.centroid_update=mean"],
    "_no_augment": ["data.augment=none"],
    "_no_augment_lr_2e-3": ["data.augment=none", "train.lr=2e-3"],
    "_no_augment_stage1_4ep": ["data.augment=none", "train.stage1_epochs=4"],
}
ROWS: dict[str, list[str]] = {
    **{f"{name}_none": ["model.global_norm=none", *sets] for name, sets in _BEFORE.items()},
    # the tiny preset as it is now (model.global_norm = batchnorm)
    "base": [],
    # a fresh ``pretrain --preset tiny`` on the demo's world: the preset's own sizes (144 / 128
    # px), 16 clusters and schedule, not the demo's settings. ``fresh`` is the preset as it is
    # now (no augmentation, 3 + 1 epochs); the other rows pin the preset as it was before that
    # change (random 128 px crops of the 144 px image, 2 + 1 epochs) and change one thing
    **{
        f"fresh{name}": ["fresh", *([] if name == "" else _FRESH_BEFORE), *sets]
        for name, sets in _FRESH.items()
    },  # fmt: skip
    # a fresh ``pretrain --preset small`` (ResNet-18, 256 / 224 px, 5 + 5 epochs), as it is
    # (``batchnorm``) and with the authors' model
    "small": ["small"],
    "small_none": ["small", "model.global_norm=none"],
}


def world(work: Path) -> Path:
    """The demo's prepared MIMIC-style world in ``work/mimic`` (drawn once)."""
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.demo import IMAGE_SIZE, OPTIONS, SOURCE_SIZE, WORLD_STUDIES
    from cmcgns_cli.synth import run_synth

    data = work / "mimic"
    if not (data / "meta.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            run_synth(out=work / "raw", n=WORLD_STUDIES, seed=0, layouts=["mimic"],
                      image_size=SOURCE_SIZE, as_json=True)  # fmt: skip
            run_prepare("mimic", src=work / "raw" / "mimic-cxr-jpg", out=data, size=IMAGE_SIZE,
                        workers=0, options=OPTIONS, as_json=True)  # fmt: skip
    return data


def text_tower(work: Path, data: Path, epochs: int) -> Path:
    """A tiny-preset ``pretrain-text`` BERT on the world's train reports."""
    from cmcgns_cli.config import preset
    from cmcgns_cli.train.mlm import run_pretrain_text

    out = work / f"bert-{epochs}ep"
    if not (out / "pretrain_text.json").is_file():
        cfg = preset("tiny")
        cfg.train.stage1_epochs = epochs
        with contextlib.redirect_stdout(io.StringIO()):
            run_pretrain_text(cfg, data=data, reports=None, text_encoder=None, out=out,
                              resume=None, device=__import__("torch").device("cpu"),
                              as_json=True)  # fmt: skip
    return out


def run_row(work: Path, data: Path, name: str, sets: list[str], epochs: int, seed: int) -> dict:
    from cmcgns_cli.config import apply_overrides, preset
    from cmcgns_cli.config_values import parse_set
    from cmcgns_cli.train.run import run_pretrain

    out = work / "runs" / (name if seed == 0 else f"{name}_seed{seed}")
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = preset("small" if "small" in sets else "tiny")
    cfg.train.seed = seed
    if "fresh" not in sets and "small" not in sets:  # the demo's pretrain, stage 1 only
        cfg.data.image_size = cfg.data.crop_size = 64
        cfg.loss.num_clusters = 8
        cfg.train.stage1_epochs, cfg.train.stage2_epochs = epochs, 0
    text = [s for s in sets if s.startswith("text=")]
    if text:
        cfg.model.text_encoder = str(text_tower(work, data, int(text[0].split("=")[1])))
    rest = [s for s in sets if not s.startswith("text=") and s not in ("fresh", "small")]
    if rest:
        apply_overrides(cfg, parse_set(rest), source="--set")
    if out.exists():
        __import__("shutil").rmtree(out)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_pretrain(cfg, data=data, out=out, resume=None, nproc=1, as_json=True)
    done.write_text(json.dumps(summary, default=str))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="pretrain seed (the world stays seed 0)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    data = world(args.work)
    print("| row | global loss (plateau 3.466) | report cos | image cos | clusters | health |")
    print("|---|---|---|---|---|---|")
    status = {}
    for name in args.rows.split(","):
        h = run_row(args.work, data, name, ROWS[name], args.epochs, args.seed)["health"]
        g = h["stages"][str(h["stage"])]  # the last stage's verdict
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"| {name} | {fmt(g['global_loss'])} | {fmt(g['text_global_cos'])} | "
              f"{fmt(g['image_global_cos'])} | {fmt(g['clusters_nonempty'])} | "
              f"{h['status']} ({', '.join(h['collapsed']) or 'none'}) |", flush=True)  # fmt: skip
        status[name] = h["status"]
    print(f"base: {status.get('base', 'not run')}")


if __name__ == "__main__":
    main()

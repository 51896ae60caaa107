"""Does each part of CM-CGNS help? The ablation grid on a world where false negatives matter.

The world: ``cmcgns synth --normal-share 0.65`` (the real IU X-ray share of in-batch pairs
whose reports state the same findings, 0.430, is matched by 0.65 normal studies), drawn at
96 px and prepared at 64 px: MIMIC-style pairs to pretrain on, and CheXpert-, RSNA- and
SIIM-style labelled worlds for the downstream tasks. Each cell pretrains the ``tiny`` preset
(64 px, 8 clusters, ``--epochs`` stage-1 + stage-2 epochs) with one arm's switches, from
scratch or warm-started from the recipe of ``bench/warm_start.py`` (``--warm DIR``), and
scores it:

- CheXpert-style linear probe at 1 % and 10 % labels (macro AUROC), RSNA detection mAP and
  SIIM segmentation Dice at 10 % labels (``finetune`` + ``evaluate``, the published rules);
- image-to-report retrieval R@1 / R@10 on the held-out MIMIC-style test split;
- zero-shot CheXpert-style AUROC (test split, the built-in prompts);
- cluster NMI / purity of the train sentences against the synthetic truth
  (``cmcgns clusters --truth``), and the run's health gauges (summary ``health``) and the
  last epoch's false-negative pair share (``fn_pair_share`` in metrics.jsonl).

Every finished cell is one line of ``WORK/cells.jsonl``; a rerun skips the cells already
there, and a cell cut short keeps its finished pretrain and scores. Any number of worker
processes may run at once: each claims the next cell in priority order (``WORK/claims``;
``--shard K/N`` instead gives a process a fixed share). ``--references`` adds rows without
pretraining (random init; the warm image weights alone). ``--report``
prints the mean and sd over seeds per arm and task, and runs ``cmcgns compare`` (paired
bootstrap) of the full objective against global-only, per seed and task, into
``WORK/compare.jsonl`` (also resumable). The arms, the measures and the bookkeeping of the
cells are ``bench/ablation_grid.py``.

    python bench/ablation_study.py --work W --warm WARM --references
    python bench/ablation_study.py --work W --warm WARM [--seeds 0,1,2] &   # one per core
    python bench/ablation_study.py --work W --report
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the grid beside this script
from ablation_grid import (  # noqa: E402
    ARMS,
    COMPARED,
    FINETUNED,
    REFERENCES,
    append_row,
    cell_key,
    claim,
    compare_table,
    pending,
    priority,
    read_done,
    table,
    unclaim,
)

WORLD = {"mimic": 300, "chexpert": 1000, "rsna": 400, "siim": 400}  # studies per layout
FOLDERS = {"mimic": "mimic-cxr-jpg", "chexpert": "chexpert", "rsna": "rsna", "siim": "siim"}
SOURCE_SIZE, IMAGE_SIZE, NORMAL_SHARE = 96, 64, 0.65
OPTIONS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole"}


# ---------------------------------------------------------------- the world and one cell


def quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def world(work: Path) -> Path:
    """Draw and prepare the four layouts once (``WORK/world/<layout>``)."""
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.synth import run_synth

    base = work / "world"
    for layout, n in WORLD.items():
        if (base / layout / "meta.json").is_file():
            continue
        raw = work / "raw" / layout
        with quiet():
            if not raw.is_dir():
                run_synth(out=raw, n=n, seed=0, layouts=[layout], image_size=SOURCE_SIZE,
                          normal_share=NORMAL_SHARE, as_json=True)  # fmt: skip
            run_prepare(layout, src=raw / FOLDERS[layout], out=base / layout, size=IMAGE_SIZE,
                        workers=0, options=OPTIONS, as_json=True)  # fmt: skip
    return base


def _finished_summary(run: Path) -> dict[str, Any] | None:
    """A finished run's summary (the last line of its metrics.jsonl), else None."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return None
    lines = metrics.read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return last if last.get("kind") == "summary" else None


def _pretrain(run: Path, data: Path, arm: str, init: str, seed: int, epochs: tuple[int, int],
              warm: Path | None) -> dict[str, Any]:  # fmt: skip
    from cmcgns_cli.config import apply_overrides, preset
    from cmcgns_cli.config_values import parse_set
    from cmcgns_cli.train.run import run_pretrain

    cfg = preset("tiny")
    sets = [*ARMS[arm], f"data.image_size={IMAGE_SIZE}", f"data.crop_size={IMAGE_SIZE}",
            "loss.num_clusters=8", f"train.stage1_epochs={epochs[0]}",
            f"train.stage2_epochs={epochs[1]}", f"train.seed={seed}"]  # fmt: skip
    if init == "warm":
        if warm is None:
            raise SystemExit("warm cells need --warm DIR (bench/warm_start.py --out DIR)")
        sets += [f"model.image_weights={warm / 'image_weights.safetensors'}",
                 f"model.text_encoder={warm / 'bert'}"]  # fmt: skip
    apply_overrides(cfg, parse_set(sets), source="--set")
    done = _finished_summary(run)
    if done is not None:  # a cell cut short after its pretrain: keep the run
        return done
    if run.parent.exists():  # the cell's earlier scores belong to another run: gone too
        shutil.rmtree(run.parent)
    with quiet():
        return run_pretrain(cfg, data=data, out=run, resume=None, nproc=1, as_json=True)


def _evaluate(task: str, data: Path, ckpt: Path, out: Path | None = None) -> dict[str, Any]:
    from cmcgns_cli.downstream.run import run_evaluate

    with quiet():
        run_evaluate(task=task, data=data, checkpoint=ckpt, seeds=1, save_examples=0,
                     prompts=None, device="cpu", workers=0, as_json=True, out=out)  # fmt: skip
    where = out or (ckpt / "evaluate" / task if task in ("retrieval", "zeroshot-chexpert")
                    else ckpt)  # fmt: skip
    return json.loads((where / "metrics.json").read_text())


def _last_epoch_mean(metrics: Path, key: str) -> float | None:
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "train" and r.get(key) is not None]
    if not rows:
        return None
    last = (rows[-1]["stage"], rows[-1]["epoch"])
    vals = [r[key] for r in rows if (r["stage"], r["epoch"]) == last]
    return sum(vals) / len(vals)


def _finetune_and_score(run_finetune, task, data, checkpoint, ft, fraction, none, image_weights,
                        ft_epochs, size) -> dict[str, Any]:  # fmt: skip
    with quiet():
        run_finetune(task=task, data=data, checkpoint=checkpoint, out=ft, fraction=fraction,
                     full=False, arch="resnet_tiny" if none else None,
                     image_weights=image_weights,
                     epochs=None if task == "chexpert-cls" else ft_epochs, lr=None,
                     batch_size=None, device="cpu", seed=0, workers=0, as_json=True,
                     overwrite=True, input_size=size)  # fmt: skip
    return _evaluate(task, data, ft)


def _finetuned(cell: Path, base: Path, checkpoint: str, image_weights: Path | None,
               ft_epochs: int, seconds: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """The four finetuned measures of an encoder: a pretrain run, or with ``checkpoint``
    ``none`` a ``resnet_tiny`` fed at 64 px (random init, or ``image_weights``)."""
    from cmcgns_cli.downstream.run import run_finetune

    none = checkpoint == "none"
    size = (IMAGE_SIZE, IMAGE_SIZE) if none else None  # the pretrained runs' input size
    m: dict[str, Any] = {}
    for name, task, fraction in FINETUNED:
        t = time.time()
        ft = cell / name
        data = base / {"chexpert-cls": "chexpert", "rsna-det": "rsna", "siim-seg": "siim"}[task]
        if (ft / "metrics.json").is_file():  # scored before the cell was cut short
            got = json.loads((ft / "metrics.json").read_text())
        else:
            got = _finetune_and_score(run_finetune, task, data, checkpoint, ft, fraction, none,
                                      image_weights, ft_epochs, size)  # fmt: skip
        m[name] = got["value"]
        if task == "rsna-det":  # the published rule scores no image when nothing passes
            # objectness 0.5 (mAP null); pycocotools over every test image always scores
            m["det_10_coco"] = got["metrics"]["map_coco"]
        seconds[name] = round(time.time() - t, 1)
    return m


def run_reference(work: Path, base: Path, arm: str, ft_epochs: int, warm: Path | None
                  ) -> dict[str, Any]:  # fmt: skip
    """A reference row without pretraining: ``random`` (random-init encoder) or
    ``warm_image`` (the warm-start image weights alone); the finetuned measures only."""
    weights = None if arm == "random" else (warm / "image_weights.safetensors" if warm else None)
    if arm == "warm_image" and weights is None:
        raise SystemExit("the warm_image reference needs --warm DIR")
    seconds: dict[str, float] = {}
    m = _finetuned(work / "cells" / "none" / arm / "seed0", base, "none", weights, ft_epochs,
                   seconds)  # fmt: skip
    return {"key": cell_key("none", arm, 0), "init": "none", "arm": arm, "seed": 0,
            "measures": m, "seconds": seconds}  # fmt: skip


def run_cell(work: Path, base: Path, init: str, arm: str, seed: int, epochs: tuple[int, int],
             ft_epochs: int, warm: Path | None) -> dict[str, Any]:  # fmt: skip
    """Pretrain one cell and score it; returns its ``cells.jsonl`` row."""
    from cmcgns_cli.clusters import run_clusters
    from cmcgns_cli.errors import BadInputError

    t0 = time.time()
    cell = work / "cells" / init / arm / f"seed{seed}"
    run = cell / "run"
    summary = _pretrain(run, base / "mimic", arm, init, seed, epochs, warm)
    seconds = {"pretrain": round(time.time() - t0, 1)}
    m = _finetuned(cell, base, str(run), None, ft_epochs, seconds)
    t = time.time()
    ret = _evaluate("retrieval", base / "mimic", run)["metrics"]
    m["R@1"], m["R@10"] = ret["i2t_R@1"], ret["i2t_R@10"]
    m["zeroshot"] = _evaluate("zeroshot-chexpert", base / "chexpert", run)["value"]
    truth_file = work / "raw" / "mimic" / "truth" / "mimic.jsonl"
    try:
        with quiet():
            truth = run_clusters(checkpoint=run, data=base / "mimic", split="train", limit=5000,
                                 top=1, out=None, device="cpu", as_json=True,
                                 truth=truth_file)  # fmt: skip
        m["nmi"], m["purity"] = truth["nmi"], truth["purity"]
        no_clusters = None
    except BadInputError as exc:  # no clustering in this arm, or k-means never started
        m["nmi"] = m["purity"] = None
        no_clusters = str(exc).split(": ", 1)[-1]
    health = summary.get("health") or {}
    last = health.get("stages", {}).get(str(2 if epochs[1] else 1), {})
    m["fn_pair_share"] = _last_epoch_mean(run / "metrics.jsonl", "fn_pair_share")
    m["clusters_nonempty"] = last.get("clusters_nonempty")
    m["text_cos"] = last.get("text_global_cos")
    m["collapsed"] = {"collapsed": 1.0, "ok": 0.0}.get(health.get("status"))  # unknown: None
    seconds["scores"] = round(time.time() - t, 1)
    return {"key": cell_key(init, arm, seed), "init": init, "arm": arm, "seed": seed,
            "measures": m, "health": health.get("collapsed"), "no_clusters": no_clusters,
            "global_loss": last.get("global_loss"), "seconds": seconds}  # fmt: skip


def compare_all(work: Path, base: Path, done: dict[str, Any]) -> list[dict[str, Any]]:
    """``cmcgns compare`` (paired bootstrap, B - A with A = global-only, B = the full
    default) per init, seed and task, resumable in ``WORK/compare.jsonl``."""
    from cmcgns_cli.compare import run_compare
    from cmcgns_cli.errors import BadInputError

    path = work / "compare.jsonl"
    have = read_done(path)
    for key, row in sorted(done.items()):
        if row["arm"] != "default":
            continue
        other = cell_key(row["init"], "global", row["seed"])
        seed = f"seed{row['seed']}"
        if other not in done:
            continue
        for name, task in COMPARED:
            sub = "run" if task in ("retrieval", "zeroshot-chexpert") else name
            ckey = f"{key}/{name}"
            if ckey in have:
                continue
            a, b = (
                work / "cells" / row["init"] / arm / seed / sub for arm in ("global", "default")
            )
            data = base / {"chexpert-cls": "chexpert", "rsna-det": "rsna", "siim-seg": "siim",
                           "retrieval": "mimic", "zeroshot-chexpert": "chexpert"}[task]  # fmt: skip
            try:
                with quiet():
                    res = run_compare(run_a=a, run_b=b, task=task, data=data, prompts=None,
                                      annotations=None, resamples=1000, seed=0, device="cpu",
                                      out=None, allow_different=False, as_json=True)  # fmt: skip
            except BadInputError as exc:  # e.g. a metric no image could score
                res = {"error": str(exc)}
            out = {"key": ckey, "init": row["init"], "seed": row["seed"], "measure": name,
                   "task": task, "result": res}  # fmt: skip
            append_row(path, out)
            have[ckey] = out
    return list(have.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--warm", type=Path, help="bench/warm_start.py's --out folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--inits", default="scratch,warm")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--epochs", type=int, nargs=2, default=(5, 1))
    ap.add_argument("--ft-epochs", type=int, default=20, help="detection / segmentation epochs")
    ap.add_argument("--shard", default="0/1", help="K/N: this process's share of the cells")
    ap.add_argument("--report", action="store_true", help="table + compare, no training")
    ap.add_argument("--references", action="store_true",
                    help="the reference rows only: random init, warm image weights")  # fmt: skip
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    base = world(args.work)
    cells_file = args.work / "cells.jsonl"
    if args.report:
        done = read_done(cells_file)
        print(table(list(done.values())))
        print()
        print(compare_table(compare_all(args.work, base, done)))
        return
    if args.references:
        done = read_done(cells_file)
        for arm in REFERENCES:
            if cell_key("none", arm, 0) not in done:
                row = run_reference(args.work, base, arm, args.ft_epochs, args.warm)
                append_row(cells_file, row)
                print(json.dumps(row, default=str), flush=True)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    inits, arms = args.inits.split(","), args.arms.split(",")
    cells = priority(inits, arms, seeds)
    k, n = (int(x) for x in args.shard.split("/"))
    while True:
        todo = pending(cells, read_done(cells_file), (k, n))
        # the first cell no other live process is working on
        mine = next((c for c in todo if claim(args.work, cell_key(*c))), None)
        if mine is None:
            break
        init, arm, seed = mine
        print(f"{time.strftime('%H:%M:%S')} {cell_key(init, arm, seed)} ...", flush=True)
        row = run_cell(args.work, base, init, arm, seed, tuple(args.epochs), args.ft_epochs,
                       args.warm)  # fmt: skip
        if cell_key(init, arm, seed) not in read_done(cells_file):
            append_row(cells_file, row)
        unclaim(args.work, cell_key(init, arm, seed))
        print(json.dumps(row, default=str), flush=True)
    print("all cells done", file=sys.stderr)


if __name__ == "__main__":
    main()

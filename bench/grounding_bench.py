"""Phrase grounding: a pretrained tiny run vs its random init, each metric beside its chance.

Draws a synthetic world (mimic, rsna, siim layouts, with the MS-CXR-style file of the mimic
test split), prepares it, runs a tiny-preset pretrain on mimic (skipped when WORK/run
exists), and scores ``grounding-mscxr``, ``grounding-rsna`` and ``grounding-siim`` for the
pretrained weights and for the same model at its random initialisation. Also writes the
run's training curves (``cmcgns plot``) to WORK/plots.

    python bench/grounding_bench.py --work /tmp/cmcgns-bench-grounding --n 600 \
        --set train.stage1_epochs=6 --set train.stage2_epochs=2

Prints one JSON line per (task, weights) and a table last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OPTIONS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole", "csv": None,
           "image_col": "path", "report_col": None, "label_cols": None,
           "split_col": None}  # fmt: skip
SRC = {"mimic": "mimic-cxr-jpg", "rsna": "rsna", "siim": "siim"}
TASKS = {"grounding-mscxr": "mimic", "grounding-rsna": "rsna", "grounding-siim": "siim"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="synthetic studies / images per layout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmcgns-bench-grounding"))
    ap.add_argument("--image-size", type=int, default=320, help="synthetic source px")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value")
    args = ap.parse_args()

    import torch

    from cmcgns_cli.config import resolve
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.downstream.grounding import evaluate_grounding
    from cmcgns_cli.plot import plot_run
    from cmcgns_cli.synth import write_world
    from cmcgns_cli.train.run import run_pretrain

    torch.set_num_threads(1)
    work = args.work
    raw, run = work / "raw", work / "run"
    if not (raw / "truth" / "summary.json").is_file():
        write_world(raw, args.n, args.seed, list(SRC), args.image_size)
    for name, folder in SRC.items():
        if not (work / name / "meta.json").is_file():
            run_prepare(name, src=raw / folder, out=work / name, size=256, workers=0,
                        options=OPTIONS, as_json=True)  # fmt: skip
    t0 = time.perf_counter()
    if not (run / "state").is_dir():
        # grounding reads maps over the image: patch tokens unless --set says otherwise
        cfg = resolve("tiny", sets=["model.local_tokens=spatial", *args.sets])
        run_pretrain(cfg, data=work / "mimic", out=run, resume=None, nproc=1, as_json=True)
    wall = time.perf_counter() - t0
    plot_run(run, work / "plots")
    ann = raw / "ms-cxr" / "MS_CXR_Local_Alignment_v1.1.0.csv"
    rows = []
    for task, data in TASKS.items():
        for weights in ("random-init", "pretrained"):
            res = evaluate_grounding(
                task, work / data, run, torch.device("cpu"),
                annotations=ann if task == "grounding-mscxr" else None,
                random_init=weights == "random-init",
            )  # fmt: skip
            line = {"task": task, "weights": weights, "n": res["metrics"]["n"],
                    **{k: res["metrics"][k] for k in ("pointing_game", "cnr", "miou")},
                    "chance": res["extra"]["chance"], "ci95": res["ci95"],
                    "per_class": res["extra"]["per_class"]}  # fmt: skip
            print(json.dumps(line), flush=True)
            rows.append(line)
    print(f"pretrain wall {wall:.0f} s")
    print("| task | n | weights | pointing game (chance) | CNR (chance) | mIoU (chance) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c = r["chance"]
        print(f"| {r['task']} | {int(r['n'])} | {r['weights']} | "
              f"{r['pointing_game']:.3f} ({c['pointing_game']:.3f}) | "
              f"{r['cnr']:.3f} ({c['cnr']:.3f}) | {r['miou']:.3f} ({c['miou']:.3f}) |")  # fmt: skip


if __name__ == "__main__":
    main()

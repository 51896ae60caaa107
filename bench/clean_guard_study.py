"""Which guard keeps the clean form's clusters from collapsing? Cluster health over training.

Pretrains the tiny preset on a prepared MIMIC-style world once per configuration and pretrain
seed, two runs at a time, and prints per configuration: the per-epoch cluster health (means of
the step records over the pretrain seeds; ``kmeans used`` is the share of steps on which the
clusters were used) and the final ``cmcgns clusters --truth`` purity / NMI. The
configurations are the authors' form, the clean form without its two guards (as it was
before ``loss.cluster_gate`` and ``loss.idle_centroid_restart`` existed), each guard alone,
keeping same-cluster pairs in the denominator with the restart, and the clean form as it
ships (both guards). Not a test: at n = 2000, 64 px, 6 + 2 epochs, 2 seeds it takes about
25 min on a 2-core CPU.

    cmcgns synth --out W/raw --n 2000 --seed 0 --layouts mimic
    cmcgns prepare mimic --src W/raw/mimic-cxr-jpg --out W/mimic --size 64
    python bench/clean_guard_study.py --data W/mimic --truth W/raw/truth/mimic.jsonl \
        --work W/guards --seeds 2 --set train.stage1_epochs=6 --set train.stage2_epochs=2 \
        --set data.image_size=72 --set data.crop_size=64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NO_GUARDS = ["loss.cluster_gate=init", "loss.idle_centroid_restart=0"]
CONFIGS = {
    "authors": ["loss.variant=authors"],
    "clean, no guards": ["loss.variant=clean", *NO_GUARDS],
    "clean, idle restart only": ["loss.variant=clean", "loss.cluster_gate=init"],
    "clean, restart + keep": ["loss.variant=clean", "loss.cluster_gate=init",
                              "loss.false_negative_denominator=keep"],
    "clean, spread gate only": ["loss.variant=clean", "loss.idle_centroid_restart=0"],
    "clean (both guards)": ["loss.variant=clean"],
}  # fmt: skip
KEYS = ("clusters_nonempty", "cluster_top_share", "cluster_entropy", "fn_pair_share",
        "cluster_feature_cos", "text_global_cos", "global")  # fmt: skip


def cmcgns(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per run, runs side by side
    res = subprocess.run([sys.executable, "-m", "cmcgns_cli", *args], capture_output=True,
                         text=True, env=env)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"cmcgns {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res.stdout


def pretrain(run: Path, seed: int, sets: list[str], data: Path) -> Path:
    done = run / ".done"  # model.safetensors exists mid-run too (written every epoch)
    if not done.is_file():
        if run.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(run)
        print(f"+ pretrain {run.name}", file=sys.stderr, flush=True)
        cmcgns(["pretrain", "--data", str(data), "--preset", "tiny", "--out", str(run),
                "--seed", str(seed), *[x for s in sets for x in ("--set", s)]])  # fmt: skip
        done.touch()
    return run


def per_epoch(runs: list[Path]) -> list[dict]:
    """Per (stage, epoch): the mean of each key over the step records of all ``runs`` where
    it is not null, and the share of steps with the clusters in use."""
    rows: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for run in runs:
        for line in (run / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("kind") == "train":
                rows[(r["stage"], r["epoch"])].append(r)
    out = []
    for (stage, epoch), rs in sorted(rows.items()):
        row: dict = {"stage": stage, "epoch": epoch}
        row["kmeans used"] = sum(r["clusters_nonempty"] is not None for r in rs) / len(rs)
        for k in KEYS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            row[k] = sum(vals) / len(vals) if vals else None
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared mimic folder")
    ap.add_argument("--truth", type=Path, required=True, help="synth truth/mimic.jsonl")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="pretrains run at once")
    ap.add_argument("--set", action="append", default=[], help="extra --set for every run")
    args = ap.parse_args()
    jobs = {
        (name, seed): (args.work / f"{i}-seed{seed}", seed, [*sets, *args.set])
        for i, (name, sets) in enumerate(CONFIGS.items())
        for seed in range(args.seeds)
    }
    with ThreadPoolExecutor(args.jobs) as pool:
        done = {k: pool.submit(pretrain, *v, args.data) for k, v in jobs.items()}
        runs = {k: f.result() for k, f in done.items()}
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print("| config | epoch (stage) | kmeans used | " + " | ".join(KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    for name in CONFIGS:
        mine = [runs[(name, s)] for s in range(args.seeds)]
        for r in per_epoch(mine):
            cells = [fmt(r["kmeans used"]), *(fmt(r[k]) for k in KEYS)]
            print(f"| {name} | {r['epoch']} ({r['stage']}) | " + " | ".join(cells) + " |")
    print("\n| config | seed | purity | nmi | fn_precision | fn_recall | empty_clusters |")
    print("|---|---|---|---|---|---|---|")
    for (name, seed), run in runs.items():
        try:
            args_c = ["clusters", "--checkpoint", str(run), "--data", str(args.data)]
            c = json.loads(cmcgns([*args_c, "--truth", str(args.truth), "--json"]))
        except SystemExit as exc:  # e.g. a gate that never let the k-means start
            print(f"| {name} | {seed} | {str(exc).splitlines()[-1]} |||||")
            continue
        vals = [c["purity"], c["nmi"], c["fn_precision"], c["fn_recall"]]
        print(f"| {name} | {seed} | " + " | ".join(map(fmt, vals)) + f" | {c['empty_clusters']} |")


if __name__ == "__main__":
    main()

"""Cluster health over training for the centroid update forms (the authors' SUM vs the mean).

Prepares a synthetic MIMIC world (or the bundled sample_data), pretrains the tiny preset once
per ``loss.centroid_update`` form, and prints, per form: the cluster-health keys of the
training records (mean over each epoch's steps once the k-means is in use) and the final
``cmcgns clusters --truth`` figures (purity, NMI, false-negative mask precision / recall).

    python bench/cluster_health_study.py --work W [--n 0 (sample_data) | --n 2000] \
        [--epochs 2 1] [--set loss.variant=clean ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("clusters_nonempty", "cluster_top_share", "cluster_entropy", "fn_pair_share",
        "hard_negative_cos")  # fmt: skip


def sh(args: list[str]) -> str:
    return subprocess.run(
        ["cmcgns", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def per_epoch(metrics: Path) -> list[dict]:
    rows = defaultdict(list)
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "train" and r.get("clusters_nonempty") is not None:
            rows[(r["stage"], r["epoch"])].append(r)
    out = []
    for (stage, epoch), rs in sorted(rows.items()):
        out.append({"stage": stage, "epoch": epoch, "steps": len(rs)}
                   | {k: sum(r[k] for r in rs) / len(rs) for k in KEYS})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=0, help="studies to synthesise; 0 = sample_data")
    ap.add_argument("--epochs", type=int, nargs=2, default=(2, 1))
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    if args.n:
        world = w / "world"
        if not (world / "truth" / "mimic.jsonl").is_file():
            sh(["synth", "--out", str(world), "--n", str(args.n), "--seed", "0",
                "--layouts", "mimic", "--image-size", "160"])  # fmt: skip
    else:
        world = ROOT / "sample_data"
    prepared = w / "prepared"
    if not (prepared / "meta.json").is_file():
        sh(["prepare", "mimic", "--src", str(world / "mimic-cxr-jpg"), "--out", str(prepared),
            "--json"])  # fmt: skip
    result = {}
    for update in ("sum", "mean"):
        run = w / f"run-{update}"
        if not (run / "model.safetensors").is_file():
            sets = [f"loss.centroid_update={update}",
                    f"train.stage1_epochs={args.epochs[0]}",
                    f"train.stage2_epochs={args.epochs[1]}", *args.set]  # fmt: skip
            sh(["pretrain", "--data", str(prepared), "--out", str(run), "--preset", "tiny",
                "--json", *[x for s in sets for x in ("--set", s)]])  # fmt: skip
        truth_file = str(world / "truth" / "mimic.jsonl")
        args_c = ["clusters", "--checkpoint", str(run), "--data", str(prepared)]
        truth = json.loads(sh([*args_c, "--truth", truth_file, "--json"]))
        result[update] = {
            "epochs": per_epoch(run / "metrics.jsonl"),
            "final": {
                k: truth[k]
                for k in (
                    "sentences",
                    "num_clusters",
                    "empty_clusters",
                    "cluster_top_share",
                    "cluster_entropy",
                    "purity",
                    "nmi",
                    "fn_precision",
                    "fn_recall",
                )
            },  # fmt: skip
        }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

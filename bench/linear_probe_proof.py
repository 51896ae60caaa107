"""Does pretraining help? Downstream scores at 10% labels on the synthetic world.

Runs, in one go and with the installed ``cmcgns``:
  synth (mimic, chexpert, rsna layouts) -> prepare them -> pretrain tiny CM-CGNS and its
  ablations (global only = ConVIRT-style, no clustering, no CM-MIR) -> finetune each task
  (chexpert-cls linear probe: macro AUROC; rsna-seg U-Net: Dice) at --fraction on each
  encoder and on a random-init one -> evaluate on the test split,
and prints one table per task: encoder, score (mean and std over --seeds), and the margin
over random init. Not a test: it takes tens of minutes on a 2-core CPU.

    python bench/linear_probe_proof.py --work /tmp/proof --n 3000 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ABLATIONS = {
    "cm-cgns (full)": [],
    "global only (ConVIRT-style)": [
        "--set", "loss.w_local_image=0", "--set", "loss.w_local_text=0",
        "--set", "loss.w_recon=0", "--set", "loss.clustering=false",
    ],
    "no clustering": ["--set", "loss.clustering=false"],
    "no CM-MIR": ["--set", "loss.w_recon=0"],
}  # fmt: skip


def cmcgns(*args: str) -> str:
    cmd = [sys.executable, "-m", "cmcgns_cli", *args]
    print("+ cmcgns", " ".join(args), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(args)}")
    return res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmcgns-proof"))
    ap.add_argument("--n", type=int, default=3000, help="synthetic studies / images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="finetune seeds per encoder")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=50, help="finetune epochs")
    ap.add_argument("--pretrain-set", action="append", default=[], help="extra --set items")
    ap.add_argument("--only", action="append", default=None, help="ablation names to run")
    ap.add_argument(
        "--reuse", action="append", default=[], help="LABEL=RUN_DIR: reuse a pretrain run"
    )
    ap.add_argument("--tasks", default="chexpert-cls,rsna-seg", help="comma-separated tasks")
    args = ap.parse_args()
    w = args.work
    t0 = time.time()
    if not (w / "raw" / "truth" / "summary.json").is_file():
        cmcgns("synth", "--out", str(w / "raw"), "--n", str(args.n), "--seed", str(args.seed),
               "--layouts", "mimic,chexpert,rsna")  # fmt: skip
    for name, src in (("mimic", "mimic-cxr-jpg"), ("chexpert", "chexpert"), ("rsna", "rsna")):
        if not (w / name / "meta.json").is_file():
            cmcgns("prepare", name, "--src", str(w / "raw" / src), "--out", str(w / name),
                   "--workers", "2")  # fmt: skip
    encoders: dict[str, str] = {"random init": "none"}
    reuse = dict(item.split("=", 1) for item in args.reuse)
    for i, (label, extra) in enumerate(ABLATIONS.items()):
        if args.only and label not in args.only:
            continue
        if label in reuse:
            encoders[label] = reuse[label]
            continue
        run = w / f"pretrain{i}"
        if not (run / "image_encoder.safetensors").is_file():
            sets = [x for s in args.pretrain_set for x in ("--set", s)]
            cmcgns("pretrain", "--data", str(w / "mimic"), "--preset", "tiny", "--out",
                   str(run), "--seed", str(args.seed), *extra, *sets)  # fmt: skip
        encoders[label] = str(run)
    for task in args.tasks.split(","):
        rows = [_score(w, task, i, label, ckpt, args) for i, (label, ckpt) in
                enumerate(encoders.items())]  # fmt: skip
        base = rows[0][1]
        metric = TASKS[task][1]
        print(f"\n| encoder (tiny preset, n={args.n}) | {task} {metric} @ {args.fraction:.0%} "
              f"labels | vs random init |")  # fmt: skip
        print("|---|---|---|")
        for label, mean, std in rows:
            print(f"| {label} | {mean:.4f} ± {std:.4f} | {mean - base:+.4f} |")
        best = max(r[1] for r in rows[1:]) if len(rows) > 1 else base
        print(f"{task}: margin of the best pretrained encoder over random init {best - base:+.4f}")
    print(f"elapsed {time.time() - t0:.0f} s")


TASKS = {"chexpert-cls": ("chexpert", "macro_auroc"), "rsna-seg": ("rsna", "dice")}


def _score(w: Path, task: str, i: int, label: str, ckpt: str, args) -> tuple[str, float, float]:
    data, metric = w / TASKS[task][0], TASKS[task][1]
    ft = w / f"{task}-{i}"
    cmcgns("finetune", "--task", task, "--data", str(data), "--checkpoint", ckpt,
           "--arch", "resnet_tiny", "--fraction", str(args.fraction),
           "--epochs", str(args.epochs), "--out", str(ft), "--json")  # fmt: skip
    summary = json.loads(
        cmcgns(
            "evaluate",
            "--task",
            task,
            "--data",
            str(data),
            "--checkpoint",
            str(ft),
            "--seeds",
            str(args.seeds),
            "--json",
        )  # fmt: skip
    )
    return label, summary["mean"][metric], summary["std"][metric]


if __name__ == "__main__":
    main()

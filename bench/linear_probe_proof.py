"""Does pretraining help? CheXpert-style linear probe at 10% labels on the synthetic world.

Runs, in one go and with the installed ``cmcgns``:
  synth (mimic + chexpert layouts) -> prepare both -> pretrain tiny CM-CGNS, and the
  ConVIRT-style ablation (global loss only) -> finetune chexpert-cls at --fraction on each
  encoder and on a random-init one -> evaluate on the test split.
and prints one table: encoder, macro AUROC (mean and std over --seeds), and the margin over
random init. Not a test: it takes tens of minutes on a 2-core CPU.

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
    ap.add_argument("--epochs", type=int, default=50, help="linear-probe epochs")
    ap.add_argument("--pretrain-set", action="append", default=[], help="extra --set items")
    ap.add_argument("--only", action="append", default=None, help="ablation names to run")
    args = ap.parse_args()
    w = args.work
    t0 = time.time()
    if not (w / "raw" / "truth" / "summary.json").is_file():
        cmcgns("synth", "--out", str(w / "raw"), "--n", str(args.n), "--seed", str(args.seed),
               "--layouts", "mimic,chexpert")  # fmt: skip
    for name, src in (("mimic", "mimic-cxr-jpg"), ("chexpert", "chexpert")):
        if not (w / name / "meta.json").is_file():
            cmcgns("prepare", name, "--src", str(w / "raw" / src), "--out", str(w / name),
                   "--workers", "2")  # fmt: skip
    encoders: dict[str, str] = {"random init": "none"}
    for i, (label, extra) in enumerate(ABLATIONS.items()):
        if args.only and label not in args.only:
            continue
        run = w / f"pretrain{i}"
        if not (run / "image_encoder.safetensors").is_file():
            sets = [x for s in args.pretrain_set for x in ("--set", s)]
            cmcgns("pretrain", "--data", str(w / "mimic"), "--preset", "tiny", "--out",
                   str(run), "--seed", str(args.seed), *extra, *sets)  # fmt: skip
        encoders[label] = str(run)
    rows = []
    for i, (label, ckpt) in enumerate(encoders.items()):
        ft = w / f"probe{i}"
        cmcgns("finetune", "--task", "chexpert-cls", "--data", str(w / "chexpert"),
               "--checkpoint", ckpt, "--arch", "resnet_tiny", "--fraction", str(args.fraction),
               "--epochs", str(args.epochs), "--out", str(ft), "--json")  # fmt: skip
        summary = json.loads(
            cmcgns(
                "evaluate",
                "--task",
                "chexpert-cls",
                "--data",
                str(w / "chexpert"),
                "--checkpoint",
                str(ft),
                "--seeds",
                str(args.seeds),
                "--json",
            )  # fmt: skip
        )
        rows.append((label, summary["mean"]["macro_auroc"], summary["std"]["macro_auroc"]))
    base = rows[0][1]
    print(f"| encoder (tiny preset, n={args.n}) | macro AUROC @ {args.fraction:.0%} labels "
          f"| vs random init |")  # fmt: skip
    print("|---|---|---|")
    for label, mean, std in rows:
        print(f"| {label} | {mean:.4f} ± {std:.4f} | {mean - base:+.4f} |")
    best = max(r[1] for r in rows[1:]) if len(rows) > 1 else base
    print(f"elapsed {time.time() - t0:.0f} s")
    print(f"margin of the best pretrained encoder over random init: {best - base:+.4f}")


if __name__ == "__main__":
    main()

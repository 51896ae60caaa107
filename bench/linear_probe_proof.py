"""Does pretraining help, and which part of the objective? Downstream scores on the synthetic
world, per ablation, over several pretrain seeds.

Runs, in one go and with the installed ``cmcgns``:
  synth (mimic, chexpert layouts) -> prepare them -> pretrain tiny CM-CGNS and its ablations
  (global only = ConVIRT-style; + local losses without clustering; + clustering without CM-MIR;
  the full objective in the authors' form; the full objective in the clean form), each with
  ``--pretrain-seeds`` seeds -> for each run: held-out image-to-report R@1 on the mimic test
  split, and a chexpert-cls linear probe at ``--fraction`` of the labels scored by macro
  AUROC on the test split; the same for a random-init encoder.
Prints one table: mean ± sample standard deviation (ddof = 1) over pretrain seeds, the margin
over random init, and each run's cluster health over its last epoch (means of the
metrics.jsonl step records; null where the ablation has no clustering).
The random-init encoder is fed at the pretrain runs' input size (``--input-size`` from
``data.image_size`` / ``data.crop_size`` in ``--pretrain-set``). Not a test: at n = 2000 and
64 px it took 57 min on a 2-core CPU (one thread). Resumable: re-running with the same
``--work`` keeps finished pretrains and probes (so ``--pretrain-seeds 3`` after a 2-seed run
trains only the third seed).

    python bench/linear_probe_proof.py --work /tmp/proof --n 2000 --size 64 --pretrain-seeds 2 \
        --pretrain-set train.stage1_epochs=6 --pretrain-set train.stage2_epochs=2 \
        --pretrain-set data.image_size=72 --pretrain-set data.crop_size=64
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

NO_LOCAL = ["--set", "loss.w_local_image=0", "--set", "loss.w_local_text=0"]
ABLATIONS = {
    "global only (ConVIRT-style)": [*NO_LOCAL, "--set", "loss.w_recon=0",
                                    "--set", "loss.clustering=false"],
    "+ local, no clustering": ["--set", "loss.w_recon=0", "--set", "loss.clustering=false"],
    "+ clustering (no CM-MIR)": ["--set", "loss.w_recon=0"],
    "full (authors)": ["--variant", "authors"],
    "full (clean)": ["--variant", "clean"],
}  # fmt: skip
HEALTH = ("clusters_nonempty", "cluster_top_share", "cluster_entropy", "fn_pair_share",
          "hard_negative_cos", "cluster_feature_cos", "image_global_cos",
          "text_global_cos")  # fmt: skip


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
    ap.add_argument("--n", type=int, default=2000, help="synthetic studies / images")
    ap.add_argument("--seed", type=int, default=0, help="world seed and first pretrain seed")
    ap.add_argument("--pretrain-seeds", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=50, help="linear-probe epochs")
    ap.add_argument("--size", type=int, default=256, help="prepared image size (px)")
    ap.add_argument("--pretrain-set", action="append", default=[], help="extra --set items")
    ap.add_argument("--only", action="append", default=None, help="ablation names to run")
    args = ap.parse_args()
    w, t0 = args.work, time.time()
    _world(w, args)
    rows = [_row("random init", ["none"], w, args)]
    for i, (label, extra) in enumerate(ABLATIONS.items()):
        if args.only and label not in args.only:
            continue
        runs = [_pretrain(w, i, args.seed + s, extra, args) for s in range(args.pretrain_seeds)]
        rows.append(_row(label, runs, w, args))
    _print(rows, args)
    print(f"elapsed {time.time() - t0:.0f} s")


def _world(w: Path, args: argparse.Namespace) -> None:
    if not (w / "raw" / "truth" / "summary.json").is_file():
        cmcgns("synth", "--out", str(w / "raw"), "--n", str(args.n), "--seed", str(args.seed),
               "--layouts", "mimic,chexpert")  # fmt: skip
    for name, src in (("mimic", "mimic-cxr-jpg"), ("chexpert", "chexpert")):
        if not (w / name / "meta.json").is_file():
            cmcgns("prepare", name, "--src", str(w / "raw" / src), "--out", str(w / name),
                   "--size", str(args.size), "--workers", "2")  # fmt: skip


def _pretrain(w: Path, i: int, seed: int, extra: list[str], args: argparse.Namespace) -> str:
    run = w / f"pretrain{i}-seed{seed}"
    if not (run / "image_encoder.safetensors").is_file():
        sets = [x for s in args.pretrain_set for x in ("--set", s)]
        cmcgns("pretrain", "--data", str(w / "mimic"), "--preset", "tiny", "--out", str(run),
               "--seed", str(seed), *extra, *sets)  # fmt: skip
    return str(run)


def _row(label: str, runs: list[str], w: Path, args: argparse.Namespace) -> dict:
    auroc, r1, health = [], [], []
    for j, run in enumerate(runs):
        ft = w / f"probe-{label.split()[0].strip('+')}-{len(label)}-{j}"
        # the random-init baseline is fed at the pretrain runs' input size (fair comparison)
        size = _input_size(args) if run == "none" else []
        if not (ft / "head.safetensors").is_file():  # resumable: a finished probe is kept
            cmcgns("finetune", *size, "--task", "chexpert-cls", "--data", str(w / "chexpert"),
                   "--checkpoint", run, "--arch", "resnet_tiny", "--fraction", str(args.fraction),
                   "--epochs", str(args.epochs), "--out", str(ft), "--json")  # fmt: skip
        data = str(w / "chexpert")
        res = json.loads(cmcgns("evaluate", "--task", "chexpert-cls", "--data", data,
                                "--checkpoint", str(ft), "--json"))  # fmt: skip
        auroc.append(res["mean"]["macro_auroc"])
        if run != "none":
            ret = json.loads(cmcgns("evaluate", "--task", "retrieval", "--data", str(w / "mimic"),
                                    "--checkpoint", run, "--json"))  # fmt: skip
            r1.append(ret["mean"]["i2t_R@1"])
            health.append(_last_epoch_health(Path(run) / "metrics.jsonl"))
    return {"label": label, "auroc": auroc, "r1": r1, "health": health}


def _input_size(args: argparse.Namespace) -> list[str]:
    """``--input-size RESIZE,CROP`` from the pretrain's ``data.image_size`` / ``crop_size``
    sets (the tiny preset's sizes when not set)."""
    from cmcgns_cli.config import preset

    tiny = preset("tiny").data
    sets = dict(item.split("=", 1) for item in args.pretrain_set)
    resize = sets.get("data.image_size", str(tiny.image_size))
    crop = sets.get("data.crop_size", str(tiny.crop_size))
    return ["--input-size", f"{resize},{crop}"]


def _last_epoch_health(path: Path) -> dict[str, float | None]:
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in steps if r.get("kind") == "train"]
    last = [r for r in steps if r.get("epoch") == steps[-1].get("epoch")]
    out: dict[str, float | None] = {}
    for key in HEALTH:
        vals = [r[key] for r in last if r.get(key) is not None]  # the records hold null, not NaN
        out[key] = statistics.fmean(vals) if vals else None
    return out


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:  # no spread from one value (random init has no pretrain seeds)
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"  # ddof = 1


def _print(rows: list[dict], args: argparse.Namespace) -> None:
    base = statistics.fmean(rows[0]["auroc"])
    print(f"\n| encoder (tiny, n={args.n}, {args.pretrain_seeds} pretrain seeds) | chexpert-cls "
          f"macro AUROC @ {args.fraction:.0%} | vs random init | test i2t R@1 | "
          + " | ".join(HEALTH) + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * len(HEALTH))
    for r in rows:
        cells = []
        for key in HEALTH:
            vals = [h[key] for h in r["health"] if h.get(key) is not None]
            cells.append(f"{statistics.fmean(vals):.3f}" if vals else "-")
        margin = statistics.fmean(r["auroc"]) - base
        print(f"| {r['label']} | {_ms(r['auroc'])} | {margin:+.3f} | {_ms(r['r1'])} | "
              + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Is pretraining learning? Image-to-report retrieval on held-out synthetic test pairs.

Draws a synthetic MIMIC world, prepares it, runs a tiny-preset pretrain, and scores
image-to-report top-1 on the test split (all test pairs as the gallery) for the pretrained
weights (best/) and for the same model at its random initialisation (same seed).

    python bench/pretrain_retrieval.py --n 2000 --work /tmp/bench-retrieval [--set k=v ...]

The last line is the figure: the pretrained / random-init ratio of i2t top-1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="synthetic studies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmcgns-bench-retrieval"))
    ap.add_argument("--image-size", type=int, default=320, help="synthetic source px")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="config override section.key=value (repeatable)",
    )
    args = ap.parse_args()

    from cmcgns_cli.config import resolve
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.synth import run_synth
    from cmcgns_cli.train.evaluate import retrieval
    from cmcgns_cli.train.run import run_pretrain

    work = args.work
    raw, data, run = work / "raw", work / "prepared", work / "run"
    if not (raw / "mimic-cxr-jpg").is_dir():
        run_synth(
            out=raw,
            n=args.n,
            seed=args.seed,
            layouts=["mimic"],
            image_size=args.image_size,
            as_json=True,
        )
    if not (data / "meta.json").is_file():
        run_prepare(
            "mimic",
            src=raw / "mimic-cxr-jpg",
            out=data,
            size=256,
            workers=0,
            options={"protocol": "mgca", "min_words": 3},
            as_json=True,
        )
    t0 = time.perf_counter()
    if not (run / "state").is_dir():
        cfg = resolve("tiny", sets=args.sets)
        run_pretrain(cfg, data=data, out=run, resume=None, nproc=1, as_json=True)
    wall = time.perf_counter() - t0
    init = retrieval(run, data, "test", random_init=True)
    trained = retrieval(run, data, "test")
    ratio = trained["top1_i2t"] / max(init["top1_i2t"], 1e-9)
    print(
        json.dumps(
            {
                "pairs": trained["pairs"],
                "chance": 1 / trained["pairs"],
                "random_init": init,
                "pretrained": trained,
                "pretrain_wall_s": round(wall, 1),
            }
        )
    )
    print(
        f"i2t top-1 on {trained['pairs']} test pairs: pretrained {trained['top1_i2t']:.3f} vs "
        f"random init {init['top1_i2t']:.3f} -> ratio {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()

"""Benchmark: pretraining throughput of a preset (default ``paper-resnet50``), stage 2.

ResNet-50 + a BERT-base-sized text encoder built from a config (``text_encoder=scratch``:
768 hidden, 12 layers, 12 heads, 3072 intermediate, vocab 30522), 224 px crops from 256 px
prepared images, batch 64, the full stage-2 objective (global + local image + local text with
cross-modal k-means + CM-MIR). Data: a prepared dataset of random-content images and random
reports written to a temp dir, read by the real PairedDataset/DataLoader (pinned, workers;
1-channel uint8 batches normalised on the device, as the trainer ships them).

The training step is the loop's: bf16 autocast and channels_last on CUDA, fused AdamW, no
host read inside the step (the loss is read once at the end). ``--compile`` and
``--grad-checkpoint`` switch on ``train.compile`` / ``train.grad_checkpoint``.

Reported: pairs/s over the timed steps (after warm-up), peak GPU memory (allocated and
reserved), and model FLOPs utilisation; with ``--trainer`` also the pairs/s that
``cmcgns pretrain``'s own loop logs on the same data (its loader, flushes and validation
excluded from the window), beside the bench loop's upper bound. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` on one full
training step (forward + backward, matmuls/convs/SDPA at 2 FLOPs per multiply-add; no
recomputation counted, elementwise ops ignored); MFU = FLOPs/step x steps/s / peak, with
peak = ``--peak-tflops`` (default 989 = H100 SXM dense bf16). Without CUDA it runs a few
small steps on CPU and says so (MFU not reported). Not a test.

    python bench/bench_pretrain_gpu.py [--steps 50] [--warmup 10] [--batch 64] [--compile]
        [--trainer]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cmcgns_cli.config import preset
from cmcgns_cli.data.paired import PadCollate, PairedDataset
from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.data.tokenize import token_cache, train_wordpiece
from cmcgns_cli.model.cmcgns import CMCGNS
from cmcgns_cli.train import speed

WORDS = [
    "lung", "heart", "pleural", "effusion", "opacity", "normal",
    "clear", "tube", "left", "right", "small", "large",
]  # fmt: skip


def random_prepared(root: Path, n: int, size: int, seed: int = 0, n_val: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n + n_val):
        k = int(rng.integers(3, 9))
        sents = [" ".join(rng.choice(WORDS, int(rng.integers(5, 14)))) + "." for _ in range(k)]
        rows.append(
            {"id": f"r{i}", "split": "train" if i < n else "validate", "patient_id": f"p{i}",
             "study_id": f"s{i}", "view": "PA", "sentences": sents}
        )  # fmt: skip
    images = rng.integers(0, 256, (n + n_val, size, size), dtype=np.uint8)
    return write_prepared(root, dataset="mimic", manifest=pd.DataFrame(rows), images=images)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper-resnet50")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument(
        "--trainer",
        action="store_true",
        help="also run `cmcgns pretrain`'s own loop (stage 2, same data) and report its pairs/s",
    )
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    steps = args.steps or (50 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    batch = args.batch or (64 if cuda else 4)
    workers = (
        args.workers if args.workers is not None else (min(12, os.cpu_count() or 1) if cuda else 0)
    )
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    cfg = preset(args.preset)
    cfg.model.text_encoder = "scratch"  # BERT-base-sized from the config fields (no download)
    cfg.train.compile, cfg.train.grad_checkpoint = args.compile, args.grad_checkpoint
    tmp = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    try:
        n = batch * (steps + warmup + 2)
        data_dir = random_prepared(tmp / "data", n, cfg.data.image_size, n_val=batch)
        prepared = open_prepared(data_dir)
        sents = (s for r in range(n) for s in prepared.manifest["sentences"].iat[r])
        tok = train_wordpiece(sents, 500, tmp / "tok")
        ds = PairedDataset(prepared, "train", token_cache(prepared, tok, tmp), cfg.data, True)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
            collate_fn=PadCollate(tok.pad_token_id, wire=True), pin_memory=cuda,
            prefetch_factor=4 if workers else None, persistent_workers=workers > 0,
        )  # fmt: skip
        torch.manual_seed(0)
        model = CMCGNS(cfg, None).to(device).train()
        applied = speed.apply(model, cfg.train, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **({"fused": True} if cuda else {}))
        cl = cuda and cfg.train.channels_last

        def step(b: dict) -> torch.Tensor:
            b = speed.to_device(b, device, cl)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                out = model(b, stage=2)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out["loss"].detach()

        it = iter(loader)
        flops = None
        for i in range(warmup):
            b = next(it)
            if i == warmup - 1 and not args.compile:
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as fc:
                    step(b)
                flops = fc.get_total_flops()
            else:
                step(b)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss = None
        for _ in range(steps):
            loss = step(next(it))
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        pairs_s = steps * batch / dt
        name = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
        print(f"device: {name}; preset {args.preset}, batch {batch}, {steps} timed steps, stage 2")
        print(f"switches: bf16={cuda} {applied}; workers={workers}; last loss {float(loss):.3f}")
        if flops:
            print(f"model FLOPs per step (fwd+bwd, FlopCounterMode): {flops / 1e12:.2f} TFLOP")
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**30
            reserved = torch.cuda.max_memory_reserved() / 2**30
            mfu = f"{100 * flops * steps / dt / (args.peak_tflops * 1e12):.1f}%" if flops else "n/a"
            print(
                f"peak GPU memory {peak:.1f} GiB allocated, {reserved:.1f} GiB reserved; "
                f"MFU {mfu} of {args.peak_tflops:g} TFLOP/s"
            )
        print(f"{'GPU' if cuda else 'CPU'} pairs/s: {pairs_s:.1f} (bench loop: an upper bound)")
        if args.trainer:
            del model, opt, loader, it
            if cuda:
                torch.cuda.empty_cache()
            trainer_pairs = trainer_pairs_per_s(cfg, data_dir, tmp / "run", batch, warmup, steps)
            print(f"trainer pairs/s: {trainer_pairs:.1f} (cmcgns pretrain's loop, stage 2)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trainer_pairs_per_s(
    cfg: Any,
    data: Path,
    run: Path,
    batch: int,
    warmup: int,
    steps: int,  # noqa: ANN401
) -> float:
    """pairs/s that ``cmcgns pretrain`` itself reports (metrics.jsonl) in its last flush
    window of stage-2 steps (``warmup`` + ``steps`` in all): its loader, flushes and step."""
    from cmcgns_cli.train.run import run_pretrain

    cfg.train.batch_size = batch
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 0, 1
    cfg.train.max_steps = warmup + steps
    # flush windows that never straddle the warm-up: the last one holds only timed steps
    cfg.train.log_every = math.gcd(warmup, steps) or steps
    run_pretrain(cfg, data=data, out=run, resume=None, nproc=1, as_json=True)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train" and r.get("pairs_per_s")]
    return float(train[-1]["pairs_per_s"])


if __name__ == "__main__":
    main()

"""Benchmark (CPU): three of the trainer's throughput changes, each against its former form
in the same run, on a random prepared dataset (bench_pretrain_gpu.random_prepared: 3-8
sentences a report).

* slots: one training step (forward + backward, stage 2) of the preset's model with the
  sentence slots at the batch's most sentences (what the trainer now sets) against the
  former fixed ``data.max_sentences`` (32); the loss is the same (padding is masked).
* validation: one validation pass (``train.validate``: one encode a batch, the terms summed
  on the device and read once) against the former pass, written out here (a forward, a
  second encode for retrieval, every term read per batch); host reads are counted by
  patching ``Tensor.item/tolist/cpu/numpy/__float__/__int__/__bool__/__index__``.
* gather: two gloo processes, the backward of the all_gather-with-gradient
  (``dist.gather``) of a (rows, dim) float32 tensor: all_reduce + slice (the former backward,
  still the one on gloo) against gloo's reduce_scatter (the form used on NCCL; NCCL itself
  cannot run here).

Prints one line per comparison. Not a test.

    python bench/bench_feed.py [--preset tiny] [--batch 16] [--repeats 5] [--rows 4096]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretrain_gpu import random_prepared  # noqa: E402

from cmcgns_cli.config import preset  # noqa: E402
from cmcgns_cli.data.paired import PairedDataset  # noqa: E402
from cmcgns_cli.data.prepared import open_prepared  # noqa: E402
from cmcgns_cli.data.tokenize import token_cache, train_wordpiece  # noqa: E402
from cmcgns_cli.model.cmcgns import CMCGNS  # noqa: E402
from cmcgns_cli.train.feed import BatchFeed  # noqa: E402
from cmcgns_cli.train.retrieval import global_embeddings, report_keys, retrieval_top1  # noqa: E402
from cmcgns_cli.train.validate import validate  # noqa: E402

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def counting_reads():
    """Count host reads of any tensor inside the block."""
    calls = {"n": 0}
    real = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name):
        def read(self, *a, **k):
            calls["n"] += 1
            return real[name](self, *a, **k)

        return read

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield calls
    finally:
        for name in READS:
            setattr(torch.Tensor, name, real[name])


def former_validation(model, feed, ds, keys, stage):  # noqa: ANN001, ANN201
    """The validation pass before issue 31: two encodes and one read per term per batch."""
    model.eval()
    sums, n, imgs, txts = {}, 0, [], []
    with torch.no_grad():
        for batch in feed.loader(ds, train=False, epoch=0):
            batch = feed.to_device(batch, across_ranks=False)
            b = int(batch["images"].shape[0])
            out = model(batch, stage=stage)
            i, t = global_embeddings(model, batch)
            imgs.append(i)
            txts.append(t)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach().float().item()) * b
            n += b
    model.train()
    retrieval_top1(torch.cat(imgs), torch.cat(txts), keys)
    return {k: v / n for k, v in sums.items()}


def best_of(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_slots(model, feed, ds, repeats: int, slots_before: int) -> None:  # noqa: ANN001
    batch = next(iter(feed.loader(ds, train=True, epoch=0)))
    fed = feed.to_device(dict(batch))
    fixed = dict(fed, sentence_slots=slots_before)
    losses = {}

    def step(b, key):  # noqa: ANN001
        m = copy.deepcopy(model).train()
        torch.manual_seed(0)
        out = m(b, stage=2)
        out["loss"].backward()
        losses[key] = float(out["loss"].detach())

    after = best_of(lambda: step(fed, "after"), repeats)
    before = best_of(lambda: step(fixed, "before"), repeats)
    print(
        f"slots: step (fwd+bwd, stage 2, batch {len(batch['index'])}) "
        f"{slots_before} slots {before * 1e3:.0f} ms -> {fed['sentence_slots']} slots "
        f"{after * 1e3:.0f} ms ({before / after:.2f}x); loss {losses['before']:.6f} vs "
        f"{losses['after']:.6f}"
    )


def bench_validation(model, feed, ds, repeats: int) -> None:  # noqa: ANN001
    keys = report_keys(ds)
    batches = -(-len(ds) // feed.batch_size)
    with counting_reads() as c:
        former_validation(model, feed, ds, keys, 2)
    reads_before = c["n"]
    with counting_reads() as c:
        validate(model, feed, ds, keys, 2)
    reads_after = c["n"]
    before = best_of(lambda: former_validation(model, feed, ds, keys, 2), repeats)
    after = best_of(lambda: validate(model, feed, ds, keys, 2), repeats)
    print(
        f"validation: {len(ds)} pairs in {batches} batches: {before * 1e3:.0f} ms -> "
        f"{after * 1e3:.0f} ms ({before / after:.2f}x); host reads {reads_before} "
        f"({reads_before / batches:.1f} a batch) -> {reads_after} ({reads_after / batches:.1f})"
    )


def _gather_worker(rank: int, port: int, rows: int, dim: int, repeats: int, out: str) -> None:
    import torch.distributed as tdist

    from cmcgns_cli.train import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    x = torch.randn(rows, dim).requires_grad_()
    w = torch.randn(2 * rows, dim)
    res = {}
    for form, flag in (("reduce_scatter", None), ("all_reduce", False)):
        times = []
        for _ in range(repeats + 1):
            dist._REDUCE_SCATTER = flag
            dist._ALL_REDUCE_BACKENDS = set()  # gloo's reduce_scatter, for the comparison
            g, _ = dist.gather(x)
            loss = (g * w).sum()
            tdist.barrier()
            t0 = time.perf_counter()
            loss.backward()
            times.append(time.perf_counter() - t0)
            x.grad = None
        res[form] = min(times[1:])
    if rank == 0:
        Path(out).write_text(f"{res['all_reduce']} {res['reduce_scatter']}")
    tdist.barrier()
    tdist.destroy_process_group()


def bench_gather(rows: int, dim: int, repeats: int, tmp: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    out = tmp / "gather.txt"
    mp.spawn(_gather_worker, args=(port, rows, dim, repeats, str(out)), nprocs=2)
    before, after = (float(v) for v in out.read_text().split())
    print(
        f"gather backward (2 gloo ranks, {rows} x {dim} float32 a rank): all_reduce + slice "
        f"{before * 1e3:.1f} ms -> reduce_scatter {after * 1e3:.1f} ms ({before / after:.2f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    tmp = Path(tempfile.mkdtemp(prefix="bench-feed-"))
    try:
        n = 2 * args.batch
        with contextlib.redirect_stdout(io.StringIO()):
            data = random_prepared(tmp / "data", n, cfg.data.image_size, n_val=n)
        prepared = open_prepared(data)
        sents = (s for r in range(2 * n) for s in prepared.manifest["sentences"].iat[r])
        tok = train_wordpiece(sents, 300, tmp / "tok")
        cache = token_cache(prepared, tok, tmp)
        train = PairedDataset(prepared, "train", cache, cfg.data, True)
        val = PairedDataset(prepared, "validate", cache, cfg.data, False)
        torch.manual_seed(0)
        model = CMCGNS(cfg, len(tok))
        feed = BatchFeed(torch.device("cpu"), args.batch, 1, 0, 0, tok.pad_token_id,
                         True, False, False)  # fmt: skip
        print(f"preset {args.preset}, batch {args.batch}, CPU threads 1, cpus {os.cpu_count()}")
        bench_slots(model, feed, train, args.repeats, int(cfg.data.max_sentences))
        bench_validation(model, feed, val, args.repeats)
        bench_gather(args.rows, args.dim, args.repeats, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

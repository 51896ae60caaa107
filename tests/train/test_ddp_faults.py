"""Faults of the multi-process paths that a 2-process gloo run on CPU shows (DDP with gradient
accumulation, the k-means initialisation decision, a non-finite loss on one rank)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cmcgns_cli.config import preset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def _accumulate_worker(rank, world, port, world_dir, out):
    _env(rank, world, port)
    from cmcgns_cli.train.run import run_pretrain

    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.batch_size = 4
    cfg.train.accumulate = 2
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 1, 1
    cfg.train.max_steps = 2
    run_pretrain(cfg, data=Path(world_dir), out=Path(out), resume=None, nproc=1, as_json=True)


def test_ddp_with_gradient_accumulation_trains(world, tmp_path):
    """Two processes with train.accumulate=2 run both stages (stage 1 leaves the decoder
    unused, stage 2 uses it) without the reducer's autograd-hook assertion."""
    run = tmp_path / "run"
    mp.spawn(_accumulate_worker, args=(2, _free_port(), str(world), str(run)), nprocs=2)
    train = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert [(r["stage"], r["stage_step"]) for r in train] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["loss"] > 0 for r in train)


class _KMeansOnly(torch.nn.Module):
    """The two things ``ddp.install`` needs from a model: ``kmeans`` and the hook setter."""

    def __init__(self) -> None:
        super().__init__()
        from cmcgns_cli.losses.kmeans import CrossModalKMeans

        self.kmeans = CrossModalKMeans(4, 3, threshold=1.0)  # initialises on the first call

    def set_distributed_hooks(self, gather=None, reduce=None, broadcast=None) -> None:
        self.kmeans.reduce, self.kmeans.broadcast = reduce, broadcast


def _kmeans_worker(rank, world, port, out):
    _env(rank, world, port)
    import datetime

    import torch.distributed as tdist

    from cmcgns_cli.train import ddp

    # a desynchronised collective must fail the test in seconds, not hang for minutes
    tdist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    calls = {"n": 0}
    for name in ("all_gather", "broadcast", "all_reduce"):
        real = getattr(tdist, name)

        def counted(*a, _real=real, **k):
            calls["n"] += 1
            return _real(*a, **k)

        setattr(tdist, name, counted)
    model = _KMeansOnly()
    ddp.install(model)
    km = model.kmeans
    # the host's mirror of the flag learns it at a different step on each rank (on CUDA it
    # follows an asynchronous copy): rank 0 at step 1, rank 1 at step 3
    learns = {0: 1, 1: 3}[rank]
    step = {"i": 0}
    km.host_knows_ready = lambda: bool(km.initialized) and step["i"] >= learns
    g = torch.Generator().manual_seed(rank)
    counts = []
    for i in range(5):
        step["i"] = i
        z = torch.randn(6, 3, generator=g)
        km.train_step(z, z.roll(1, 0), torch.ones(6, dtype=torch.bool))
        counts.append(calls["n"])
    torch.save({"counts": counts, "centroids": km.centroids.clone()}, Path(out) / f"{rank}.pt")
    tdist.barrier()
    # without it gloo's threads can meet interpreter exit still joinable: SIGABRT
    # ("terminate called without an active exception") after the test's work is done
    tdist.destroy_process_group()


def test_kmeans_init_collectives_do_not_follow_each_ranks_host_timing(tmp_path):
    mp.spawn(_kmeans_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    # the same collectives on both ranks at every step, and the same centroids
    assert r0["counts"] == r1["counts"]
    assert r0["counts"][0] > 0  # step 0 initialised through the gathered path
    assert torch.equal(r0["centroids"], r1["centroids"])
    assert float(r0["centroids"].abs().sum()) > 0


def _nonfinite_worker(rank, world, port, world_dir, out):
    _env(rank, world, port)
    from cmcgns_cli.errors import RunFailedError
    from cmcgns_cli.model.cmcgns import CMCGNS
    from cmcgns_cli.train.run import run_pretrain

    real = CMCGNS.forward
    calls = {"n": 0}

    def forward(self, batch, stage=1):
        res = real(self, batch, stage)
        if self.training:
            calls["n"] += 1
            if rank == 1 and calls["n"] == 2:  # rank 1 alone meets a non-finite loss
                res = dict(res, loss=res["loss"] * float("nan"))
        return res

    CMCGNS.forward = forward
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.batch_size = 4
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 1, 0
    cfg.train.max_steps = 4
    try:
        run_pretrain(cfg, data=Path(world_dir), out=Path(out), resume=None, nproc=1, as_json=True)
        outcome = "finished"
    except RunFailedError as exc:
        outcome = str(exc)
    (Path(out).parent / f"outcome{rank}.txt").write_text(outcome)


@pytest.mark.slow  # about 60 s on a shared 2-core machine
def test_nonfinite_loss_on_one_rank_stops_every_rank(world, tmp_path):
    run = tmp_path / "run"
    mp.spawn(_nonfinite_worker, args=(2, _free_port(), str(world), str(run)), nprocs=2)
    for rank in (0, 1):
        text = (tmp_path / f"outcome{rank}.txt").read_text()
        assert text.startswith("non-finite loss at stage 1, step 2"), (rank, text)


def _shared_fs_worker(rank, world, port, world_dir, base):
    _env(rank, world, port)
    from cmcgns_cli.errors import BadInputError
    from cmcgns_cli.train.run import run_pretrain

    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.batch_size = 4
    cfg.train.max_steps = 1
    # the same --out path naming a different directory on each node: no shared filesystem
    out = Path(base) / f"node{rank}" / "run"
    try:
        run_pretrain(cfg, data=Path(world_dir), out=out, resume=None, nproc=1, as_json=True)
        outcome = "finished"
    except BadInputError as exc:
        outcome = str(exc)
    (Path(base) / f"outcome{rank}.txt").write_text(outcome)


@pytest.mark.slow  # about 65 s on a shared 2-core machine
def test_run_directory_not_shared_by_the_ranks_stops_every_rank_clearly(world, tmp_path):
    mp.spawn(_shared_fs_worker, args=(2, _free_port(), str(world), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        text = (tmp_path / f"outcome{rank}.txt").read_text()
        assert "filesystem every node sees" in text, (rank, text)
        assert "\n" not in text

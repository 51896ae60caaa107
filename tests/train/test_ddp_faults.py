"""Faults of the multi-process paths that a 2-process gloo run on CPU shows (DDP with gradient
accumulation, the k-means initialisation decision, a non-finite loss on one rank)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

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

"""CUDA-only faults of the training loop, shown on CPU: the resume's optimizer state device,
the CUDA RNG state of a checkpoint, the step records' device, bf16 decisions of the loss heads.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cmcgns_cli.config import preset


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 1)

    def forward(self, batch, stage=1):  # pragma: no cover - not run here
        return {"loss": self.b(self.a(batch["images"])).mean()}


class _Rows:
    """The few fields of a PairedDataset the Trainer's constructor reads."""

    rows: list[int] = []
    tokens = SimpleNamespace(pad_id=0)

    def __len__(self) -> int:
        return 16


def _state_after_one_step(tmp_path):
    from cmcgns_cli.train import checkpoint as ckpt
    from cmcgns_cli.train.records import Progress

    model = _Small()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.b(model.a(torch.randn(5, 3))).sum().backward()
    opt.step()
    prog = Progress(step=1, stage_step=1)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "progress": prog.to_dict(),
        "scaler": {},
        "rng": ckpt.rng_state(),
    }


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_puts_the_optimizer_state_on_the_parameters_device(tmp_path, monkeypatch):
    """The trainer's device here is ``meta`` (CPU-free stand-in for CUDA): after a resume and
    the set-up ``fit`` does, every AdamW moment sits on its parameter's device."""
    from cmcgns_cli.train.loop import Trainer

    cfg = preset("tiny")
    cfg.train.batch_size = 4
    state = _state_after_one_step(tmp_path)
    seen: list[tuple[torch.device, list[torch.device]]] = []

    def stop_here(self, stage):
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                moments = [v.device for k, v in self.optimizer.state[p].items() if k != "step"]
                seen.append((p.device, moments))
        raise StopIteration

    monkeypatch.setattr(Trainer, "_run_stage", stop_here)
    meta = torch.device("meta")
    trainer = Trainer(cfg, _Small(), _Rows(), _Rows(), tmp_path, meta)
    trainer.restore(state)
    with pytest.raises(StopIteration):
        trainer.fit()
    assert len(seen) == 4
    for p_dev, moments in seen:
        assert p_dev == meta
        assert moments == [meta, meta], moments


class _FakeCuda:
    """A machine with ``n`` visible GPUs, current device ``current`` (CUDA RNG calls only)."""

    def __init__(self, n: int, current: int) -> None:
        self.n, self.current = n, current
        self.states = [torch.full((8,), i, dtype=torch.uint8) for i in range(n)]

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(
            torch.cuda, "get_rng_state", lambda device="cuda": self.states[self.current].clone()
        )

        def set_all(states):
            for i, s in enumerate(states):  # torch indexes the default generators: IndexError
                if i >= self.n:
                    raise IndexError("list index out of range")
                self.states[i] = s.clone()

        def set_one(s, device="cuda"):
            self.states[self.current] = s.clone()

        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state", set_one)


def test_checkpoint_from_an_eight_gpu_node_resumes_on_one_gpu(monkeypatch):
    from cmcgns_cli.train import checkpoint as ckpt

    saver = _FakeCuda(8, current=3)
    saver.install(monkeypatch)
    saved = ckpt.rng_state()
    loader = _FakeCuda(1, current=0)
    loader.install(monkeypatch)
    ckpt.set_rng_state(saved)
    assert np.array_equal(loader.states[0].numpy(), np.full(8, 3, dtype=np.uint8))


def test_old_list_form_cuda_rng_state_still_resumes(monkeypatch):
    """Checkpoints written before the fix hold one state per visible GPU."""
    from cmcgns_cli.train import checkpoint as ckpt

    _FakeCuda(1, current=0).install(monkeypatch)
    saved = ckpt.rng_state()
    saved["cuda"] = [torch.full((8,), 5 + i, dtype=torch.uint8) for i in range(4)]
    loader = _FakeCuda(2, current=1)
    loader.install(monkeypatch)
    ckpt.set_rng_state(saved)
    assert int(loader.states[1][0]) == 6 and int(loader.states[0][0]) == 0


def _loss_cfg(**kw):
    cfg = preset("tiny").loss
    cfg.num_clusters = 3
    cfg.cluster_init_threshold = 1.0  # initialise on the first step
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_local_text_loss_without_clustering_keeps_every_output_on_the_input_device():
    """``meta`` stands in for CUDA: a tensor made without ``device=`` lands on the CPU, and the
    step records stack every output of a step (a CPU tensor among CUDA ones raises there)."""
    from cmcgns_cli.losses.local_text import LocalTextLoss

    loss = LocalTextLoss(_loss_cfg(clustering=False), 8).to("meta")
    z1, z2 = torch.randn(6, 8, device="meta"), torch.randn(6, 8, device="meta")
    out = loss(z1, z2, torch.ones(6, dtype=torch.bool, device="meta"))
    assert {k: v.device.type for k, v in out.items()} == dict.fromkeys(out, "meta")


def _features(n=12, d=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    z2 = torch.randn(n, d, generator=g)
    # z1 close to z2 and rows in near-duplicate pairs: cosines that bf16 (8 bits of mantissa)
    # rounds onto ties, so argmax / topk / masks can change
    z1 = z2 + 0.05 * torch.randn(n, d, generator=g)
    z2[1::2] = z2[0::2] + 1e-3 * torch.randn(n // 2, d, generator=g)
    valid = torch.ones(n, dtype=torch.bool)
    valid[-1] = False
    return z1, z2, valid


def _local_text(autocast: bool, device: str = "cpu"):
    from cmcgns_cli.losses.local_text import LocalTextLoss

    torch.manual_seed(0)
    loss = LocalTextLoss(_loss_cfg(cluster_momentum=0.3), 8).train().to(device)
    z1, z2, valid = (t.to(device) for t in _features())
    outs = []
    ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for step in range(3):  # step 0 initialises; steps 1-2 use and move the centroids
        with ctx:
            outs.append(loss(z1.roll(step, 0), z2, valid))
    return outs, loss.kmeans.centroids.clone()


def test_bf16_autocast_leaves_the_local_text_decisions_in_float32():
    """CPU autocast lowers ``@`` to bf16 as CUDA autocast does: the assignments, hard
    negatives and false-negative mask (visible in the loss values, the health counts and the
    centroids they move) must equal those computed without autocast."""
    ref, ref_c = _local_text(False)
    got, got_c = _local_text(True)
    assert bool(ref[-1]["active"])
    for r, g in zip(ref, got, strict=True):
        for key in r:
            torch.testing.assert_close(
                g[key].float(),
                r[key].float(),
                rtol=1e-6,
                atol=1e-7,
                equal_nan=True,
                msg=lambda m, k=key: f"{k}: {m}",
            )
    torch.testing.assert_close(got_c, ref_c, rtol=1e-6, atol=1e-7)


def test_bf16_autocast_leaves_the_global_logits_in_float32():
    from cmcgns_cli.losses.global_loss import global_infonce

    z1, z2, _ = _features()
    scale = torch.tensor(4.6)  # exp(s) = 99.5: bf16 logits near 100 step by 0.5
    ref = global_infonce(torch.nn.functional.normalize(z1, dim=-1),
                         torch.nn.functional.normalize(z2, dim=-1), scale)  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = global_infonce(torch.nn.functional.normalize(z1, dim=-1),
                             torch.nn.functional.normalize(z2, dim=-1), scale)  # fmt: skip
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g.float(), r, rtol=1e-6, atol=1e-6)


def test_one_visible_gpu_per_task_is_this_process_gpu(monkeypatch):
    """SLURM ``--gpus-per-task=1``: every task sees one GPU, index 0, whatever LOCAL_RANK."""
    import torch.distributed as tdist

    from cmcgns_cli.train import dist

    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    for var, value in (("MASTER_ADDR", "h"), ("MASTER_PORT", "1"), ("RANK", "7")):
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group", lambda **kw: chosen.append(kw["device_id"]))
    device = dist.setup("cuda")
    assert device == torch.device("cuda", 0)
    assert chosen == [0, torch.device("cuda", 0)]


def test_too_few_gpus_for_the_local_ranks_still_fails_clearly(monkeypatch):
    from cmcgns_cli.errors import BadInputError
    from cmcgns_cli.train import dist

    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(BadInputError, match="LOCAL_RANK=3 but only 2 GPU"):
        dist.setup("cuda")


def test_resume_if_exists_continues_a_run_and_starts_a_new_one(world, tmp_path, monkeypatch):
    """What torchrun's elastic restart does: the same command line again."""
    import json

    from tests.train.conftest import TINY, cli

    run = tmp_path / "run"
    args = ["pretrain", "--data", str(world), "--out", str(run), *TINY, "--json",
            "--stage1-epochs", "1", "--stage2-epochs", "0", "--max-steps", "2"]  # fmt: skip
    assert cli([*args, "--resume-if-exists"], monkeypatch) == 0  # nothing there: a new run
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]  # fmt: skip
    assert steps == [1, 2]
    assert cli(args, monkeypatch) == 2  # without the flag an existing run is refused
    before = (run / "metrics.jsonl").read_text()
    # with it, the run resumes (not refused, not restarted): its only stage is finished, so
    # nothing is trained again and the metrics stay as they were
    assert cli([*args, "--resume-if-exists"], monkeypatch) == 0
    assert (run / "metrics.jsonl").read_text() == before


def test_cuda_speed_switches_match_the_bench_and_the_loss_heads_keep_ieee_fp32(monkeypatch):
    """On CUDA the trainer turns on cudnn.benchmark and TF32 (as the benchmark does); the
    loss heads switch TF32 off for themselves and restore it."""
    from cmcgns_cli.losses.precision import full_precision
    from cmcgns_cli.train import speed

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    before = torch.get_float32_matmul_precision()
    try:
        tc = preset("tiny").train
        tc.channels_last = False
        done = speed.apply(_Small(), tc, torch.device("cuda"))
        assert done["cudnn_benchmark"] and done["tf32"]
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        with full_precision(torch.zeros(1)):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_one_process_pads_sentences_to_the_batch_maximum_on_the_host():
    from cmcgns_cli.train.feed import BatchFeed

    feed = BatchFeed(torch.device("cpu"), 4, 1, 0, 0, 0, False, False, False)
    out = feed.to_device({"num_sentences": torch.tensor([2, 5, 1, 3])})
    assert out["sentence_slots"] == 5
    # several processes agree on the maximum (tests/train/test_wire_and_slots_ddp.py); the
    # validation pass on rank 0 alone keeps its own batch's, with no collective
    ddp = BatchFeed(torch.device("cpu"), 4, 2, 0, 0, 0, True, False, False)
    batch = {"num_sentences": torch.tensor([2, 5])}
    assert ddp.to_device(batch, across_ranks=False)["sentence_slots"] == 5


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_bf16_cuda_autocast_leaves_the_local_text_decisions_in_float32():
    ref, ref_c = _local_text(False, "cuda")
    got, got_c = _local_text(True, "cuda")
    for r, g in zip(ref, got, strict=True):
        for key in r:
            torch.testing.assert_close(g[key].float(), r[key].float(), rtol=1e-6, atol=1e-6,
                                       equal_nan=True)  # fmt: skip
    torch.testing.assert_close(got_c, ref_c, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@cuda
def test_clustering_off_keeps_every_output_on_cuda():
    from cmcgns_cli.losses.local_text import LocalTextLoss

    loss = LocalTextLoss(_loss_cfg(clustering=False), 8).cuda()
    z = torch.randn(6, 8, device="cuda")
    out = loss(z, z.roll(1, 0), torch.ones(6, dtype=torch.bool, device="cuda"))
    assert {v.device.type for v in out.values()} == {"cuda"}


@pytest.mark.gpu
@cuda
def test_resume_on_cuda_puts_the_fused_adamw_state_on_the_gpu(tmp_path, monkeypatch):
    from cmcgns_cli.train.loop import Trainer

    cfg = preset("tiny")
    cfg.train.batch_size = 4
    state = _state_after_one_step(tmp_path)
    trainer = Trainer(cfg, _Small(), _Rows(), _Rows(), tmp_path, torch.device("cuda"))
    trainer.restore(state)
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            assert p.is_cuda
            assert all(v.is_cuda for v in trainer.optimizer.state[p].values())
    # the first step of the fused optimizer with the restored state
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    trainer.optimizer.step()

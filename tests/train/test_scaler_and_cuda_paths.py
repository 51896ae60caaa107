"""The GradScaler resume path and the CUDA-only branches of pretraining.

On CPU: an enabled ``torch.amp.GradScaler("cpu")`` stands in for the CUDA one (the same
class and state dict), saved by ``save_checkpoint``, read back by ``load_resume`` under
``weights_only=True`` and loaded by ``Trainer.restore``; RNG states carrying a CUDA entry
restore on a machine without one. Marked ``gpu`` (skipped without CUDA): the same resume on
CUDA, the CUDA RNG round trip, fused AdamW, and the k-means host-side ready flag that CUDA
reads through an event instead of a blocking copy.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cmcgns_cli.losses import CrossModalKMeans
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train.loop import Trainer
from cmcgns_cli.train.records import Progress

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _scaler_after_an_overflow(device: str) -> torch.amp.GradScaler:
    """An enabled scaler at init_scale 1024 that met one inf gradient: its scale halves to
    512 (backoff_factor 0.5) and its growth tracker restarts at 0 (PyTorch's documented rule)."""
    model = torch.nn.Linear(3, 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=1024.0, growth_interval=3)
    loss = model(torch.ones(2, 3, device=device)).sum() * float("inf")
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return scaler


def _save_run(run, device: str, scaler: torch.amp.GradScaler | None) -> torch.nn.Module:
    model = torch.nn.Linear(3, 1).to(device)
    opt = torch.optim.AdamW(model.parameters())
    prog = Progress(step=4, stage_step=4, epoch=1, stage_epoch=1)
    ckpt.save_checkpoint(
        run, model_state=model.state_dict(), optimizer=opt, scaler=scaler,
        progress=prog.to_dict(),
    )  # fmt: skip
    return model


def _bare_trainer(run, device: str, scaler: torch.amp.GradScaler) -> Trainer:
    """A Trainer with only what ``restore`` reads (no datasets, no model build)."""
    t = Trainer.__new__(Trainer)
    t.model = torch.nn.Linear(3, 1).to(device)
    t.device = torch.device(device)
    t.tc = SimpleNamespace(
        lr=1e-3,
        weight_decay=0.0,
        seed=0,
        max_steps=None,
        optimizer="adamw",
        stage1_epochs=1,
        stage2_epochs=1,
    )
    t.world = 1
    t.run = run
    t.steps_per_epoch = 4
    t.scaler = scaler
    t.recent = []
    return t


def test_scaler_state_survives_checkpoint_and_restore_on_cpu(tmp_path):
    saved = _scaler_after_an_overflow("cpu")
    assert saved.get_scale() == 512.0  # the overflow halved it: not the default 65536
    _save_run(tmp_path, "cpu", saved)
    state = ckpt.load_resume(tmp_path)  # weights_only=True: the scaler dict must pass
    assert state["scaler"]["scale"] == 512.0 and state["scaler"]["_growth_tracker"] == 0
    fresh = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=3)
    trainer = _bare_trainer(tmp_path, "cpu", fresh)
    trainer.restore(state)
    assert trainer.scaler.get_scale() == 512.0
    assert trainer.prog.step == 4 and trainer.optimizer is not None


def test_restored_scaler_grows_on_the_saved_schedule(tmp_path):
    saved = _scaler_after_an_overflow("cpu")
    _save_run(tmp_path, "cpu", saved)
    trainer = _bare_trainer(tmp_path, "cpu", torch.amp.GradScaler("cpu", growth_interval=3))
    trainer.restore(ckpt.load_resume(tmp_path))
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for _ in range(3):  # growth_interval finite steps double the scale once: 512 -> 1024
        opt.zero_grad()
        trainer.scaler.scale(model(torch.ones(2, 3)).sum()).backward()
        trainer.scaler.step(opt)
        trainer.scaler.update()
    assert trainer.scaler.get_scale() == 1024.0


def test_disabled_scaler_writes_an_empty_state_and_restores_without_it(tmp_path):
    """The bf16 trainer's scaler is disabled: an empty dict is saved and nothing is loaded."""
    _save_run(tmp_path, "cpu", torch.amp.GradScaler("cuda", enabled=False))
    state = ckpt.load_resume(tmp_path)
    assert state["scaler"] == {}
    trainer = _bare_trainer(tmp_path, "cpu", torch.amp.GradScaler("cuda", enabled=False))
    trainer.restore(state)
    assert trainer.prog.step == 4


def test_rng_state_with_a_cuda_entry_restores_without_cuda(monkeypatch):
    torch.manual_seed(5)
    state = ckpt.rng_state()
    want = torch.rand(3)
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as written on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: called.append(s))
    torch.rand(7)
    ckpt.set_rng_state(state)
    assert not called  # no CUDA here: its streams are left alone, the rest restored
    assert torch.equal(torch.rand(3), want)


# ------------------------------------------------------------------------ CUDA only


@pytest.mark.gpu
@needs_cuda
def test_scaler_resume_on_cuda(tmp_path):
    saved = _scaler_after_an_overflow("cuda")
    assert saved.get_scale() == 512.0
    _save_run(tmp_path, "cuda", saved)
    state = ckpt.load_resume(tmp_path)
    trainer = _bare_trainer(tmp_path, "cuda", torch.amp.GradScaler("cuda", init_scale=8.0))
    trainer.restore(state)
    assert trainer.scaler.get_scale() == 512.0
    group = trainer.optimizer.param_groups[0]
    assert group.get("fused") is True  # AdamW's fused CUDA kernel on a CUDA trainer


@pytest.mark.gpu
@needs_cuda
def test_cuda_rng_round_trips_through_the_checkpoint_file(tmp_path):
    torch.cuda.manual_seed_all(3)
    torch.save(ckpt.rng_state(), tmp_path / "rng.pt")
    want = torch.rand(4, device="cuda")
    torch.rand(9, device="cuda")
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(4, device="cuda"), want)


@pytest.mark.gpu
@needs_cuda
def test_kmeans_ready_flag_reaches_the_host_through_an_event_on_cuda():
    km = CrossModalKMeans(4, 8).cuda()
    assert not km.host_knows_ready()
    km.initialized.fill_(True)
    assert not km.host_knows_ready()  # the first call only starts the copy
    torch.cuda.synchronize()
    assert km.host_knows_ready()  # the event has completed: the copied True is read

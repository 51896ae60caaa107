from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train.schedule import lr_at, warmup_steps_for


def test_warmup_then_cosine_to_zero():
    kw = {"total_steps": 100, "warmup_steps": 10, "peak_lr": 1e-3, "start_lr": 1e-5}
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(5, **kw) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(55, **kw) == pytest.approx(0.5e-3)
    assert lr_at(100, **kw) == pytest.approx(0.0, abs=1e-12)
    lrs = [lr_at(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert warmup_steps_for(1.0, 37, 370) == 37 and warmup_steps_for(2.0, 37, 50) == 50


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(ckpt.rng_state(), tmp_path / "rng.pt")
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(7), random.random()
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def _save(run, step, value):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    opt = torch.optim.AdamW(model.parameters())
    ckpt.save_checkpoint(
        run,
        model_state=model.state_dict(),
        optimizer=opt,
        scaler=None,
        progress={"step": step, "stage": 1, "epoch": step},
    )
    return model


def test_resume_state_matches_the_weights_even_after_a_torn_save(tmp_path, monkeypatch):
    _save(tmp_path, 1, 1.0)
    state = ckpt.load_resume(tmp_path)
    assert state["progress"]["step"] == 1 and float(state["model"]["weight"][0, 0]) == 1.0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind

    # a crash after model.safetensors was replaced but before state/ was swapped in
    def crash(tmp, final):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "_swap_dir", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, 2.0)
    state = ckpt.load_resume(tmp_path)  # picks .state.new, whose step matches the weights
    assert state["progress"]["step"] == 2 and float(state["model"]["weight"][0, 0]) == 2.0
    (tmp_path / ".state.new" / "progress.json").unlink()
    with pytest.raises(BadInputError, match="no resume state matching"):
        ckpt.load_resume(tmp_path)


def test_weights_files_take_the_umask_mode_not_owner_only(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        ckpt.save_weights(tmp_path / "w.safetensors", {"a": torch.zeros(2)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644

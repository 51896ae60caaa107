"""One small trained run shared by the embed, explain, retrieval and zero-shot tests.

A tiny-preset pretrain on the 64 px drawn world of tests/train/worlds.py (findings in fixed
places, one sentence per finding). Built once per pytest session under its base temp dir,
whichever test directory asks first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.worlds import make_world

N_STUDIES = 400


def shared_world(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prepared data, trained run directory)."""

    from cmcgns_cli.config import MODEL_VARIANTS, preset
    from cmcgns_cli.train.run import run_pretrain

    base = factory.getbasetemp() / "cmcgns-shared-run"
    data, run = base / "data", base / "run"
    if not (run / "model.safetensors").is_file():
        make_world(data, n=N_STUDIES, size=64, seed=3, splits=(0.7, 0.1))
        cfg = preset("tiny")
        cfg.data.image_size = cfg.data.crop_size = 64
        cfg.train.stage1_epochs, cfg.train.stage2_epochs = 4, 1
        cfg.loss.num_clusters = 8
        # The clean model wiring, set explicitly: explain, the attention API and grounding
        # draw maps over the image (patch tokens), and the learning checks on this short run
        # were calibrated on it. Measured with the authors' wiring but patch tokens (attention
        # pool, their projection init): held-out i2t R@1 0.075 against the 0.15 asserted
        # (random init 0.0125).
        for key, value in MODEL_VARIANTS["clean"].items():
            setattr(cfg.model, key, value)
        # the training recipe the dependent tests' thresholds were measured with (the clean
        # recipe; the loss terms stay the authors'), set explicitly
        cfg.data.augment, cfg.train.grad_clip = "resized_crop", 1.0
        cfg.train.optimizer, cfg.train.stage2_init = "adamw", "best"
        run_pretrain(cfg, data=data, out=run, resume=None, nproc=1, as_json=True)
    return data, run

"""The tiny preset leaves the InfoNCE plateau on the demo's world (issue 26): the demo's
pretrain, stage 1 only, with the preset as it is (``model.global_norm = batchnorm``) and with
the authors' ``none``, which sat on log(32) in every one of 15 tried variations."""

from __future__ import annotations

import contextlib
import io
import math

import pytest

from cmcgns_cli.config import preset
from cmcgns_cli.demo import IMAGE_SIZE, OPTIONS, SOURCE_SIZE, WORLD_STUDIES
from cmcgns_cli.train.run import run_pretrain


def _stage1(data, out, global_norm: str) -> dict:
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = IMAGE_SIZE
    cfg.loss.num_clusters = 8
    cfg.train.stage1_epochs, cfg.train.stage2_epochs, cfg.train.seed = 5, 0, 0
    cfg.model.global_norm = global_norm
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_pretrain(cfg, data=data, out=out, resume=None, nproc=1, as_json=True)
    return summary["health"]["stages"]["1"]


@pytest.mark.slow
def test_tiny_preset_leaves_the_plateau_on_the_demo_world(tmp_path) -> None:
    """Measured (seed 0, 45 steps): batchnorm 1.348, report vectors 0.09; none 3.4656 (log 32 =
    3.4657), report vectors 0.9997."""
    import torch

    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.synth import run_synth

    torch.set_num_threads(1)
    with contextlib.redirect_stdout(io.StringIO()):
        run_synth(out=tmp_path / "raw", n=WORLD_STUDIES, seed=0, layouts=["mimic"],
                  image_size=SOURCE_SIZE, as_json=True)  # fmt: skip
        run_prepare("mimic", src=tmp_path / "raw" / "mimic-cxr-jpg", out=tmp_path / "mimic",
                    size=IMAGE_SIZE, workers=0, options=OPTIONS, as_json=True)  # fmt: skip
    assert preset("tiny").model.global_norm == "batchnorm"
    after = _stage1(tmp_path / "mimic", tmp_path / "after", "batchnorm")
    assert after["plateau"] == pytest.approx(math.log(32))
    assert after["global_loss"] < 0.7 * after["plateau"], after
    assert after["text_global_cos"] < 0.5 and after["image_global_cos"] < 0.5, after
    assert not {"global_plateau", "report_vectors", "image_vectors"} & set(after["collapsed"])
    before = _stage1(tmp_path / "mimic", tmp_path / "before", "none")
    assert {"global_plateau", "report_vectors"} <= set(before["collapsed"]), before

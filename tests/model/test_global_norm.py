"""``model.global_norm``: the batch normalisation of the global image and report vectors that
the tiny and small presets use (the InfoNCE plateau), checked against BatchNorm written out by
hand; the collapse gauge's view through the running statistics; presets and old runs."""

from __future__ import annotations

import pytest
import torch
from cmcgns_test_helpers import make_batch, tiny_config

from cmcgns_cli.config import config_from_dict, preset, resolve
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.losses.global_loss import mean_pairwise_cos
from cmcgns_cli.model import CMCGNS
from cmcgns_cli.model.global_norm import build_global_norm, unit_vectors

EPS = 1e-5  # BatchNorm1d's default


def _alike(n: int = 6, d: int = 5) -> torch.Tensor:
    """Rows that share a large offset and differ a little: mean pairwise cosine > 0.99."""
    g = torch.Generator().manual_seed(0)
    offset = torch.tensor([3.0, -2.0, 5.0, 1.0, -4.0])[:d]
    return offset + 0.1 * torch.randn(n, d, generator=g)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_batchnorm_spreads_alike_rows_and_the_gauge_reads_the_running_statistics() -> None:
    x = _alike()
    assert float(mean_pairwise_cos(_unit(x))) > 0.99
    norm = build_global_norm("batchnorm", 5)
    v, gauge = unit_vectors(norm, x)
    # training: each column centred and scaled by the batch's own mean and biased variance
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(v, _unit((x - mean) / torch.sqrt(var + EPS)))
    assert float(mean_pairwise_cos(v)) < 0.1
    # the gauge: running statistics after this one update (momentum 0.1 from mean 0, var 1,
    # the unbiased variance), as evaluation would apply them; still nearly one vector
    run_mean, run_var = 0.1 * mean, 0.9 + 0.1 * x.var(0, unbiased=True)
    torch.testing.assert_close(gauge, _unit((x - run_mean) / torch.sqrt(run_var + EPS)))
    assert float(mean_pairwise_cos(gauge)) > 0.99
    assert not gauge.requires_grad
    # evaluation uses the running statistics for both, and updates nothing
    norm.eval()
    v_eval, g_eval = unit_vectors(norm, x)
    torch.testing.assert_close(v_eval, gauge)
    torch.testing.assert_close(g_eval, gauge)
    torch.testing.assert_close(norm.running_mean, run_mean)


def test_a_training_batch_of_one_uses_the_running_statistics() -> None:
    norm = build_global_norm("batchnorm", 5)
    x = _alike(n=1)
    v, _ = unit_vectors(norm, x)  # BatchNorm1d itself raises on one row in training
    torch.testing.assert_close(v, _unit(x / torch.sqrt(torch.tensor(1.0 + EPS))))


def test_none_is_the_plain_l2_norm() -> None:
    x = _alike()
    v, gauge = unit_vectors(build_global_norm("none", 5), x)
    torch.testing.assert_close(v, _unit(x))
    torch.testing.assert_close(gauge, _unit(x))
    with pytest.raises(ValueError, match="global_norm"):
        build_global_norm("layernorm", 5)


def test_presets_old_runs_and_bad_values() -> None:
    assert preset("tiny").model.global_norm == preset("small").model.global_norm == "batchnorm"
    assert preset("paper-resnet50").model.global_norm == "none"  # the authors' model
    assert preset("paper-vit").model.global_norm == "none"
    # neither variant touches it: it is a preset's choice, not part of the authors/clean form
    assert resolve("tiny", cli={"loss": {"variant": "authors"}}).model.global_norm == "batchnorm"
    # a run saved before the switch existed ran without it
    saved = preset("tiny").to_dict()
    del saved["model"]["global_norm"]
    assert config_from_dict(saved).model.global_norm == "none"
    with pytest.raises(BadInputError, match="model.global_norm must be one of none, batchnorm"):
        resolve("tiny", sets=["model.global_norm=layer"])


def test_the_model_holds_the_norms_only_when_switched_on() -> None:
    cfg = tiny_config()
    keys = set(CMCGNS(cfg).state_dict())
    assert {"image_global_norm.running_mean", "text_encoder.global_norm.running_var"} <= keys
    cfg.model.global_norm = "none"
    assert not any("global_norm" in k for k in CMCGNS(cfg).state_dict())


def test_model_forward_spreads_the_vectors_but_the_gauges_report_the_start() -> None:
    """A fresh tiny model: the global vectors the loss sees are spread by the batch
    statistics, while the collapse gauges (running statistics) still show how alike the
    encoders' outputs are at the start."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CMCGNS(cfg).train()
    batch = make_batch([2, 3, 1, 2, 3, 2, 1, 3])
    img, txt = model._encode(batch)
    assert float(mean_pairwise_cos(txt["global"])) < 0.1
    assert float(mean_pairwise_cos(img["global"])) < 0.1
    out = model(batch)
    assert float(out["text_global_cos"]) > 0.9  # the report vectors start nearly identical

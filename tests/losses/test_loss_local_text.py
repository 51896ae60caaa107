"""Local text loss with clustering-guided negatives (paper.md item 4), both forms of each switch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcgns_cli.config import LossConfig
from cmcgns_cli.losses import (
    LocalTextLoss,
    bml_loss,
    false_negative_mask,
    hard_negative_logit,
    local_text_infonce,
)


def test_hard_negative_is_the_second_most_similar_centroid_with_its_weight() -> None:
    cents = torch.eye(3, 3) * 2.0  # unnormalised centroids: cosine must normalise them
    z1 = F.normalize(torch.tensor([[0.9, 0.4, 0.1], [0.1, 0.3, 0.9]]), dim=-1)
    logit_m, idx = hard_negative_logit(z1, cents, tau=0.5, weight=3.0, mode="multiply")
    assert idx.tolist() == [1, 1]
    assert torch.allclose(logit_m, 3.0 * z1[:, 1] / 0.5)
    logit_a, _ = hard_negative_logit(z1, cents, tau=0.5, weight=3.0, mode="additive")
    assert torch.allclose(logit_a, z1[:, 1] / 0.5 + 3.0)


def test_false_negative_mask_from_a_given_assignment() -> None:
    rows = torch.tensor([0, 1, 0])
    cols = torch.tensor([2, 2, 0, 1, 0])  # rows are ranks' columns 2..4 (offset 2)
    vr = torch.tensor([True, True, True])
    vc = torch.tensor([True, True, True, True, False])
    m = false_negative_mask(rows, cols, 2, vr, vc)
    want = torch.zeros(3, 5, dtype=torch.bool)
    for a in range(3):
        for b in range(5):
            want[a, b] = rows[a] == cols[b] and b != a + 2 and bool(vc[b])
    assert torch.equal(m, want)
    assert m.tolist()[0] == [False, False, False, False, False]  # col 4 is invalid, col 2 is self


def test_bml_value_on_a_hand_example() -> None:
    cos = torch.tensor([[0.8, 0.9, 0.1], [0.2, 0.5, 0.4], [0.0, -0.3, 0.6]])
    fn = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    got = bml_loss(cos, fn, 0, alpha=0.2, beta=0.5)
    # pairs: (0,1) delta 0.1 -> relu(.3)=.3; (0,2) delta -0.7 -> relu(-.5)+relu(.2)=.2;
    # (1,2) delta -0.1 -> relu(.1)=.1 ; mean = 0.6 / 3
    assert abs(float(got) - 0.2) < 1e-6
    assert float(bml_loss(cos, torch.zeros_like(fn), 0, 0.2, 0.5)) == 0.0


def _ref_row_loss(
    cos_row: list[float],
    pos: int,
    tau: float,
    hard: float | None,
    dropped: set[int],
    valid_cols: list[bool],
) -> float:
    terms = [c / tau for j, c in enumerate(cos_row) if valid_cols[j] and j not in dropped]
    if hard is not None:
        terms.append(hard)
    return -cos_row[pos] / tau + math.log(sum(math.exp(t) for t in terms))


@pytest.mark.parametrize("denominator", ["keep", "remove"])
def test_infonce_with_hard_column_and_false_negative_denominator(denominator: str) -> None:
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(4, 5), dim=-1), F.normalize(torch.randn(4, 5), dim=-1)
    cos = z1 @ z2.t()
    valid = torch.tensor([True, True, False, True])
    hard = torch.tensor([0.3, -0.2, 0.0, float("-inf")])  # row 3: no extra column
    fn = torch.zeros(4, 4, dtype=torch.bool)
    fn[0, 1] = fn[1, 0] = True
    drop = fn if denominator == "remove" else None
    got = local_text_infonce(cos, 0, valid, valid, 0.7, hard, drop)
    losses = []
    for a in (0, 1, 3):
        dropped = {b for b in range(4) if fn[a, b]} if denominator == "remove" else set()
        h = None if a == 3 else float(hard[a])
        losses.append(_ref_row_loss(cos[a].tolist(), a, 0.7, h, dropped, valid.tolist()))
    assert abs(float(got) - sum(losses) / 3) < 1e-5


def _cfg(variant: str, **kw: object) -> LossConfig:
    cfg = LossConfig(num_clusters=3, local_text_tau=0.5, **kw)
    if variant == "clean":
        cfg.centroid_update, cfg.hard_negative_mode = "mean", "additive"
        cfg.false_negative_denominator = "remove"
    return cfg


def _reference_local_text(
    z1: torch.Tensor, z2: torch.Tensor, cents: torch.Tensor, cfg: LossConfig
) -> tuple[float, float]:
    """Independent loop version over valid sentences with fixed centroids."""
    n = z1.shape[0]
    z1 = [F.normalize(v, dim=0) for v in z1]
    z2 = [F.normalize(v, dim=0) for v in z2]
    cn = [F.normalize(c, dim=0) for c in cents]
    cos = [[float(z1[a] @ z2[b]) for b in range(n)] for a in range(n)]
    sims = [[float(z1[a] @ c) for c in cn] for a in range(n)]
    assign = [max(range(len(cn)), key=lambda k, a=a: sims[a][k]) for a in range(n)]
    total, bml, pairs = 0.0, 0.0, 0
    for a in range(n):
        second = sorted(range(len(cn)), key=lambda k, a=a: -sims[a][k])[1]
        c = sims[a][second]
        w, tau = cfg.hard_negative_weight, cfg.local_text_tau
        hard = w * c / tau if cfg.hard_negative_mode == "multiply" else c / tau + w
        same = {b for b in range(n) if b != a and assign[b] == assign[a]}
        dropped = same if cfg.false_negative_denominator == "remove" else set()
        total += _ref_row_loss(cos[a], a, tau, hard, dropped, [True] * n)
        for b in same:
            d = cos[a][b] - cos[a][a]
            bml += max(d + cfg.bml_alpha, 0) + max(-d - cfg.bml_beta, 0)
            pairs += 1
    return total / n, bml / max(pairs, 1)


@pytest.mark.parametrize("variant", ["authors", "clean"])
def test_local_text_module_equals_reference_and_ignores_padding(variant: str) -> None:
    torch.manual_seed(3)
    cfg = _cfg(variant)
    z1, z2 = torch.randn(7, 4), torch.randn(7, 4)
    cents = torch.randn(3, 4)
    mod = LocalTextLoss(cfg, 4).eval()
    mod.kmeans.centroids.copy_(cents)
    mod.kmeans.initialized.fill_(True)
    out = mod(z1, z2, torch.ones(7, dtype=torch.bool))
    ref_loss, ref_bml = _reference_local_text(z1, z2, cents, cfg)
    assert abs(float(out["loss"]) - ref_loss) < 1e-5
    assert abs(float(out["bml"]) - ref_bml) < 1e-6 and ref_bml > 0  # there are same-cluster pairs
    # padding rows anywhere (with garbage in them) change nothing
    pos = [0, 1, 4, 5, 6, 8, 9]
    p1, p2 = torch.randn(10, 4) * 5, torch.randn(10, 4) * 5
    p1[pos], p2[pos] = z1, z2
    valid = torch.zeros(10, dtype=torch.bool)
    valid[pos] = True
    padded = mod(p1, p2, valid)
    assert abs(float(padded["loss"]) - float(out["loss"])) < 1e-5
    assert abs(float(padded["bml"]) - float(out["bml"])) < 1e-6


def test_before_initialisation_it_is_plain_infonce_and_training_updates_state() -> None:
    torch.manual_seed(4)
    cfg = _cfg("authors", cluster_init_threshold=-1.0)  # never initialises
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    mod = LocalTextLoss(cfg, 4).train()
    out = mod(z1, z2, torch.ones(5, dtype=torch.bool))
    cos = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t()
    plain = F.cross_entropy(cos / 0.5, torch.arange(5))
    assert abs(float(out["loss"]) - float(plain)) < 1e-5
    assert float(out["bml"]) == 0.0 and not bool(out["ready"])
    assert int(mod.kmeans.step) == 1
    cfg2 = _cfg("authors", cluster_init_threshold=1.0)
    mod2 = LocalTextLoss(cfg2, 4).train()
    out2 = mod2(z1, z2, torch.ones(5, dtype=torch.bool))
    assert bool(out2["ready"]) and bool(mod2.kmeans.initialized)


def test_clustering_off_is_plain_local_infonce() -> None:
    cfg = LossConfig(clustering=False, local_text_tau=1.0)
    mod = LocalTextLoss(cfg, 4)
    assert mod.kmeans is None and len(mod.state_dict()) == 0
    z1, z2 = torch.randn(4, 4), torch.randn(4, 4)
    out = mod(z1, z2, torch.ones(4, dtype=torch.bool))
    cos = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t()
    assert abs(float(out["loss"]) - float(F.cross_entropy(cos, torch.arange(4)))) < 1e-5

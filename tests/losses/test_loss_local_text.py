"""Local text loss with clustering-guided negatives: each form of each switch against the
authors' computation written out literally here (the N x N hard-negative block with its weight
matrix, the all-pairs BML), on small hand-made tensors."""

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
    logit_a, _ = hard_negative_logit(z1, cents, tau=0.5, weight=3.0, mode="additive_column")
    assert torch.allclose(logit_a, z1[:, 1] / 0.5 + 3.0)
    with pytest.raises(ValueError, match="hard_negative_mode"):
        hard_negative_logit(z1, cents, tau=0.5, weight=3.0, mode="additive")


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


def test_bml_masked_pairs_and_all_pairs_on_a_hand_example() -> None:
    cos = torch.tensor([[0.8, 0.9, 0.1], [0.2, 0.5, 0.4], [0.0, -0.3, 0.6]], requires_grad=True)
    fn = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    # alpha 0.3, beta 0.5. pairs: (0,1) delta 0.1 -> relu(.4) = .4; (0,2) delta -0.7 ->
    # relu(-.4) + relu(.2) = .2; (1,2) delta -0.1 -> relu(.2) = .2. Sum .8 over 3 pairs.
    got, count = bml_loss(cos, fn, 0, 0.3, 0.5, "masked_pairs")
    assert abs(float(got.detach()) - 0.8 / 3) < 1e-6 and float(count) == 3
    # authors: delta * mask, the 6 unmasked entries add relu(0 + .3) = .3 each; 9 entries
    got_all, count_all = bml_loss(cos, fn, 0, 0.3, 0.5, "all_pairs")
    assert abs(float(got_all.detach()) - (0.8 + 6 * 0.3) / 9) < 1e-6 and float(count_all) == 9
    # gradient: d/dcos[0,1] = 1/9 (relu(delta + alpha) active); d/dcos[1,1] = -1/9 (the
    # positive of pair (1,2)); d/dcos[0,0] = -1/9 + 1/9 = 0 (pairs (0,1) and (0,2))
    (g,) = torch.autograd.grad(got_all, cos)
    assert abs(float(g[0, 1]) - 1 / 9) < 1e-7 and abs(float(g[1, 1]) + 1 / 9) < 1e-7
    assert abs(float(g[0, 0])) < 1e-7 and float(g[2, 0]) == 0.0
    (gm,) = torch.autograd.grad(got, cos)
    assert abs(float(gm[0, 1]) - 1 / 3) < 1e-7
    zero, _ = bml_loss(cos, torch.zeros_like(fn), 0, 0.3, 0.5, "masked_pairs")
    assert float(zero) == 0.0
    const, _ = bml_loss(cos, torch.zeros_like(fn), 0, 0.3, 0.5, "all_pairs")
    assert abs(float(const) - 0.3) < 1e-7  # every pair adds alpha


def _ref_row_loss(
    cos_row: list[float],
    pos: int,
    tau: float,
    extra: list[float],
    dropped: set[int],
    valid_cols: list[bool],
) -> float:
    terms = [c / tau for j, c in enumerate(cos_row) if valid_cols[j] and j not in dropped]
    terms += extra
    return -cos_row[pos] / tau + math.log(sum(math.exp(t) for t in terms))


@pytest.mark.parametrize("denominator", ["keep", "remove"])
def test_infonce_with_extra_columns_and_false_negative_denominator(denominator: str) -> None:
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(4, 5), dim=-1), F.normalize(torch.randn(4, 5), dim=-1)
    cos = z1 @ z2.t()
    valid = torch.tensor([True, True, False, True])
    extra = torch.tensor([[0.3, 0.0], [-0.2, 1.5], [0.0, 0.0], [float("-inf"), float("-inf")]])
    fn = torch.zeros(4, 4, dtype=torch.bool)
    fn[0, 1] = fn[1, 0] = True
    drop = fn if denominator == "remove" else None
    got = local_text_infonce(cos, 0, valid, valid, 0.7, extra, drop)
    losses = []
    for a in (0, 1, 3):
        dropped = {b for b in range(4) if fn[a, b]} if denominator == "remove" else set()
        ex = [] if a == 3 else extra[a].tolist()
        losses.append(_ref_row_loss(cos[a].tolist(), a, 0.7, ex, dropped, valid.tolist()))
    assert abs(float(got) - sum(losses) / 3) < 1e-5


def _cfg(variant: str, **kw: object) -> LossConfig:
    cfg = LossConfig(num_clusters=3, local_text_tau=0.5, **kw)
    if variant == "clean":
        cfg.centroid_update, cfg.hard_negative_mode = "mean", "additive_block"
        cfg.false_negative_denominator, cfg.bml_reduction = "remove", "masked_pairs"
    elif variant == "column":
        cfg.hard_negative_mode = "additive_column"
    return cfg


def _reference_local_text(
    z1: torch.Tensor, z2: torch.Tensor, cents: torch.Tensor, cfg: LossConfig
) -> tuple[float, float]:
    """The authors' / ClusterNS computation written out: N regular logits, then the N x N block
    cos(z1_a, h_j) / tau with its weights, BML over masked or all pairs; fixed centroids."""
    n = z1.shape[0]
    z1 = [F.normalize(v, dim=0) for v in z1]
    z2 = [F.normalize(v, dim=0) for v in z2]
    cn = [F.normalize(c, dim=0) for c in cents]
    cos = [[float(z1[a] @ z2[b]) for b in range(n)] for a in range(n)]
    sims = [[float(z1[a] @ c) for c in cn] for a in range(n)]
    assign = [max(range(len(cn)), key=lambda k, a=a: sims[a][k]) for a in range(n)]
    hard = [sorted(range(len(cn)), key=lambda k, a=a: -sims[a][k])[1] for a in range(n)]
    w, tau = cfg.hard_negative_weight, cfg.local_text_tau
    total, bml_sum, pairs = 0.0, 0.0, 0
    for a in range(n):
        block = [float(z1[a] @ cn[hard[j]]) / tau for j in range(n)]
        if cfg.hard_negative_mode == "multiply":  # weight matrix: w at j = a, 0 elsewhere
            extra = [(w if j == a else 0.0) * block[j] for j in range(n)]
        elif cfg.hard_negative_mode == "additive_block":  # + w at j = a, real cosines elsewhere
            extra = [block[j] + (w if j == a else 0.0) for j in range(n)]
        else:
            extra = [block[a] + w]
        same = {b for b in range(n) if b != a and assign[b] == assign[a]}
        dropped = same if cfg.false_negative_denominator == "remove" else set()
        total += _ref_row_loss(cos[a], a, tau, extra, dropped, [True] * n)
        for b in range(n):
            m = 1.0 if b in same else 0.0
            if cfg.bml_reduction == "masked_pairs" and not m:
                continue
            d = (cos[a][b] - cos[a][a]) * m
            bml_sum += max(d + cfg.bml_alpha, 0) + max(-d - cfg.bml_beta, 0)
            pairs += 1
    return total / n, bml_sum / max(pairs, 1)


@pytest.mark.parametrize("variant", ["authors", "clean", "column"])
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
    assert abs(float(out["bml"]) - ref_bml) < 1e-6 and ref_bml > 0
    # padding rows anywhere (with garbage in them) change nothing: N counts valid columns only
    pos = [0, 1, 4, 5, 6, 8, 9]
    p1, p2 = torch.randn(10, 4) * 5, torch.randn(10, 4) * 5
    p1[pos], p2[pos] = z1, z2
    valid = torch.zeros(10, dtype=torch.bool)
    valid[pos] = True
    padded = mod(p1, p2, valid)
    assert abs(float(padded["loss"]) - float(out["loss"])) < 1e-5
    assert abs(float(padded["bml"]) - float(out["bml"])) < 1e-6


def test_authors_block_has_n_minus_1_zero_logits_value_and_gradient() -> None:
    """The analytic log(N - 1) column equals the literal N x 2N logit matrix times the weight
    matrix (N - 1 zeros per row), in value and in the gradients to z1 and z2."""
    torch.manual_seed(7)
    n, d, tau, w = 6, 5, 0.5, 3.0
    cfg = _cfg("authors", false_negative_denominator="keep")
    z1 = torch.randn(n, d, requires_grad=True)
    z2 = torch.randn(n, d, requires_grad=True)
    cents = torch.randn(3, d)
    mod = LocalTextLoss(cfg, d).eval()
    mod.kmeans.centroids.copy_(cents)
    mod.kmeans.initialized.fill_(True)
    out = mod(z1, z2, torch.ones(n, dtype=torch.bool))
    g1, g2 = torch.autograd.grad(out["loss"], (z1, z2))

    a1, a2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    u1, u2, cn = F.normalize(a1, dim=1), F.normalize(a2, dim=1), F.normalize(cents, dim=1)
    hard_idx = (u1.detach() @ cn.t()).argsort(dim=1, descending=True)[:, 1]
    block = u1 @ cn[hard_idx].t() / tau  # block[a, j] = cos(z1_a, h_j) / tau
    weights = torch.cat([torch.ones(n, n), w * torch.eye(n)], dim=1)
    logits = torch.cat([u1 @ u2.t() / tau, block], dim=1) * weights
    assert int((logits[:, n:] == 0).sum()) == n * (n - 1)  # N - 1 zero logits per row
    want = F.cross_entropy(logits, torch.arange(n))
    w1, w2 = torch.autograd.grad(want, (a1, a2))
    assert abs(float(out["loss"]) - float(want)) < 1e-5
    torch.testing.assert_close(g1, w1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g2, w2, rtol=1e-4, atol=1e-6)
    # and it is not the one-column form (the zeros matter): 0.69-scale gap at this N
    one_col = torch.cat([u1 @ u2.t() / tau, (w * block.diagonal())[:, None]], dim=1)
    assert float(want) - float(F.cross_entropy(one_col, torch.arange(n))) > 0.1


def test_no_hard_negatives_or_bml_on_the_initialisation_step() -> None:
    torch.manual_seed(4)
    cfg = _cfg("authors", cluster_init_threshold=1.0)  # initialises on the first step
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    mod = LocalTextLoss(cfg, 4).train()
    out = mod(z1, z2, torch.ones(6, dtype=torch.bool))
    cos = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t()
    plain = float(F.cross_entropy(cos / 0.5, torch.arange(6)))
    assert bool(out["ready"]) and bool(mod.kmeans.initialized) and not bool(out["active"])
    assert abs(float(out["loss"]) - plain) < 1e-5 and float(out["bml"]) == 0.0
    assert math.isnan(float(out["cluster_top_share"]))  # health undefined before use
    # the next step uses the clusters: the loss is no longer plain InfoNCE
    out2 = mod(z1, z2, torch.ones(6, dtype=torch.bool))
    assert bool(out2["active"]) and abs(float(out2["loss"]) - plain) > 1e-3


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


@pytest.mark.parametrize("update", ["sum", "mean"])
def test_update_then_choose(update: str) -> None:
    """After initialisation a training step first moves the centroids (from z2) and then uses
    the moved centroids for the hard negatives and the false-negative mask."""
    torch.manual_seed(11)
    cfg = _cfg("authors", cluster_momentum=0.5, centroid_update=update)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    c0 = torch.randn(3, 4)
    mod = LocalTextLoss(cfg, 4).train()
    mod.kmeans.centroids.copy_(c0)
    mod.kmeans.initialized.fill_(True)
    out = mod(z1, z2, torch.ones(8, dtype=torch.bool))
    # the update by hand: assign each unit z2 to its most similar centroid
    u2 = [F.normalize(v, dim=0) for v in z2]
    c0n = [F.normalize(c, dim=0) for c in c0]
    c1 = c0.clone()
    for k in range(3):
        members = [v for v in u2 if max(range(3), key=lambda j, v=v: float(v @ c0n[j])) == k]
        if members:
            agg = sum(members) if update == "sum" else sum(members) / len(members)
            c1[k] = 0.5 * c0[k] + 0.5 * agg
    torch.testing.assert_close(mod.kmeans.centroids, c1, rtol=1e-5, atol=1e-6)
    after, _ = _reference_local_text(z1, z2, c1, cfg)
    before, _ = _reference_local_text(z1, z2, c0, cfg)
    assert abs(float(out["loss"]) - after) < 1e-5
    assert abs(after - before) > 1e-3  # the order is observable on this example


def test_cluster_health_on_a_hand_example() -> None:
    # 4 sentences on the axes, centroids e0, e1, e2 -> assignments 0, 0, 1, 2
    z1 = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.2], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mod = LocalTextLoss(_cfg("authors"), 3).eval()
    mod.kmeans.centroids.copy_(torch.eye(3))
    mod.kmeans.initialized.fill_(True)
    out = mod(z1, z1.clone(), torch.ones(4, dtype=torch.bool))
    assert float(out["clusters_nonempty"]) == 3
    assert abs(float(out["cluster_top_share"]) - 0.5) < 1e-6
    want_h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert abs(float(out["cluster_entropy"]) - want_h) < 1e-6
    assert abs(float(out["fn_pair_share"]) - 2 / 12) < 1e-6  # (0,1) and (1,0) of 12 pairs
    u = F.normalize(z1, dim=1)
    second = [float(u[0, 1]), float(u[1, 2]), 0.0, 0.0]  # 2nd most similar axis (ties at 0)
    assert abs(float(out["hard_negative_cos"]) - sum(second) / 4) < 1e-6


def test_clustering_off_is_plain_local_infonce() -> None:
    cfg = LossConfig(clustering=False, local_text_tau=1.0)
    mod = LocalTextLoss(cfg, 4)
    assert mod.kmeans is None and len(mod.state_dict()) == 0
    z1, z2 = torch.randn(4, 4), torch.randn(4, 4)
    out = mod(z1, z2, torch.ones(4, dtype=torch.bool))
    cos = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t()
    assert abs(float(out["loss"]) - float(F.cross_entropy(cos, torch.arange(4)))) < 1e-5


def _collapsed_batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Every z2 nearly one direction (e0), every z1 nearly another (e1): the mean cross-modal
    cosine is about 0 (the authors' init test passes) while the z2 are collapsed."""
    g = torch.Generator().manual_seed(3)
    z1 = torch.eye(4)[1].expand(n, 4) + 0.05 * torch.randn(n, 4, generator=g)
    z2 = torch.eye(4)[0].expand(n, 4) + 0.05 * torch.randn(n, 4, generator=g)
    return z1, z2


def test_cluster_feature_cos_is_the_mean_over_valid_pairs() -> None:
    z2 = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [-1.0, 0, 0]])
    valid = torch.tensor([True, True, True, False])  # the padding row must not count
    mod = LocalTextLoss(_cfg("authors", cluster_init_threshold=-1.0), 3).train()
    out = mod(torch.randn(4, 3), z2, valid)
    # pairs among rows 0, 1, 2: cos (0,1) = 1, (0,2) = (1,2) = 0 -> 2 of 6 ordered pairs
    assert abs(float(out["cluster_feature_cos"]) - 2 / 6) < 1e-6
    off = LocalTextLoss(LossConfig(clustering=False), 3)(torch.randn(4, 3), z2, valid)
    assert math.isnan(float(off["cluster_feature_cos"]))


def test_spread_gate_waits_for_spread_features_to_initialise() -> None:
    z1, z2 = _collapsed_batch()
    valid = torch.ones(6, dtype=torch.bool)
    authors = LocalTextLoss(_cfg("authors"), 4).train()
    assert bool(authors(z1, z2, valid)["ready"])  # cross-modal mean cos ~0 <= 0.4: starts
    gated = LocalTextLoss(_cfg("clean", cluster_gate="spread"), 4).train()
    out = gated(z1, z2, valid)
    assert float(out["cluster_feature_cos"]) > 0.9 and not bool(out["ready"])
    plain = F.cross_entropy(F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t() / 0.5,
                            torch.arange(6))  # fmt: skip
    assert abs(float(out["loss"]) - float(plain)) < 1e-5
    spread = torch.eye(6, 4) + 0.05  # rows 4, 5 are near 0.05 * ones: spread enough
    spread[4:] = torch.tensor([[1.0, -1, 0, 0], [0, 0, 1, -1]])
    assert bool(gated(z1, spread, valid)["ready"])


def test_spread_gate_suspends_the_clusters_on_a_collapsed_step() -> None:
    z1, z2 = _collapsed_batch()
    valid = torch.ones(6, dtype=torch.bool)
    mod = LocalTextLoss(_cfg("clean", cluster_gate="spread", cluster_momentum=0.5), 4).train()
    c0 = torch.eye(3, 4)
    mod.kmeans.centroids.copy_(c0)
    mod.kmeans.initialized.fill_(True)
    out = mod(z1, z2, valid)
    plain = F.cross_entropy(F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t() / 0.5,
                            torch.arange(6))  # fmt: skip
    assert bool(out["ready"]) and not bool(out["active"])
    assert abs(float(out["loss"]) - float(plain)) < 1e-5 and float(out["bml"]) == 0.0
    assert math.isnan(float(out["clusters_nonempty"]))
    assert torch.equal(mod.kmeans.centroids, c0)  # no update on a suspended step
    assert mod.kmeans.idle.tolist() == [0, 0, 0]  # and no idle count either
    ungated = LocalTextLoss(_cfg("clean", cluster_momentum=0.5), 4).train()
    ungated.kmeans.centroids.copy_(c0)
    ungated.kmeans.initialized.fill_(True)
    assert bool(ungated(z1, z2, valid)["active"])  # the authors' gate: the clusters are used
    assert not torch.equal(ungated.kmeans.centroids, c0)

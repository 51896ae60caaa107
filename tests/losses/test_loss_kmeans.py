"""Cross-modal k-means (the authors' clustering-guided negative sampling): state buffers, init
rule, momentum update."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmcgns_cli.losses import CrossModalKMeans, farthest_point_init


def _diverse(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_state_is_registered_buffers_saved_and_restored() -> None:
    km = CrossModalKMeans(4, 8)
    sd = km.state_dict()
    assert set(sd) == {"centroids", "initialized", "step"}
    assert sd["centroids"].shape == (4, 8) and sd["step"].dtype == torch.long
    z = _diverse(10, 8)
    km.train_step(z, z.roll(1, 0), torch.ones(10, dtype=torch.bool))
    assert bool(km.initialized) and int(km.step) == 1
    fresh = CrossModalKMeans(4, 8)
    assert not fresh.host_knows_ready()
    fresh.load_state_dict(km.state_dict())
    assert torch.equal(fresh.centroids, km.centroids) and bool(fresh.initialized)
    assert int(fresh.step) == 1 and fresh.host_knows_ready()


def test_init_waits_until_mean_cosine_drops_to_threshold() -> None:
    km = CrossModalKMeans(4, 8, threshold=0.4)
    same = F.normalize(torch.ones(10, 8), dim=-1)  # every pair has cosine 1 > 0.4
    valid = torch.ones(10, dtype=torch.bool)
    km.train_step(same, same, valid)
    assert not bool(km.initialized) and bool((km.centroids == 0).all())
    z1, z2 = _diverse(10, 8, 1), _diverse(10, 8, 2)
    assert float((z1 @ z2.t()).mean()) <= 0.4
    km.train_step(z1, z2, valid)
    assert bool(km.initialized)
    # every centroid is one of z2's rows (init from the cross-modal features), all distinct
    for c in km.centroids:
        assert min(float((c - r).abs().max()) for r in z2) < 1e-6
    assert len({tuple(c.tolist()) for c in km.centroids}) == 4


def test_init_threshold_is_inclusive() -> None:
    km = CrossModalKMeans(2, 4, threshold=1.0)
    z = F.normalize(torch.tensor([[1.0, 0, 0, 0]] * 3), dim=-1)  # mean cosine exactly 1
    km.train_step(z, z, torch.ones(3, dtype=torch.bool))
    assert bool(km.initialized)


def test_init_waits_while_fewer_valid_sentences_than_clusters() -> None:
    km = CrossModalKMeans(6, 8, threshold=0.9)
    z1, z2 = _diverse(8, 8, 3), _diverse(8, 8, 4)
    valid = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)  # 5 valid < K = 6
    km.train_step(z1, z2, valid)
    assert not bool(km.initialized)
    km.train_step(z1, z2, torch.ones(8, dtype=torch.bool))  # 8 >= 6
    assert bool(km.initialized)


def test_farthest_point_rule_matches_a_plain_loop() -> None:
    z = _diverse(12, 5, 5)
    valid = torch.ones(12, dtype=torch.bool)
    valid[[2, 7]] = False
    cents = farthest_point_init(z, valid, 5, torch.tensor(0.55))
    valid_ids = [i for i in range(12) if valid[i]]
    first = valid_ids[int(0.55 * len(valid_ids))]
    chosen = [first]
    while len(chosen) < 5:
        prev = z[chosen[-1]]
        cands = [i for i in valid_ids if i not in chosen]
        chosen.append(min(cands, key=lambda i: float(z[i] @ prev)))
    assert torch.allclose(cents, z[chosen])


def test_init_draw_ignores_padding_rows() -> None:
    z = _diverse(6, 5, 6)
    pad = torch.cat([z[:3], torch.zeros(4, 5), z[3:]])
    vp = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    a = farthest_point_init(z, torch.ones(6, dtype=torch.bool), 4, torch.tensor(0.3))
    b = farthest_point_init(pad, vp, 4, torch.tensor(0.3))
    assert torch.equal(a, b)


def _ref_update(cents: torch.Tensor, pts: torch.Tensor, m: float, mode: str) -> torch.Tensor:
    out = cents.clone()
    cn = F.normalize(cents, dim=-1)
    groups: dict[int, list[torch.Tensor]] = {}
    for p in pts:
        k = int((cn @ F.normalize(p, dim=0)).argmax())
        groups.setdefault(k, []).append(p)
    for k, members in groups.items():
        agg = torch.stack(members).sum(0)
        if mode == "mean":
            agg = agg / len(members)
        out[k] = (1 - m) * cents[k] + m * agg
    return out


def test_momentum_update_sum_and_mean_and_empty_clusters() -> None:
    cents = torch.eye(4, 6)
    pts = F.normalize(
        torch.tensor(
            [
                [1.0, 0.1, 0, 0, 0, 0],
                [0.9, 0, 0.2, 0, 0, 0],
                [0, 1.0, 0, 0, 0, 0.3],
                [0, 0, 0.1, 0, 0, 1.0],
            ]
        ),
        dim=-1,
    )
    valid = torch.tensor([True, True, True, False])  # the invalid point must not count
    for mode in ("sum", "mean"):
        km = CrossModalKMeans(4, 6, momentum=0.1, update=mode)
        km.centroids.copy_(cents)
        km.momentum_update(pts, valid, torch.tensor(True))
        want = _ref_update(cents, pts[:3], 0.1, mode)
        assert torch.allclose(km.centroids, want, atol=1e-6), mode
        assert torch.equal(km.centroids[2:], cents[2:])  # clusters with no point keep theirs
    sum_km = CrossModalKMeans(4, 6, momentum=0.1, update="sum")
    sum_km.centroids.copy_(cents)
    sum_km.momentum_update(pts, valid, torch.tensor(True))
    assert not torch.allclose(sum_km.centroids[0], km.centroids[0])  # two points: sum != mean
    km.centroids.copy_(cents)
    km.momentum_update(pts, valid, torch.tensor(False))  # inactive before initialisation
    assert torch.equal(km.centroids, cents)


def test_reduce_hook_sees_the_update_statistics() -> None:
    seen: list[tuple[int, ...]] = []

    def reduce(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return x * 2  # as if two identical ranks were summed

    km = CrossModalKMeans(2, 3, momentum=0.5, update="mean")
    km.reduce = reduce
    km.centroids.copy_(torch.eye(2, 3))
    pts = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    km.momentum_update(pts, torch.ones(2, dtype=torch.bool), torch.tensor(True))
    assert (2, 4) in seen
    assert torch.allclose(km.centroids, torch.eye(2, 3))  # mean of doubled sums / counts is same

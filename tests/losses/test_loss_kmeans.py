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
    assert set(sd) == {"centroids", "initialized", "step", "idle"}
    assert sd["centroids"].shape == (4, 8) and sd["step"].dtype == torch.long
    z = _diverse(10, 8)
    km.train_step(z, z.roll(1, 0), torch.ones(10, dtype=torch.bool))
    assert bool(km.initialized) and int(km.step) == 1
    fresh = CrossModalKMeans(4, 8)
    assert not fresh.host_knows_ready()
    fresh.load_state_dict(km.state_dict())
    assert torch.equal(fresh.centroids, km.centroids) and bool(fresh.initialized)
    assert int(fresh.step) == 1 and fresh.host_knows_ready()
    old = {k: v for k, v in km.state_dict().items() if k != "idle"}  # a run from before
    fresh.idle.fill_(7)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.idle, torch.zeros(4, dtype=torch.long))


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


def _relocation_world() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroids e0, e1, e2 in 4-D; five points all nearest e0, at falling cosine to it."""
    cents = torch.eye(3, 4)
    ang = torch.tensor([0.0, 0.2, 0.9, 0.5, 0.7])  # radians from e0, towards e3
    pts = torch.stack([ang.cos(), 0 * ang, 0 * ang, ang.sin()], dim=1)
    valid = torch.tensor([True, True, False, True, True])  # the farthest point is padding
    return cents, pts, valid


def test_idle_centroids_restart_on_the_farthest_points_after_t_steps() -> None:
    cents, pts, valid = _relocation_world()
    km = CrossModalKMeans(3, 4, momentum=0.0, update="mean", idle_restart=2)
    km.centroids.copy_(cents)
    on = torch.tensor(True)
    km.momentum_update(pts, valid, on)
    assert km.idle.tolist() == [0, 1, 1] and torch.equal(km.centroids, cents)  # not yet
    km.momentum_update(pts, valid, torch.tensor(False))  # inactive steps do not count
    assert km.idle.tolist() == [0, 1, 1]
    km.momentum_update(pts, valid, on)
    # e1 and e2 were idle 2 steps: they take the valid points farthest from e0, 0.7 rad
    # (row 4) then 0.5 rad (row 3); the padding row at 0.9 rad is never taken
    assert torch.allclose(km.centroids[1], pts[4]) and torch.allclose(km.centroids[2], pts[3])
    assert torch.equal(km.centroids[0], cents[0]) and km.idle.tolist() == [0, 0, 0]
    km.momentum_update(pts, valid, on)  # now rows 3 and 4 are their own clusters
    assert km.assign(pts[valid]).tolist() == [0, 0, 2, 1] and km.idle.tolist() == [0, 0, 0]


def test_idle_restart_off_keeps_idle_centroids_and_more_idle_than_points_wait() -> None:
    cents, pts, valid = _relocation_world()
    off = CrossModalKMeans(3, 4, momentum=0.0, update="sum", idle_restart=0)
    off.centroids.copy_(cents)
    for _ in range(5):
        off.momentum_update(pts, valid, torch.tensor(True))
    assert torch.equal(off.centroids, cents) and off.idle.tolist() == [0, 5, 5]
    one = torch.tensor([True, False, False, False, False])  # one valid point, two idle
    km = CrossModalKMeans(3, 4, momentum=0.0, update="mean", idle_restart=1)
    km.centroids.copy_(cents)
    km.momentum_update(pts, one, torch.tensor(True))
    assert torch.allclose(km.centroids[1], pts[0]) and torch.equal(km.centroids[2], cents[2])
    assert km.idle.tolist() == [0, 0, 1]


def test_idle_restart_takes_rank_zero_points_through_broadcast() -> None:
    cents, pts, valid = _relocation_world()
    km = CrossModalKMeans(3, 4, momentum=0.0, update="mean", idle_restart=1)
    km.centroids.copy_(cents)
    rank0 = -torch.eye(3, 4).flip(1)  # rank 0's candidate for each of the 3 centroids
    km.broadcast = lambda x: rank0 if x.dim() == 2 else x
    km.momentum_update(pts, valid, torch.tensor(True))
    assert torch.equal(km.centroids[1:], rank0[1:]) and torch.equal(km.centroids[0], cents[0])

"""Global InfoNCE  and local image loss  against plain computations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cmcgns_cli.losses import Predictor, global_infonce, local_image_loss


def _ref_infonce(img: torch.Tensor, txt: torch.Tensor, scale: float) -> tuple[float, float]:
    n = img.shape[0]
    total_i2t = total_t2i = 0.0
    for i in range(n):
        row = [scale * float(img[i] @ txt[j]) for j in range(n)]
        total_i2t += -row[i] + math.log(sum(math.exp(v) for v in row))
        col = [scale * float(txt[i] @ img[j]) for j in range(n)]
        total_t2i += -col[i] + math.log(sum(math.exp(v) for v in col))
    return 0.5 * (total_i2t + total_t2i) / n, total_i2t / n


def test_global_infonce_matches_hand_computation() -> None:
    torch.manual_seed(0)
    img = F.normalize(torch.randn(5, 4), dim=-1)
    txt = F.normalize(torch.randn(5, 4), dim=-1)
    s = torch.tensor(math.log(1 / 0.1))
    loss, acc_i2t, acc_t2i = global_infonce(img, txt, s)
    ref, _ = _ref_infonce(img, txt, 10.0)
    assert abs(float(loss) - ref) < 1e-5
    want_acc = sum(int((img[i] @ txt.t()).argmax() == i) for i in range(5)) / 5
    assert abs(float(acc_i2t) - want_acc) < 1e-6
    assert 0.0 <= float(acc_t2i) <= 1.0


def test_global_infonce_logit_scale_is_learnable_unclamped_by_default_clamp_optional() -> None:
    torch.manual_seed(5)
    img = F.normalize(torch.randn(4, 3), dim=-1)
    txt = F.normalize(torch.randn(4, 3), dim=-1)
    s = torch.tensor(math.log(10.0), requires_grad=True)
    loss, _, _ = global_infonce(img, txt, s)
    loss.backward()
    assert s.grad is not None and float(s.grad.abs()) > 0
    big = torch.tensor(6.0)  # exp(6) = 403, above CLIP's clamp of 100
    # the authors never clamp: the full exp(6) is used
    unclamped, _ = _ref_infonce(img, txt, math.exp(6.0))
    assert abs(float(global_infonce(img, txt, big)[0]) - unclamped) < 1e-3
    # the CLIP-trainer clamp as an option
    clamped, _ = _ref_infonce(img, txt, 100.0)
    got = float(global_infonce(img, txt, big, max_scale=100.0)[0])
    assert abs(got - clamped) < 1e-4 and abs(clamped - unclamped) > 1.0


def test_global_infonce_gather_hook_gives_rows_of_the_full_batch() -> None:
    """Simulate rank 1 of 2: columns from both ranks, labels offset by the rank's rows."""
    torch.manual_seed(1)
    img = F.normalize(torch.randn(6, 4), dim=-1)
    txt = F.normalize(torch.randn(6, 4), dim=-1)
    s = torch.tensor(math.log(5.0))
    full_i2t = 5.0 * img @ txt.t()
    full_t2i = 5.0 * txt @ img.t()
    lab = torch.arange(6)
    want = 0.5 * (F.cross_entropy(full_i2t[3:], lab[3:]) + F.cross_entropy(full_t2i[3:], lab[3:]))

    def gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
        other = txt[:3] if x.data_ptr() == txt[3:].data_ptr() else img[:3]
        return torch.cat([other, x]), 3

    loss, _, _ = global_infonce(img[3:], txt[3:], s, gather)
    assert torch.allclose(loss, want, atol=1e-6)


def test_local_image_loss_matches_per_patch_loop_and_stops_gradient() -> None:
    torch.manual_seed(2)
    pred = Predictor(6, 8)
    v = torch.randn(2, 3, 6, requires_grad=True)
    c = torch.randn(2, 3, 6, requires_grad=True)
    loss = local_image_loss(v, c, pred)
    total = 0.0
    for b in range(2):
        for p in range(3):
            a = F.cosine_similarity(pred(v[b, p]), c[b, p], dim=0)
            d = F.cosine_similarity(pred(c[b, p]), v[b, p], dim=0)
            total += -0.5 * float((a + d).detach())
    assert abs(float(loss.detach()) - total / 6) < 1e-5
    # stop-grad on targets: gradients equal those of the formula written with .detach()
    loss.backward()
    g_v, g_c = v.grad.clone(), c.grad.clone()
    v.grad = c.grad = None
    ref = 0.0
    for b in range(2):
        for p in range(3):
            a = F.cosine_similarity(pred(v[b, p]), c[b, p].detach(), dim=0)
            d = F.cosine_similarity(pred(c[b, p]), v[b, p].detach(), dim=0)
            ref = ref - 0.5 * (a + d) / 6
    ref.backward()
    assert torch.allclose(g_v, v.grad, atol=1e-6) and torch.allclose(g_c, c.grad, atol=1e-6)


def test_mean_pairwise_cos_is_the_off_diagonal_mean_of_the_gram_matrix():
    from cmcgns_cli.losses.global_loss import mean_pairwise_cos

    x = F.normalize(torch.randn(7, 5, generator=torch.Generator().manual_seed(3)), dim=-1)
    pairs = [float(x[i] @ x[j]) for i in range(7) for j in range(7) if i != j]
    assert abs(float(mean_pairwise_cos(x)) - sum(pairs) / len(pairs)) < 1e-6
    # two opposite vectors: -1; a single vector: undefined (NaN, recorded as null)
    assert float(mean_pairwise_cos(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))) == -1.0
    assert math.isnan(float(mean_pairwise_cos(torch.tensor([[0.6, 0.8]]))))

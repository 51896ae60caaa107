"""The batched CMCGNS forward equals a per-sample reference written here with plain loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cmcgns_test_helpers import make_batch, tiny_config

from cmcgns_cli.model import CMCGNS


def _clip_pool(pool: torch.nn.Module, t: torch.Tensor, pos: torch.Tensor | None = None):
    """CLIP attention pooling by hand: the mean token queries [mean; sentences] (plus the
    positional embedding ``pos`` when given), per head."""
    x = torch.cat([t.mean(0, keepdim=True), t])  # (1 + n, D)
    x = x if pos is None else x + pos
    d, h = t.shape[-1], pool.heads
    dh = d // h
    q, k, v = pool.q_proj(x[0]), pool.k_proj(x), pool.v_proj(x)
    heads = []
    for i in range(h):
        sl = slice(i * dh, (i + 1) * dh)
        scores = [float(q[sl] @ k[j, sl]) / math.sqrt(dh) for j in range(x.shape[0])]
        top = max(scores)
        wts = [math.exp(s_ - top) for s_ in scores]
        heads.append(sum(w_ / sum(wts) * v[j, sl] for j, w_ in enumerate(wts)))
    return pool.c_proj(torch.cat(heads))


def _per_sample_features(model: CMCGNS, batch: dict, b: int) -> dict:
    """One sample alone: no padding slots at all."""
    img = batch["images"][b : b + 1]
    fmap = model.image_encoder.feature_map(img)[0]  # (C, h, w)
    c, h, wd = fmap.shape
    grid = (h, wd)
    cells = torch.stack([fmap[:, i, j] for i in range(h) for j in range(wd)])  # (P, C)
    if model.cfg.model.local_tokens == "channel_view":
        # token p = values p*C .. (p+1)*C - 1 of the map read channel by channel, row by row
        values = [fmap[k // (h * wd), (k // wd) % h, k % wd] for k in range(c * h * wd)]
        local = torch.stack([torch.stack(values[p * c : (p + 1) * c]) for p in range(h * wd)])
    else:
        local = cells
    if model.cfg.model.image_pool == "attention":
        g = _clip_pool(model.image_pool, cells, model.image_pool.positional_embedding)
    else:
        g = cells.mean(0)
    g = F.normalize(model.image_global_proj(g), dim=-1)
    v = F.normalize(model.image_local_proj(local), dim=-1)  # (P, D)
    te = model.text_encoder
    hidden = te.bert(
        input_ids=batch["input_ids"][b : b + 1], attention_mask=batch["attention_mask"][b : b + 1]
    ).last_hidden_state[0]
    proj = te.token_proj(hidden)
    n = int(batch["num_sentences"][b])
    sents = []
    for s in range(n):  # unit token vectors, averaged, NOT re-normalised
        toks = [
            proj[t] / proj[t].norm()
            for t in range(proj.shape[0])
            if int(batch["sentence_index"][b, t]) == s
        ]
        sents.append(torch.stack(toks).mean(0))
    t = torch.stack(sents)  # (n, D), norms below 1
    tglob = F.normalize(_clip_pool(te.pool, t), dim=-1)
    ca = model.cross_attention
    d = v.shape[-1]
    t2i = torch.zeros_like(v)
    for p in range(v.shape[0]):  # explicit sigmoid attention, patch by patch
        for s in range(n):
            w = torch.sigmoid(ca.q_t2i(v[p]) @ ca.k_t2i(t[s]) / math.sqrt(d))
            t2i[p] = t2i[p] + w * ca.v_t2i(t[s])
    i2t = torch.zeros_like(t)
    for s in range(n):
        for p in range(v.shape[0]):
            w = torch.sigmoid(ca.q_i2t(t[s]) @ ca.k_i2t(v[p]) / math.sqrt(d))
            i2t[s] = i2t[s] + w * ca.v_i2t(v[p])
    return {"g": g, "v": v, "t": t, "tg": tglob, "t2i": t2i, "i2t": i2t, "grid": grid}


def _reference(model: CMCGNS, batch: dict, stage: int) -> dict[str, float]:
    lc = model.cfg.loss
    feats = [_per_sample_features(model, batch, b) for b in range(len(batch["num_sentences"]))]
    n = len(feats)
    scale = math.exp(float(model.logit_scale))
    glob = 0.0
    for i in range(n):
        row = [scale * float(feats[i]["g"] @ feats[j]["tg"]) for j in range(n)]
        col = [scale * float(feats[i]["tg"] @ feats[j]["g"]) for j in range(n)]
        glob += 0.5 * (math.log(sum(map(math.exp, row))) - row[i])
        glob += 0.5 * (math.log(sum(map(math.exp, col))) - col[i])
    glob /= n
    li, count = 0.0, 0
    for f in feats:
        for p in range(f["v"].shape[0]):
            a = F.cosine_similarity(model.predictor(f["v"][p]), f["t2i"][p], dim=0)
            c = F.cosine_similarity(model.predictor(f["t2i"][p]), f["v"][p], dim=0)
            li += -0.5 * float(a + c)
            count += 1
    li /= count
    z1 = [F.normalize(s, dim=0) for f in feats for s in f["t"]]
    z2 = [F.normalize(s, dim=0) for f in feats for s in f["i2t"]]
    cents = [F.normalize(c, dim=0) for c in model.kmeans.centroids]
    tau, w = lc.local_text_tau, lc.hard_negative_weight
    sims = [[float(a @ c) for c in cents] for a in z1]
    assign = [max(range(len(cents)), key=lambda k, r=r: r[k]) for r in sims]
    second = [sorted(range(len(cents)), key=lambda k, r=r: -r[k])[1] for r in sims]
    lt, bml, pairs = 0.0, 0.0, 0
    n_all = len(z1)
    for a in range(n_all):
        cos = [float(z1[a] @ z2[b]) for b in range(n_all)]
        block = [float(z1[a] @ cents[second[j]]) / tau for j in range(n_all)]
        if lc.hard_negative_mode == "multiply":  # weights w at j = a, 0 elsewhere
            extra = [(w if j == a else 0.0) * block[j] for j in range(n_all)]
        else:  # additive_block: real cosines, + w at j = a
            extra = [block[j] + (w if j == a else 0.0) for j in range(n_all)]
        same = [b for b in range(n_all) if b != a and assign[b] == assign[a]]
        terms = [
            c / tau
            for b, c in enumerate(cos)
            if not (lc.false_negative_denominator == "remove" and b in same)
        ] + extra
        lt += math.log(sum(map(math.exp, terms))) - cos[a] / tau
        for b in range(n_all):
            m = 1.0 if b in same else 0.0
            if lc.bml_reduction == "masked_pairs" and not m:
                continue
            dlt = (cos[b] - cos[a]) * m
            bml += max(dlt + lc.bml_alpha, 0.0) + max(-dlt - lc.bml_beta, 0.0)
            pairs += 1
    lt /= n_all
    bml /= max(pairs, 1)
    recon = 0.0
    if stage == 2:  # mask_ratio is 0 in this test: the decoder sees the unmasked features
        for b, f in enumerate(feats):
            h, wd = f["grid"]
            fmap = torch.cat([f["v"], f["t2i"]], dim=-1).t().reshape(1, -1, h, wd)
            pred = model.decoder.conv(fmap)  # 2 x 2 grid, 5 stages: the 64 px input size
            target = batch["images"][b : b + 1]  # the 3-channel normalised image
            assert pred.shape == target.shape
            recon += lc.recon_scale * float((pred - target).abs().mean()) / n
    loss = glob + li + lt + lc.bml_weight * bml + recon
    return {
        "global": glob,
        "local_image": li,
        "local_text": lt,
        "cluster_fn": bml,
        "recon": recon,
        "loss": loss,
    }


@pytest.mark.parametrize(("variant", "stage"), [("authors", 1), ("clean", 1), ("authors", 2)])
def test_batched_forward_equals_per_sample_reference(variant: str, stage: int) -> None:
    torch.manual_seed(0)
    # The reference covers the clustered path; clean's spread gate (tested with the local
    # text loss) would switch clustering off here, as an untrained encoder's sentence
    # features are nearly parallel.
    cfg = tiny_config(variant, mask_ratio=0.0, recon_region="all", cluster_gate="init")
    cfg.data.crop_size = 64  # the batch's size: the attention pool's grid is the map's own
    model = CMCGNS(cfg).eval()
    batch = make_batch([2, 3, 1, 3, 2])
    with torch.no_grad():
        model.kmeans.centroids.copy_(torch.randn(4, 16))
        model.kmeans.initialized.fill_(True)
        out = model(batch, stage=stage)
        ref = _reference(model, batch, stage)
    for key, want in ref.items():
        assert abs(float(out[key]) - want) < 2e-4 * max(1.0, abs(want)), (
            key,
            float(out[key]),
            want,
        )
    assert ref["cluster_fn"] > 0  # the false-negative path was exercised

"""The model wiring switches (authors' form vs clean): each changes exactly what it names.

model.local_tokens (a hand computation on a 4-channel 2 x 3 map, channels_last included),
model.image_pool (parameter counts; the pool against torch's own multi-head attention),
model.proj_init (the weights' std), model.decoder_align_corners (the decoder's output against
a bilinear resize written here), and how the switches resolve and load.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cmcgns_test_helpers import make_batch, tiny_config

from cmcgns_cli.config import config_from_dict, resolve
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model import CMCGNS
from cmcgns_cli.model.decoder import ConvUpDecoder
from cmcgns_cli.model.encoders import map_to_tokens
from cmcgns_cli.model.image_pool import AttentionPool2d


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- item 1: local tokens -----------------------------------------------------------------
# A (1, C=4, h=2, w=3) map holding 0..23 in its logical order: value = 6 c + 3 y + x.
MAP = torch.arange(24.0).reshape(1, 4, 2, 3)
# Spatial: token p = cell (y, x) = (p // 3, p % 3), its 4 channel values 6 c + p.
SPATIAL = [[p, 6 + p, 12 + p, 18 + p] for p in range(6)]
# Channel view: the 24 values in logical order cut into 6 runs of C = 4: token p = 4p .. 4p+3,
# e.g. token 1 = channel 0 at cells 4, 5 and channel 1 at cells 0, 1.
CHANNEL_VIEW = [[4 * p, 4 * p + 1, 4 * p + 2, 4 * p + 3] for p in range(6)]


@pytest.mark.parametrize("channels_last", [False, True])
def test_local_token_layouts_by_hand(channels_last: bool) -> None:
    fmap = MAP.to(memory_format=torch.channels_last) if channels_last else MAP
    if channels_last:
        assert not fmap.is_contiguous()  # really a different memory order
    assert map_to_tokens(fmap, "spatial")[0].tolist() == SPATIAL
    assert map_to_tokens(fmap, "channel_view")[0].tolist() == CHANNEL_VIEW
    with pytest.raises(ValueError, match="layout"):
        map_to_tokens(fmap, "rows")


def test_local_tokens_switch_changes_only_the_local_tokens() -> None:
    batch = make_batch([2, 1])
    out = {}
    for layout in ("channel_view", "spatial"):
        cfg = tiny_config()
        cfg.model.local_tokens = layout
        torch.manual_seed(0)
        model = CMCGNS(cfg).eval()
        with torch.no_grad():
            img = model.encode_image(batch["images"])
            fmap = model.image_encoder.feature_map(batch["images"])
        b, c, h, w = fmap.shape
        # the model's tokens: the projected, normalised rows of the hand layout
        want = fmap.reshape(b, -1)
        want = want.view(b, h * w, c) if layout == "channel_view" else fmap.view(b, c, -1).mT
        with torch.no_grad():
            want = F.normalize(model.image_local_proj(want), dim=-1)
        torch.testing.assert_close(img["local"], want)
        out[layout] = img
    torch.testing.assert_close(out["channel_view"]["global"], out["spatial"]["global"])
    assert out["channel_view"]["grid"] == out["spatial"]["grid"] == (2, 2)
    assert not torch.allclose(out["channel_view"]["local"], out["spatial"]["local"])


def test_attention_maps_refuse_channel_view_tokens() -> None:
    model = CMCGNS(tiny_config())
    assert not model.spatial_tokens
    with pytest.raises(BadInputError, match="model.local_tokens=channel_view"):
        model.attention_maps(make_batch([1]))


# -- item 2: global image pooling -----------------------------------------------------------
def test_attention_pool_parameter_count_at_paper_size() -> None:
    pool = AttentionPool2d(2048, (7, 7))
    # positional embedding 50 x 2048 + q, k, v, c_proj each 2048 x 2048 + 2048
    assert pool.positional_embedding.shape == (50, 2048)
    assert _count(pool) == 50 * 2048 + 4 * (2048 * 2048 + 2048) == 16_887_808


def test_image_pool_switch_adds_exactly_the_pool() -> None:
    counts = {}
    for form in ("attention", "mean"):
        cfg = tiny_config()
        cfg.model.image_pool = form
        model = CMCGNS(cfg)
        counts[form] = _count(model)
        names = {n for n, _ in model.named_parameters()}
        assert any(n.startswith("image_pool.") for n in names) == (form == "attention")
    # tiny preset: 512 channels, 128 px crop -> a 4 x 4 map, 17 positional rows
    assert counts["attention"] - counts["mean"] == 17 * 512 + 4 * (512 * 512 + 512) == 1_059_328


def test_attention_pool_equals_torch_multi_head_attention_output_zero() -> None:
    """The full CLIP computation (every token attends, output 0 kept), done by torch."""
    torch.manual_seed(0)
    pool = AttentionPool2d(16, (2, 3), heads=4)
    fmap = torch.randn(3, 16, 2, 3)
    x = fmap.flatten(2).permute(2, 0, 1)  # (hw, B, C), sequence first
    x = torch.cat([x.mean(0, keepdim=True), x]) + pool.positional_embedding[:, None]
    want, _ = F.multi_head_attention_forward(
        x, x, x, 16, 4,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight, need_weights=False,
    )  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(pool(fmap), want[0], rtol=1e-5, atol=1e-5)
        # channels_last input: the same cells
        cl = fmap.to(memory_format=torch.channels_last)
        torch.testing.assert_close(pool(cl), want[0], rtol=1e-5, atol=1e-5)


def test_mean_pool_is_the_maps_average() -> None:
    cfg = tiny_config()
    cfg.model.image_pool = "mean"
    model = CMCGNS(cfg).eval()
    images = make_batch([1, 1])["images"]
    with torch.no_grad():
        g = model.encode_image(images)["global"]
        fmap = model.image_encoder.feature_map(images)
        want = F.normalize(model.image_global_proj(fmap.mean(dim=(2, 3))), dim=-1)
    torch.testing.assert_close(g, want)


# -- item 6: projection init -----------------------------------------------------------------
def test_proj_init_sets_the_std_of_the_three_projections_only() -> None:
    models = {}
    for form in ("authors", "default"):
        cfg = tiny_config()
        cfg.model.proj_init = form
        torch.manual_seed(0)
        models[form] = CMCGNS(cfg)
    a, d = models["authors"], models["default"]
    # tiny: image projections 512 -> 16, token projection 64 -> 16
    for name, fan_in in (
        ("image_global_proj", 512),
        ("image_local_proj", 512),
        ("text_encoder.token_proj", 64),
    ):
        wa = a.get_parameter(f"{name}.weight").detach()
        wd = d.get_parameter(f"{name}.weight").detach()
        n = wa.numel()
        # authors: N(0, 1/fan_in); PyTorch: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
        tol = 4 / np.sqrt(2 * n)  # about four standard errors of a sample std
        assert abs(float(wa.std()) * np.sqrt(fan_in) - 1.0) < tol, name
        assert abs(float(wd.std()) * np.sqrt(3 * fan_in) - 1.0) < tol, name
        assert float(wd.abs().max()) <= fan_in**-0.5  # bounded, as a uniform draw is
    changed = {
        "image_global_proj.weight",
        "image_local_proj.weight",
        "text_encoder.token_proj.weight",
    }
    da = dict(a.named_parameters())
    for name, p in d.named_parameters():  # everything else starts identical
        if name not in changed:
            assert torch.equal(p, da[name]), name


# -- item 12: decoder upsampling ------------------------------------------------------------
def _bilinear_x2(x: np.ndarray, align_corners: bool) -> np.ndarray:
    """Bilinear x2 of (C, h, w) written out: output pixel i samples input coordinate
    i (n - 1) / (2n - 1) with corner alignment, else (i + 0.5) / 2 - 0.5 clamped at 0."""

    def coords(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = np.arange(2 * n, dtype=np.float64)
        src = i * (n - 1) / (2 * n - 1) if align_corners else np.maximum((i + 0.5) / 2 - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, src - lo

    ly, hy, fy = coords(x.shape[1])
    lx, hx, fx = coords(x.shape[2])
    rows = x[:, ly] * (1 - fy)[None, :, None] + x[:, hy] * fy[None, :, None]
    return rows[:, :, lx] * (1 - fx) + rows[:, :, hx] * fx


@pytest.mark.parametrize("align_corners", [True, False])
def test_decoder_upsampling_against_a_hand_bilinear(align_corners: bool) -> None:
    torch.manual_seed(0)
    dec = ConvUpDecoder(4, 8, 2, final_relu=True, align_corners=align_corners)
    x = torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        got = dec(x)[0].numpy()
        h = x[0].numpy().astype(np.float64)
        for conv in dec.convs:
            h = F.relu(conv(torch.from_numpy(h).float()[None]))[0].double().numpy()
            h = _bilinear_x2(h, align_corners)
    np.testing.assert_allclose(got, np.tanh(h), rtol=1e-4, atol=1e-5)


def test_decoder_align_corners_switch_reaches_the_decoder() -> None:
    for value in (True, False):
        cfg = tiny_config()
        cfg.model.decoder_align_corners = value
        assert CMCGNS(cfg).decoder.conv.align_corners is value


# -- configuration --------------------------------------------------------------------------
AUTHORS = {
    "local_tokens": "channel_view",
    "image_pool": "attention",
    "proj_init": "authors",
    "decoder_align_corners": True,
    "vit_cmmir": "authors",
}
CLEAN = {
    "local_tokens": "spatial",
    "image_pool": "mean",
    "proj_init": "default",
    "decoder_align_corners": False,
    "vit_cmmir": "clean",
}


@pytest.mark.parametrize("name", ["tiny", "small", "paper-resnet50", "paper-vit"])
def test_presets_default_to_the_authors_wiring_and_clean_selects_todays(name: str) -> None:
    model = resolve(name).to_dict()["model"]
    assert {k: model[k] for k in AUTHORS} == AUTHORS
    clean = resolve(name, cli={"loss": {"variant": "clean"}}).to_dict()["model"]
    assert {k: clean[k] for k in CLEAN} == CLEAN


def test_explicit_model_switch_beats_the_variant_and_bad_values_are_named() -> None:
    cfg = resolve("tiny", sets=["model.image_pool=attention"], cli={"loss": {"variant": "clean"}})
    assert cfg.model.image_pool == "attention" and cfg.model.local_tokens == "spatial"
    cfg = resolve("tiny", sets=["loss.variant=clean", "model.proj_init=authors"])
    assert cfg.model.proj_init == "authors" and cfg.model.image_pool == "mean"
    with pytest.raises(BadInputError, match="model.local_tokens must be one of"):
        resolve("tiny", sets=["model.local_tokens=rows"])


def test_a_run_saved_before_the_switches_loads_with_the_wiring_it_ran() -> None:
    saved = resolve("tiny").to_dict()
    for key in AUTHORS:
        del saved["model"][key]
    cfg = config_from_dict(saved)
    assert {k: getattr(cfg.model, k) for k in CLEAN} == CLEAN
    assert config_from_dict(resolve("tiny").to_dict()).model.image_pool == "attention"


# -- item 10: the ViT's CM-MIR ----------------------------------------------------------------
def _mha_seq_first(attn: torch.nn.MultiheadAttention, q_in, kv_in) -> torch.Tensor:
    """nn.MultiheadAttention (sequence first: (L, N, E)) written out with its weights."""
    e, h = q_in.shape[-1], attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(e)
    bq, bk, bv = attn.in_proj_bias.split(e)
    q, k, v = q_in @ wq.T + bq, kv_in @ wk.T + bk, kv_in @ wv.T + bv  # (L, N, E)
    out = torch.zeros_like(q)
    dh = e // h
    for i in range(h):
        sl = slice(i * dh, (i + 1) * dh)
        # per batch column n: (L, L) scores over the first axis
        scores = torch.einsum("lnd,snd->nls", q[..., sl], k[..., sl]) / dh**0.5
        out[..., sl] = torch.einsum("nls,snd->lnd", scores.softmax(-1), v[..., sl])
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def _post_norm_layer(layer, x, mem) -> torch.Tensor:
    def ln(norm, t):
        return F.layer_norm(t, t.shape[-1:], norm.weight, norm.bias, norm.eps)

    x = ln(layer.norm1, x + _mha_seq_first(layer.self_attn, x, x))
    x = ln(layer.norm2, x + _mha_seq_first(layer.multihead_attn, x, mem))
    return ln(layer.norm3, x + layer.linear2(F.relu(layer.linear1(x))))


def test_vit_cmmir_authors_decoder_against_a_hand_computation() -> None:
    """No fusion residual, zero positional embedding, one layer applied six times with its own
    input as memory, and the (B, P, D) tokens read as (sequence B, batch P)."""
    from cmcgns_cli.model.decoder import CMMIRDecoder

    torch.manual_seed(0)
    dec = CMMIRDecoder("vit", 16, 16, 64, 16, vit_cmmir="authors").eval()
    assert float(dec.pos_embed.detach().abs().max()) == 0.0
    # compare the tokens laid on the grid: the conv head (tested elsewhere) is left out
    dec.conv = torch.nn.Identity()
    masked, context = torch.randn(3, 16, 16), torch.randn(3, 16, 16)
    with torch.no_grad():
        got = dec(masked, context, (4, 4))
        z = dec.fuse_attn(masked, context, context, need_weights=False)[0]  # no residual
        out = z
        for _ in range(6):
            out = _post_norm_layer(dec.layer, out, z)
        want = out.transpose(1, 2).reshape(3, 16, 4, 4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # attention across the batch: sample 0's output depends on sample 1 (not so in clean)
    other = masked.clone()
    other[1] += 1.0
    clean = CMMIRDecoder("vit", 16, 16, 64, 16, vit_cmmir="clean").eval()
    clean.conv = torch.nn.Identity()
    with torch.no_grad():
        assert not torch.allclose(dec(other, context, (4, 4))[0], got[0])
        torch.testing.assert_close(
            clean(other, context, (4, 4))[0], clean(masked, context, (4, 4))[0]
        )


def test_vit_cmmir_parameter_counts_tied_vs_six_layers() -> None:
    from cmcgns_cli.model.decoder import CMMIRDecoder

    a = CMMIRDecoder("vit", 16, 16, 64, 16, vit_cmmir="authors")
    c = CMMIRDecoder("vit", 16, 16, 64, 16, vit_cmmir="clean")
    # one decoder layer at D = 16: two attentions 2 * (4 * 16^2 + 4 * 16), feed-forward
    # 16 * 2048 + 2048 + 2048 * 16 + 16, three LayerNorms 3 * 2 * 16
    layer = 2 * (4 * 256 + 64) + (16 * 2048 + 2048 + 2048 * 16 + 16) + 96
    assert layer == 69_872 == _count(a.layer)
    assert _count(c) - _count(a) == 5 * layer


def test_token_mask_drops_whole_tokens_and_doubles_the_rest() -> None:
    from cmcgns_cli.losses.recon import mask_local_features

    local = torch.randn(4, 50, 8)
    gen = torch.Generator().manual_seed(0)
    masked, patch_masked = mask_local_features(local, 0.5, "tokens", gen)
    dropped = (masked == 0).all(dim=-1)
    assert torch.equal(dropped, patch_masked)
    torch.testing.assert_close(masked[~dropped], 2 * local[~dropped])
    assert 0.3 < float(dropped.float().mean()) < 0.7  # Bernoulli(0.5) over 200 tokens


@pytest.mark.parametrize(("form", "mode"), [("authors", "tokens"), ("clean", "channels")])
def test_vit_cmmir_switch_picks_the_vit_mask_only(form: str, mode: str) -> None:
    cfg = tiny_config()
    cfg.model.vit_cmmir = form
    assert CMCGNS(cfg).mask_mode == "channels"  # a ResNet keeps loss.mask_mode
    cfg.model.image_encoder = "vit_tiny"
    assert CMCGNS(cfg).mask_mode == mode

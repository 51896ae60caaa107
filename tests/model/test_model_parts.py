"""The model parts laid out as in the authors' code: predictor and pooling sizes at D = 768,
CM-MIR decoder shapes and its final-ReLU quirk (authors) against the clean form."""

from __future__ import annotations

import torch
from cmcgns_test_helpers import make_batch, tiny_config

from cmcgns_cli.losses import Predictor
from cmcgns_cli.model import CMCGNS
from cmcgns_cli.model.decoder import CMMIRDecoder
from cmcgns_cli.model.text import AttentionPool


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_predictor_is_d_to_d_half_to_d_without_norm() -> None:
    pred = Predictor(768)
    # Linear(768, 384) + Linear(384, 768): 768*384 + 384 + 384*768 + 768
    assert _count(pred) == 768 * 384 + 384 + 384 * 768 + 768 == 590_976
    assert not any(isinstance(m, torch.nn.LayerNorm | torch.nn.BatchNorm1d) for m in pred.modules())
    x = torch.randn(2, 5, 768)
    assert torch.equal(pred(x)[1], pred(x[1:])[0])  # each sample's output is its own


def test_attention_pool_is_clip_style_with_8_heads() -> None:
    pool = AttentionPool(768)
    # separate q, k, v and an output projection, each Linear(768, 768); no query, no pos emb
    assert pool.heads == 8 and _count(pool) == 4 * (768 * 768 + 768) == 2_362_368
    # padding sentences change nothing
    t = torch.randn(1, 3, 768)
    padded = torch.cat([t, torch.randn(1, 2, 768) * 9], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    a = pool(t, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(pool(padded, mask), a, rtol=1e-5, atol=1e-5)


def test_resnet_decoder_shapes_and_stage_channels_at_paper_size() -> None:
    dec = CMMIRDecoder("resnet", 768, 512, 224, 32)
    assert [c.out_channels for c in dec.conv.convs] == [512, 256, 128, 64, 3]
    assert dec.conv.convs[0].in_channels == 2 * 768  # [masked local ; t2i context]
    x = torch.randn(1, 49, 768)
    assert dec(x, x, (7, 7)).shape == (1, 3, 224, 224)


def test_vit_decoder_shapes_and_layout_at_paper_size() -> None:
    dec = CMMIRDecoder("vit", 768, 512, 224, 16, vit_cmmir="clean")
    assert [c.out_channels for c in dec.conv.convs] == [512, 256, 128, 3]
    assert len(dec.transformer.layers) == 6
    layer = dec.transformer.layers[0]
    assert layer.self_attn.num_heads == 8 and layer.linear1.out_features == 2048
    assert dec.fuse_attn.num_heads == 8 and dec.pos_embed.shape == (1, 196, 768)
    x = torch.randn(1, 196, 768)
    with torch.no_grad():
        assert dec(x, x, (14, 14)).shape == (1, 3, 224, 224)


def test_final_relu_makes_the_authors_output_non_negative() -> None:
    torch.manual_seed(0)
    # the upsampling's corner rule is its own switch; fixed here to the hand form below
    authors = CMMIRDecoder("resnet", 8, 16, 32, 8, final_relu=True, align_corners=False)
    clean = CMMIRDecoder("resnet", 8, 16, 32, 8, final_relu=False, align_corners=False)
    clean.load_state_dict(authors.state_dict())  # same weights, only the ReLU differs
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        a, c = authors(x, x, (4, 4)), clean(x, x, (4, 4))
    assert a.shape == c.shape == (2, 3, 32, 32)
    assert float(a.min()) >= 0.0 and float(c.min()) < -0.01  # the target is in [-1, 1]
    # by hand: the pre-ReLU last conv map, ReLU'd (authors) or not, then bilinear x2 and tanh
    with torch.no_grad():
        h = torch.cat([x, x], dim=-1).transpose(1, 2).reshape(2, 16, 4, 4)
        for conv in clean.conv.convs[:-1]:
            h = torch.nn.functional.interpolate(
                torch.relu(conv(h)), scale_factor=2.0, mode="bilinear", align_corners=False
            )
        last = clean.conv.convs[-1](h)
        up = torch.nn.functional.interpolate
        want_a = torch.tanh(up(torch.relu(last), scale_factor=2.0, mode="bilinear"))
        want_c = torch.tanh(up(last, scale_factor=2.0, mode="bilinear"))
    torch.testing.assert_close(a, want_a)
    torch.testing.assert_close(c, want_c)


def test_sentence_vectors_are_means_of_unit_tokens_not_renormalised() -> None:
    torch.manual_seed(1)
    model = CMCGNS(tiny_config())
    b = make_batch([2, 3])
    txt = model.encode_text(b["input_ids"], b["attention_mask"], b["sentence_index"],
                            b["num_sentences"])  # fmt: skip
    norms = txt["sentences"].norm(dim=-1)[txt["sentence_mask"]]
    assert float(norms.max()) <= 1.0 + 1e-6 and float(norms.min()) < 0.999
    assert torch.allclose(txt["global"].norm(dim=-1), torch.ones(2))

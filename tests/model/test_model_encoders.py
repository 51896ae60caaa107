"""Image/text encoders: stock keys, export/load of weights, offline behaviour, sentence pooling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model import (
    build_image_encoder,
    build_text_encoder,
    export_image_encoder_state,
    load_image_weights,
)
from cmcgns_cli.model.text import sentence_mean


def test_resnet50_export_loads_strictly_into_stock_model_with_same_features() -> None:
    torch.manual_seed(0)
    enc = build_image_encoder(ModelConfig(image_encoder="resnet50")).eval()
    state = export_image_encoder_state(enc)
    stock = torchvision.models.resnet50().eval()
    stock.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    g, local, grid = enc.features(x)
    assert grid == (2, 2) and local.shape == (1, 4, 2048) and g.shape == (1, 2048)
    with torch.no_grad():
        body = torch.nn.Sequential(*list(stock.children())[:-2])
        fmap = body(x)
        assert torch.allclose(local, fmap.flatten(2).transpose(1, 2), atol=1e-5)
        assert torch.allclose(g, torch.flatten(stock.avgpool(fmap), 1), atol=1e-5)
    assert not any(p.requires_grad for p in enc.backbone.fc.parameters())  # unused head frozen


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_image_weights_roundtrip_and_headless(tmp_path: Path, suffix: str) -> None:
    src = build_image_encoder(ModelConfig(image_encoder="resnet_tiny"))
    state = {k: v for k, v in export_image_encoder_state(src).items() if not k.startswith("fc.")}
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    dst = build_image_encoder(ModelConfig(image_encoder="resnet_tiny", image_weights=str(path)))
    for k, v in state.items():
        assert torch.equal(dst.backbone.state_dict()[k], v)


def test_load_image_weights_rejects_mismatch_and_missing_file(tmp_path: Path) -> None:
    enc = build_image_encoder(ModelConfig(image_encoder="resnet_tiny"))
    other = export_image_encoder_state(build_image_encoder(ModelConfig(image_encoder="resnet18")))
    path = tmp_path / "r18.pt"
    torch.save(other, path)
    with pytest.raises(BadInputError, match="r18.pt"):
        load_image_weights(enc, path)
    with pytest.raises(BadInputError, match="not found"):
        load_image_weights(enc, tmp_path / "nope.pth")
    with pytest.raises(BadInputError, match="unknown image encoder"):
        build_image_encoder(ModelConfig(image_encoder="alexnet"))


def test_small_encoders_shapes_grayscale_input_and_stages() -> None:
    enc = build_image_encoder(ModelConfig(image_encoder="resnet_tiny"))
    g, local, grid = enc.features(torch.randn(2, 1, 128, 128))  # 1 channel is expanded
    assert g.shape == (2, 512) and local.shape == (2, 16, 512) and grid == (4, 4)
    st = enc.stages(torch.randn(1, 3, 64, 64))
    assert [st[k].shape[1] for k in ("layer2", "layer3", "layer4")] == [128, 256, 512]
    vit = build_image_encoder(ModelConfig(image_encoder="vit_tiny"))
    g, local, grid = vit.features(torch.randn(2, 3, 64, 64))
    assert g.shape == (2, 192) and local.shape == (2, 16, 192) and grid == (4, 4)
    assert "pos_embed" in export_image_encoder_state(vit)


def test_text_encoder_scratch_and_offline_hub_id(tmp_path: Path) -> None:
    cfg = ModelConfig(
        text_encoder="scratch",
        text_hidden=32,
        text_layers=1,
        text_heads=2,
        text_intermediate=64,
        vocab_size=100,
    )
    bert = build_text_encoder(cfg, vocab_size=123)
    assert bert.config.vocab_size == 123 and bert.config.max_position_embeddings >= 512
    bert.save_pretrained(tmp_path / "bert")
    loaded = build_text_encoder(ModelConfig(text_encoder=str(tmp_path / "bert")))
    assert loaded.config.hidden_size == 32
    with pytest.raises(
        BadInputError, match="not a local directory and not in the local Hugging Face cache"
    ):
        build_text_encoder(ModelConfig(text_encoder="nobody/no-such-bert-model"))


def test_sentence_mean_matches_a_loop() -> None:
    torch.manual_seed(1)
    tok = torch.randn(2, 7, 3)
    idx = torch.tensor([[-1, 0, 0, 1, 2, -1, -1], [-1, 0, 1, 1, 1, 3, -1]])
    num = torch.tensor([3, 2])  # sample 1: sentence 3 is beyond num_sentences -> ignored
    means, mask = sentence_mean(tok, idx, num, 4)
    assert mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    for b in range(2):
        for s in range(4):
            if mask[b, s]:
                want = torch.stack([tok[b, t] for t in range(7) if idx[b, t] == s]).mean(0)
                assert torch.allclose(means[b, s], want, atol=1e-6)
            else:
                assert bool((means[b, s] == 0).all())

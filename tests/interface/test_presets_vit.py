"""The `small` and `paper-vit` presets as `pretrain --dry-run` resolves them (values from the
README: the paper's settings for paper-vit), and a ViT-B/16 CM-CGNS forward / backward at a
tiny text and projection width (nothing downloaded)."""

from __future__ import annotations

import json

import pytest
import torch

from cmcgns_cli.config import apply_overrides, preset
from cmcgns_cli.model.cmcgns import CMCGNS
from tests.model.cmcgns_test_helpers import make_batch


def _dry_run(cli, *args: str) -> dict:
    res = cli("pretrain", *args, "--image-weights", "none", "--dry-run")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_small_preset(cli) -> None:
    cfg = _dry_run(cli, "--preset", "small")
    assert cfg["preset"] == "small"
    assert cfg["model"]["image_encoder"] == "resnet18"
    assert cfg["model"]["text_encoder"] == "scratch" and cfg["model"]["text_layers"] == 4


def test_paper_vit_preset_is_the_papers_settings(cli) -> None:
    cfg = _dry_run(cli, "--preset", "paper-vit", "--text-encoder", "/models/Bio_ClinicalBERT")
    m, t, loss = cfg["model"], cfg["train"], cfg["loss"]
    assert m["image_encoder"] == "vit_b16" and m["embed_dim"] == 768
    assert m["text_encoder"] == "/models/Bio_ClinicalBERT"
    assert loss["num_clusters"] == 128 and t["batch_size"] == 64
    assert (t["stage1_epochs"], t["stage2_epochs"]) == (10, 20)
    assert t["lr"] == 1e-5 and t["warmup_start_lr"] == 1e-7 and t["warmup_epochs"] == 1.0
    assert t["weight_decay"] == 1e-6
    # a named option beats the preset, --set beats it too
    over = _dry_run(cli, "--preset", "paper-vit", "--lr", "3e-5", "--set", "loss.num_clusters=64")
    assert over["train"]["lr"] == 3e-5 and over["loss"]["num_clusters"] == 64


@pytest.mark.slow  # 86 M parameters to initialise and run: about 30 s on a shared CPU
def test_vit_b16_forward_and_backward_at_a_tiny_width() -> None:
    cfg = preset("paper-vit")
    apply_overrides(cfg, {"model": {"text_encoder": "scratch", "text_hidden": 32,
                                    "text_layers": 1, "text_heads": 2, "text_intermediate": 64,
                                    "vocab_size": 1000, "embed_dim": 16,
                                    "decoder_channels": 16},
                          "loss": {"num_clusters": 4}}, source="test")  # fmt: skip
    torch.manual_seed(0)
    model = CMCGNS(cfg).train()
    vit = model.image_encoder.backbone
    # ViT-B/16 (Dosovitskiy et al. 2021, Table 1): 12 layers, width 768, 12 heads, 16 px patches
    assert len(vit.blocks) == 12 and vit.embed_dim == 768
    assert vit.blocks[0].attn.num_heads == 12 and tuple(vit.patch_embed.patch_size) == (16, 16)
    batch = make_batch([2, 1], size=32)  # 2 x 2 patches: seconds on a CPU
    out = model(batch, stage=2)
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["recon"])
    out["loss"].backward()
    grads = [p.grad for p in vit.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.image_encoder.kind == "vit" and model.image_encoder.stride == 16

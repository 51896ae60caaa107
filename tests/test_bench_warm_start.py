"""The warm-start recipe's image weights (bench/warm_start.py): a supervised finetune's
``encoder.safetensors`` becomes a file that ``pretrain --image-weights`` loads tensor for
tensor."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model.encoders import build_image_encoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("warm_start", ROOT / "bench/warm_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finetuned_state() -> dict[str, torch.Tensor]:
    """What ``finetune --full`` saves: ``ImageEncoder.state_dict()`` (``backbone.`` keys),
    shifted away from any fresh initialisation so that a load is visible."""
    torch.manual_seed(7)
    enc = build_image_encoder(ModelConfig(image_encoder="resnet_tiny"))
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.5)
    return {k: v.detach().clone() for k, v in enc.state_dict().items()}


def test_backbone_state_loads_into_a_fresh_encoder(recipe, tmp_path):
    state = _finetuned_state()
    wfile = tmp_path / "image_weights.safetensors"
    save_file(recipe.backbone_state(state), str(wfile))
    saved = load_file(str(wfile))
    assert not any(k.startswith(("backbone.", "fc.")) for k in saved)
    assert "conv1.weight" in saved and "layer4.0.bn2.running_var" in saved
    torch.manual_seed(99)  # another initialisation than the file's
    enc = build_image_encoder(ModelConfig(image_encoder="resnet_tiny", image_weights=str(wfile)))
    got = enc.backbone.state_dict()
    for key, value in saved.items():
        assert torch.equal(got[key], value), key
    # without the conversion (the finetune file as it is) the load is refused
    raw = tmp_path / "encoder.safetensors"
    save_file(state, str(raw))
    with pytest.raises(BadInputError, match="do not match image encoder resnet_tiny"):
        build_image_encoder(ModelConfig(image_encoder="resnet_tiny", image_weights=str(raw)))
    with pytest.raises(ValueError, match="backbone"):
        recipe.backbone_state({"conv1.weight": torch.zeros(1)})


@pytest.mark.slow  # ~25 s on a busy 2-core CPU (one pretrain step)
def test_pretrain_image_weights_takes_the_recipe_file(recipe, tmp_path, monkeypatch):
    from cmcgns_cli.bundle import sha256_file
    from cmcgns_cli.cli import main
    from tests.train.worlds import make_world

    world = make_world(tmp_path / "prepared", n=48, size=64, seed=5)
    wfile = tmp_path / "image_weights.safetensors"
    save_file(recipe.backbone_state(_finetuned_state()), str(wfile))
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "cmcgns", "pretrain", "--data", str(world), "--out", str(run), "--preset", "tiny",
        "--set", "data.image_size=64", "--set", "data.crop_size=64", "--batch-size", "16",
        "--image-weights", str(wfile), "--stage1-epochs", "1", "--stage2-epochs", "0",
        "--max-steps", "1", "--lr", "1e-12", "--set", "train.warmup_start_lr=1e-12", "--json",
    ])  # fmt: skip
    try:
        main()
    except SystemExit as exc:  # main() exits only on failure
        pytest.fail(f"pretrain exited {exc.code}")
    cfg = json.loads((run / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    assert cfg["model"]["image_weights"] == str(wfile)
    assert cfg["model"]["image_weights_sha256"] == sha256_file(wfile)
    enc = load_file(str(run / "image_encoder.safetensors"))  # lr 1e-12: still the file's
    ref = load_file(str(wfile))
    for key in ("conv1.weight", "layer4.0.conv2.weight"):
        assert torch.allclose(enc[key], ref[key], atol=1e-6), key


def test_a_second_call_with_other_settings_is_refused(recipe, tmp_path):
    # the steps already done are not redone: the record said seed 2 / 0.3 normal over a
    # world and weights built with seed 1 / 0.65 and 1 image epoch
    done = {"seed": 1, "normal_share": 0.65, "image": {"epochs": 1}, "text": {"epochs": 1}}
    (tmp_path / "warm_start.json").write_text(json.dumps(done))
    with pytest.raises(ValueError) as info:
        recipe.build(tmp_path, 2, 0.3, 1, 1)
    assert str(info.value) == (
        f"{tmp_path} was built with --seed 1, not 2: its steps are not redone; use a new --out"
    )
    with pytest.raises(ValueError, match="built with --image-epochs 1, not 10"):
        recipe.build(tmp_path, 1, 0.65, 10, 1)
    assert json.loads((tmp_path / "warm_start.json").read_text()) == done

"""finetune --image-weights: tiny encoders saved in each layout other projects use.

Each file is written here from a stock torchvision ResNet / timm ViT with seeded random
weights; the expectation is that model's own tensors (and counts taken from its state dict),
never the loader's output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.downstream.weights import find_prefix, load_encoder_weights
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model.encoders import build_image_encoder
from tests.downstream.test_classification_cli import _write_chexpert_like


def _resnet_tiny() -> torch.nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(11)
    return ResNet(BasicBlock, [1, 1, 1, 1])


def _vit_tiny() -> torch.nn.Module:
    import timm

    torch.manual_seed(12)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


def _body(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "head."))}


def _encoder(arch: str):
    torch.manual_seed(999)  # another init than the reference: loading must change it
    return build_image_encoder(ModelConfig(image_encoder=arch, image_weights=None))


def _assert_equal_body(encoder, reference_state: dict) -> None:
    own = encoder.backbone.state_dict()
    for k, v in _body(reference_state).items():
        assert torch.equal(own[k], v), k


def test_torchvision_state_dict(tmp_path: Path) -> None:
    ref = _resnet_tiny().state_dict()
    path = tmp_path / "r.pth"
    torch.save(ref, path)
    enc = _encoder("resnet_tiny")
    rep = load_encoder_weights(enc.backbone, path, ("fc.",))
    assert (rep.prefix, rep.layout, rep.missing, rep.unexpected) == ("", "state_dict", 0, 0)
    assert rep.loaded == rep.expected == len(_body(ref))
    _assert_equal_body(enc, ref)


def test_lightning_checkpoint_prefix_is_found_and_stripped(tmp_path: Path) -> None:
    ref = _resnet_tiny().state_dict()
    state = {f"img_encoder_q.model.{k}": v for k, v in _body(ref).items()}
    state["text_encoder_q.model.embeddings.word_embeddings.weight"] = torch.zeros(10, 4)
    state["img_encoder_q.global_embed.weight"] = torch.zeros(4, 512)  # a projection head
    path = tmp_path / "mgca.ckpt"
    torch.save(
        {"state_dict": state, "epoch": 7, "pytorch-lightning_version": "2.1.0",
         "hyper_parameters": {"lr": 2e-5, "img_encoder": "resnet_50"}},
        path,
    )  # fmt: skip
    enc = _encoder("resnet_tiny")
    rep = load_encoder_weights(enc.backbone, path, ("fc.",))
    assert rep.layout == "lightning"
    assert rep.prefix == "img_encoder_q.model."
    assert rep.loaded == len(_body(ref)) and rep.missing == 0
    assert rep.unexpected == 0 and rep.ignored == 2
    _assert_equal_body(enc, ref)


def test_timm_checkpoint_and_safetensors_with_ddp_prefix(tmp_path: Path) -> None:
    ref = _vit_tiny().state_dict()
    path = tmp_path / "timm.pth.tar"
    args = argparse.Namespace(model="vit_tiny_patch16_224", lr=5e-4)  # timm's train.py saves it
    torch.save({"epoch": 3, "arch": "vit_tiny_patch16_224", "state_dict": ref, "version": 2,
                "args": args}, path)  # fmt: skip
    enc = _encoder("vit_tiny")
    rep = load_encoder_weights(enc.backbone, path, ("head.",))
    assert (rep.layout, rep.prefix, rep.missing) == ("timm", "", 0)
    _assert_equal_body(enc, ref)

    st = tmp_path / "vit.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in ref.items()}, str(st))
    enc2 = _encoder("vit_tiny")
    rep2 = load_encoder_weights(enc2.backbone, st, ("head.",))
    assert (rep2.layout, rep2.prefix, rep2.loaded) == ("safetensors", "module.", len(_body(ref)))
    _assert_equal_body(enc2, ref)


def test_clip_style_visual_tower(tmp_path: Path) -> None:
    ref = _vit_tiny().state_dict()
    state = {f"visual.trunk.{k}": v for k, v in _body(ref).items()}
    state["visual.head.proj.weight"] = torch.zeros(8, 192)
    state["text.token_embedding.weight"] = torch.zeros(30, 8)
    state["logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "open_clip.pt"
    torch.save({"state_dict": state, "epoch": 1}, path)
    enc = _encoder("vit_tiny")
    rep = load_encoder_weights(enc.backbone, path, ("head.",))
    assert rep.prefix == "visual.trunk." and rep.loaded == rep.expected
    assert rep.ignored == 3
    _assert_equal_body(enc, ref)


def test_openai_clip_tower_is_refused_as_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "openai.pt"
    torch.save({"visual.ln_pre.weight": torch.ones(8), "visual.conv1.weight": torch.ones(8)}, path)
    with pytest.raises(BadInputError, match="OpenAI-format CLIP"):
        load_encoder_weights(_encoder("vit_tiny").backbone, path, ("head.",))


def test_partial_file_refused_below_95_percent_unless_allowed(tmp_path: Path) -> None:
    body = _body(_resnet_tiny().state_dict())
    keys = sorted(body)
    kept = {k: body[k] for k in keys[: int(len(keys) * 0.9)]}  # 90 % of the tensors
    path = tmp_path / "part.pth"
    torch.save(kept, path)
    with pytest.raises(BadInputError, match=r"--allow-partial") as exc:
        load_encoder_weights(_encoder("resnet_tiny").backbone, path, ("fc.",))
    assert str(path) in str(exc.value)
    rep = load_encoder_weights(_encoder("resnet_tiny").backbone, path, ("fc.",), allow_partial=True)
    assert rep.loaded == len(kept) and rep.missing == len(keys) - len(kept)
    assert rep.fraction == pytest.approx(len(kept) / len(keys))


def test_other_architecture_is_refused_with_counts(tmp_path: Path) -> None:
    from torchvision.models import resnet18, resnet50

    r50 = tmp_path / "r50.pth"  # Bottleneck blocks: every conv has another shape
    torch.save(resnet50(weights=None).state_dict(), r50)
    with pytest.raises(BadInputError, match=r"only \d+ of \d+ image-encoder tensors load"):
        load_encoder_weights(_encoder("resnet_tiny").backbone, r50, ("fc.",))
    # resnet18 holds every tensor of resnet_tiny (one block per stage) plus a second block per
    # stage: all of the encoder loads, yet the file is another architecture
    r18 = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), r18)
    with pytest.raises(BadInputError, match=r"another architecture; check --arch"):
        load_encoder_weights(_encoder("resnet_tiny").backbone, r18, ("fc.",))


@dataclasses.dataclass
class _Trainer:  # any class outside torch's weights_only allow-list
    lr: float = 1.0


def test_pickled_objects_beyond_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": _resnet_tiny().state_dict(), "trainer": _Trainer()}, path)
    with pytest.raises(BadInputError, match="weights_only=True"):
        load_encoder_weights(_encoder("resnet_tiny").backbone, path, ("fc.",))


def test_find_prefix_prefers_the_prefix_explaining_most_keys() -> None:
    own = {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight"}
    keys = ["a.conv1.weight", "a.bn1.weight", "a.layer1.0.conv1.weight", "b.conv1.weight"]
    assert find_prefix(keys, own) == ("a.", 3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_chexpert_like(tmp_path_factory.mktemp("chx-w") / "prep", n=120)


def test_cli_finetune_records_prefix_and_counts(cli, prepared: Path, tmp_path: Path) -> None:
    ref = _resnet_tiny().state_dict()
    ckpt = tmp_path / "mgca.ckpt"
    torch.save({"state_dict": {f"img_encoder_q.model.{k}": v for k, v in _body(ref).items()},
                "pytorch-lightning_version": "2.1.0"}, ckpt)  # fmt: skip
    out = tmp_path / "ft"
    base = ["finetune", "--task", "chexpert-cls", "--data", prepared, "--arch", "resnet_tiny",
            "--epochs", "3", "--json"]  # fmt: skip
    # no --checkpoint: --image-weights alone means --checkpoint none
    res = cli(*base, "--image-weights", ckpt, "--out", out)
    assert res.exit_code == 0, res.stderr
    assert "prefix 'img_encoder_q.model.'" in res.stderr
    n = len(_body(ref))
    assert f"loaded {n} of {n}" in res.stderr
    load = json.loads(res.stdout)["encoder"]["weights_load"]
    assert (load["prefix"], load["loaded"], load["missing"], load["unexpected"]) == (
        "img_encoder_q.model.", n, 0, 0)  # fmt: skip
    ev = cli("evaluate", "--task", "chexpert-cls", "--data", prepared, "--checkpoint", out)
    assert ev.exit_code == 0, ev.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["encoder"]["weights_load"]["loaded"] == n

    keys = sorted(_body(ref))
    part = tmp_path / "part.pth"
    torch.save({k: ref[k] for k in keys[: len(keys) // 2]}, part)
    bad = cli(*base, "--checkpoint", "none", "--image-weights", part, "--out", tmp_path / "p")
    assert bad.exit_code == 2
    assert str(part) in bad.stderr and "--allow-partial" in bad.stderr
    both = cli(
        *base, "--checkpoint", str(tmp_path), "--image-weights", part, "--out", tmp_path / "x"
    )
    assert both.exit_code == 2 and "give one encoder" in both.stderr
    ok = cli(*base, "--image-weights", part, "--out", tmp_path / "p2", "--allow-partial")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["encoder"]["weights_load"]["missing"] == len(keys) - len(keys) // 2

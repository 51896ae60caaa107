"""The training-recipe switches (authors' run vs the clean form): each changes what it names.

data.augment on a known image, train.optimizer on a hand-computed step, train.grad_clip on a
hand-computed norm, train.stage2_init on the weights stage 2 starts from, and the variant
shorthand that sets them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from cmcgns_cli.config import config_from_dict, preset, resolve
from cmcgns_cli.data import tokenize as tk
from cmcgns_cli.data.paired import PairedDataset, normalise_pixels
from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.train import loop as loop_mod
from cmcgns_cli.train.optim import build_optimizer, grad_norm_step
from cmcgns_cli.train.run import run_pretrain

AUTHORS = {"augment": "random_crop", "grad_clip": 0.0, "optimizer": "adam", "stage2_init": "last"}
CLEAN = {"augment": "resized_crop", "grad_clip": 1.0, "optimizer": "adamw", "stage2_init": "best"}


def _recipe(cfg) -> dict:
    t = cfg.train
    return {
        "augment": cfg.data.augment,
        "grad_clip": t.grad_clip,
        "optimizer": t.optimizer,
        "stage2_init": t.stage2_init,
    }


# ---------------------------------------------------------------- config and the variant


@pytest.mark.parametrize("name", ["tiny", "small", "paper-resnet50", "paper-vit"])
def test_every_preset_defaults_to_the_authors_recipe_and_clean_selects_the_other(name):
    # the tiny preset's one exception: no augmentation (its short runs stayed above log(32)
    # with the random crop); an explicit variant still sets its whole recipe
    own = {**AUTHORS, "augment": "none"} if name == "tiny" else AUTHORS
    assert _recipe(preset(name)) == _recipe(resolve(name)) == own
    assert _recipe(resolve(name, cli={"loss": {"variant": "clean"}})) == CLEAN
    assert _recipe(resolve(name, cli={"loss": {"variant": "authors"}})) == AUTHORS


def test_an_explicit_setting_beats_the_variant_in_any_order(tmp_path):
    # --set before the variant option (a later layer) and in the same layer
    cfg = resolve(
        "tiny",
        sets=["train.grad_clip=0.5", "data.augment=none"],
        cli={"loss": {"variant": "clean"}},
    )
    assert (cfg.train.grad_clip, cfg.data.augment) == (0.5, "none")
    assert cfg.train.optimizer == "adamw"  # the rest still follows the variant
    conf = tmp_path / "c.toml"
    conf.write_text('[train]\nstage2_init = "best"\n[loss]\nvariant = "authors"\n')
    cfg = resolve("tiny", config_file=conf)
    assert cfg.train.stage2_init == "best" and cfg.train.optimizer == "adam"


def test_bad_recipe_values_are_one_line_errors(cli):
    for item, needle in (
        ("data.augment=true", "data.augment must be one of random_crop, resized_crop, none"),
        ("train.optimizer=sgd", "train.optimizer must be one of adam, adamw"),
        ("train.stage2_init=first", "train.stage2_init must be one of last, best"),
        ("train.grad_clip=-1", "train.grad_clip must be 0"),
    ):
        res = cli("pretrain", "--preset", "tiny", "--set", item, "--dry-run")
        assert res.exit_code == 2 and needle in res.stderr, (item, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_run_saved_before_the_switches_reads_as_what_it_ran():
    saved = preset("tiny").to_dict()
    saved["data"]["augment"] = True
    for key in ("optimizer", "stage2_init"):
        del saved["train"][key]
    saved["train"]["grad_clip"] = 1.0
    assert _recipe(config_from_dict(saved)) == CLEAN
    saved["data"]["augment"] = False
    assert config_from_dict(saved).data.augment == "none"


def test_dry_run_shows_the_paper_preset_in_both_forms(cli):
    for extra, want in (([], AUTHORS), (["--variant", "clean"], CLEAN)):
        res = cli("pretrain", "--preset", "paper-resnet50", "--image-weights", "none",
                  "--dry-run", *extra)  # fmt: skip
        assert res.exit_code == 0, res.stderr
        cfg = json.loads(res.stdout)
        got = {"augment": cfg["data"]["augment"]}
        got.update({k: cfg["train"][k] for k in ("grad_clip", "optimizer", "stage2_init")})
        assert got == want


# ---------------------------------------------------------------- augmentation


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    """A prepared world of one 64 x 64 image of seeded random bytes, so every 48 x 48 window
    of it is unique."""
    root = tmp_path_factory.mktemp("ramp")
    img = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    manifest = pd.DataFrame({"id": ["a", "b"], "split": ["train", "validate"],
                             "patient_id": "p", "study_id": "s", "view": "PA",
                             "sentences": [["left lung clear", "no effusion"]] * 2})  # fmt: skip
    prepared = open_prepared(write_prepared(root / "p", dataset="mimic", manifest=manifest,
                                            images=np.stack([img, img])))  # fmt: skip
    tok = tk.train_wordpiece(["left lung clear", "no effusion"], 120, root / "tok")
    return prepared, tk.token_cache(prepared, tok), img.astype(np.float32) / 255 * 2 - 1


def _dataset(ramp, augment, *, train=True, epoch=0):
    prepared, cache, _ = ramp
    cfg = preset("tiny")
    cfg.data.image_size, cfg.data.crop_size, cfg.data.augment = 64, 48, augment
    ds = PairedDataset(prepared, "train", cache, cfg.data, train=train, seed=5)
    ds.set_epoch(epoch)
    return ds


def _windows(full: np.ndarray, out: np.ndarray) -> list[tuple[int, int]]:
    c = out.shape[0]
    return [
        (y, x)
        for y in range(full.shape[0] - c + 1)
        for x in range(full.shape[1] - c + 1)
        if np.allclose(full[y : y + c, x : x + c], out, atol=1e-6)
    ]


def test_random_crop_is_an_untouched_window_at_a_random_offset(ramp):
    full = ramp[2]
    offsets = set()
    for epoch in range(6):
        out = normalise_pixels(_dataset(ramp, "random_crop", epoch=epoch)[0]["pixels"])[0].numpy()
        assert out.shape == (48, 48)
        found = _windows(full, out)
        assert len(found) == 1, found  # the pixels themselves: no resize, no intensity change
        offsets.add(found[0])
    assert len(offsets) > 1  # the offset is drawn, not fixed


def test_resized_crop_jitters_and_none_is_the_centre_crop(ramp):
    full = ramp[2]
    jittered = normalise_pixels(_dataset(ramp, "resized_crop")[0]["pixels"])[0].numpy()
    assert jittered.shape == (48, 48) and _windows(full, jittered) == []
    for train in (True, False):
        centre = normalise_pixels(_dataset(ramp, "none", train=train)[0]["pixels"])[0].numpy()
        np.testing.assert_allclose(centre, full[8:56, 8:56], atol=1e-6)


# ---------------------------------------------------------------- optimizer and clipping


def _one_step(name: str) -> float:
    # p = 1000, gradient -0.5, weight decay 1e-3, lr 0.1. In the gradient (Adam) the decay
    # adds 1e-3 * 1000 = +1, so the step sees +0.5 and Adam's first step, lr * sign, moves p
    # down by 0.1 -> 999.9. Decoupled (AdamW): p * (1 - lr * wd) = 999.9, then the step on
    # -0.5 moves it up by 0.1 -> 1000.0.
    p = torch.nn.Parameter(torch.tensor([1000.0], dtype=torch.float64))
    opt = build_optimizer([p], name, lr=0.1, weight_decay=1e-3, device=torch.device("cpu"))
    p.grad = torch.tensor([-0.5], dtype=torch.float64)
    opt.step()
    return float(p.detach())


def test_adam_puts_the_weight_decay_in_the_gradient_adamw_decouples_it():
    assert _one_step("adam") == pytest.approx(999.9, abs=1e-6)
    assert _one_step("adamw") == pytest.approx(1000.0, abs=1e-6)
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer([], "sgd", 0.1, 0.0, torch.device("cpu"))


def test_adam_matches_torch_adam_with_weight_decay_over_steps():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(4)]
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours = build_optimizer([a], "adam", lr=1e-2, weight_decay=0.1, device=torch.device("cpu"))
    ref = torch.optim.Adam([b], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
    assert not torch.allclose(a.detach(), w0)


def test_grad_clip_zero_measures_without_touching_and_positive_clips():
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    p.grad, q.grad = torch.tensor([3.0]), torch.tensor([4.0])
    assert float(grad_norm_step([p, q], 0.0)) == pytest.approx(5.0)
    assert (float(p.grad), float(q.grad)) == (3.0, 4.0)
    assert float(grad_norm_step([p, q], 1.0)) == pytest.approx(5.0)  # the norm before clipping
    assert float(p.grad) == pytest.approx(0.6, abs=1e-5)
    assert float(q.grad) == pytest.approx(0.8, abs=1e-5)


# ---------------------------------------------------------------- stage-2 start weights


@pytest.mark.parametrize("form", ["last", "best"])
def test_stage2_starts_from_the_last_or_the_best_stage1_weights(world, tmp_path, monkeypatch,
                                                               form):  # fmt: skip
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.batch_size, cfg.train.max_steps = 16, 2
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 1, 1
    cfg.train.stage2_init = form
    seen = {}
    original = loop_mod.Trainer._enter_stage

    def spy(self, stage):
        # make the last stage-1 weights differ from best/ for sure, then switch stages
        with torch.no_grad():
            for prm in self.model.parameters():
                prm.add_(0.25)
        seen["last"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        seen["best"] = load_file(str(self.run / "best" / "model.safetensors"))
        original(self, stage)
        seen["start"] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(loop_mod.Trainer, "_enter_stage", spy)
    run_pretrain(cfg, data=world, out=tmp_path / "run", resume=None, nproc=1, as_json=True)
    want = seen[form]
    other = seen["best" if form == "last" else "last"]
    weights = [k for k in want if k.startswith("image_encoder") and want[k].is_floating_point()]
    assert weights
    for k in weights:
        torch.testing.assert_close(seen["start"][k], want[k], rtol=0, atol=0)
    assert any(not torch.equal(seen["start"][k], other[k]) for k in weights)


# ---------------------------------------------------------------- initial image weights

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


@pytest.mark.parametrize("name", ["paper-resnet50", "paper-vit"])
def test_paper_preset_needs_image_weights_or_an_explicit_none(cli, name):
    res = cli("pretrain", "--preset", name, "--dry-run")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: --preset {name} starts from ImageNet weights: pass --image-weights FILE "
        "(docs/pretraining.md: saving torchvision's ResNet-50 IMAGENET1K_V2) or "
        "--image-weights none for random init"
    ]
    res = cli("pretrain", "--preset", name, "--image-weights", "none", "--dry-run")
    assert res.exit_code == 0, res.stderr
    model = json.loads(res.stdout)["model"]
    assert model["image_weights"] is None and model["image_weights_sha256"] is None
    # tiny and small train offline from random init without being asked
    assert cli("pretrain", "--preset", "tiny", "--dry-run").exit_code == 0


def test_image_weights_file_is_recorded_with_its_sha256(cli, tmp_path):
    from cmcgns_cli.card import _image_init

    wfile = tmp_path / "r50.pth"
    wfile.write_bytes(b"abc")
    res = cli("pretrain", "--preset", "paper-resnet50", "--image-weights", wfile, "--dry-run")
    assert res.exit_code == 0, res.stderr
    saved = json.loads(res.stdout)
    assert saved["model"]["image_weights"] == str(wfile)
    assert saved["model"]["image_weights_sha256"] == ABC_SHA256
    assert _image_init(config_from_dict(saved)) == f"`r50.pth` (sha256 `{ABC_SHA256}`)"
    assert _image_init(preset("tiny")) == "random (no image weights)"
    res = cli("pretrain", "--preset", "paper-resnet50", "--image-weights", tmp_path / "no.pth",
              "--dry-run")  # fmt: skip
    assert res.exit_code == 2 and "no.pth: --image-weights file not found" in res.stderr

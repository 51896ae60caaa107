"""Presets, config-file and --set overrides, and the variant shorthand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcgns_cli.config import (
    PRESETS,
    VARIANTS,
    Config,
    config_from_dict,
    preset,
    resolve,
)
from cmcgns_cli.errors import BadInputError


def test_presets_differ_where_they_should() -> None:
    tiny, paper = preset("tiny"), preset("paper-resnet50")
    assert tiny.model.image_encoder == "resnet_tiny"
    assert paper.model.image_encoder == "resnet50"
    assert preset("paper-vit").model.image_encoder == "vit_b16"
    assert paper.loss.num_clusters == 128 and tiny.loss.num_clusters == 16
    assert set(PRESETS) == {"tiny", "small", "paper-resnet50", "paper-vit"}


def test_paper_defaults_match_the_authors_values() -> None:
    loss, train = Config().loss, Config().train
    assert (loss.hard_negative_weight, loss.bml_alpha, loss.bml_beta) == (3.0, 0.2, 0.5)
    assert (loss.bml_weight, loss.cluster_momentum, loss.mask_ratio) == (1e-4, 0.001, 0.5)
    assert (loss.cluster_init_threshold, loss.local_text_tau) == (0.4, 1.0)
    assert (train.stage1_epochs, train.stage2_epochs, train.batch_size) == (10, 20, 64)
    for key, value in VARIANTS["authors"].items():
        assert getattr(loss, key) == value


def test_toml_then_set_then_cli(tmp_path: Path) -> None:
    f = tmp_path / "o.toml"
    f.write_text("[train]\nlr = 0.5\nbatch_size = 7\n[model]\nembed_dim = 32\n")
    cfg = resolve("tiny", f, ["train.lr=0.25"], cli={"train": {"batch_size": 3, "seed": None}})
    assert cfg.train.lr == 0.25  # --set beats the file
    assert cfg.train.batch_size == 3  # an explicit option beats both
    assert cfg.model.embed_dim == 32  # the file beats the preset
    assert cfg.train.seed == preset("tiny").train.seed  # None means "not given"


def test_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "o.yaml"
    f.write_text("loss:\n  num_clusters: 9\n  clustering: false\n")
    cfg = resolve("small", f)
    assert cfg.loss.num_clusters == 9 and cfg.loss.clustering is False


def test_variant_shorthand_and_explicit_switch() -> None:
    cfg = resolve("tiny", sets=["loss.variant=clean", "loss.mask_mode=channels"])
    assert cfg.loss.centroid_update == "mean"
    assert cfg.loss.hard_negative_mode == "additive_block"
    assert cfg.loss.bml_reduction == "masked_pairs" and cfg.loss.recon_final_relu is False
    assert cfg.loss.mask_mode == "channels"  # explicit switch wins over the shorthand
    assert (cfg.loss.cluster_gate, cfg.loss.idle_centroid_restart) == ("spread", 50)
    default = resolve("tiny")  # the authors' computation by default
    assert (default.loss.hard_negative_mode, default.loss.bml_reduction) == (
        "multiply",
        "all_pairs",
    )
    assert default.loss.recon_final_relu is True and default.loss.logit_scale_max == 0.0
    assert (default.loss.cluster_gate, default.loss.idle_centroid_restart) == ("init", 0)
    back = resolve("tiny", sets=["loss.variant=clean", "loss.variant=authors"])
    assert back.loss.hard_negative_mode == "multiply"


def test_variant_option_keeps_switches_set_in_the_file_and_by_set(tmp_path) -> None:
    """`--variant clean --set loss.false_negative_denominator=keep` is clean except that
    switch (the CLI option is applied after --set and used to overwrite it)."""
    cfg = resolve("tiny", sets=["loss.false_negative_denominator=keep"],
                  cli={"loss": {"variant": "clean"}})  # fmt: skip
    assert cfg.loss.false_negative_denominator == "keep"
    assert (cfg.loss.centroid_update, cfg.loss.bml_reduction) == ("mean", "masked_pairs")
    toml = tmp_path / "c.toml"
    toml.write_text('[loss]\ncentroid_update = "sum"\n')
    cfg = resolve("tiny", config_file=toml, cli={"loss": {"variant": "clean"}})
    assert cfg.loss.centroid_update == "sum" and cfg.loss.hard_negative_mode == "additive_block"
    plain = resolve("tiny", sets=["train.lr=0.01"], cli={"loss": {"variant": "clean"}})
    assert plain.loss.false_negative_denominator == "remove"  # nothing set: the variant's


def test_old_additive_name_is_refused_with_a_hint_but_old_runs_still_load() -> None:
    with pytest.raises(BadInputError, match="additive_block"):
        resolve("tiny", sets=["loss.hard_negative_mode=additive"])
    saved = resolve("tiny").to_dict()
    saved["loss"]["hard_negative_mode"] = "additive"  # a run saved before the rename
    assert config_from_dict(saved).loss.hard_negative_mode == "additive_column"
    assert saved["loss"]["hard_negative_mode"] == "additive"  # the caller's dict is untouched


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["train.nope=1"], "unknown key train.nope"),
        (["bogus.lr=1"], "unknown config section"),
        (["train.lr=fast"], "expected float"),
        (["trainlr=1"], "expected section.key=value"),
        (["loss.clustering=maybe"], "expected true/false"),
    ],
)
def test_bad_overrides_name_the_problem(sets: list[str], needle: str) -> None:
    with pytest.raises(BadInputError, match=needle):
        resolve("tiny", sets=sets)


def test_bad_config_file(tmp_path: Path) -> None:
    f = tmp_path / "o.toml"
    f.write_text("[train\nlr=")
    with pytest.raises(BadInputError, match=str(f)):
        resolve("tiny", f)
    with pytest.raises(BadInputError, match="not found"):
        resolve("tiny", tmp_path / "missing.toml")


def test_round_trip_through_dict() -> None:
    cfg = resolve("tiny", sets=["loss.variant=clean", "train.lr=0.01"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


def test_optional_fields_are_read_by_their_declared_type() -> None:
    from cmcgns_cli.config import apply_overrides, preset
    from cmcgns_cli.errors import BadInputError

    cfg = apply_overrides(preset("tiny"), {"train": {"max_steps": "3"}}, "--set")
    assert cfg.train.max_steps == 3 and isinstance(cfg.train.max_steps, int)
    cfg = apply_overrides(preset("tiny"), {"model": {"predictor_hidden": "null"}}, "--set")
    assert cfg.model.predictor_hidden is None
    for bad in ("abc", "1.5", True):
        with pytest.raises(BadInputError, match=r"train\.max_steps: expected int or none"):
            apply_overrides(preset("tiny"), {"train": {"max_steps": bad}}, "--set")
    with pytest.raises(BadInputError, match=r"unknown key train\.max_step; did you mean "
                       r"train\.max_steps\?"):  # fmt: skip
        apply_overrides(preset("tiny"), {"train": {"max_step": 3}}, "--set")


def test_cluster_gate_and_idle_restart_are_checked() -> None:
    with pytest.raises(BadInputError, match="loss.cluster_gate must be one of init, spread"):
        resolve("tiny", sets=["loss.cluster_gate=always"])
    for bad in ("-5", str(10**20)):
        with pytest.raises(BadInputError, match="idle_centroid_restart must be 0 .never. to"):
            resolve("tiny", sets=[f"loss.idle_centroid_restart={bad}"])
    cfg = resolve("tiny", sets=["loss.variant=clean", "loss.idle_centroid_restart=0"])
    assert cfg.loss.idle_centroid_restart == 0 and cfg.loss.cluster_gate == "spread"


def test_old_clean_runs_reload_with_what_they_ran() -> None:
    saved = resolve("tiny", sets=["loss.variant=clean"]).to_dict()
    for key in ("cluster_gate", "idle_centroid_restart"):  # a clean run saved before them
        del saved["loss"][key]
    old = config_from_dict(saved)
    assert (old.loss.cluster_gate, old.loss.idle_centroid_restart) == ("init", 0)
    assert old.loss.centroid_update == "mean"  # the rest of clean stays
    assert "cluster_gate" not in saved["loss"]  # the caller's dict is untouched


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"loss": {"num_clusters": None}}, r"loss\.num_clusters: expected int, got none"),
        ({"loss": {"idle_centroid_restart": 1.5}}, r"expected int, got 1\.5"),
        ({"loss": {"idle_centroid_restart": True}}, "expected int, got True"),
        ({"train": {"lr": False}}, "expected float, got False"),
    ],
)
def test_config_file_values_are_not_silently_converted(overrides: dict, needle: str) -> None:
    from cmcgns_cli.config import apply_overrides

    with pytest.raises(BadInputError, match=needle):
        apply_overrides(preset("tiny"), overrides, "o.toml")
    with pytest.raises(BadInputError, match="got none"):
        resolve("tiny", sets=["loss.idle_centroid_restart=none"])
    cfg = apply_overrides(preset("tiny"), {"loss": {"idle_centroid_restart": 7.0}}, "o.toml")
    assert cfg.loss.idle_centroid_restart == 7 and isinstance(cfg.loss.idle_centroid_restart, int)


def test_local_text_scope_follows_the_variant_and_old_runs_keep_global() -> None:
    assert resolve("tiny").loss.local_text_scope == "rank"  # the authors' per-GPU form
    assert resolve("tiny", sets=["loss.variant=clean"]).loss.local_text_scope == "global"
    both = resolve("tiny", sets=["loss.local_text_scope=global", "loss.variant=authors"])
    assert both.loss.local_text_scope == "global"  # an explicit switch beats the shorthand
    with pytest.raises(BadInputError, match="loss.local_text_scope must be one of rank, global"):
        resolve("tiny", sets=["loss.local_text_scope=node"])
    saved = resolve("tiny").to_dict()
    del saved["loss"]["local_text_scope"]  # a run saved before the switch gathered globally
    assert config_from_dict(saved).loss.local_text_scope == "global"


def test_an_option_and_a_set_that_contradict_are_refused(cli) -> None:
    # both are explicit: neither silently wins (the option used to)
    with pytest.raises(BadInputError, match=r"^--variant clean and --set loss.variant=authors "):
        resolve("tiny", sets=["loss.variant=authors"], cli={"loss": {"variant": "clean"}})
    with pytest.raises(BadInputError, match=r"^--lr 0.1 and --set train.lr=0.2 contradict"):
        resolve("tiny", sets=["train.lr=0.2"], cli={"train": {"lr": 0.1}})
    # the same value twice, or different keys, are fine
    cfg = resolve("tiny", sets=["loss.variant=clean", "train.lr=1e-1"],
                  cli={"loss": {"variant": "clean"}, "train": {"lr": 0.1, "seed": 3}})  # fmt: skip
    assert cfg.loss.variant == "clean" and cfg.train.lr == 0.1 and cfg.train.seed == 3
    res = cli("pretrain", "--data", ".", "--out", "x", "--preset", "tiny", "--variant", "clean",
              "--set", "loss.variant=authors", "--dry-run")  # fmt: skip
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.strip() == (
        "error: --variant clean and --set loss.variant=authors contradict each other; "
        "give one of them"
    )


def test_a_crop_larger_than_the_image_is_refused_naming_where_it_came_from():
    from cmcgns_cli.errors import BadInputError

    # the tiny preset crops 128 px; an image size below it alone leaves the preset's crop
    with pytest.raises(BadInputError, match=r"crop_size 128 \(the tiny preset's\) is larger"):
        resolve("tiny", sets=["data.image_size=48"])
    with pytest.raises(BadInputError, match=r"crop_size 64 \(given\) is larger than .* 48"):
        resolve("tiny", sets=["data.image_size=48", "data.crop_size=64"])
    cfg = resolve("tiny", sets=["data.image_size=48", "data.crop_size=48"])
    assert (cfg.data.image_size, cfg.data.crop_size) == (48, 48)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.lr=-1"], "--lr (train.lr) -1.0: the learning rate must be a number above 0"),
        (["train.lr=nan"], "--lr (train.lr) nan: the learning rate must be a number above 0"),
        (["train.lr=0"], "--lr (train.lr) 0.0: the learning rate must be a number above 0"),
        (["data.max_length=2"], "data.max_length 2: a report needs at least 3 tokens"),
        (["data.max_length=513"], "data.max_length 513: the scratch BERT has 512 positions"),
    ],
)
def test_values_no_run_can_train_with_are_one_line(sets, message) -> None:
    # a negative or NaN lr was torch's ValueError traceback at the optimizer; max_length 2
    # trained on [CLS] [SEP] alone (pretrain-text: "non-finite MLM loss"); 513+ failed inside
    # the scratch BERT's position embeddings
    with pytest.raises(BadInputError) as info:
        resolve("tiny", sets=sets)
    assert str(info.value).startswith(message)
    ok = resolve("tiny", sets=["data.max_length=512", "train.lr=1e-9"])
    assert ok.data.max_length == 512 and ok.train.lr == 1e-9

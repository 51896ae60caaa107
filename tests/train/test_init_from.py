"""``pretrain --init-from RUN_OR_BUNDLE --init-parts ...``: exactly the named weights are
taken, the source's SHA-256 is recorded, a different architecture is refused in one line."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train.init_from import load_parts, parse_parts, part_of
from cmcgns_cli.train.run import build_model, load_run_config
from tests.train.conftest import TINY, cli


@pytest.fixture(scope="module")
def source(world, tmp_path_factory):
    """A short tiny run (2 steps) whose weights differ from any fresh initialisation."""
    run = tmp_path_factory.mktemp("init") / "src"
    mp = pytest.MonkeyPatch()
    try:
        code = cli(["pretrain", "--data", str(world), "--out", str(run), *TINY,
                    "--stage1-epochs", "1", "--stage2-epochs", "0", "--max-steps", "2",
                    "--seed", "3"], mp)  # fmt: skip
    finally:
        mp.undo()
    assert code == 0
    return run


def test_part_names() -> None:
    assert part_of("image_encoder.layer1.0.conv1.weight") == "image"
    assert part_of("image_global_proj.bias") == "image"
    assert part_of("text_encoder.bert.embeddings.word_embeddings.weight") == "text"
    assert part_of("text_encoder.pool.q_proj.weight") == "text"
    assert part_of("local_text_loss.kmeans.centroids") == "heads"
    # the image vector's whole path, as the text side's pooling and normalisation are text:
    # the authors' attention pool over the feature map and the batch normalisation after
    # the projection were left to "heads", so --init-parts image took half of it
    assert part_of("image_pool.c_proj.bias") == "image"
    assert part_of("image_global_norm.running_var") == "image"
    assert part_of("text_encoder.global_norm.running_var") == "text"
    assert part_of("logit_scale") == "heads"
    assert parse_parts("text,image") == ("image", "text")
    with pytest.raises(BadInputError, match="--init-parts"):
        parse_parts("image,optimizer")


@pytest.mark.parametrize("parts", [("image",), ("text", "heads")])
def test_loads_exactly_the_named_parts(source, parts) -> None:
    cfg, extra = load_run_config(source)
    torch.manual_seed(11)  # another initialisation than the source's seed 3
    model = build_model(cfg, extra["vocab_size"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    weights = source / ckpt.BEST / ckpt.MODEL
    src = ckpt.load_weights(weights)
    record = load_parts(model, weights, parts, source)
    now = model.state_dict()
    n_taken = 0
    for key, value in now.items():
        if part_of(key) in parts:
            assert torch.equal(value, src[key]), key
            n_taken += 1
        else:
            assert torch.equal(value, fresh[key]), key
    assert record["tensors"] == n_taken > 0
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # the comparison means something: every part differs between source and fresh model
    for part in ("image", "text", "heads"):
        keys = [k for k in now if part_of(k) == part and now[k].is_floating_point()]
        assert any(not torch.equal(src[k], fresh[k]) for k in keys), part


def test_cli_records_the_source_and_takes_its_tokenizer(source, world, tmp_path, monkeypatch):
    run = tmp_path / "warm"
    code = cli(["pretrain", "--data", str(world), "--out", str(run), *TINY, "--stage1-epochs",
                "1", "--stage2-epochs", "0", "--max-steps", "1", "--init-from", str(source),
                "--init-parts", "image,text"], monkeypatch)  # fmt: skip
    assert code == 0
    saved = json.loads((run / ckpt.CONFIG).read_text())
    rec = saved["init_from"]
    best = source / ckpt.BEST / ckpt.MODEL
    assert rec["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert rec["parts"] == ["image", "text"] and rec["weights"] == str(best.resolve())
    assert saved["tokenizer"]["kind"] == "init-from"
    vocab = (source / ckpt.TOKENIZER / "tokenizer.json").read_text()
    assert (run / ckpt.TOKENIZER / "tokenizer.json").read_text() == vocab


def test_mismatch_fails_in_one_line_naming_the_tensor(source, world, tmp_path, monkeypatch,
                                                      capsys):  # fmt: skip
    run = tmp_path / "bad"
    code = cli(["pretrain", "--data", str(world), "--out", str(run), *TINY, "--set",
                "model.embed_dim=32", "--init-from", str(source)], monkeypatch)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    line = err.splitlines()[-1]
    # the image encoder and the BERT (hidden 64) are the same; the token projection to the
    # embedding (64 -> 32 wide) is the first tensor of the model's order that differs
    assert "tensor text_encoder.token_proj.weight is (64, 64) there, (32, 64) here" in line, err
    assert not (run / ckpt.CONFIG).exists()


def test_resume_and_init_from_are_exclusive(source, world, monkeypatch, capsys) -> None:
    code = cli(["pretrain", "--resume", str(source), "--init-from", str(source)], monkeypatch)
    assert code == 2 and "--init-from starts a new run" in capsys.readouterr().err
    code = cli(["pretrain", "--data", str(world), "--out", "x", *TINY, "--init-parts", "image"],
               monkeypatch)  # fmt: skip
    assert code == 2 and "--init-parts needs --init-from" in capsys.readouterr().err


def test_a_source_without_global_norm_is_told_how_to_start_from_it() -> None:
    # a tiny run from before model.global_norm (or any run with none) lacks only the batch
    # normalisation's running statistics; the line said "the architectures differ" alone
    from cmcgns_cli.train.init_from import select

    mine = {"text_encoder.global_norm.running_mean": torch.zeros(64)}
    with pytest.raises(BadInputError) as info:
        select(mine, {}, ("image", "text", "heads"), "OLD")
    assert str(info.value) == (
        "--init-from OLD: the architectures differ: tensor text_encoder.global_norm."
        "running_mean (64) is not in the source; the source was pretrained without "
        "model.global_norm: add --set model.global_norm=none to start from it"
    )
    # another missing tensor keeps the plain line
    with pytest.raises(BadInputError) as info:
        select({"text_encoder.token_proj.weight": torch.zeros(2, 2)}, {}, ("text",), "OLD")
    assert str(info.value).endswith("(2, 2) is not in the source")


def test_a_source_with_global_norm_into_a_run_without_it_is_refused() -> None:
    # the other direction: the source's running statistics had no place and were dropped
    from cmcgns_cli.train.init_from import select

    w = torch.ones(2, 2)
    mine = {"text_encoder.token_proj.weight": torch.zeros(2, 2)}
    theirs = {"text_encoder.token_proj.weight": w, "text_encoder.global_norm.running_mean": w[0]}
    with pytest.raises(BadInputError) as info:
        select(mine, theirs, ("text",), "NEW")
    assert str(info.value) == (
        "--init-from NEW: the architectures differ: tensor text_encoder.global_norm."
        "running_mean (2) of the source has no place here; the source was pretrained with "
        "model.global_norm=batchnorm: add --set model.global_norm=batchnorm to start from it"
    )
    # the same source without the extra tensor fills the part
    del theirs["text_encoder.global_norm.running_mean"]
    assert torch.equal(select(mine, theirs, ("text",), "NEW")["text_encoder.token_proj.weight"], w)


def test_an_image_global_norm_mismatch_names_the_setting_too() -> None:
    # the image side's statistics are image_global_norm.*, not *.global_norm.*: the hint
    # was missing for them, in both directions
    from cmcgns_cli.train.init_from import select

    stats = {"image_global_norm.running_mean": torch.zeros(4)}
    with pytest.raises(BadInputError, match="add --set model.global_norm=none to start"):
        select(stats, {}, ("image",), "OLD")
    with pytest.raises(BadInputError, match="add --set model.global_norm=batchnorm to start"):
        select({}, stats, ("image",), "NEW")


def _copy_run(source, to):
    import shutil

    shutil.copytree(source, to, ignore=shutil.ignore_patterns(".cmcgns*"))
    return to


def test_a_run_without_its_tokenizer_is_refused_for_its_text_part(source, tmp_path) -> None:
    import shutil

    from cmcgns_cli.train.init_from import source_files

    bare = _copy_run(source, tmp_path / "bare")
    shutil.rmtree(bare / ckpt.TOKENIZER)
    # the line said "--text-encoder .../tokenizer: not a local directory", an option never given
    with pytest.raises(BadInputError) as info:
        source_files(bare, ("image", "text"))
    assert str(info.value) == (
        f"--init-from {bare}: the run has no tokenizer ({bare / ckpt.TOKENIZER}), which its "
        "text part needs; --init-parts image,heads leaves the text tower out"
    )
    assert source_files(bare, ("image", "heads"))["kind"] == "run"


def test_damaged_source_weights_are_one_line_exit_2(source, world, tmp_path, monkeypatch,
                                                     capsys) -> None:  # fmt: skip
    bad = _copy_run(source, tmp_path / "bad")
    best = bad / ckpt.BEST / ckpt.MODEL
    best.write_bytes(best.read_bytes()[:1000])  # a copy cut short
    run = tmp_path / "new"
    code = cli(["pretrain", "--data", str(world), "--out", str(run), *TINY,
                "--init-from", str(bad)], monkeypatch)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {best}: truncated or damaged safetensors file ("), err
    assert not run.exists()


def test_a_bert_folder_is_pointed_to_text_encoder(tmp_path) -> None:
    # a pretrain-text output (config.json + model.safetensors) passed for a run: the line
    # said "the run has no tokenizer", or with --init-parts image "tensor image_encoder...
    # is not in the source"
    from cmcgns_cli.train.init_from import source_files

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    (bert / "model.safetensors").write_bytes(b"")
    for parts in (("image", "text", "heads"), ("image",)):
        with pytest.raises(BadInputError) as info:
            source_files(bert, parts)
        assert str(info.value) == (
            f"--init-from {bert}: a Hugging Face bert folder (a text encoder alone), not a "
            f"pretrain run or an exported bundle; give it as --text-encoder {bert}"
        )

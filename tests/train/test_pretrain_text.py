"""``cmcgns pretrain-text``: MLM pretraining lowers the held-out MLM loss on a tiny corpus, its
folder loads with transformers' AutoModel and as ``pretrain --text-encoder DIR``, and an
interrupted run resumed ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from safetensors.torch import load_file

from cmcgns_cli.train import mlm
from tests.train.conftest import TINY, cli

ARGS = ["--preset", "tiny", "--batch-size", "16", "--epochs", "3", "--set", "train.lr=2e-3",
        "--json"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm") / "bert"
    mp = pytest.MonkeyPatch()
    try:
        code = cli(["pretrain-text", "--data", str(world), "--out", str(out), *ARGS], mp)
    finally:
        mp.undo()
    assert code == 0
    return out


def _summary(out):
    rec = json.loads((out / mlm.RECORD).read_text())
    return rec


def test_mlm_lowers_the_held_out_loss(trained) -> None:
    rec = _summary(trained)
    vocab = json.loads((trained / "config.json").read_text())["vocab_size"]
    # an untrained BERT predicts about uniformly over the vocabulary: loss near log(V)
    assert abs(rec["val_loss_start"] - math.log(vocab)) < 0.5, (rec, vocab)
    assert rec["val_loss"] < rec["val_loss_start"] - 0.5, rec
    # the same train / validate rows as `pretrain` trains and validates on (68 / 14 pairs)
    assert rec["train_reports"] == 68 and rec["validate_reports"] == 14


def test_folder_loads_with_automodel_and_as_text_encoder(trained, world, tmp_path,
                                                         monkeypatch) -> None:  # fmt: skip
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(trained), local_files_only=True)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    saved = load_file(str(trained / "model.safetensors"))
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[emb], saved[f"bert.{emb}"])
    tok = AutoTokenizer.from_pretrained(str(trained))
    assert len(tok) == model.config.vocab_size
    run = tmp_path / "run"
    code = cli(["pretrain", "--data", str(world), "--out", str(run), *TINY, "--text-encoder",
                str(trained), "--stage1-epochs", "1", "--stage2-epochs", "0",
                "--max-steps", "1"], monkeypatch)  # fmt: skip
    assert code == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["tokenizer"]["kind"] == "pretrained"
    assert cfg["model"]["text_encoder"] == str(trained)


def test_interrupted_then_resumed_matches_uninterrupted(trained, world, tmp_path,
                                                        monkeypatch) -> None:  # fmt: skip
    out = tmp_path / "cut"
    real = mlm.interrupts.requested
    steps = {"n": 0}

    def fake_requested():  # a Ctrl-C arriving during step 4
        steps["n"] += 1
        return signal.SIGINT if steps["n"] >= 4 else real()

    monkeypatch.setattr(mlm.interrupts, "requested", fake_requested)
    code = cli(["pretrain-text", "--data", str(world), "--out", str(out), *ARGS], monkeypatch)
    assert code == 130
    assert json.loads((out / "state" / "progress.json").read_text())["step"] == 4
    monkeypatch.setattr(mlm.interrupts, "requested", real)
    assert cli(["pretrain-text", "--resume", str(out), "--json"], monkeypatch) == 0
    a = load_file(str(trained / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r["step"] for r in lines if r["kind"] == "train"]
    assert steps_logged == list(range(1, len(steps_logged) + 1))  # no step twice


def test_needs_exactly_one_corpus(world, tmp_path, monkeypatch, capsys) -> None:
    code = cli(["pretrain-text", "--preset", "tiny", "--out", str(tmp_path / "x")], monkeypatch)
    assert code == 2 and "--data PREPARED or --reports FILE" in capsys.readouterr().err


def test_refuses_a_folder_that_is_not_empty(world, tmp_path, monkeypatch) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "segmenter.safetensors").write_bytes(b"not ours")
    code = cli(["pretrain-text", "--data", str(world), "--out", str(out), *ARGS], monkeypatch)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["segmenter.safetensors"]


def test_full_disk_before_the_first_step_is_one_line(world, tmp_path, monkeypatch, capsys):
    import shutil

    from cmcgns_cli import outdir

    monkeypatch.setattr(outdir.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 999, 999))  # fmt: skip
    out = tmp_path / "bert"
    code = cli(["pretrain-text", "--data", str(world), "--out", str(out), *ARGS], monkeypatch)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert line.startswith(f"error: {out}: not enough free space for the checkpoint: needs ")
    assert line.endswith(
        " bytes, 999 bytes free; no checkpoint written yet: free some space and run the same "
        "command again"
    )
    assert not (out / "model.safetensors").exists() and not (out / "state").exists()


def test_full_disk_at_the_second_save_keeps_the_first(world, tmp_path, monkeypatch, capsys):
    import builtins
    from pathlib import Path

    from cmcgns_cli.train import checkpoint as ckpt
    from tests.diskfull import FullFile

    out = tmp_path / "bert"
    saves = []

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == "optimizer.pt":
            saves.append(path)
            if len(saves) == 2:  # the disk fills during the second save
                return FullFile(path, 100, {}, 0)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ckpt, "open", fake_open, raising=False)
    code = cli(["pretrain-text", "--data", str(world), "--out", str(out), *ARGS], monkeypatch)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1, line
    step = json.loads((out / "state" / "progress.json").read_text())["step"]
    assert step > 0 and line.endswith(
        f"; the last checkpoint (step {step}) is kept: free some space and continue with "
        f"`cmcgns pretrain-text --resume {out}`"
    )
    assert not (out / ".hf.tmp").exists() and not (out / ".state.new").exists()
    assert json.loads((out / mlm.RECORD).read_text())["steps"] == step
    monkeypatch.delattr(ckpt, "open")
    assert cli(["pretrain-text", "--resume", str(out), "--json"], monkeypatch) == 0
    assert json.loads((out / mlm.RECORD).read_text())["steps"] > step

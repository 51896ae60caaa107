"""`cmcgns pretrain` options through the CLI, each checked by its effect on the run's
config.json, metrics.jsonl or weights: --config, --text-encoder (a local BERT directory
saved here from a tiny BertModel), --image-weights, --stage1-epochs, --stage2-epochs, --lr,
--seed, --workers and --resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch as st
import torch

from tests.interface.conftest import tiny_resnet_weights
from tests.train.worlds import FINDINGS, NORMAL, make_world

SMALL = ["--preset", "tiny", "--set", "data.image_size=64", "--set", "data.crop_size=64",
         "--batch-size", "16"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 48 studies: 33 train pairs, 2 steps of 16 per epoch
    return make_world(tmp_path_factory.mktemp("opts") / "prepared", n=48, size=64, seed=5)


def _records(run: Path, kind: str = "train") -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def _pretrain(cli, *args) -> dict:
    res = cli("pretrain", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _bert_dir(path: Path) -> Path:
    """A local BERT folder (weights + WordPiece vocabulary) built from a tiny config."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for pair in FINDINGS for s in pair for w in s.rstrip(".").split()}
                   | {w for s in NORMAL for w in s.rstrip(".").split()}
                   | {"comparison", "with", "prior", "study"})  # fmt: skip
    path.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(path)  # transformers 5: vocab=
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64)  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    return path


@pytest.mark.slow
def test_config_text_encoder_image_weights_epochs_and_lr(cli, world: Path, tmp_path: Path):
    bert = _bert_dir(tmp_path / "bert")
    wfile = tmp_path / "tiny.pt"
    ref = tiny_resnet_weights(wfile)
    toml = tmp_path / "over.toml"
    # the lr schedule warms up from warmup_start_lr: keep both tiny so the loaded weights stay
    toml.write_text("[loss]\nnum_clusters = 4\n[model]\nembed_dim = 24\n"
                    "[train]\nwarmup_start_lr = 1e-12\n")  # fmt: skip
    run = tmp_path / "run"
    _pretrain(cli, "--data", world, "--out", run, *SMALL, "--config", toml,
              "--text-encoder", bert, "--image-weights", wfile, "--stage1-epochs", "1",
              "--stage2-epochs", "1", "--lr", "1e-12")  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    assert cfg["loss"]["num_clusters"] == 4 and cfg["model"]["embed_dim"] == 24  # --config
    assert cfg["train"]["lr"] == 1e-12 and cfg["train"]["warmup_start_lr"] == 1e-12
    assert (cfg["train"]["stage1_epochs"], cfg["train"]["stage2_epochs"]) == (1, 1)
    assert cfg["model"]["text_encoder"] == str(bert)
    assert cfg["model"]["image_weights"] == str(wfile)
    train = _records(run)
    # 33 train pairs in batches of 16 (last partial batch dropped): 2 steps per epoch
    assert [(r["stage"], r["epoch"]) for r in train] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    assert max(r["lr"] for r in train) <= 1e-12
    # --image-weights: the image encoder still holds the file's tensors (lr 1e-12)
    enc = st.load_file(str(run / "image_encoder.safetensors"))
    assert torch.allclose(enc["conv1.weight"], ref["conv1.weight"], atol=1e-6)
    assert torch.allclose(enc["layer4.0.conv2.weight"], ref["layer4.0.conv2.weight"], atol=1e-6)
    # --text-encoder: the run's BERT is the saved one (width 32, its word embeddings)
    from transformers import BertModel

    saved = BertModel.from_pretrained(str(bert)).embeddings.word_embeddings.weight.detach()
    weights = st.load_file(str(run / "model.safetensors"))
    (key,) = [k for k in weights if k.endswith("embeddings.word_embeddings.weight")]
    assert weights[key].shape == saved.shape == (len((bert / "vocab.txt").read_text().split()), 32)
    assert torch.allclose(weights[key], saved, atol=1e-6)
    # the tokenizer saved with the run is the local folder's vocabulary
    from transformers import AutoTokenizer

    got = AutoTokenizer.from_pretrained(str(run / "tokenizer")).get_vocab()
    assert sorted(got, key=got.get) == (bert / "vocab.txt").read_text().split()


@pytest.mark.slow
def test_seed_and_workers(cli, world: Path, tmp_path: Path) -> None:
    def first_losses(name: str, *extra: str) -> list[float]:
        run = tmp_path / name
        _pretrain(cli, "--data", world, "--out", run, *SMALL, "--stage1-epochs", "1",
                  "--stage2-epochs", "0", *extra)  # fmt: skip
        cfg = json.loads((run / "config.json").read_text())
        cfg = cfg.get("config", cfg)
        seed = int(extra[extra.index("--seed") + 1])
        workers = int(extra[extra.index("--workers") + 1])
        assert cfg["train"]["seed"] == seed and cfg["data"]["workers"] == workers
        return [r["loss"] for r in _records(run)]

    a = first_losses("a", "--seed", "7", "--workers", "0")
    b = first_losses("b", "--seed", "7", "--workers", "1")
    c = first_losses("c", "--seed", "8", "--workers", "0")
    assert len(a) == 2
    # one worker process loads the same seeded batches as the main process
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # another seed: another init and another batch order
    assert abs(a[0] - c[0]) > 1e-4


@pytest.mark.slow
def test_resume_through_the_cli_repeats_the_losses(cli, world: Path, tmp_path: Path,
                                                   monkeypatch) -> None:  # fmt: skip
    from cmcgns_cli.train import steps

    args = [*SMALL, "--stage1-epochs", "2", "--stage2-epochs", "1", "--seed", "3"]
    full = tmp_path / "full"
    _pretrain(cli, "--data", world, "--out", full, *args)

    def interrupt(trainer, record):
        if record["step"] == 3:  # mid stage-1 epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(steps, "_after_step", interrupt)
    part = tmp_path / "part"
    res = cli("pretrain", "--data", world, "--out", part, *args)
    assert res.exit_code == 130, res.stderr
    assert f"cmcgns pretrain --resume {part}" in res.stderr
    assert len(_records(part)) == 3
    monkeypatch.setattr(steps, "_after_step", lambda t, r: None)
    res = cli("pretrain", "--resume", part)
    assert res.exit_code == 0, res.stderr
    got, want = _records(part), _records(full)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-5)

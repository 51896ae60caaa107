"""`cmcgns export`: the bundle's files, its checksums, and every way of loading it back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

import cmcgns_cli as cm
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.errors import BadInputError

FILES = {
    "config.json",
    "model.safetensors",
    "image_encoder.safetensors",
    "README.md",
    "train_ids.txt",
    "SHA256SUMS",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
}


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, a copy of the shared run with evaluations beside it, its bundle)."""
    data, run = trained
    base = tmp_path_factory.mktemp("bundle")
    copy = base / "r"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("state"))
    ours = {
        "task": "chexpert-cls",
        "metric": "macro_auroc",
        "value": 0.8125,
        "metrics": {"macro_auroc": 0.8125, "auroc_Edema": 0.75},
        "protocol": {"fraction": 0.01, "full": False, "encoder": {"checkpoint": str(copy)}},
    }
    other = {**ours, "task": "rsna-cls", "protocol": {"encoder": {"checkpoint": "elsewhere"}}}
    for name, res in (("ft-ours", ours), ("ft-other", other)):
        (base / name).mkdir()
        (base / name / "metrics.json").write_text(json.dumps(res))  # fmt: skip
    from cmcgns_cli.export import run_export

    out = base / "bundle"
    run_export(run=copy, out=out, as_json=True)
    return data, copy, out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundle_files_and_checksums(bundle) -> None:
    _, _, out = bundle
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files >= FILES
    sums = dict(
        reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines()
    )
    assert set(sums) == files - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert digest == _sha(out / name), name


def test_model_card_states_the_training(bundle) -> None:
    data, run, out = bundle
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "other" and "cmcgns" in front["tags"]
    assert front["datasets"] == ["mimic"] and front["metrics"] == ["macro_auroc"]
    results = front["model-index"][0]["results"]
    assert [r["task"]["name"] for r in results] == ["chexpert-cls"]  # not the other run's
    assert {m["type"]: m["value"] for m in results[0]["metrics"]}["auroc_Edema"] == 0.75
    assert "preset: `tiny`" in text and "objective variant: `authors`" in text
    # the shared run sets 8 clusters and 64 px; the tiny preset has 16 and 144 / 128
    assert "`loss.num_clusters` = `8` (preset: `16`)" in text
    assert "`data.crop_size` = `64` (preset: `128`)" in text
    assert _sha(data / "manifest.parquet") in text
    # the run's health, as its metrics.jsonl closing summary record judged it
    closing = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert closing["kind"] == "summary"
    assert f"- health: {closing['health']['status']}" in text
    manifest = pd.read_parquet(data / "manifest.parquet")
    train = set(manifest.loc[manifest["split"] == "train", "id"].astype(str))
    ids = (out / "train_ids.txt").read_text().split()
    assert len(ids) == len(set(ids)) and set(ids) == train


def test_bundle_embeds_like_the_run(bundle, cli, tmp_path) -> None:
    data, run, out = bundle
    p = open_prepared(data)
    arrays = [np.asarray(p.images[i]) for i in range(5)]
    texts = [". ".join(map(str, s)) for s in p.manifest["sentences"].iloc[:5]]
    a, b = cm.load(run), cm.load(out)
    assert b.weights == "bundle" and b.prepared_size == a.prepared_size == 64
    np.testing.assert_allclose(b.encode_images(arrays), a.encode_images(arrays), atol=1e-6)
    np.testing.assert_allclose(b.encode_reports(texts), a.encode_reports(texts), atol=1e-6)
    # the command line reads the bundle too
    rep = tmp_path / "r.txt"
    rep.write_text("\n".join(texts) + "\n")
    res = cli("embed", "--checkpoint", out, "--reports", rep, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(ln) for ln in res.stdout.splitlines()]
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in rows]), a.encode_reports(texts), atol=1e-6
    )


def test_text_and_image_parts_load_into_stock_libraries(bundle) -> None:
    from torchvision.models.resnet import BasicBlock, ResNet
    from transformers import AutoModel, AutoTokenizer

    _, run, out = bundle
    ref = cm.load(run)
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    bert = AutoModel.from_pretrained(str(out / "text_encoder")).eval()
    enc = tok(["small left effusion", "heart size normal"], return_tensors="pt", padding=True)
    assert (
        enc["input_ids"].tolist()
        == ref.tokenizer(
            ["small left effusion", "heart size normal"], return_tensors="pt", padding=True
        )["input_ids"].tolist()
    )
    with torch.no_grad():
        got = bert(**enc).last_hidden_state
        want = ref.model.text_encoder.bert(**enc).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

    stock = ResNet(BasicBlock, [1, 1, 1, 1]).eval()
    stock.load_state_dict(load_file(str(out / "image_encoder.safetensors")), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stock.fc = torch.nn.Identity()
        got = stock(x)
        want = ref.model.image_encoder.features(x)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_flipped_byte_is_caught_everywhere(bundle, cli, tmp_path) -> None:
    _, _, out = bundle
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    target = bad / "model.safetensors"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    with pytest.raises(BadInputError, match="model.safetensors: checksum mismatch"):
        cm.load(bad)
    rep = tmp_path / "r.txt"
    rep.write_text("small left effusion\n")
    res = cli("embed", "--checkpoint", bad, "--reports", rep)
    assert res.exit_code == 2 and str(target) in res.stderr and "checksum" in res.stderr
    enc = bad / "image_encoder.safetensors"
    shutil.copyfile(out / "model.safetensors", target)  # repair, damage the encoder instead
    enc.write_bytes(enc.read_bytes()[:-1] + bytes([enc.read_bytes()[-1] ^ 0xFF]))
    from tests.downstream.test_classification_cli import _write_chexpert_like

    prep = _write_chexpert_like(tmp_path / "chx", n=120)
    res = cli("finetune", "--task", "chexpert-cls", "--data", prep, "--checkpoint", bad,
              "--out", tmp_path / "ft")  # fmt: skip
    assert res.exit_code == 2 and str(enc) in res.stderr


def test_finetune_from_bundle(bundle, cli, tmp_path) -> None:
    from tests.downstream.test_classification_cli import _write_chexpert_like

    _, _, out = bundle
    prep = _write_chexpert_like(tmp_path / "chx", n=120)
    res = cli("finetune", "--task", "chexpert-cls", "--data", prep, "--checkpoint", out,
              "--out", tmp_path / "ft", "--epochs", "2", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    enc = json.loads(res.stdout)["encoder"]
    assert enc["checkpoint"] == str(out) and enc["arch"] == "resnet_tiny"
    assert enc["weights_sha256"] == _sha(out / "image_encoder.safetensors")
    assert enc["weights_load"]["loaded"] == enc["weights_load"]["expected"]


def test_hub_id_only_from_the_local_cache(bundle, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hc

    _, run, out = bundle
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError, match="not in the local Hugging Face cache"):
        cm.load("someone/cmcgns-tiny")
    # the cache layout of huggingface_hub: models--ORG--NAME/{refs/main, snapshots/REV/...}
    repo = tmp_path / "hub" / "models--someone--cmcgns-tiny"
    rev = "0" * 40
    shutil.copytree(out, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    model = cm.load("someone/cmcgns-tiny")
    assert model.weights == "bundle"
    texts = ["small left effusion", "heart size normal"]
    np.testing.assert_allclose(
        model.encode_reports(texts), cm.load(run).encode_reports(texts), atol=1e-6
    )


def test_export_refuses_bad_requests(bundle, cli, tmp_path) -> None:
    data, run, out = bundle
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    res = cli("export", run, "--out", full)
    assert res.exit_code == 2 and "exists and is not empty" in res.stderr
    assert (full / "x").read_text() == "keep me"
    res = cli("export", out, "--out", tmp_path / "again")
    assert res.exit_code == 2 and "already an exported bundle" in res.stderr
    res = cli("export", run, "--out", tmp_path / "b2", "--data", tmp_path / "moved")
    assert res.exit_code == 2 and "pass --data DIR" in res.stderr
    assert not (tmp_path / "b2").exists()
    # another prepared dataset is not the run's training data
    from tests.downstream.test_classification_cli import _write_chexpert_like

    other = _write_chexpert_like(tmp_path / "chx", n=120)
    res = cli("export", run, "--out", tmp_path / "b3", "--data", other)
    assert res.exit_code == 2 and not (tmp_path / "b3").exists()
    assert str(other / "manifest.parquet") in res.stderr
    # --weights is a closed choice: anything else is a usage error, nothing written
    res = cli("export", run, "--out", tmp_path / "b4", "--weights", "foo")
    assert res.exit_code == 2 and not (tmp_path / "b4").exists()


def test_no_absolute_local_path_in_the_shared_files(bundle) -> None:
    data, run, out = bundle
    for name in ("README.md", "config.json"):
        text = (out / name).read_text()
        # the run, the prepared data and the temp folder they live in are local paths
        for local in (str(run.resolve()), str(data.resolve()), str(run.parent.resolve())):
            assert local not in text, (name, local)
    assert json.loads((out / "config.json").read_text())["bundle"]["source_run"] == run.name

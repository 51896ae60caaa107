"""`rsna-cls` and `covidx-cls` finetune -> evaluate through the CLI, `finetune --full` and
`finetune --image-weights`.

The data are drawn so that the label is visible in the pixels (a bright band or a level of
brightness), so even a random-init encoder's features separate the classes: the floors below
are stated against the chance level of each metric (AUROC 0.5, accuracy = the majority class
share of the test split), computed here from the labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch as st
import torch

from tests.interface.conftest import tiny_resnet_weights

COVIDX = ["normal", "pneumonia", "COVID-19"]


def _finetune(cli, task: str, data: Path, out: Path, *extra: str) -> dict:
    res = cli("finetune", "--task", task, "--data", data, "--checkpoint", "none", "--arch",
              "resnet_tiny", "--out", out, "--json", *extra)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def _evaluate(cli, task: str, data: Path, ckpt: Path) -> dict:
    res = cli("evaluate", "--task", task, "--data", data, "--checkpoint", ckpt, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.slow
def test_rsna_cls_end_to_end_beats_chance(cli, rsna: Path, tmp_path: Path) -> None:
    ft = _finetune(cli, "rsna-cls", rsna, tmp_path / "ft", "--epochs", "20", "--lr", "0.01")
    assert ft["label_names"] == ["Pneumonia"] and ft["validate_metric"] == "macro_auroc"
    assert ft["n_train"] == 60 and ft["n_validate"] == 20
    summary = _evaluate(cli, "rsna-cls", rsna, tmp_path / "ft")
    written = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert written["task"] == "rsna-cls" and written["metric"] == "macro_auroc"
    assert set(written["metrics"]) == {"Pneumonia", "macro_auroc"}
    assert written["metrics"]["Pneumonia"] == written["metrics"]["macro_auroc"]
    assert summary["mean"]["macro_auroc"] == pytest.approx(written["value"])
    assert written["protocol"]["n_test"] == 20 and written["protocol"]["full"] is False
    low, high = written["ci95"]["macro_auroc"]
    assert low <= written["value"] <= high
    assert written["value"] >= 0.5 + 0.3  # chance AUROC 0.5


@pytest.mark.slow
def test_covidx_cls_end_to_end_beats_majority_class(cli, covidx: Path, tmp_path: Path) -> None:
    ft = _finetune(cli, "covidx-cls", covidx, tmp_path / "ft", "--epochs", "20", "--lr", "0.01")
    assert ft["label_names"] == COVIDX and ft["validate_metric"] == "accuracy"
    _evaluate(cli, "covidx-cls", covidx, tmp_path / "ft")
    written = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert written["metric"] == "accuracy" and "accuracy" in written["metrics"]
    manifest = pd.read_parquet(covidx / "manifest.parquet")
    test_cls = manifest.loc[manifest["split"] == "test", "class_index"].to_numpy()
    majority = np.bincount(test_cls, minlength=3).max() / len(test_cls)
    # accuracy is a multiple of 1/20 on 20 test images
    assert round(written["value"] * 20) == pytest.approx(written["value"] * 20)
    assert written["value"] >= majority + 0.25
    # a head finetuned for covidx is refused on the rsna task
    res = cli("evaluate", "--task", "rsna-cls", "--data", covidx, "--checkpoint", tmp_path / "ft")
    assert res.exit_code == 2


def _params_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics move in train mode whatever the lr: compare parameters."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(stats)}


def _saved_body(out: Path) -> dict[str, torch.Tensor]:
    """The finetuned encoder's backbone tensors under their torchvision keys."""
    saved = st.load_file(str(out / "encoder.safetensors"))
    return {k.removeprefix("backbone."): v for k, v in saved.items()}


@pytest.mark.slow
def test_image_weights_are_loaded_and_full_moves_them(cli, rsna: Path, tmp_path: Path) -> None:
    wfile = tmp_path / "tiny.pt"
    ref = tiny_resnet_weights(wfile)
    common = ("--image-weights", str(wfile), "--epochs", "1", "--batch-size", "32")
    # linear probe: the file is read (its digest and tensor count recorded), nothing of the
    # encoder is saved because nothing of it trains
    lin = _finetune(cli, "rsna-cls", rsna, tmp_path / "lin", *common)
    enc = lin["encoder"]
    assert enc["weights_sha256"] == hashlib.sha256(wfile.read_bytes()).hexdigest()
    assert enc["weights_load"]["loaded"] == len(ref) and enc["weights_load"]["missing"] == 0
    assert lin["full"] is False and not (tmp_path / "lin" / "encoder.safetensors").exists()
    # --full at lr 0: the saved encoder holds exactly the file's parameters (they were loaded,
    # not re-initialised) ...
    still = _finetune(cli, "rsna-cls", rsna, tmp_path / "lr0", *common, "--full", "--lr", "0")
    assert still["full"] is True
    saved = _saved_body(tmp_path / "lr0")
    for k, v in _params_only(ref).items():
        assert torch.equal(saved[k], v), k
    # ... and at a real lr every trained tensor moves away from them
    moved = _finetune(cli, "rsna-cls", rsna, tmp_path / "full", *common, "--full", "--lr", "0.01")
    saved = _saved_body(tmp_path / "full")
    assert moved["full"] is True
    assert not torch.allclose(saved["conv1.weight"], ref["conv1.weight"])
    changed = [k for k, v in _params_only(ref).items() if not torch.equal(saved[k], v)]
    assert len(changed) == len(_params_only(ref))

"""finetune --fraction-sampler through the CLI: the mgca draw is pandas' own, by position
in the published split table (column mgca_order)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.downstream.cls_data import write_cls_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    n = 120
    rng = np.random.default_rng(3)
    order = np.concatenate([rng.permutation(80), np.arange(20), np.arange(20)])
    images = rng.integers(0, 255, size=(n, 32, 32), dtype=np.uint8)
    return write_cls_dataset(
        tmp_path_factory.mktemp("rsna") / "prep", "rsna", images,
        [[float(i % 2)] for i in range(n)], ["Pneumonia"],
        columns={"mgca_order": order}, meta={"protocol": {"name": "mgca"}},
    )  # fmt: skip


def _finetune(cli, data: Path, out: Path, *extra: str) -> dict:
    res = cli(
        *["finetune", "--task", "rsna-cls", "--data", str(data), "--checkpoint", "none",
          "--arch", "resnet_tiny", "--out", str(out), "--epochs", "2", "--json", *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.slow
def test_mgca_sampler_is_pandas_sample_in_published_order(cli, prepared, tmp_path):
    m = pd.read_parquet(prepared / "manifest.parquet")
    table = m[m["split"] == "train"].sort_values("mgca_order")
    expect = set(table.sample(frac=0.1, random_state=42)["id"])
    rec = _finetune(cli, prepared, tmp_path / "a", "--fraction", "0.1", "--seed", "5")
    assert rec["fraction_sampler"] == "mgca" and rec["n_train"] == 8
    assert set((tmp_path / "a" / "train_ids.txt").read_text().split()) == expect
    res = cli("evaluate", "--task", "rsna-cls", "--data", str(prepared), "--checkpoint",
              str(tmp_path / "a"), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    proto = json.loads((tmp_path / "a" / "metrics.json").read_text())["protocol"]
    assert proto["data_protocol"] == {"name": "mgca"} and proto["fraction_sampler"] == "mgca"
    # stratified: 4 of each class; a different subset
    rec = _finetune(cli, prepared, tmp_path / "b", "--fraction", "0.1",
                    "--fraction-sampler", "stratified")  # fmt: skip
    assert rec["fraction_sampler"] == "stratified"
    ids = (tmp_path / "b" / "train_ids.txt").read_text().split()
    assert sorted(int(i[3:]) % 2 for i in ids) == [0] * 4 + [1] * 4
    res = cli("finetune", "--task", "rsna-cls", "--data", str(prepared), "--checkpoint", "none",
              "--out", str(tmp_path / "c"), "--fraction-sampler", "nope")  # fmt: skip
    assert res.exit_code == 2 and "--fraction-sampler" in res.stderr

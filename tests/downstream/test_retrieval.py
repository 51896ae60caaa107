"""Retrieval: Recall@K by hand on a constructed matrix; pretrained beats random init."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmcgns_cli.downstream.retrieval import evaluate_retrieval
from cmcgns_cli.metrics import precision_at_k, recall_at_k


def test_recall_at_k_by_hand():
    sims = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # true partner first: hit at 1
            [0.8, 0.5, 0.1, 0.0],  # partner (col 1) ranked 2nd
            [0.1, 0.2, 0.3, 0.9],  # partner (col 2) ranked 2nd
            [0.4, 0.3, 0.2, 0.1],  # partner (col 3) ranked last (4th)
        ]
    )
    r = recall_at_k(sims, (1, 2, 3, 4))
    assert r == {1: 0.25, 2: 0.75, 3: 0.75, 4: 1.0}
    # equal keys count as hits: query 3 shares its key with gallery item 0
    keys = np.array([0, 1, 2, 0])
    assert recall_at_k(sims, (1,), keys, keys)[1] == 0.5
    # precision@2 with classes: relevant = same key
    p = precision_at_k(sims, (1, 2), keys, keys)
    assert p[1] == pytest.approx((1 + 0 + 0 + 1) / 4)
    # top-2: q0 -> cols 0, 3 (both key 0); q1 -> 0, 1; q2 -> 3, 2; q3 -> 0, 1
    assert p[2] == pytest.approx((1.0 + 0.5 + 0.5 + 0.5) / 4)
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 3)))


def test_retrieval_beats_random_init(trained, cli, tmp_path):
    data, run = trained
    res = cli("evaluate", "--task", "retrieval", "--data", data, "--checkpoint", run, "--json")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)["mean"]
    # metrics.json beside the checkpoint, counts as integers
    saved = json.loads((run / "evaluate" / "retrieval" / "metrics.json").read_text())
    assert saved["mean"] == got and isinstance(got["pairs"], int)
    table = cli("evaluate", "--task", "retrieval", "--data", data, "--checkpoint", run,
                "--out", tmp_path / "ev")  # fmt: skip
    assert table.exit_code == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "metric" in line)
    assert "value" in header and "mean" not in header  # one seed: not a mean
    assert any(
        line.split("│")[1:3] == [" pairs ", " 80 "]
        or "pairs" in line
        and line.rstrip("│ ").endswith(" 80")
        for line in table.stdout.splitlines()
    ), table.stdout
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["mean"] == got
    init = evaluate_retrieval(data, run, torch.device("cpu"), random_init=True)["metrics"]
    print(
        f"retrieval over {int(got['pairs'])} test pairs, pretrained vs random init: "
        + ", ".join(f"{k} {got[k]:.3f}/{init[k]:.3f}" for k in got if "R@" in k)
    )
    assert got["pairs"] == 80
    assert got["i2t_R@1"] >= 2 * init["i2t_R@1"] and got["i2t_R@1"] >= 0.15
    assert got["i2t_R@5"] >= init["i2t_R@5"] + 0.2
    assert got["t2i_R@5"] >= init["t2i_R@5"] + 0.2

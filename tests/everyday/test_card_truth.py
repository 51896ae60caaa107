"""The model card tells the truth: synthetic data is named as such, results are quoted as the
mean ± sd over seeds with n, and no local absolute path goes into a shared file."""

from __future__ import annotations

import json

from cmcgns_cli.card import _front_matter, _quote, shareable
from cmcgns_cli.config import preset


def test_a_synthetic_world_is_not_called_mimic(cli, tmp_path) -> None:
    world, prep = tmp_path / "w", tmp_path / "p"
    assert cli("synth", "--out", world, "--n", "12", "--layouts", "rsna", "--image-size",
               "64", "--json").exit_code == 0  # fmt: skip
    res = cli("prepare", "rsna", "--src", world / "rsna", "--out", prep, "--size", "32")
    assert res.exit_code == 0, res.stderr
    meta = json.loads((prep / "meta.json").read_text())
    assert meta["synthetic"] is True
    assert meta["text_encodings"] == {"stage_2_train_labels.csv": "utf-8"}
    front = _front_matter(preset("tiny"), {"meta": meta}, [], "other")
    assert front["datasets"] == ["synthetic-rsna"] and "synthetic-data" in front["tags"]
    real = _front_matter(preset("tiny"), {"meta": {**meta, "synthetic": False}}, [], "other")
    assert real["datasets"] == ["rsna"] and "synthetic-data" not in real["tags"]


def test_quote_and_shareable() -> None:
    # mean 0.584 of three seeds, sample sd 0.031: the card quotes both and n
    assert _quote({"value": 0.584, "sd": 0.031, "n_seeds": 3}) == "0.5840 ± 0.0310 (n = 3)"
    assert _quote({"value": 0.623, "sd": None, "n_seeds": 1}) == "0.6230 (n = 1)"
    assert _quote({"value": None}) == "n/a"
    got = shareable({"source": "/home/ana/data/mimic", "n": 3, "text": "no path here",
                     "list": ["~/runs/a", "relative/b"]})  # fmt: skip
    assert got == {"source": "mimic", "n": 3, "text": "no path here", "list": ["a", "relative/b"]}

"""`cmcgns clusters --truth`: cluster health against the finding of each sentence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cmcgns_cli.clusters import read_sentence_truth, truth_metrics
from cmcgns_cli.data.reports import split_sentences
from cmcgns_cli.errors import BadInputError

SAMPLE_TRUTH = Path(__file__).resolve().parents[2] / "sample_data" / "truth" / "mimic.jsonl"


def test_truth_metrics_on_a_hand_example() -> None:
    assign = np.array([0, 0, 0, 1, 1, 2])
    findings = ["a", "a", "b", "b", "b", "normal"]
    got = truth_metrics(assign, findings)
    # clusters: {a, a, b}, {b, b}, {normal}: majority 2 + 2 + 1 of 6
    assert abs(got["purity"] - 5 / 6) < 1e-12
    # ordered pairs a != b: same cluster 3*2 + 2*1 = 8; same finding 2*1 + 3*2 = 8;
    # both: (a,a) in cluster 0 -> 2, (b,b) in cluster 1 -> 2
    assert got["fn_precision"] == 4 / 8 and got["fn_recall"] == 4 / 8
    # NMI by hand: I(K; F) / ((H(K) + H(F)) / 2)
    p = np.array([[2, 1, 0], [0, 2, 0], [0, 0, 1]]) / 6
    pk, pf = p.sum(1), p.sum(0)
    mi = sum(p[i, j] * math.log(p[i, j] / (pk[i] * pf[j])) for i in range(3) for j in range(3)
             if p[i, j] > 0)  # fmt: skip
    hk, hf = -(pk * np.log(pk)).sum(), -(pf * np.log(pf)).sum()
    assert abs(got["nmi"] - mi / ((hk + hf) / 2)) < 1e-9
    one = truth_metrics(np.zeros(4, dtype=int), ["a", "a", "b", "normal"])  # everything in one
    assert one["purity"] == 0.5 and one["fn_recall"] == 1.0 and one["fn_precision"] == 2 / 12


def test_sample_truth_records_the_finding_of_every_report_sentence() -> None:
    truth = read_sentence_truth(SAMPLE_TRUTH)
    records = [json.loads(x) for x in SAMPLE_TRUTH.read_text().splitlines()]
    assert len(truth) == len(records) and all(r["sentences"] for r in records)
    # every sentence the report text uses: the prepared sentences of one report are covered
    rec = next(
        r for r in records if any(s["finding"] == "pleural_effusion" for s in r["sentences"])
    )
    text = " ".join(s["text"] for s in rec["sentences"])
    for piece in split_sentences(text):
        assert piece in truth[rec["image_id"]]
    names = {s["finding"] for r in records for s in r["sentences"]}
    assert "normal" in names and "cardiomegaly" in names and "support_device" in names
    negation = "no pleural effusion or pneumothorax"
    assert any(truth[r["image_id"]].get(negation) == "normal" for r in records)


def test_truth_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        read_sentence_truth(tmp_path / "nope.jsonl")
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"image_id": "x", "findings": []}) + "\n")
    with pytest.raises(BadInputError, match="no record has per-sentence findings"):
        read_sentence_truth(old)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(BadInputError, match="line 1"):
        read_sentence_truth(bad)

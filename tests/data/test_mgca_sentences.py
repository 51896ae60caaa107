"""Sentence splitting under ``--protocol mgca`` (the authors' rule) vs ``grouped`` (cmcgns's
rules), on hand-made report strings; expected sentences worked out by hand from the rule:
line breaks are spaces, cut at every run of digits followed by a period, then at every
period; nothing else ends a sentence; one-word pieces are dropped."""

from __future__ import annotations

import gzip
import json

import pandas as pd

from cmcgns_cli.data.mgca_text import mgca_split_sentences
from cmcgns_cli.data.reports import split_sentences
from tests.data.rawfix import gray, write_jpeg

REPORT = (
    "1. No effusion. 2. Heart size is normal; lungs clear? Mild edema!\n\nLesion 1.5 cm in size"
)


def test_authors_rule_cuts_at_numbers_and_periods_only():
    # "1." / "2." and the "1." of "1.5" cut; "; ? !" and the blank line do not
    assert mgca_split_sentences(REPORT) == [
        "no effusion",
        "heart size is normal lungs clear mild edema lesion",
        "5 cm in size",
    ]


def test_grouped_keeps_cmcgns_rules_on_the_same_text():
    assert split_sentences(REPORT) == [
        "no effusion",
        "heart size is normal",
        "lungs clear",
        "mild edema",
        "lesion 1 5 cm in size",
    ]


def test_authors_rule_edge_cases():
    # a one-word piece is dropped, a line break inside a sentence is a space, ___ is removed
    assert mgca_split_sentences("Normal. No acute\nprocess. ___ Stable.") == ["no acute process"]
    # an impression without a final period runs into the findings after a blank line
    assert mgca_split_sentences("No pneumonia\n\nThe lungs are clear.") == [
        "no pneumonia the lungs are clear"
    ]
    # any number of digits before a period cuts, not only 1-2 digit list numbers
    assert mgca_split_sentences("Compared to 2019. Tube tip 12.3 cm above") == [
        "compared to",
        "tube tip",
        "3 cm above",
    ]
    assert mgca_split_sentences(None) == [] and mgca_split_sentences("") == []


def test_prepare_mimic_mgca_uses_the_authors_rule_and_grouped_does_not(cli, tmp_path):
    root = tmp_path / "raw"
    text = "FINDINGS: Heart size is normal; lungs clear.\nIMPRESSION: No acute process"
    write_jpeg(root / "files/p10/p10000000/s50000000/d0.jpg", gray(40, 40, seed=0))
    (root / "files/p10/p10000000/s50000000.txt").write_text(text)
    row = dict(dicom_id="d0", subject_id="10000000", study_id="50000000")
    for rows, name in (([{**row, "ViewPosition": "PA"}], "mimic-cxr-2.0.0-metadata.csv.gz"),
                       ([{**row, "split": "train"}], "mimic-cxr-2.0.0-split.csv.gz")):  # fmt: skip
        with gzip.open(root / name, "wt") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
    got = {}
    for protocol in ("mgca", "grouped"):
        out = tmp_path / protocol
        res = cli("prepare", "mimic", "--src", root, "--out", out, "--size", 32,
                  "--protocol", protocol, "--json")  # fmt: skip
        assert res.exit_code == 0, res.stderr
        got[protocol] = list(pd.read_parquet(out / "manifest.parquet")["sentences"][0])
        meta = json.loads((out / "meta.json").read_text())
        assert meta["sentence_split"] == {"mgca": "authors", "grouped": "cmcgns"}[protocol]
    # mgca: impression first, joined to the findings with no period between them
    assert got["mgca"] == ["no acute process heart size is normal lungs clear"]
    assert got["grouped"] == ["heart size is normal", "lungs clear", "no acute process"]

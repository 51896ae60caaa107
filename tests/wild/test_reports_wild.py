"""Report text as radiologists and exports write it (cases H4, H5, H6, H12 and variants).

The same text must give the same sentences wherever reports are read: a MIMIC-CXR report
file (``prepare mimic``), a ``--report-col`` cell (``prepare folder``) and ``embed
--reports`` (checked in test_embed_wild.py). Expected sentences are literals.
"""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data.reports import report_sentences
from tests.data.rawfix import gray, write_jpeg

NBSP, EN, EM = "\u00a0", "\u2013", "\u2014"

CASES: dict[str, tuple[str, list[str]]] = {
    "H4a": (
        "INDICATION: Fever and productive cough. FINDINGS: Patchy opacity in the left lower "
        "lobe. The heart is normal in size. IMPRESSION: Left lower lobe pneumonia.",
        [
            "patchy opacity in the left lower lobe",
            "the heart is normal in size",
            "left lower lobe pneumonia",
        ],
    ),
    "H4b": (
        "EXAMINATION: Chest radiograph. INDICATION: Shortness of breath. TECHNIQUE: Portable "
        "AP view. COMPARISON: Prior study. FINDINGS: Mild pulmonary vascular congestion. "
        "Small bilateral pleural effusions. IMPRESSION: Mild fluid overload.",
        [
            "mild pulmonary vascular congestion",
            "small bilateral pleural effusions",
            "mild fluid overload",
        ],
    ),
    # inline, other spellings: mixed case after a sentence end, a space before the colon
    "H4c": (
        "HISTORY: Chest pain. Findings: Lungs are clear. No effusion. Impression : Normal "
        "chest radiograph.",
        ["lungs are clear", "no effusion", "normal chest radiograph"],
    ),
    "H5": (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___ with chest pain\n \n COMPARISON:  None.\n \n FINDINGS:\n \n"
        " The cardiomediastinal silhouette is within normal limits.  There is no\n"
        " focal consolidation or pneumothorax\n \n IMPRESSION:\n \n"
        " No acute intrathoracic abnormality.\n",
        [
            "the cardiomediastinal silhouette is within normal limits",
            "there is no focal consolidation or pneumothorax",
            "no acute intrathoracic abnormality",
        ],
    ),
    # list items on separate lines end a sentence; a wrapped item stays whole
    "H5b": (
        "FINDINGS:\n- Stable cardiomegaly\n- Small left pleural effusion which has\n"
        "  decreased since prior\n* No pneumothorax\nIMPRESSION:\n1. Improving effusion\n"
        "2. Stable heart size",
        [
            "stable cardiomegaly",
            "small left pleural effusion which has decreased since prior",
            "no pneumothorax",
            "improving effusion",
            "stable heart size",
        ],
    ),
    "H6": (
        f"FINDINGS:\n\nModerate{NBSP}right{NBSP}pleural effusion.  Left{EN}sided chest tube "
        f"in{NBSP}place.\n\nIMPRESSION:\n\nModerate{NBSP}right effusion.\n",
        [
            "moderate right pleural effusion",
            "left sided chest tube in place",
            "moderate right effusion",
        ],
    ),  # fmt: skip
    # other Unicode spaces and dashes, Windows-1252 C1 forms, accents kept
    "H6b": (
        "FINDINGS: Right\u2009basilar\u202fatelectasis. Post\u2014operative changes"
        "\u3000noted. Left\x96sided catheter\x97tip in SVC. IMPRESSION: Caf\u00e9-au-lait "
        "spots noted.",
        [
            "right basilar atelectasis",
            "post operative changes noted",
            "left sided catheter tip in svc",
            "café au lait spots noted",
        ],
    ),
}


def canon(s: str) -> str:
    """The cases' comparison rule: lower-case, every run of non-letters/digits -> one space."""
    return re.sub(r"[^\w]+|_+", " ", s.lower()).strip()


@pytest.mark.parametrize("name", sorted(CASES))
def test_report_parser_gives_the_sections_sentences(name):
    text, want = CASES[name]
    got, reason = report_sentences(text)
    assert reason is None
    assert [canon(s) for s in got] == want


def test_no_header_words_and_no_mixing():
    for name in ("H4a", "H4b", "H4c"):
        words = " ".join(report_sentences(CASES[name][0])[0]).split()
        for w in ("impression", "indication", "findings", "history", "examination", "fever"):
            assert w not in words, (name, w)
    for s in report_sentences(CASES["H5"][0])[0]:
        assert not ({"pneumothorax", "consolidation"} & set(s.split())) or not (
            {"intrathoracic", "acute"} & set(s.split())
        )


@pytest.mark.parametrize("cell", [None, float("nan"), "", "  ", "nan", "NaN", "None", "null"])
def test_missing_cells_are_missing_reports(cell):
    assert report_sentences(cell) == ([], "report_missing")


def _mimic_layout(root, texts: dict[str, str], encodings: dict[str, str]):
    meta, split = [], []
    for k, name in enumerate(texts):
        subject, study, dicom = f"1000000{k}", f"5000000{k}", f"d{k}"
        write_jpeg(root / f"files/p10/p{subject}/s{study}/{dicom}.jpg", gray(40, 40, seed=k))
        rep = root / f"files/p10/p{subject}/s{study}.txt"
        rep.write_bytes(texts[name].encode(encodings.get(name, "utf-8")))
        meta.append(dict(dicom_id=dicom, subject_id=subject, study_id=study, ViewPosition="PA"))
        split.append(dict(dicom_id=dicom, study_id=study, subject_id=subject, split="train"))
    for rows, fname in ((meta, "mimic-cxr-2.0.0-metadata.csv.gz"),
                        (split, "mimic-cxr-2.0.0-split.csv.gz")):  # fmt: skip
        with gzip.open(root / fname, "wt") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
    return {f"d{k}": name for k, name in enumerate(texts)}


def test_same_sentences_in_prepare_mimic_and_prepare_folder(cli, tmp_path):
    names = sorted(CASES)
    texts = {n: CASES[n][0] for n in names}
    # one MIMIC report saved by a Windows editor: Windows-1252 bytes, not UTF-8
    cp = "FINDINGS: Small\xa0left\u2013sided effusion. IMPRESSION: Small effusion."
    texts["CP1252"] = cp
    ids = _mimic_layout(tmp_path / "mimic", texts, {"CP1252": "cp1252"})
    # --protocol grouped: cmcgns's sentence rules, as for a folder (mgca splits by the
    # authors' rule instead, tested in tests/data/test_mgca_sentences.py)
    res = cli("prepare", "mimic", "--src", tmp_path / "mimic", "--out", tmp_path / "pm",
              "--size", 32, "--protocol", "grouped", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    man = pd.read_parquet(tmp_path / "pm" / "manifest.parquet")
    # compare as sorted lists (the order of the sections may differ)
    mimic = {ids[r.id]: sorted(canon(s) for s in r.sentences) for r in man.itertuples()}
    assert mimic.pop("CP1252") == ["small effusion", "small left sided effusion"]
    assert mimic == {n: sorted(CASES[n][1]) for n in names}

    src = tmp_path / "folder"
    rows = []
    for k, n in enumerate(names):
        write_jpeg(src / f"img{k}.jpg", gray(40, 40, seed=k))
        rows.append({"path": f"img{k}.jpg", "report": CASES[n][0]})
    for k, cell in enumerate(["nan", "None", ""]):
        write_jpeg(src / f"miss{k}.jpg", gray(40, 40, seed=k))
        rows.append({"path": f"miss{k}.jpg", "report": cell})
    pd.DataFrame(rows).to_csv(src / "list.csv", index=False)
    res = cli("prepare", "folder", "--src", src, "--csv", src / "list.csv", "--report-col",
              "report", "--out", tmp_path / "pf", "--size", 32, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["skipped_by_reason"] == {"report_missing": 3}
    man = pd.read_parquet(tmp_path / "pf" / "manifest.parquet")
    folder = {names[int(r.id[3:-4])]: [canon(x) for x in r.sentences] for r in man.itertuples()}
    assert folder == {n: CASES[n][1] for n in names}
    assert np.all([len(v) >= 2 for v in folder.values()])

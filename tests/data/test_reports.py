"""Report section extraction, cleaning and sentence splitting (MGCA rules)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cmcgns_cli.data.reports import (
    clean_text,
    extract_sections,
    report_sentences,
    split_sentences,
)
from tests.data.rawfix import REPORT_OK


def test_full_report_sections_and_sentences():
    sec = extract_sections(REPORT_OK)
    assert sec.findings.startswith("The lungs are clear")
    assert sec.impression.startswith("1. No acute")
    sentences, reason = report_sentences(REPORT_OK)
    assert reason is None
    assert sentences == [
        "the lungs are clear without focal consolidation",
        "no pleural effusion or pneumothorax is seen",
        "heart size is normal",
        "no acute cardiopulmonary process",
        "stable appearance",
    ]


def test_order_impression_first():
    s, _ = report_sentences(REPORT_OK, order=("impression", "findings"))
    assert s[0] == "no acute cardiopulmonary process"


def test_header_variants_and_case():
    text = "Findings: Heart normal. Lungs clear.\nIMPRESSIONS:  No effusion seen."
    sec = extract_sections(text)
    assert sec.findings == "Heart normal. Lungs clear."
    assert sec.impression == "No effusion seen."
    text = "FINDINGS AND IMPRESSION: Mild cardiomegaly. No edema."
    assert extract_sections(text).findings == "Mild cardiomegaly. No edema."
    text = "CONCLUSION: stable small effusion."
    assert extract_sections(text).impression == "stable small effusion."


def test_missing_sections_and_no_headers():
    sec = extract_sections("FINDINGS: Right lower lobe opacity.\n")
    assert sec.impression is None and sec.findings == "Right lower lobe opacity."
    sec = extract_sections("Heart size normal. Lungs are clear.")
    assert sec.findings is None and sec.impression is None
    assert report_sentences("Heart size normal. Lungs are clear.")[0] == [
        "heart size normal",
        "lungs are clear",
    ]
    # preamble only, body after a blank line (reports without FINDINGS/IMPRESSION headers)
    text = "EXAMINATION: CHEST\n\nINDICATION: cough\n\nHeart size normal. Lungs clear."
    assert report_sentences(text)[0] == ["heart size normal", "lungs clear"]


def test_unknown_uppercase_label_stays_in_its_section():
    text = "FINDINGS: Lungs clear.\n PICC: tip in the SVC.\nIMPRESSION: No acute process."
    sec = extract_sections(text)
    assert "PICC: tip in the SVC." in sec.findings
    assert sec.impression == "No acute process."
    text = "IMPRESSION: Small effusion.\nNOTIFICATION: discussed with Dr. ___ at 10:30."
    assert extract_sections(text).impression == "Small effusion."


def test_numbered_lists_phi_and_decimals():
    s = split_sentences("1. No pneumothorax 2. Stable ___ nodule measuring 1.5 cm 3) Clips")
    assert s == ["no pneumothorax", "stable nodule measuring 1 5 cm"]  # "clips": 1 token
    assert clean_text("  A___B \n\n  C  ") == "a b c"
    assert split_sentences("Normal. OK.") == []


def test_short_missing_empty_reports():
    assert report_sentences(None) == ([], "report_missing")
    assert report_sentences("   \n") == ([], "report_missing")
    assert report_sentences("FINDINGS:\nIMPRESSION:\n") == ([], "report_empty")
    assert report_sentences("FINDINGS: Normal.") == ([], "report_too_short")
    assert report_sentences("IMPRESSION: No effusion.", min_words=2)[1] is None
    assert report_sentences("IMPRESSION: No effusion.", min_words=3)[1] == "report_too_short"


_alphabet = st.sampled_from(
    list("abcXYZ .:,;\n\t_0123456789()-/?!é")
    + ["FINDINGS:", "IMPRESSION:", "\n1. ", "___", "FINAL REPORT\n", "INDICATION:", "  "]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_alphabet, max_size=80).map("".join))
def test_parser_never_crashes_on_arbitrary_text(text):
    sentences, reason = report_sentences(text)
    assert (reason is None) == bool(sentences)
    for s in sentences:
        assert len(s.split()) >= 2
        assert s == s.lower() and "_" not in s and "  " not in s


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parser_total_on_unicode(text):
    extract_sections(text)
    for s in split_sentences(text):
        # letters (accented or not) and digits, single spaces, lower case
        assert all(w.isalnum() for w in s.split(" ")) and s == s.lower()

"""Report text as real collections write it (issue 27 kind C): de-identification
placeholders, abbreviations with a period, misspelled headers and view-description headers.

Expected sentences are written out by hand from the input strings.
"""

from __future__ import annotations

import pytest

from cmcgns_cli.data.report_rules import count_placeholders, misspelled_section
from cmcgns_cli.data.reports import clean_text, report_sentences, split_sentences


@pytest.mark.parametrize(
    "text, expect",
    [
        ("Clear lung XXXX bilaterally.", ["clear lung bilaterally"]),
        ("Normal x-XXXX of the chest.", ["normal x of the chest"]),
        ("Seen on XX/XX/XXXX film today.", ["seen on film today"]),
        ("Stable xxxx opacity here.", ["stable opacity here"]),
        ("Compared to ___ study from ___.", ["compared to study from"]),
        ("Called [**First Name8 (NamePattern2) **] [**Last Name **] at noon.", ["called at noon"]),
        ("Discussed with <NAME> on <DATE> by phone.", ["discussed with on by phone"]),
        ("Seen by [DOCTOR] {PERSON} [REDACTED] today.", ["seen by today"]),
        ("Lines <PHI_ID-2> in place now.", ["lines in place now"]),
    ],
)
def test_placeholders_leave_no_token(text, expect):
    assert split_sentences(text) == expect


def test_placeholder_rule_keeps_real_words():
    # words with one or two x, brackets around lower-case words, and (PA) stay
    text = "Box-like lax mass [see prior] (PA) next to the xiphoid; exam is XR chest."
    assert clean_text(text) == (
        "box-like lax mass [see prior] (pa) next to the xiphoid; exam is xr chest."
    )
    assert count_placeholders(text) == 0


@pytest.mark.parametrize(
    "text, expect",
    [
        ("Discussed with Dr. Smith at 10 a.m. today.", ["discussed with dr smith at 10 a m today"]),
        ("Seen at 3 p.m. by Drs. Lee and Ng.", ["seen at 3 p m by drs lee and ng"]),
        (
            "Small effusion, e.g. blunting, i.e. minimal.",
            ["small effusion e g blunting i e minimal"],
        ),
        (
            "Left vs. right unclear. Approx. 2 cm nodule.",
            ["left vs right unclear", "approx 2 cm nodule"],
        ),
        (
            "Tube no. 5 in place. Effusion: no. Heart normal.",
            ["tube no 5 in place", "effusion no", "heart normal"],
        ),
    ],
)
def test_abbreviations_do_not_end_sentences(text, expect):
    assert split_sentences(text) == expect


@pytest.mark.parametrize("findings", ["FINIDNGS", "FINDNGS", "FINDIGNS", "Fidnings", "FINDINGSS"])
@pytest.mark.parametrize("impression", ["IMPRESSON", "IMPESSION", "IMPRESION", "Imprssion"])
def test_misspelled_headers(findings, impression):
    text = (
        f"INDICATION: cough.\n\n{findings}: The lungs are clear. No effusion.\n\n"
        f"{impression}: Normal chest radiograph."
    )
    sents, reason = report_sentences(text)
    assert reason is None
    assert sents == ["the lungs are clear", "no effusion", "normal chest radiograph"]
    assert not any(findings.lower() in s or impression.lower() in s for s in sents)


@pytest.mark.parametrize("word", ["EXPRESSION", "BINDINGS", "FINANCE", "IMPLANT", "HISTORY"])
def test_other_words_are_not_sections(word):
    assert misspelled_section(word) is None


@pytest.mark.parametrize(
    "header",
    [
        "CHEST, TWO VIEWS",
        "PA AND LATERAL VIEWS OF THE CHEST",
        "PORTABLE AP CHEST",
        "CHEST PA AND LATERAL",
        "SINGLE FRONTAL VIEW OF THE CHEST",
        "PORTABLE SEMI-UPRIGHT AP VIEW OF THE CHEST",
    ],
)
def test_view_description_headers_hold_findings(header):
    text = (
        "EXAMINATION: CHEST (PA AND LAT)\n\nINDICATION: cough\n\n"
        f"{header}: Heart size is normal. Lungs are clear.\n\nIMPRESSION: No acute process."
    )
    sents, reason = report_sentences(text)
    assert reason is None
    assert sents == ["heart size is normal", "lungs are clear", "no acute process"]


def test_embed_reads_placeholders_by_the_same_rule():
    from cmcgns_cli.embedding.inputs import text_sentences

    sents, _ = text_sentences("Clear lung XXXX bilaterally. Seen by Dr. Jones.")
    assert sents == ["clear lung bilaterally", "seen by dr jones"]

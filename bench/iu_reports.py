"""Real report text through prepare's report rules and each preset's text window.

Usage: python bench/iu_reports.py DIR  (DIR: the IU X-ray XML reports, e.g. extracted from
torchxrayvision 1.5.7's ``torchxrayvision/data/NLMCXR_reports.tgz``; not shipped here, their
licence forbids derivatives). Prints one JSON object: sentences per report, placeholder
spans removed and placeholder tokens left, and per tokenizer the fragmentation (word pieces
per word) and the reports truncated at the preset's ``max_length``.

The reports are read as ``prepare folder --report-col`` would read a cell holding
``COMPARISON: ... INDICATION: ... FINDINGS: ... IMPRESSION: ...``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from cmcgns_cli.config import preset
from cmcgns_cli.data.report_rules import count_placeholders
from cmcgns_cli.data.reports import report_sentences
from cmcgns_cli.data.token_stats import fragmentation, truncation
from cmcgns_cli.data.tokenize import TokenCache, _tokenize_manifest, train_wordpiece

SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")


def read_iu(folder: Path) -> list[tuple[str, str, str]]:
    """(file name, report text with headers, findings + impression text) per XML."""
    out = []
    for p in sorted(folder.rglob("*.xml"), key=lambda q: int(re.sub(r"\D", "", q.stem) or 0)):
        root = ET.parse(p).getroot()
        parts = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
        text = "\n\n".join(f"{k}: {parts[k]}" for k in SECTIONS if parts.get(k))
        body = " ".join(parts.get(k, "") for k in ("FINDINGS", "IMPRESSION"))
        out.append((p.name, text, body))
    return out


def main(folder: str) -> None:
    reports = read_iu(Path(folder))
    sents, reasons = [], {}
    for _, text, _ in reports:
        s, reason = report_sentences(text, min_words=1)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            sents.append(s)
    per = np.array([len(s) for s in sents])
    flat = [x for s in sents for x in s]
    left = sum(1 for x in flat for w in x.split() if re.fullmatch(r"x{2,}", w))
    spans = [count_placeholders(body) for _, _, body in reports]
    result = {
        "reports": len(reports),
        "usable": len(sents),
        "skipped": reasons,
        "sentences_per_report": {
            "mean": round(float(per.mean()), 2),
            "median": float(np.median(per)),
            "p95": float(np.percentile(per, 95)),
            "max": int(per.max()),
        },
        "placeholder_spans_in_findings_impression": int(sum(spans)),
        "reports_with_placeholders": int(sum(1 for n in spans if n)),
        "placeholder_tokens_left": left,
        "tokenizers": {},
    }
    cfgs = {
        "tiny (vocab 1000, trained on the first 300 reports)": ("tiny", 1000, sents[:300]),
        "tiny (vocab 1000, trained on all)": ("tiny", 1000, sents),
        "small (vocab 8000, trained on all)": ("small", 8000, sents),
        "paper presets, scratch stand-in (vocab 30522, trained on all)": (
            "paper-resnet50",
            30522,
            sents,
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (pre, vocab, train)) in enumerate(cfgs.items()):
            tok = train_wordpiece(
                (x for s in train for x in s), vocab, Path(tmp) / f"t{k}", min_frequency=2
            )
            cfg = preset(pre)
            tokens, so, ro = _tokenize_manifest(sents, tok)
            cache = TokenCache(tokens, so, ro, tok.cls_token_id, tok.sep_token_id, 0)
            t = truncation(cache, cfg.data.max_length, cfg.data.max_sentences)
            result["tokenizers"][name] = {
                "preset": pre,
                "max_length": cfg.data.max_length,
                **fragmentation(tok, flat),
                "lung": tok.tokenize("lung"),
                "report_tokens_p95": float(
                    np.percentile([so[ro[r + 1]] - so[ro[r]] for r in range(len(sents))], 95)
                ),
                **t.as_dict(),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])

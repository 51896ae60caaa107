"""How many in-batch pairs are false negatives: reports that state the same findings.

Usage:
    python bench/false_negative_share.py FOLDER [--batch 32 64] [--epochs 20] [--seed 0]

FOLDER is either a synthetic world (``cmcgns synth --layouts mimic``: its ``truth/mimic.jsonl``
and the reports under ``mimic-cxr-jpg/files/``) or a folder of IU X-ray XML reports (for
example extracted from torchxrayvision 1.5.7's ``torchxrayvision/data/NLMCXR_reports.tgz``;
not shipped here, their licence forbids derivatives).

Two reports "state the same findings" when

- their finding sets are equal, the finding set being the CheXpert-14 observations the
  report states as present or uncertain ("No Finding" left out, so every normal report has
  the empty set). Synthetic world: the report's labels in the truth (they are derived from
  the sentences actually written, as the CheXpert labeller reads them). IU: the report's
  manual MeSH ``major`` terms mapped to CheXpert-14 by the table ``MESH_TO_CHEXPERT`` below
  (terms with no CheXpert observation, e.g. calcified granuloma or degenerative spine, map
  to nothing, as the CheXpert labeller ignores them; reports indexed "No Indexing" are left
  out); or
- their normalised FINDINGS + IMPRESSION text is identical (lower case, runs of anything but
  letters and digits folded to one space).

Random batches: each epoch shuffles the reports and cuts them into batches of B (the last,
short batch dropped), as a shuffled loader with drop_last does. Printed per B: the share of
in-batch pairs that state the same findings (its expectation does not depend on B: a random
batch's pairs are a uniform sample of all pairs; the all-pairs figure is printed too), the
mean number of such partners per anchor, and the share of anchors with at least one. The
IU figure is also given with the finer MeSH heads (``finer_mesh``: the set of MeSH major
terms' first component, e.g. "Calcified Granuloma") for context.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

# MeSH major term heads (the part before the first "/") -> CheXpert-14 observations.
MESH_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Cardiomegaly",),
    "Opacity": ("Lung Opacity",),
    "Airspace Disease": ("Lung Opacity",),
    "Density": ("Lung Opacity",),
    "Infiltrate": ("Lung Opacity",),
    "Consolidation": ("Consolidation", "Lung Opacity"),
    "Pneumonia": ("Pneumonia", "Lung Opacity"),
    "Pulmonary Atelectasis": ("Atelectasis",),
    "Pulmonary Edema": ("Edema",),
    "Pulmonary Congestion": ("Edema",),
    "Nodule": ("Lung Lesion",),
    "Mass": ("Lung Lesion",),
    "Pleural Effusion": ("Pleural Effusion",),
    "Pneumothorax": ("Pneumothorax",),
    "Fractures, Bone": ("Fracture",),
    "Catheters, Indwelling": ("Support Devices",),
    "Implanted Medical Device": ("Support Devices",),
    "Tube, Inserted": ("Support Devices",),
    "Medical Device": ("Support Devices",),
    "Stents": ("Support Devices",),
}
# Heads whose meaning depends on a qualifier ("Heart/enlarged", "Thickening/pleural").
QUALIFIED: dict[str, tuple[str, str]] = {
    "Heart": ("enlarged", "Cardiomegaly"),
    "Cardiac Shadow": ("enlarged", "Cardiomegaly"),
    "Mediastinum": ("enlarged|widened", "Enlarged Cardiomediastinum"),
    "Thickening": ("pleura", "Pleural Other"),
}


def norm_text(text: str) -> str:
    """Lower case, runs of non-alphanumerics folded to one space, stripped."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def mesh_findings(terms: list[str]) -> frozenset[str]:
    """CheXpert-14 observations of a list of MeSH major terms ("normal" -> empty set)."""
    out: set[str] = set()
    for term in terms:
        head, *quals = term.split("/")
        out.update(MESH_TO_CHEXPERT.get(head.strip(), ()))
        if head.strip() in QUALIFIED:
            pattern, label = QUALIFIED[head.strip()]
            if any(re.search(pattern, q, re.I) for q in quals):
                out.add(label)
    return frozenset(out)


def read_iu(folder: Path) -> tuple[list[dict], dict]:
    """One record per usable IU report: findings, finer MeSH heads, normalised text."""
    recs, skipped = [], Counter()
    for p in sorted(folder.rglob("*.xml")):
        root = ET.parse(p).getroot()
        parts = {el.get("Label"): (el.text or "") for el in root.iter("AbstractText")}
        text = norm_text(" ".join(parts.get(k, "") for k in ("FINDINGS", "IMPRESSION")))
        terms = [(el.text or "").strip() for el in root.iter("major")]
        if not text:
            skipped["no findings or impression text"] += 1
            continue
        if not terms or terms == ["No Indexing"]:
            skipped["no MeSH indexing"] += 1
            continue
        heads = {t.split("/")[0].strip() for t in terms} - {"normal"}
        recs.append({"findings": mesh_findings(terms), "fine": frozenset(heads), "text": text})
    return recs, dict(skipped)


def _body(report: str) -> str:
    """FINDINGS + IMPRESSION of a synthetic MIMIC-style report (notification left out)."""
    m = re.search(r"(FINDINGS:|IMPRESSION:)(.*?)(NOTIFICATION:|\Z)", report, re.S)
    return m.group(2) if m else ""


def read_synth(world: Path) -> tuple[list[dict], dict]:
    """One record per synthetic MIMIC study: positive/uncertain labels and normalised text."""
    by_study: dict[int, dict] = {}
    for line in (world / "truth" / "mimic.jsonl").read_text().splitlines():
        rec = json.loads(line)
        by_study.setdefault(rec["study_id"], rec)
    texts = {
        int(p.stem[1:]): p.read_bytes().decode("utf-8", "replace")
        for p in (world / "mimic-cxr-jpg" / "files").rglob("s*.txt")
    }
    recs = []
    for sid, rec in sorted(by_study.items()):
        stated = {k for k, v in rec["label"].items() if k != "No Finding" and v in (1.0, -1.0)}
        recs.append({"findings": frozenset(stated), "text": norm_text(_body(texts[sid]))})
    return recs, {}


def same_matrix(recs: list[dict], key: str = "findings") -> np.ndarray:
    """(N, N) bool: same finding set (under `key`) or identical normalised text."""
    f_ids = {v: i for i, v in enumerate({r[key] for r in recs})}
    t_ids = {v: i for i, v in enumerate({r["text"] for r in recs})}
    f = np.array([f_ids[r[key]] for r in recs])
    t = np.array([t_ids[r["text"]] for r in recs])
    return (f[:, None] == f[None, :]) | (t[:, None] == t[None, :])


def measure(same: np.ndarray, batches: list[int], epochs: int, seed: int) -> dict:
    """All-pairs share and, per batch size, the in-batch figures over shuffled epochs."""
    n = len(same)
    off = same.sum() - n  # ordered pairs i != j
    out: dict = {"all_pairs_share": round(float(off / (n * (n - 1))), 4), "batches": {}}
    rng = np.random.default_rng(seed)
    for b in batches:
        pairs = hits = anchors = anchors_hit = 0
        for _ in range(epochs):
            order = rng.permutation(n)[: n // b * b].reshape(-1, b)
            sub = same[order[:, :, None], order[:, None, :]]  # (batches, b, b)
            per_anchor = sub.sum(-1) - 1  # minus the diagonal
            pairs += order.shape[0] * b * (b - 1)
            hits += int(per_anchor.sum())
            anchors += per_anchor.size
            anchors_hit += int((per_anchor > 0).sum())
        out["batches"][str(b)] = {
            "pair_share": round(hits / pairs, 4),
            "partners_per_anchor": round(hits / anchors, 2),
            "anchors_with_one": round(anchors_hit / anchors, 4),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--epochs", type=int, default=20, help="shuffled epochs per batch size")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    synth = (a.folder / "truth" / "mimic.jsonl").is_file()
    recs, skipped = read_synth(a.folder) if synth else read_iu(a.folder)
    if len(recs) < max(a.batch):
        sys.exit(f"{a.folder}: {len(recs)} usable reports, fewer than a batch")
    counts = Counter(r["findings"] for r in recs)
    texts = Counter(r["text"] for r in recs)
    result = {
        "source": "synthetic" if synth else "iu-xray",
        "reports": len(recs),
        "skipped": skipped,
        "normal_share": round(counts[frozenset()] / len(recs), 4),
        "distinct_finding_sets": len(counts),
        "reports_sharing_their_text": round(sum(c for c in texts.values() if c > 1) / len(recs), 4),
        "same_findings": measure(same_matrix(recs), a.batch, a.epochs, a.seed),
    }
    if not synth:
        result["finer_mesh"] = measure(same_matrix(recs, "fine"), a.batch, a.epochs, a.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

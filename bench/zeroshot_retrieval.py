"""Retrieval, zero-shot and explain peak rate: a pretrained run vs its random init.

Uses a synthetic MIMIC world laid out as bench/pretrain_retrieval.py does (WORK/raw with
truth/mimic.jsonl, WORK/prepared, WORK/run); run that script first (or point --work at its
folder). Prints one JSON line per measurement and the figure last:

    python bench/zeroshot_retrieval.py --work /tmp/cmcgns-bench-retrieval

Explain peak rate: for each test image and each report sentence naming a sided pleural
effusion, pneumothorax or consolidation, does the sentence's attention peak fall in the
correct half of the image (patient's right = image left)? Chance is about 0.5.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

FINDING_WORDS = {"pleural_effusion": "effusion", "pneumothorax": "pneumothorax",
                 "consolidation": "consolidation"}  # fmt: skip


def side_rate(run, prepared, truth: dict, rows: np.ndarray) -> tuple[float, int]:
    from cmcgns_cli.embedding.inputs import ImagePrep
    from cmcgns_cli.explain import sentence_peaks

    prep = ImagePrep(run.cfg, prepared.image_size)
    crop, size = run.crop_size, run.image_size
    off, ratio = (size - crop) // 2, prepared.image_size / size
    hits = total = 0
    m = prepared.manifest
    for a in range(0, len(rows), 32):
        chunk = [int(r) for r in rows[a : a + 32]]
        images = torch.stack([prep.tensor(np.asarray(prepared.images[r])) for r in chunk])
        sents = [[str(s) for s in m["sentences"].iat[r]] for r in chunk]
        for r, sl, pk in zip(chunk, sents, sentence_peaks(run, images, sents), strict=True):
            rec = truth.get(str(m["id"].iat[r]))
            if rec is None:
                continue
            mid = m["orig_w"].iat[r] * m["scale"].iat[r] / 2 + m["pad_x"].iat[r]
            for text, (x, _) in zip(sl, pk, strict=False):
                for f in rec["findings"]:
                    word = FINDING_WORDS.get(f["name"])
                    if not word or f["side"] not in ("left", "right") or word not in text:
                        continue
                    if not re.search(rf"\b{f['side']}\b", text) or "no " in text:
                        continue
                    px = (x + 0.5 + off) * ratio
                    total += 1
                    hits += (px < mid) == (f["side"] == "right")
    return hits / max(total, 1), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmcgns-bench-retrieval"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from cmcgns_cli.data.prepared import open_prepared
    from cmcgns_cli.downstream.retrieval import evaluate_retrieval
    from cmcgns_cli.downstream.zeroshot import evaluate_zeroshot
    from cmcgns_cli.embedding.runs import open_run

    data, run_dir = args.work / "prepared", args.work / "run"
    dev = torch.device("cpu")
    out = {}
    for name, ri in (("pretrained", False), ("random_init", True)):
        r = evaluate_retrieval(data, run_dir, dev, random_init=ri)["metrics"]
        z = evaluate_zeroshot("zeroshot-mimic", data, run_dir, dev, random_init=ri)["metrics"]
        out[name] = {"retrieval": r, "zeroshot_mimic": z}
        print(json.dumps({name: out[name]}), flush=True)
    truth_path = args.work / "raw" / "truth" / "mimic.jsonl"
    if truth_path.is_file():
        truth = {}
        for ln in truth_path.read_text().splitlines():
            rec = json.loads(ln)
            truth[rec["image_id"]] = rec
        prepared = open_prepared(data)
        rows = prepared.split_indices("test")
        for name, ri in (("pretrained", False), ("random_init", True)):
            loaded = open_run(run_dir, random_init=ri)
            if not loaded.model.spatial_tokens:  # channel-view tokens: no map over the image
                skip = {"explain_side_rate": None, "skipped": "model.local_tokens=channel_view"}
                print(json.dumps({name: skip}), flush=True)
                continue
            rate, n = side_rate(loaded, prepared, truth, rows)
            out[name]["explain_side_rate"] = rate
            print(json.dumps({name: {"explain_side_rate": rate, "sentences": n}}), flush=True)
    p, r = out["pretrained"], out["random_init"]
    print(
        f"i2t R@1 {p['retrieval']['i2t_R@1']:.3f} vs {r['retrieval']['i2t_R@1']:.3f}; "
        f"zero-shot macro AUROC {p['zeroshot_mimic']['macro_auroc']:.3f} vs "
        f"{r['zeroshot_mimic']['macro_auroc']:.3f}; explain side rate "
        f"{p.get('explain_side_rate', float('nan')):.3f} vs "
        f"{r.get('explain_side_rate', float('nan')):.3f} (pretrained vs random init)"
    )


if __name__ == "__main__":
    main()

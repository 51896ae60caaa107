"""``pretrain-text``'s data side: the report corpus (a prepared dataset or a reports file
through the report parser), BERT masking (Devlin et al., 2019) and padded batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.errors import BadInputError

MASK_PROB, MASK_TOKEN, RANDOM_TOKEN = 0.15, 0.8, 0.1
HOLDOUT_EVERY = 10  # --reports: every 10th usable report scores, the rest train


def read_corpus(data: Path | None, reports: Path | None) -> dict[str, Any]:
    """``{"train": [report text], "validate": [...], "source": {...}, "skipped": {reason: n}}``.

    A report's text is its sentences joined by spaces. Raises BadInputError when neither or
    both sources are given, or when no report is usable."""
    if (data is None) == (reports is None):
        raise BadInputError("give one of --data PREPARED or --reports FILE")
    skipped: dict[str, int] = {}
    if data is not None:
        from cmcgns_cli.data.prepared import open_prepared

        prepared = open_prepared(data)
        if "sentences" not in prepared.manifest.columns:
            raise BadInputError(f"{Path(data) / 'manifest.parquet'}: no 'sentences' column")
        split = prepared.manifest["split"].astype(str)
        texts = [" ".join(map(str, s)) for s in prepared.manifest["sentences"]]
        train = [t for t, s in zip(texts, split, strict=True) if s == "train" and t.strip()]
        val = [t for t, s in zip(texts, split, strict=True) if s == "validate" and t.strip()]
        source = {
            "data": str(Path(data).resolve()),
            "sha256": _sha(Path(data) / "manifest.parquet"),
        }
    else:
        from cmcgns_cli.data.report_files import read_reports
        from cmcgns_cli.data.reports import report_sentences

        usable = []
        for _, text in read_reports(str(reports)):
            sents, reason = report_sentences(text, min_words=1)
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                usable.append(" ".join(sents))
        val = usable[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY] if len(usable) >= HOLDOUT_EVERY else []
        train = [
            t
            for i, t in enumerate(usable)
            if len(usable) < HOLDOUT_EVERY or (i + 1) % HOLDOUT_EVERY
        ]
        source = {"reports": str(Path(reports).resolve()), "sha256": _sha(Path(reports))}
    if not train:
        raise BadInputError(f"{data or reports}: no usable report to train on")
    return {"train": train, "validate": val, "source": source, "skipped": skipped}


def _sha(path: Path) -> str:
    from cmcgns_cli.checksum import sha256_file

    return sha256_file(path)


def mask_tokens(
    ids: torch.Tensor, special: torch.Tensor, tok: Any, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a padded batch ``ids`` long (B, L); ``special`` bool (B, L) marks
    [CLS] / [SEP] / padding (never chosen). Returns ``(inputs, labels)``: labels are -100
    except at the chosen positions. Draws from ``gen`` only (CPU generator).

    A batch whose 15 % draw chose no token at all (a few short reports: two words are left
    unchosen with probability 0.85^2 = 0.72) gets one of its maskable tokens chosen, drawn
    uniformly: without any label the cross-entropy is 0 / 0 = NaN and the run stopped on a
    "non-finite loss". Other batches are drawn exactly as before."""
    chosen = (torch.rand(ids.shape, generator=gen) < MASK_PROB) & ~special
    maskable = ~special
    if not bool(chosen.any()) and bool(maskable.any()):
        weights = maskable.reshape(-1).float()
        pick = int(torch.multinomial(weights, 1, generator=gen))
        chosen = chosen.reshape(-1).clone()
        chosen[pick] = True
        chosen = chosen.reshape(ids.shape)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (roll < MASK_TOKEN)] = int(tok.mask_token_id)
    swap = chosen & (roll >= MASK_TOKEN) & (roll < MASK_TOKEN + RANDOM_TOKEN)
    inputs[swap] = torch.randint(len(tok), ids.shape, generator=gen)[swap]
    return inputs, labels


def pad_batches(encoded: list[list[int]], order: list[int], size: int, pad: int) -> list[Any]:
    """Token-id lists ``encoded`` taken in ``order``, ``size`` at a time, each batch a long
    (B, L_max) tensor padded with ``pad`` on the right."""
    out = []
    for start in range(0, len(order), size):
        rows = [encoded[i] for i in order[start : start + size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for j, r in enumerate(rows):  # collate: one copy per row, not a forward pass
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
        out.append(ids)
    return out

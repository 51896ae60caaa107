"""Shared helpers for the model tests: a tiny config and hand-made batches."""

from __future__ import annotations

import torch

from cmcgns_cli.config import Config, apply_overrides, preset


def tiny_config(variant: str = "authors", **loss: object) -> Config:
    cfg = preset("tiny")
    cfg.model.embed_dim = 16
    cfg.model.decoder_channels = 16
    cfg.loss.num_clusters = 4
    apply_overrides(cfg, {"loss": {"variant": variant}}, source="test")
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg


def make_batch(
    num_sentences: list[int], size: int = 64, length: int = 40, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Reports with ``num_sentences[b]`` sentences of 3..5 tokens; [CLS]/[SEP]/padding = -1."""
    g = torch.Generator().manual_seed(seed)
    b = len(num_sentences)
    ids = torch.zeros(b, length, dtype=torch.long)
    am = torch.zeros(b, length, dtype=torch.long)
    si = torch.full((b, length), -1, dtype=torch.long)
    for i, n in enumerate(num_sentences):
        pos = 1
        ids[i, 0] = 2  # [CLS]
        for s in range(n):
            k = int(torch.randint(3, 6, (1,), generator=g))
            ids[i, pos : pos + k] = torch.randint(5, 1000, (k,), generator=g)
            si[i, pos : pos + k] = s
            pos += k
        ids[i, pos] = 3  # [SEP]
        am[i, : pos + 1] = 1
    images = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    return {
        "images": images,
        "input_ids": ids,
        "attention_mask": am,
        "sentence_index": si,
        "num_sentences": torch.tensor(num_sentences),
    }

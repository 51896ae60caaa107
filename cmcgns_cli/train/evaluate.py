"""Load a pretrain run and score image-report retrieval on a split (bench scripts, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.data.tokenize import load_tokenizer, token_cache
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train.retrieval import validation_top1
from cmcgns_cli.train.run import build_model, load_run_config


def load_run(
    run: str | Path, *, weights: str = "best", random_init: bool = False
) -> tuple[Any, torch.nn.Module, Any]:
    """(config, model, tokenizer) of a run; ``weights`` is best or last.

    ``random_init`` gives the same architecture at the run's initial weights (same seed,
    same construction order as the run itself), i.e. the untrained baseline.
    """
    run = Path(run)
    cfg, extra = load_run_config(run)
    tok = load_tokenizer(run / ckpt.TOKENIZER)
    vocab = int(extra.get("vocab_size", len(tok)))
    torch.manual_seed(int(cfg.train.seed))
    model = build_model(cfg, vocab if cfg.model.text_encoder == "scratch" else None)
    if not random_init:
        path = run / (f"{ckpt.BEST}/{ckpt.MODEL}" if weights == "best" else ckpt.MODEL)
        model.load_state_dict(ckpt.load_weights(path), strict=True)
    model.eval()
    return cfg, model, tok


def retrieval(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    random_init: bool = False,
    weights: str = "best",
    batch_size: int = 64,
) -> dict[str, float]:
    """Image-to-report / report-to-image top-1 over the pairs of ``split``."""
    cfg, model, tok = load_run(run, weights=weights, random_init=random_init)
    prepared = open_prepared(data)
    cache = token_cache(prepared, tok, fallback_dir=Path(run))
    ds = PairedDataset(prepared, split, cache, cfg.data, train=False)
    return validation_top1(model, ds, batch_size=batch_size, device=torch.device("cpu"))

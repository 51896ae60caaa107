"""Exported bundles (``cmcgns export``): recognise one, verify its SHA256SUMS, load its model.

A bundle is a folder that can be uploaded to a model hub as it is::

    config.json                the run's config.json plus a "bundle" block (format, weights
                               source, prepared image size, relative folder names)
    model.safetensors          the whole model (the run's best/ weights, else its last)
    image_encoder.safetensors  the image encoder with stock torchvision / timm keys
    text_encoder/              the BERT in Hugging Face format (AutoModel.from_pretrained)
    tokenizer/                 its tokenizer (AutoTokenizer.from_pretrained)
    README.md                  model card with YAML front matter
    train_ids.txt              manifest ids of the training pairs, one a line
    SHA256SUMS                 ``sha256  path`` for every other file (``sha256sum -c`` format)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# re-exported: callers import these from here
from cmcgns_cli.checksum import SUMS, is_bundle, sha256_file, verify_sums, write_sums  # noqa: F401
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.runtime import quiet_transformers  # noqa: F401  (re-exported)

BUNDLE_FORMAT = 1


def load_bundle(root: Path) -> tuple[Any, torch.nn.Module, Any, dict[str, Any]]:
    """``(config, model (eval mode, CPU), tokenizer, config.json extra)`` of a verified bundle.

    The text encoder is built from the bundle's ``text_encoder/`` (not from the path it was
    trained from, which need not exist here), then ``model.safetensors`` is loaded strictly."""
    from cmcgns_cli.data.tokenize import load_tokenizer
    from cmcgns_cli.train import checkpoint as ckpt
    from cmcgns_cli.train.run import build_model, load_run_config

    root = Path(root)
    verify_sums(root)
    cfg, extra = load_run_config(root)
    info = extra["bundle"]
    if int(info.get("format", 0)) != BUNDLE_FORMAT:
        raise BadInputError(
            f"{root / 'config.json'}: bundle format {info.get('format')!r}, this cmcgns reads "
            f"format {BUNDLE_FORMAT}"
        )
    tok = load_tokenizer(root / info.get("tokenizer", "tokenizer"))
    cfg.model.text_encoder = str(root / info.get("text_encoder", "text_encoder"))
    cfg.model.image_weights = None  # the bundle's own weights follow
    with quiet_transformers():  # the unused BERT pooler is dropped: no "MISSING" report
        model = build_model(cfg, None)
    model.load_state_dict(ckpt.load_weights(root / ckpt.MODEL), strict=True)
    model.eval()
    return cfg, model, tok, extra

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

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.checksum import sha256_file  # re-exported: callers import it from here
from cmcgns_cli.errors import BadInputError

SUMS = "SHA256SUMS"
BUNDLE_FORMAT = 1


def is_bundle(path: Path) -> bool:
    """True when ``path/config.json`` carries a ``bundle`` block."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("bundle"), dict)


def write_sums(root: Path) -> Path:
    """Write ``SHA256SUMS`` listing every file below ``root`` (sorted, POSIX paths)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUMS)
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n" for p in files]
    out = root / SUMS
    out.write_text("".join(lines), encoding="utf-8")
    return out


def verify_sums(root: Path) -> int:
    """Check every file listed in ``root/SHA256SUMS``; return how many were checked.

    Raises ``BadInputError`` naming the first file that is missing or whose digest differs,
    or the SHA256SUMS file itself when it is absent or malformed."""
    sums = Path(root) / SUMS
    if not sums.is_file():
        raise BadInputError(f"{sums}: missing; the bundle cannot be verified")
    n = 0
    for i, line in enumerate(sums.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BadInputError(f"{sums}: line {i + 1} is not 'SHA256  PATH'")
        path = Path(root) / name.lstrip("*")
        if not path.is_file():
            raise BadInputError(f"{path}: listed in {SUMS} but missing from the bundle")
        if sha256_file(path) != digest:
            raise BadInputError(
                f"{path}: checksum mismatch with {SUMS} (the file is damaged or was changed)"
            )
        n += 1
    if n == 0:
        raise BadInputError(f"{sums}: lists no file")
    return n


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (stderr stays for our own lines)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


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

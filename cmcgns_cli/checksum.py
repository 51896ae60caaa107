"""File checksums, at the bottom of the package so that any layer may use them.

``sha256_file`` fingerprints the token cache (``data/tokenize.py``), the weights a
fine-tuning run starts from (``downstream/encoder.py``) and every file of an exported
bundle; ``write_sums`` / ``verify_sums`` keep a bundle's ``SHA256SUMS`` (``sha256sum -c``
format) and ``is_bundle`` recognises one, so that ``pretrain --init-from`` can check a
bundle without importing the library floor (``bundle.py`` re-exports all four). It imports
only ``errors`` from the package.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cmcgns_cli.errors import BadInputError


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 (FIPS 180-4) of the file at ``path``, read in 1 MiB blocks.

    Returns 64 lowercase hex characters. Raises ``OSError`` (``FileNotFoundError``,
    ``IsADirectoryError``, ...) when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SUMS = "SHA256SUMS"


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

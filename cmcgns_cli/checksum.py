"""File checksums, at the bottom of the package so that any layer may use them.

``sha256_file`` fingerprints the token cache (``data/tokenize.py``), the weights a
fine-tuning run starts from (``downstream/encoder.py``) and every file of an exported
bundle (``bundle.py``, ``export.py``); it imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import os


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

"""Reading configuration values: TOML / YAML override files, ``--set section.key=value``
items, and coercing each value to its field's declared type (one-line errors naming the
source and key; no silent truncation or conversion of ``none``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from cmcgns_cli.errors import BadInputError


def coerce_optional(declared: str, value: Any, where: str) -> Any:
    """Read ``value`` for a field declared ``int | None`` / ``float | None`` / ``str | None``;
    ``none`` / ``null`` (any case) or an empty string mean None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none", "null"}):
        return None
    for name, kind in (("int", int), ("float", float)):
        if declared.startswith(name):
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise BadInputError(f"{where}: expected {name} or none, got {value!r}")
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise BadInputError(f"{where}: expected {name} or none, got {value!r}") from None
    return value


def coerce(current: Any, value: Any, where: str) -> Any:
    """Read ``value`` as the type of a non-optional field's ``current`` value (bool, int,
    float or str). Raises BadInputError naming ``where`` for none, a bool given for a number,
    a fractional float for an int, or text that does not parse."""
    if value is None:  # only optional fields (read by coerce_optional) take none
        raise BadInputError(f"{where}: expected {type(current).__name__}, got none")
    if isinstance(current, bool):
        if isinstance(value, str):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
            raise BadInputError(f"{where}: expected true/false, got {value!r}")
        return bool(value)
    if isinstance(current, int | float) and isinstance(value, bool):
        raise BadInputError(f"{where}: expected {type(current).__name__}, got {value!r}")
    if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
        raise BadInputError(f"{where}: expected int, got {value!r}")  # not silently truncated
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{where}: expected {type(current).__name__}, got {value!r}") from None
    return value if not isinstance(current, str) else str(value)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML override file into a nested mapping."""
    if not path.is_file():
        raise BadInputError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise BadInputError(f"{path}: config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot parse config: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: config must be a mapping of sections")
    return data


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """Turn ``section.key=value`` strings into a nested override mapping."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise BadInputError(f"--set {item!r}: expected section.key=value")
        out.setdefault(section, {})[name] = _parse_scalar(value.strip())
    return out


def _parse_scalar(text: str) -> Any:
    if text.lower() in {"none", "null"}:
        return None
    return text


SCRATCH_POSITIONS = 512  # the scratch BERT's max_position_embeddings (model/text.py)


def check_ranges(cfg: Any) -> None:
    """Refuse settings no run can train with, in one line naming the key, before any work.

    ``cfg`` is a resolved :class:`~cmcgns_cli.config.Config`. ``train.lr`` must be a finite
    number above 0 (torch's optimizers raise ValueError on a negative one and a NaN trains
    nothing); ``data.max_length`` at least 3 tokens ([CLS], one word piece, [SEP]: with 2 a
    report is its special tokens alone) and, for the scratch BERT, at most its 512 position
    embeddings (more fails inside the BERT's forward).

    Raises BadInputError."""
    import math

    lr = float(cfg.train.lr)
    if not math.isfinite(lr) or lr <= 0:
        raise BadInputError(f"--lr (train.lr) {lr}: the learning rate must be a number above 0")
    length = int(cfg.data.max_length)
    if length < 3:
        raise BadInputError(
            f"data.max_length {length}: a report needs at least 3 tokens ([CLS], a word "
            "piece, [SEP])"
        )
    if cfg.model.text_encoder == "scratch" and length > SCRATCH_POSITIONS:
        raise BadInputError(
            f"data.max_length {length}: the scratch BERT has {SCRATCH_POSITIONS} positions; "
            f"give at most {SCRATCH_POSITIONS}"
        )

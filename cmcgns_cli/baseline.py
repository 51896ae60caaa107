"""Fair baselines: a random-init encoder shaped like a given run, and comparing only like
with like.

* ``finetune --checkpoint none --like RUN``: the random-init encoder gets RUN's architecture
  and input size (RUN: a pretrain run directory, an exported bundle or a finetuned folder),
  so the baseline differs from the pretrained encoder in its weights only.
* ``compare``: two finetuned heads whose encoders differ in architecture or input size are
  refused unless ``--allow-different`` (a difference in score would then also measure the
  architecture or the resolution).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import input_folder

SHAPED = "a finetuned head, a pretrain run or an exported bundle"


def encoder_shape(path: str | Path, option: str | None = None) -> dict[str, Any]:
    """``{"arch", "image_size", "crop_size"}`` of the image encoder in ``path``: a finetuned
    folder (finetune.json's ``encoder``), or a pretrain run / exported bundle (config.json's
    ``model.image_encoder`` and ``data.image_size`` / ``data.crop_size``, in px).

    Raises:
        BadInputError: ``path`` is none of these, naming it (and ``option``, e.g. ``"--like"``,
            when given).
    """
    path = input_folder(path, SHAPED, option=option, needs=("finetune.json", "config.json"))
    finetuned, config = path / "finetune.json", path / "config.json"
    try:
        if finetuned.is_file():
            enc = json.loads(finetuned.read_text(encoding="utf-8"))["encoder"]
            return {k: enc[k] for k in ("arch", "image_size", "crop_size")}
        cfg = json.loads(config.read_text(encoding="utf-8"))  # input_folder found one of two
        return {
            "arch": cfg["model"]["image_encoder"],
            "image_size": int(cfg["data"]["image_size"]),
            "crop_size": int(cfg["data"]["crop_size"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path}: cannot read its encoder's shape ({exc})") from None


def like(
    run: Path, arch: str | None, input_size: tuple[int, int] | None
) -> tuple[str, tuple[int, int]]:
    """``--like RUN``: the architecture and (resize, crop) for a random-init encoder.

    Raises:
        BadInputError: ``--arch`` or ``--input-size`` given too and different from RUN's.
    """
    shape = encoder_shape(run, "--like")
    size = (int(shape["image_size"]), int(shape["crop_size"]))
    if arch is not None and arch != shape["arch"]:
        raise BadInputError(f"--like {run}: it uses {shape['arch']}, --arch says {arch}")
    if input_size is not None and tuple(input_size) != size:
        raise BadInputError(
            f"--like {run}: its input size is {size[0]},{size[1]} px, --input-size says "
            f"{input_size[0]},{input_size[1]}"
        )
    return str(shape["arch"]), size


def check_comparable(run_a: Path, run_b: Path, allow_different: bool) -> list[str]:
    """What differs between the encoders of two finetuned folders (``[]``: nothing).

    Raises:
        BadInputError: they differ and ``allow_different`` is off, saying what differs.
    """
    a, b = encoder_shape(run_a), encoder_shape(run_b)
    diffs = [f"{k} {a[k]} vs {b[k]}" for k in ("arch", "image_size", "crop_size") if a[k] != b[k]]
    if diffs and not allow_different:
        raise BadInputError(
            f"{run_a} and {run_b}: the encoders differ ({', '.join(diffs)}), so the score "
            "difference would also measure that; retrain one with finetune --like, or pass "
            "--allow-different"
        )
    return diffs

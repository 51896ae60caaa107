"""The switches outside the loss, the training recipe (augmentation, optimizer, gradient
clipping, the stage-2 start) and the model wiring around the loss terms (local image tokens,
image pooling, projection init, decoder upsampling, the ViT CM-MIR path), and how
``loss.variant`` sets them.

The authors' run (arXiv 2506.11674, as their public code trains): a random 224 crop of the
256 letterbox and nothing else, Adam with the weight decay added to the gradient, no gradient
clipping, stage 2 continuing from the last stage-1 weights; channel-view local tokens, an
attention pool, their projection init, corner-aligned decoder upsampling. The clean form is
this project's earlier recipe and textbook wiring (true spatial tokens, average pooling,
PyTorch's default Linear init, bilinear upsampling at pixel centres). Used by
:mod:`cmcgns_cli.config` while it applies each override layer.
"""

from __future__ import annotations

from typing import Any

from cmcgns_cli.errors import BadInputError

# the recipe's switches by variant: {variant: {section: {key: value}}}
RECIPE_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "authors": {
        "data": {"augment": "random_crop"},
        "train": {"grad_clip": 0.0, "optimizer": "adam", "stage2_init": "last"},
        "model": {
            "local_tokens": "channel_view",
            "image_pool": "attention",
            "proj_init": "authors",
            "decoder_align_corners": True,
            "vit_cmmir": "authors",
        },
    },
    "clean": {
        "data": {"augment": "resized_crop"},
        "train": {"grad_clip": 1.0, "optimizer": "adamw", "stage2_init": "best"},
        "model": {
            "local_tokens": "spatial",
            "image_pool": "mean",
            "proj_init": "default",
            "decoder_align_corners": False,
            "vit_cmmir": "clean",
        },
    },
}


def qualified_keys(overrides: dict[str, Any]) -> set[str]:
    """``section.key`` of every recipe or wiring key a layer sets (a later variant keeps
    them)."""
    return {
        f"{section}.{key}"
        for section, values in overrides.items()
        if section in ("data", "train", "model") and isinstance(values, dict)
        for key in values
    }


def apply_recipe_variant(cfg: Any, explicit: set[str]) -> None:
    """Set the recipe switches of ``cfg.loss.variant`` (``authors`` / ``clean``; ``custom``
    sets nothing) on the Config ``cfg`` in place, except the ``section.key`` names in
    ``explicit`` (set by the user in this layer or an earlier one)."""
    for section, values in RECIPE_VARIANTS.get(cfg.loss.variant, {}).items():
        for key, value in values.items():
            if f"{section}.{key}" not in explicit:  # an explicit setting beats the shorthand
                setattr(getattr(cfg, section), key, value)


# allowed values of the recipe's string switches
_RECIPE_CHOICES: dict[str, tuple[str, ...]] = {
    "data.augment": ("random_crop", "resized_crop", "none"),
    "train.optimizer": ("adam", "adamw"),
    "train.stage2_init": ("last", "best"),
    "model.local_tokens": ("channel_view", "spatial"),
    "model.image_pool": ("attention", "mean"),
    "model.proj_init": ("authors", "default"),
    "model.vit_cmmir": ("authors", "clean"),
    "model.global_norm": ("none", "batchnorm"),
}


def check_recipe_switches(cfg: Any, source: str) -> None:
    """Raise BadInputError (naming ``source``, one line) when a recipe switch of the Config
    ``cfg`` holds a value outside its choices, or ``train.grad_clip`` is negative or NaN."""
    for qualified, choices in _RECIPE_CHOICES.items():
        section, key = qualified.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            hint = (
                " (the former true is resized_crop, false is none)"
                if qualified == "data.augment" and str(value).lower() in {"true", "false"}
                else ""
            )
            raise BadInputError(
                f"{source}: {qualified} must be one of {', '.join(choices)}, not {value!r}{hint}"
            )
    if not cfg.train.grad_clip >= 0:
        raise BadInputError(
            f"{source}: train.grad_clip must be 0 (no clipping) or a positive norm, "
            f"not {cfg.train.grad_clip}"
        )


def old_recipe(sections: dict[str, Any]) -> None:
    """What a run saved before the recipe switches existed ran: the resized crop with
    jitter (``augment: true``), AdamW, stage 2 from the best stage-1 weights."""
    data, train = sections.get("data"), sections.get("train")
    if isinstance(data, dict) and isinstance(data.get("augment"), bool):
        data["augment"] = "resized_crop" if data["augment"] else "none"
    if isinstance(train, dict) and train:
        train.setdefault("optimizer", "adamw")
        train.setdefault("stage2_init", "best")

"""The named settings tables of the configuration, data only: the loss ``VARIANTS``
(``loss.variant``: the authors' computation or the clean textbook form) and the four presets
(``--preset``: ``tiny``, ``small``, ``paper-resnet50``, ``paper-vit``) as overrides of the
dataclass defaults. :mod:`cmcgns_cli.config` applies them; this module imports nothing of the
project, so that it stays below every module that reads it.
"""

from __future__ import annotations

from typing import Any

# The places where the authors' code and the usual (ClusterNS / SimCSE) form of the method
# differ. "authors" reproduces the authors' computation; "clean" is the textbook form.
VARIANTS: dict[str, dict[str, Any]] = {
    "authors": {
        "centroid_update": "sum",
        "hard_negative_mode": "multiply",
        "false_negative_denominator": "keep",
        "bml_reduction": "all_pairs",
        "mask_mode": "channels",
        "recon_region": "all",
        "recon_final_relu": True,
        "idle_centroid_restart": 0,
        "cluster_gate": "init",
        "local_text_scope": "rank",
    },
    "clean": {
        "centroid_update": "mean",
        "hard_negative_mode": "additive_block",
        "false_negative_denominator": "remove",
        "bml_reduction": "masked_pairs",
        "mask_mode": "patches",
        "recon_region": "masked",
        "recon_final_relu": False,
        "idle_centroid_restart": 50,
        "cluster_gate": "spread",
        "local_text_scope": "global",
    },
}


PRESET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        # no augmentation: a random 128 px crop of the 144 px image held a fresh 2 + 1 epoch
        # run at or above log(batch) on the demo's world (bench/plateau_study.py)
        "data": {
            "image_size": 144,
            "crop_size": 128,
            "max_length": 96,
            "workers": 0,
            "augment": "none",
        },
        "model": {
            "image_encoder": "resnet_tiny",
            "text_encoder": "scratch",
            "text_hidden": 64,
            "text_layers": 2,
            "text_heads": 2,
            "text_intermediate": 128,
            "vocab_size": 1000,
            "embed_dim": 64,
            "decoder_channels": 32,
            "global_norm": "batchnorm",
        },
        "loss": {"num_clusters": 16},
        "train": {
            "stage1_epochs": 3,
            "stage2_epochs": 1,
            "batch_size": 32,
            "lr": 1e-3,
            "warmup_epochs": 0.2,
            "warmup_start_lr": 1e-5,
            "log_every": 5,
            "amp": False,
        },
    },
    "small": {
        "data": {"image_size": 256, "crop_size": 224, "max_length": 128},
        "model": {
            "image_encoder": "resnet18",
            "text_encoder": "scratch",
            "text_hidden": 256,
            "text_layers": 4,
            "text_heads": 4,
            "text_intermediate": 1024,
            "vocab_size": 8000,
            "embed_dim": 128,
            "decoder_channels": 64,
            "global_norm": "batchnorm",
        },
        "loss": {"num_clusters": 64},
        "train": {"stage1_epochs": 5, "stage2_epochs": 5, "batch_size": 48, "lr": 2e-4},
    },
    "paper-resnet50": {},
    "paper-vit": {"model": {"image_encoder": "vit_b16"}},
}

PRESETS: tuple[str, ...] = tuple(PRESET_OVERRIDES)

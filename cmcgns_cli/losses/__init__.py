"""Losses: global InfoNCE, local image/text alignment, cross-modal k-means negatives, CM-MIR."""

from cmcgns_cli.losses.global_loss import GatherFn, global_infonce, identity_gather
from cmcgns_cli.losses.kmeans import CrossModalKMeans, farthest_point_init
from cmcgns_cli.losses.local_image import Predictor, local_image_loss
from cmcgns_cli.losses.local_text import (
    LocalTextLoss,
    bml_loss,
    false_negative_mask,
    hard_negative_from_similarities,
    hard_negative_logit,
    local_text_infonce,
)
from cmcgns_cli.losses.recon import (
    mask_local_features,
    random_keep_mask,
    reconstruction_loss,
    reconstruction_target,
)

__all__ = [
    "CrossModalKMeans",
    "GatherFn",
    "LocalTextLoss",
    "Predictor",
    "bml_loss",
    "false_negative_mask",
    "farthest_point_init",
    "global_infonce",
    "hard_negative_from_similarities",
    "hard_negative_logit",
    "identity_gather",
    "local_image_loss",
    "local_text_infonce",
    "mask_local_features",
    "random_keep_mask",
    "reconstruction_loss",
    "reconstruction_target",
]

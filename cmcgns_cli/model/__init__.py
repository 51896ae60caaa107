"""Model: image/text encoders, sentence pooling, local cross-attention, CM-MIR decoder, CMCGNS."""

from cmcgns_cli.model.cmcgns import CMCGNS
from cmcgns_cli.model.encoders import (
    ImageEncoder,
    build_image_encoder,
    export_image_encoder_state,
    load_image_weights,
)
from cmcgns_cli.model.text import build_text_encoder

__all__ = [
    "CMCGNS",
    "ImageEncoder",
    "build_image_encoder",
    "build_text_encoder",
    "export_image_encoder_state",
    "load_image_weights",
]

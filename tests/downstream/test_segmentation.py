"""Our encoder weights in smp's U-Net; the mixed loss; the ViT decoder's output shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.downstream.encoder import EncoderSource
from cmcgns_cli.downstream.segmentation import SegNet, load_into_unet, mixed_loss, smp_unet
from cmcgns_cli.model.encoders import build_image_encoder


@pytest.mark.parametrize("arch", ["resnet50", "resnet_tiny"])
def test_pretrained_encoder_loads_into_smp_unet_with_no_missing_keys(arch: str) -> None:
    encoder = build_image_encoder(ModelConfig(image_encoder=arch, image_weights=None))
    state = encoder.backbone.state_dict()
    unet = smp_unet(arch)
    own = set(unet.encoder.state_dict())
    assert own == {k for k in state if not k.startswith("fc.")}
    result = nn.Module.load_state_dict(
        unet.encoder, {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False
    )
    assert result.missing_keys == [] and result.unexpected_keys == []
    load_into_unet(unet, state)
    key = "layer1.0.conv1.weight"
    assert torch.equal(unet.encoder.state_dict()[key], state[key])
    # and the U-Net encoder computes exactly our encoder's stage outputs
    if arch == "resnet_tiny":
        x = torch.randn(1, 3, 64, 64)
        encoder.eval(), unet.eval()
        with torch.no_grad():
            assert torch.allclose(unet.encoder(x)[-1], encoder.stages(x)["layer4"], atol=1e-5)


def test_mixed_loss_is_ten_focal_plus_dice() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :4] = 1
    perfect = mixed_loss(target * 40 - 20, target)
    assert float(perfect["loss"]) < 1e-3
    zero = mixed_loss(torch.zeros(1, 1, 8, 8), target)
    focal = 0.25 * torch.log(torch.tensor(2.0))  # (1 - 0.5)^2 * log 2 at every pixel
    dice = 1 - (2 * 0.5 * 16 + 1) / (0.5 * 64 + 16 + 1)
    assert float(zero["loss"]) == pytest.approx(10 * float(focal) + dice, rel=1e-5)


def test_vit_gets_progressive_upsampling_decoder() -> None:
    encoder = build_image_encoder(ModelConfig(image_encoder="vit_tiny", image_weights=None))
    source = EncoderSource("none", "vit_tiny", 64, 64, None, None)
    net = SegNet(encoder, source)
    with torch.no_grad():
        logits = net.decode(net.encode(torch.zeros(1, 3, 64, 64)), 64)
    assert logits.shape == (1, 1, 64, 64)
    assert not any(k.startswith("vit.") for k in net.head_state(full=False))

"""Image encoders: stock torchvision ResNets and timm ViTs, wrapped to give global + local features.

The wrapped module is kept *stock* (``ImageEncoder.backbone``) so that its ``state_dict`` keys
match ``torchvision.models.resnet50()`` / timm's ``vit_base_patch16_224`` exactly. The
classification head (``fc`` / ``head``) is kept with its stock shape so that an exported state
loads into a stock model with ``strict=True``; it is frozen (``requires_grad=False``) and unused
in the forward pass, so DDP does not see it as an unused trainable parameter.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model.weight_files import first_difference, read_weights

IMAGE_ENCODERS: tuple[str, ...] = ("resnet50", "resnet18", "resnet_tiny", "vit_b16", "vit_tiny")
LOCAL_TOKEN_LAYOUTS: tuple[str, ...] = ("channel_view", "spatial")


def map_to_tokens(fmap: Tensor, layout: str) -> Tensor:
    """A (B, C, h, w) feature map as P = h * w local tokens (B, P, C).

    ``spatial``: token p is the C-vector at grid cell p (row-major), a true image patch.
    ``channel_view``: the authors' ResNet tokens: the map, read in its logical (B, C, h, w)
    order, is cut into P consecutive runs of C values, so token p holds the values
    ``fmap.flatten(1)[:, p * C:(p + 1) * C]``: about C / P whole channels over every grid
    cell, not a patch. Both are defined on the logical order, so a channels_last map gives
    the same tokens as a contiguous one. Raises ``ValueError`` for an unknown layout.
    """
    b, c, h, w = fmap.shape
    if layout == "spatial":
        return fmap.flatten(2).transpose(1, 2)
    if layout == "channel_view":
        # reshape follows the logical index order whatever the strides (copies if it must),
        # where the authors' bare view assumes a contiguous NCHW map
        return fmap.reshape(b, h * w, c)
    raise ValueError(f"local token layout must be one of {LOCAL_TOKEN_LAYOUTS}, not {layout!r}")


class ImageEncoder(nn.Module):
    """A stock backbone plus the feature extraction the method needs.

    Attributes: ``backbone`` (the stock module), ``kind`` ("resnet" | "vit"), ``out_dim``
    (channels of the raw features), ``stride`` (input pixels per patch).
    """

    def __init__(self, name: str, backbone: nn.Module, kind: str, out_dim: int, stride: int):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.kind = kind
        self.out_dim = out_dim
        self.stride = stride
        head = backbone.fc if kind == "resnet" else backbone.head
        head.requires_grad_(False)  # kept for strict state-dict compatibility only

    @staticmethod
    def _as_rgb(images: Tensor) -> Tensor:
        # Chest X-rays are grayscale; stock backbones (and ImageNet weights) expect 3 channels.
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def stages(self, images: Tensor) -> dict[str, Tensor]:
        """ResNet stage outputs ``stem, layer1..layer4`` (for detection / U-Net decoders)."""
        if self.kind != "resnet":
            raise BadInputError(
                f"stage outputs are only defined for ResNet encoders, not {self.name}"
            )
        b = self.backbone
        x = self._as_rgb(images)
        out: dict[str, Tensor] = {}
        x = b.relu(b.bn1(b.conv1(x)))
        out["stem"] = x
        x = b.maxpool(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(b, name)(x)
            out[name] = x
        return out

    def feature_map(self, images: Tensor) -> Tensor:
        """The ResNet's last conv map (B, C, h, w) (layer4); ResNet encoders only."""
        return self.stages(images)["layer4"]

    def features(
        self, images: Tensor, layout: str = "spatial"
    ) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``(global_raw (B, C), local_raw (B, P, C), (h, w))`` before any projection; for a
        ResNet the global vector is the map's average and ``layout`` orders the local tokens
        (see :func:`map_to_tokens`; a ViT's patch tokens are spatial whatever ``layout``)."""
        if self.kind == "resnet":
            fmap = self.feature_map(images)  # (B, C, h, w): the last conv map
            h, w = fmap.shape[-2:]
            return fmap.mean(dim=(2, 3)), map_to_tokens(fmap, layout), (int(h), int(w))
        x = self._as_rgb(images)
        tokens = self.backbone.forward_features(x)  # (B, prefix + P, C), final norm applied
        n_prefix = self.backbone.num_prefix_tokens
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        return tokens[:, 0], tokens[:, n_prefix:], grid

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        return self.features(images)


def _resnet(name: str) -> nn.Module:
    from torchvision.models import resnet18, resnet50
    from torchvision.models.resnet import BasicBlock, ResNet

    if name == "resnet50":
        return resnet50(weights=None)
    if name == "resnet18":
        return resnet18(weights=None)
    return ResNet(BasicBlock, [1, 1, 1, 1])  # resnet_tiny: torchvision keys, 512-d output


def _vit(name: str) -> nn.Module:
    import timm

    timm_name = "vit_base_patch16_224" if name == "vit_b16" else "vit_tiny_patch16_224"
    # pretrained=False: never download; dynamic_img_size lets tests feed small images while
    # the state-dict keys and shapes stay those of the stock 224 model.
    return timm.create_model(timm_name, pretrained=False, dynamic_img_size=True)


def build_image_encoder(cfg: ModelConfig) -> ImageEncoder:
    """Build the encoder named by ``cfg.image_encoder``; load ``cfg.image_weights`` if given."""
    name = cfg.image_encoder
    if name in ("resnet50", "resnet18", "resnet_tiny"):
        backbone = _resnet(name)
        enc = ImageEncoder(name, backbone, "resnet", backbone.fc.in_features, 32)
    elif name in ("vit_b16", "vit_tiny"):
        backbone = _vit(name)
        enc = ImageEncoder(name, backbone, "vit", backbone.embed_dim, 16)
    else:
        raise BadInputError(
            f"unknown image encoder {name!r}; choose one of {', '.join(IMAGE_ENCODERS)}"
        )
    if cfg.image_weights:
        load_image_weights(enc, cfg.image_weights)
    return enc


def export_image_encoder_state(encoder: ImageEncoder) -> dict[str, Tensor]:
    """The backbone's state dict, keyed exactly like the stock torchvision/timm model.

    It includes the (frozen) stock head, so ``torchvision.models.resnet50().load_state_dict(
    state, strict=True)`` works. Tensors are detached, contiguous CPU copies (safetensors-ready).
    """
    return {
        k: v.detach().cpu().contiguous().clone() for k, v in encoder.backbone.state_dict().items()
    }


def load_image_weights(encoder: ImageEncoder, path: str | Path) -> None:
    """Load a plain state dict (.pth/.pt via ``torch.load(weights_only=True)`` or .safetensors,
    read by :func:`~cmcgns_cli.model.weight_files.read_weights`).

    Only the classification head may be missing (e.g. a headless export); anything else
    missing, unexpected or mis-shaped raises :class:`BadInputError` naming the file and the
    first differing tensor (exit 2).
    """
    path = Path(path)
    state, _ = read_weights(path)  # unwrapped from a checkpoint's state_dict / model / ...
    own = encoder.backbone.state_dict()
    head_prefix = ("fc.",) if encoder.kind == "resnet" else ("head.",)
    first = first_difference(state, own, head_prefix)
    if first is not None:
        missing = sum(1 for k in own if k not in state and not k.startswith(head_prefix))
        unexpected = sum(1 for k in state if k not in own)
        shapes = sum(1 for k in state if k in own and state[k].shape != own[k].shape)
        raise BadInputError(
            f"{path}: weights do not match image encoder {encoder.name}: first differing "
            f"tensor {first} ({missing} missing, {unexpected} unexpected, {shapes} of another "
            "shape); check --set model.image_encoder"
        )
    encoder.backbone.load_state_dict(state, strict=False)

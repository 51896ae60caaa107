"""The CM-CGNS model: encoders, local cross-attention, CM-MIR decoder, and its losses.

Batch contract (from the training collate), all tensors:
  images          float (B, 3 | 1, H, W), normalised with mean 0.5 / std 0.5 (values in [-1, 1])
  input_ids       long (B, L);  attention_mask long (B, L)
  sentence_index  long (B, L): -1 for [CLS]/[SEP]/padding, s in 0..S-1 for tokens of sentence s
  num_sentences   long (B,)
  sentence_slots  optional plain int: S of the padded sentence layout (e.g. the same S on all ranks)
Without ``sentence_slots``, S = max(num_sentences) when ``num_sentences`` is a CPU tensor (free to
read), else ``cfg.data.max_sentences`` (a static bound: no host sync). Slots beyond a report's
sentences are masked everywhere, so S changes no loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcgns_cli.config import Config
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.losses.global_loss import (
    COLLAPSE_KEYS,
    GatherFn,
    global_infonce,
    identity_gather,
    mean_pairwise_cos,
)
from cmcgns_cli.losses.local_image import Predictor, local_image_loss
from cmcgns_cli.losses.local_text import HEALTH_KEYS, LocalTextLoss
from cmcgns_cli.losses.recon import (
    mask_local_features,
    reconstruction_loss,
    reconstruction_target,
)
from cmcgns_cli.model.attention import LocalCrossAttention
from cmcgns_cli.model.decoder import CMMIRDecoder
from cmcgns_cli.model.encoders import build_image_encoder, map_to_tokens
from cmcgns_cli.model.global_norm import build_global_norm, unit_vectors
from cmcgns_cli.model.image_pool import AttentionPool2d, resnet_grid
from cmcgns_cli.model.text import TextEncoder

LOSS_KEYS = (
    "loss",
    "global",
    "local_image",
    "local_text",
    "cluster_fn",
    "recon",
    "acc_i2t",
    "acc_t2i",
)
# cluster health of the batch (see losses.local_text.cluster_health); NaN until the k-means
# is used (the training records turn NaN into null)
CLUSTER_KEYS = (*HEALTH_KEYS, "cluster_feature_cos")


class CMCGNS(nn.Module):
    """``forward(batch, stage)`` -> loss dict; stage 1 = losses 1-4, stage 2 adds CM-MIR."""

    def __init__(self, cfg: Config, vocab_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        mc, dim = cfg.model, cfg.model.embed_dim
        self.image_encoder = build_image_encoder(mc)
        self.text_encoder = TextEncoder(mc, vocab_size)
        self.image_global_proj = nn.Linear(self.image_encoder.out_dim, dim)
        self.image_local_proj = nn.Linear(self.image_encoder.out_dim, dim)
        # model.global_norm: centre the global image vectors over the batch before the L2 norm
        self.image_global_norm = build_global_norm(mc.global_norm, dim)
        self.resnet = self.image_encoder.kind == "resnet"
        self.image_pool: AttentionPool2d | None = None
        if self.resnet and mc.image_pool == "attention":
            side = resnet_grid(cfg.data.crop_size, self.image_encoder.stride)
            self.image_pool = AttentionPool2d(self.image_encoder.out_dim, (side, side))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.loss.temperature_init)))
        self.cross_attention = LocalCrossAttention(dim)
        self.predictor = Predictor(dim, mc.predictor_hidden)
        self.local_text_loss = LocalTextLoss(cfg.loss, dim)
        self.decoder = CMMIRDecoder(
            self.image_encoder.kind,
            dim,
            mc.decoder_channels,
            cfg.data.crop_size,
            self.image_encoder.stride,
            final_relu=cfg.loss.recon_final_relu,
            align_corners=mc.decoder_align_corners,
            vit_cmmir=mc.vit_cmmir,
        )
        self.max_sentences = cfg.data.max_sentences
        self.gather: GatherFn = identity_gather
        if mc.proj_init == "authors":
            # the authors' init, drawn last so that every other module starts the same under
            # both forms; "default" keeps PyTorch's U(+-1/sqrt(in)), std 1/sqrt(3 in)
            projections = (self.image_global_proj, self.image_local_proj)
            for lin in (*projections, self.text_encoder.token_proj):
                nn.init.normal_(lin.weight, std=lin.in_features**-0.5)

    @property
    def kmeans(self):  # noqa: ANN201 - CrossModalKMeans | None
        return self.local_text_loss.kmeans

    def set_distributed_hooks(self, gather=None, reduce=None, broadcast=None) -> None:  # noqa: ANN001
        """Install the cross-rank hooks (see losses.global_loss.GatherFn, losses.kmeans)."""
        if gather is not None:
            self.gather = gather
            self.local_text_loss.gather = gather
        if self.kmeans is not None:
            if reduce is not None:
                self.kmeans.reduce = reduce
            if broadcast is not None:
                self.kmeans.broadcast = broadcast

    # -- encoders ------------------------------------------------------------------------
    @property
    def mask_mode(self) -> str:
        """CM-MIR's masking rule: ``loss.mask_mode``, except for a ViT under
        ``model.vit_cmmir = authors``, which drops whole tokens and rescales ("tokens")."""
        if not self.resnet and self.cfg.model.vit_cmmir == "authors":
            return "tokens"
        return self.cfg.loss.mask_mode

    @property
    def spatial_tokens(self) -> bool:
        """Whether local token p is the image patch at grid cell p (false for the authors'
        ResNet ``channel_view`` tokens, which mix every cell)."""
        return not (self.resnet and self.cfg.model.local_tokens == "channel_view")

    def require_spatial_tokens(self, what: str) -> None:
        """Raise :class:`BadInputError` (exit 2) when the run's local tokens are not image
        patches, so that ``what`` (a map over the image) would be meaningless."""
        if not self.spatial_tokens:
            raise BadInputError(
                f"{what} needs spatial local tokens, but this run was trained with "
                "model.local_tokens=channel_view (the authors' ResNet tokens mix all positions); "
                "pretrain with --set model.local_tokens=spatial (or --variant clean)"
            )

    def encode_image(self, images: Tensor) -> dict[str, object]:
        """``global`` (B, D) and ``local`` (B, P, D), L2-normalised; ``gauge`` (B, D), the
        global vectors as evaluation gives them, detached (model/global_norm.py); ``grid``
        (h, w).

        ResNet: the local tokens follow ``model.local_tokens`` and the global vector
        ``model.image_pool`` (the authors' attention pool, or the map's average)."""
        if self.resnet:
            fmap = self.image_encoder.feature_map(images)
            local = map_to_tokens(fmap, self.cfg.model.local_tokens)
            g = fmap.mean(dim=(2, 3)) if self.image_pool is None else self.image_pool(fmap)
            grid = (int(fmap.shape[-2]), int(fmap.shape[-1]))
        else:
            g, local, grid = self.image_encoder.features(images)
        glob, gauge = unit_vectors(self.image_global_norm, self.image_global_proj(g))
        return {
            "global": glob,
            "gauge": gauge,  # ``global`` as evaluation gives it, detached (collapse gauge)
            "local": F.normalize(self.image_local_proj(local), dim=-1),
            "grid": grid,
        }

    def sentence_slots(self, num_sentences: Tensor) -> int:
        """S of the padded layout: the batch max if it can be read without a device sync."""
        if num_sentences.device.type == "cpu":
            return max(int(num_sentences.max()), 1) if num_sentences.numel() else 1
        return self.max_sentences

    def encode_text(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        sentence_index: Tensor,
        num_sentences: Tensor,
        s_max: int | None = None,
    ) -> dict[str, Tensor]:
        """``global`` (B, D) unit vectors, ``sentences`` (B, S, D) (means of unit token
        vectors, not re-normalised: norm <= 1; padding = 0) and ``sentence_mask`` (B, S) bool."""
        s = self.sentence_slots(num_sentences) if s_max is None else s_max
        dev = input_ids.device
        return self.text_encoder(
            input_ids, attention_mask, sentence_index.to(dev), num_sentences.to(dev), s
        )

    def _encode(self, batch: dict[str, Tensor]) -> tuple[dict[str, object], dict[str, Tensor]]:
        img = self.encode_image(batch["images"])
        txt = self.encode_text(
            batch["input_ids"],
            batch["attention_mask"],
            batch["sentence_index"],
            batch["num_sentences"],
            batch.get("sentence_slots"),
        )
        return img, txt

    @torch.no_grad()
    def attention_maps(self, batch: dict[str, Tensor]) -> Tensor:
        """Sentence-to-patch sigmoid attention (B, S, P); padding sentences' rows are 0.
        Raises :class:`BadInputError` for a run whose local tokens are not patches."""
        self.require_spatial_tokens("a sentence-to-patch attention map")
        img, txt = self._encode(batch)
        return self.cross_attention.image_to_text_weights(
            img["local"], txt["sentences"], txt["sentence_mask"]
        )

    # -- losses --------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor], stage: int = 1) -> dict[str, Tensor]:
        """The training objective of one batch (the module docstring gives the batch).

        ``loss`` = w_global * global + w_local_image * local_image + w_local_text *
        (local_text + bml_weight * cluster_fn) [+ w_recon * recon when ``stage`` >= 2]: the
        four terms of arXiv 2506.11674, combined and weighted as the authors' code does (all
        weights 1 by default, CM-MIR only in the second stage). Every value is a float32
        scalar tensor: the loss terms of ``LOSS_KEYS`` (a term switched off is 0), the
        batch's global retrieval accuracies ``acc_i2t`` / ``acc_t2i`` (shares in [0, 1]),
        ``kmeans_ready`` (1.0 once the cross-modal k-means is initialised), the cluster
        health of ``CLUSTER_KEYS`` (NaN until the k-means is used), the collapse gauges of
        ``COLLAPSE_KEYS`` (mean pairwise cosine of the batch's global vectors) and ``logit_scale``
        (the exponentiated learned inverse temperature, detached). Only ``loss`` carries
        gradients meant for ``backward``.
        """
        img, txt = self._encode(batch)
        return self._objective(batch, img, txt, stage)

    def forward_with_globals(
        self, batch: dict[str, Tensor], stage: int = 1
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """:meth:`forward`'s loss dict and, from the same encoding, the batch's global image
        and report embeddings (two (B, D) unit vectors, row i of each from pair i). The
        validation pass scores retrieval on them instead of encoding the batch again."""
        img, txt = self._encode(batch)
        return self._objective(batch, img, txt, stage), img["global"], txt["global"]

    def _objective(
        self, batch: dict[str, Tensor], img: dict[str, object], txt: dict[str, Tensor], stage: int
    ) -> dict[str, Tensor]:
        """The loss dict of :meth:`forward` from the encoders' outputs."""
        lc = self.cfg.loss
        local, sents, mask = img["local"], txt["sentences"], txt["sentence_mask"]
        zero = local.new_zeros((), dtype=torch.float32)
        out = dict.fromkeys(LOSS_KEYS, zero)
        out["kmeans_ready"] = zero
        out.update(dict.fromkeys(CLUSTER_KEYS, torch.full_like(zero, float("nan"))))
        out["logit_scale"] = self.logit_scale.detach().exp()
        # the gauges read the vectors as evaluation gives them (model.global_norm's batch
        # statistics would make any training batch look spread)
        for key, vectors in zip(COLLAPSE_KEYS, (img["gauge"], txt["gauge"]), strict=True):
            out[key] = mean_pairwise_cos(vectors)
        total = zero

        if lc.w_global > 0:
            g, out["acc_i2t"], out["acc_t2i"] = global_infonce(
                img["global"], txt["global"], self.logit_scale, self.gather, lc.logit_scale_max
            )
            out["global"], total = g, total + lc.w_global * g

        do_recon = stage >= 2 and lc.w_recon > 0
        if lc.w_local_image > 0 or lc.w_local_text > 0 or do_recon:
            t2i, i2t = self.cross_attention(local, sents, mask)
            if lc.w_local_image > 0:
                li = local_image_loss(local, t2i, self.predictor)
                out["local_image"], total = li, total + lc.w_local_image * li
            if lc.w_local_text > 0:
                d = sents.shape[-1]
                lt = self.local_text_loss(
                    sents.reshape(-1, d), i2t.reshape(-1, d), mask.reshape(-1)
                )
                out["local_text"], out["cluster_fn"] = lt["loss"], lt["bml"]
                out["kmeans_ready"] = lt["ready"].float()
                out.update({k: lt[k] for k in CLUSTER_KEYS})
                total = total + lc.w_local_text * (lt["loss"] + lc.bml_weight * lt["bml"])
            if do_recon:
                images = batch["images"]
                masked, patch_masked = mask_local_features(local, lc.mask_ratio, self.mask_mode)
                pred = self.decoder(masked, t2i, img["grid"])
                r = reconstruction_loss(
                    pred,
                    reconstruction_target(images, tuple(pred.shape[-2:])),
                    patch_masked,
                    img["grid"],
                    lc.recon_region,
                    lc.recon_scale,
                )
                out["recon"], total = r, total + lc.w_recon * r
        out["loss"] = total
        return out

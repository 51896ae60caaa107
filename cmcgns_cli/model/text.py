"""Text side: the BERT encoder, sentence pooling by sentence index, attention pooling.

As in the authors' code (arXiv 2506.11674, text encoder): token features are projected to
``embed_dim``, L2-normalised per token and averaged per sentence (each token carries its sentence
index), WITHOUT re-normalising the average (its norm is below 1, smaller when the tokens
disagree); the global text vector is CLIP-style attention pooling over the report's sentences.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcgns_cli.config import ModelConfig
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.model.global_norm import build_global_norm, unit_vectors
from cmcgns_cli.runtime import quiet_transformers


def build_text_encoder(cfg: ModelConfig, vocab_size: int | None = None) -> nn.Module:
    """A Hugging Face BERT: built from ``cfg`` fields for ``"scratch"``, else loaded locally.

    The pooler is dropped (unused by the method; unused trainable parameters upset DDP).
    Hub ids are looked up in the local Hugging Face cache only: there is no network at run time.
    """
    from transformers import AutoModel, BertConfig, BertModel

    if cfg.text_encoder == "scratch":
        bert_cfg = BertConfig(
            vocab_size=int(vocab_size if vocab_size is not None else cfg.vocab_size),
            hidden_size=cfg.text_hidden,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            intermediate_size=cfg.text_intermediate,
            max_position_embeddings=512,
        )
        return BertModel(bert_cfg, add_pooling_layer=False)
    source = cfg.text_encoder
    local = Path(source).expanduser()
    try:
        # transformers' load report lists the MLM head a pretrain-text folder carries and the
        # pooler it lacks: expected, and read as an error by users, so it stays quiet
        with quiet_transformers():
            model = AutoModel.from_pretrained(
                str(local) if local.is_dir() else source, local_files_only=True
            )
    except Exception as exc:  # noqa: BLE001 - any failure here means "not available locally"
        if local.is_dir():
            raise BadInputError(f"{source}: cannot load a text encoder from it: {exc}") from None
        raise BadInputError(
            f"--text-encoder {source}: not a local directory and not in the local Hugging Face "
            "cache (nothing is downloaded); pass --text-encoder DIR (a local BERT directory) or "
            "use --preset tiny or small (scratch text encoder)"
        ) from None
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def sentence_mean(
    tokens: Tensor, sentence_index: Tensor, num_sentences: Tensor, s_max: int
) -> tuple[Tensor, Tensor]:
    """Segment mean of token features by sentence index into a padded ``(B, S_max, D)`` layout.

    ``sentence_index`` is -1 for tokens that belong to no sentence ([CLS]/[SEP]/padding); tokens
    of sentences ``>= s_max`` are ignored. Returns ``(sentences, mask)``; a sentence is valid if
    it is below ``num_sentences`` and owns at least one token (a fully truncated one is padding).
    Padding rows are exactly zero. One ``scatter_add`` over the flattened batch, no loop.
    """
    tokens = tokens.float()  # sum in fp32 even under bf16 autocast
    b, length, d = tokens.shape
    keep = (sentence_index >= 0) & (sentence_index < s_max)
    slot = torch.arange(b, device=tokens.device)[:, None] * s_max + sentence_index.clamp(min=0)
    slot = torch.where(keep, slot, torch.full_like(slot, b * s_max))  # dump slot for the rest
    sums = tokens.new_zeros(b * s_max + 1, d).index_add_(0, slot.reshape(-1), tokens.reshape(-1, d))
    counts = tokens.new_zeros(b * s_max + 1).index_add_(
        0, slot.reshape(-1), keep.reshape(-1).to(tokens.dtype)
    )
    sums, counts = sums[:-1].view(b, s_max, d), counts[:-1].view(b, s_max)
    mask = (counts > 0) & (torch.arange(s_max, device=tokens.device)[None] < num_sentences[:, None])
    means = sums / counts.clamp(min=1)[..., None]
    return means * mask[..., None], mask


class AttentionPool(nn.Module):
    """CLIP-style attention pooling (CLIP's ``AttentionPool2d`` without positional embedding),
    as the authors' code pools a report: the report's sentence vectors with their mean
    prepended as an extra first token, multi-head attention with separate q / k / v
    projections and an output projection, the output at the first position (the mean token
    is the query) is the report vector. ``sentences`` (B, S, D), ``mask`` (B, S) bool (padding
    sentences are excluded from the keys and the mean) -> (B, D). Parameters: 4 (D^2 + D)."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(
                f"attention pooling: embed_dim {dim} is not divisible by {heads} heads"
            )
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, sentences: Tensor, mask: Tensor) -> Tensor:
        """``sentences`` (B, S, D) float, ``mask`` (B, S) bool (True = a real sentence) ->
        report vectors (B, D), not normalised. A report without sentences pools its zero
        mean token alone."""
        b, _, d = sentences.shape
        h = self.heads
        n = mask.sum(1, keepdim=True).clamp(min=1).to(sentences.dtype)
        mean = (sentences * mask[..., None]).sum(1, keepdim=True) / n[..., None]
        tokens = torch.cat([mean, sentences], dim=1)  # (B, 1 + S, D)
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)  # (B, 1 + S) True = attend
        q = self.q_proj(mean).view(b, 1, h, d // h).transpose(1, 2)
        k = self.k_proj(tokens).view(b, -1, h, d // h).transpose(1, 2)
        v = self.v_proj(tokens).view(b, -1, h, d // h).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.c_proj(pooled.transpose(1, 2).reshape(b, d))


class TextEncoder(nn.Module):
    """BERT + token projection + per-token L2 norm + per-sentence mean + attention pooling
    (+ ``model.global_norm``). Returns ``global`` (B, D) unit vectors, ``gauge`` (B, D) (them
    as evaluation gives them, detached), ``sentences`` (B, S, D) (norm <= 1, padding rows 0)
    and ``sentence_mask`` (B, S) bool."""

    def __init__(self, cfg: ModelConfig, vocab_size: int | None = None):
        super().__init__()
        self.bert = build_text_encoder(cfg, vocab_size)
        hidden = int(self.bert.config.hidden_size)
        self.token_proj = nn.Linear(hidden, cfg.embed_dim)
        self.pool = AttentionPool(cfg.embed_dim, cfg.pool_heads)
        # model.global_norm: centre the report vectors over the batch before the L2 norm
        self.global_norm = build_global_norm(cfg.global_norm, cfg.embed_dim)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        sentence_index: Tensor,
        num_sentences: Tensor,
        s_max: int,
    ) -> dict[str, Tensor]:
        """Encode a batch of tokenised reports (as the authors' code, arXiv 2506.11674).

        ``input_ids`` / ``attention_mask`` long (B, L); ``sentence_index`` long (B, L): the
        sentence of each token, -1 for [CLS] / [SEP] / padding; ``num_sentences`` long (B,);
        ``s_max`` the S of the padded sentence layout. Returns ``global`` float32 (B, D),
        unit vectors (batch-normalised first under ``model.global_norm = batchnorm``);
        ``gauge`` float32 (B, D), ``global`` through the running statistics, detached (the
        collapse gauge; see model/global_norm.py); ``sentences`` float32 (B, S, D), the mean
        of each sentence's unit token vectors (norm <= 1, not re-normalised; padding rows 0);
        ``sentence_mask`` (B, S) bool.
        """
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        tokens = F.normalize(self.token_proj(hidden).float(), dim=-1)
        sents, mask = sentence_mean(tokens, sentence_index, num_sentences, s_max)
        glob, gauge = unit_vectors(self.global_norm, self.pool(sents, mask))
        return {
            "global": glob,
            "gauge": gauge,  # ``global`` as evaluation gives it, detached (collapse gauge)
            "sentences": sents,  # means of unit vectors, not re-normalised; padding rows are 0
            "sentence_mask": mask,
        }

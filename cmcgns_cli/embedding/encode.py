"""Batched embeddings: images (B, 1, H, W) and token batches -> normalised vectors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cmcgns_cli.data.paired import model_images


@torch.no_grad()
def image_embeddings(model: torch.nn.Module, images: torch.Tensor) -> dict[str, object]:
    """``global`` (B, D), ``local`` (B, P, D), ``grid`` of a grayscale batch (B, 1, H, W)."""
    x = images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images
    out = model.encode_image(x)
    out["global"] = F.normalize(out["global"].float(), dim=-1)
    return out


@torch.no_grad()
def text_embeddings(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, object]:
    """``global`` (B, D), ``sentences`` (B, S, D), ``sentence_mask`` (B, S); both embeddings
    L2-normalised (the model's sentence vectors are means of unit token vectors, norm <= 1;
    the outputs are unit vectors, ready for cosine search; padding rows stay 0)."""
    out = model.encode_text(
        batch["input_ids"],
        batch["attention_mask"],
        batch["sentence_index"],
        batch["num_sentences"],
    )
    out["global"] = F.normalize(out["global"].float(), dim=-1)
    out["sentences"] = F.normalize(out["sentences"].float(), dim=-1)
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``; a ``wire`` batch's 1-channel ``pixels`` become the model's
    ``images`` after the copy (``data.paired.model_images``)."""
    # num_sentences stays on the CPU: the model reads S from it without a device sync
    out = {k: (v if k == "num_sentences" else v.to(device)) for k, v in batch.items()}
    if "pixels" in out:
        out["images"] = model_images(out.pop("pixels"))
    return out


@torch.no_grad()
def prepared_image_embeddings(
    run, images: np.ndarray, rows: np.ndarray, batch_size: int = 64
) -> torch.Tensor:  # noqa: ANN001
    """Global embeddings (N, D) on the CPU of prepared images ``images[rows]`` (uint8 S x S),
    through the run's eval transform."""
    from cmcgns_cli.embedding.inputs import ImagePrep

    prep = ImagePrep(run.cfg, images.shape[1])
    out = []
    for a in range(0, len(rows), batch_size):
        x = torch.stack([prep.tensor(np.asarray(images[int(r)])) for r in rows[a : a + batch_size]])
        out.append(image_embeddings(run.model, x.to(run.device))["global"].cpu())
    return torch.cat(out) if out else torch.zeros(0, int(run.cfg.model.embed_dim))


@torch.no_grad()
def report_text_embeddings(run, texts: list[str], batch_size: int = 64) -> torch.Tensor:  # noqa: ANN001
    """Global embeddings (N, D) on the CPU of free-text reports or prompts (NaN rows when a
    text has no token)."""
    from cmcgns_cli.embedding.inputs import TextPrep, text_sentences

    tp = TextPrep(run.cfg, run.tok)
    dim = int(run.cfg.model.embed_dim)
    out = torch.full((len(texts), dim), float("nan"))
    for a in range(0, len(texts), batch_size):
        items = tp.items([text_sentences(t)[0] for t in texts[a : a + batch_size]])
        ok = [i for i, it in enumerate(items) if it is not None]
        if ok:
            emb = text_embeddings(
                run.model, to_device(tp.collate([items[i] for i in ok]), run.device)
            )
            out[[a + i for i in ok]] = emb["global"].cpu()
    return out

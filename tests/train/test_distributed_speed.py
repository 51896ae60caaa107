"""GPU speed switches, exercised on CPU: gradient checkpointing and torch.compile (eager
backend, fast) leave the loss and gradients unchanged; softmax attention goes through SDPA."""

from __future__ import annotations

import torch

from cmcgns_cli.config import preset
from cmcgns_cli.train import speed


def _model_and_batch():
    from cmcgns_cli.model.cmcgns import CMCGNS

    cfg = preset("tiny")
    cfg.data.crop_size = 64
    torch.manual_seed(0)
    model = CMCGNS(cfg, 50).eval()  # eval: no dropout, BN running stats (deterministic)
    g = torch.Generator().manual_seed(1)
    batch = {
        "images": torch.randn(4, 3, 64, 64, generator=g),
        "input_ids": torch.randint(5, 50, (4, 12), generator=g),
        "attention_mask": torch.ones(4, 12, dtype=torch.long),
        "sentence_index": torch.tensor([[-1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1]] * 4),
        "num_sentences": torch.tensor([3, 3, 3, 3]),
    }
    return cfg, model, batch


def _loss_and_grads(model, batch):
    out = model(batch, stage=2)
    out["global"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out["global"].detach(), grads


def test_checkpointing_and_compile_keep_loss_and_gradients():
    cfg, model, batch = _model_and_batch()
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    keys = set(model.state_dict())
    cfg.train.grad_checkpoint = True
    cfg.train.compile = True
    cfg.train.compile_backend = "eager"
    done = speed.apply(model, cfg.train, torch.device("cpu"))
    assert done["grad_checkpoint"] > 0 and "text_encoder.bert" in done["compile"]
    assert set(model.state_dict()) == keys  # checkpoints keep their keys
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d | torch.nn.Dropout):
            m.eval()
    model.text_encoder.bert.eval()
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_softmax_attention_uses_sdpa(monkeypatch):
    cfg, model, batch = _model_and_batch()
    calls: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model.text_encoder.bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
    # every BERT layer's self-attention goes through the fused kernel once per forward:
    # (batch, heads, tokens, head width) queries
    bert = model.text_encoder.bert.config
    assert len(calls) == bert.num_hidden_layers, calls
    head = bert.hidden_size // bert.num_attention_heads
    assert set(calls) == {(4, bert.num_attention_heads, 12, head)}

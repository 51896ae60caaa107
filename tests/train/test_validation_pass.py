"""The validation pass encodes each batch once and reads the device once per pass, with the
same numbers as encoding twice and reading every term of every batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcgns_cli.config import preset
from cmcgns_cli.data import tokenize as tk
from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.model.cmcgns import CMCGNS
from cmcgns_cli.train.feed import BatchFeed
from cmcgns_cli.train.retrieval import global_embeddings, report_keys
from cmcgns_cli.train.validate import validate

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture(scope="module")
def parts(world, tmp_path_factory):
    prepared = open_prepared(world)
    sents = [s for row in prepared.manifest["sentences"] for s in row]
    tok = tk.train_wordpiece(sents, 300, tmp_path_factory.mktemp("tok") / "tok")
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    ds = PairedDataset(prepared, "validate", tk.token_cache(prepared, tok), cfg.data, train=False)
    torch.manual_seed(0)
    return CMCGNS(cfg, len(tok)), ds, tok.pad_token_id


def _feed(batch_size: int, pad: int) -> BatchFeed:
    return BatchFeed(torch.device("cpu"), batch_size, 1, 0, 0, pad, False, False, False)


def _counted(monkeypatch, model) -> dict:
    """Count host reads of any tensor and the model's image encodes."""
    calls = {"reads": 0, "encodes": 0}
    for name in READS:
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, **k):
            calls["reads"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    encode = type(model).encode_image

    def encode_image(self, images):
        calls["encodes"] += 1
        return encode(self, images)

    monkeypatch.setattr(type(model), "encode_image", encode_image)
    return calls


def _reference(model, ds, pad, batch_size, stage):
    """The pass as it was: a forward, a second encode for retrieval, every term read per
    batch and summed as a Python float."""
    from cmcgns_cli.train.retrieval import retrieval_top1

    feed = _feed(batch_size, pad)
    model.eval()
    sums, n, imgs, txts = {}, 0, [], []
    with torch.no_grad():
        for batch in feed.loader(ds, train=False, epoch=0):
            batch = feed.to_device(batch)
            b = int(batch["images"].shape[0])
            out = model(batch, stage=stage)
            i, t = global_embeddings(model, batch)
            imgs.append(i)
            txts.append(t)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach().float().item()) * b
            n += b
    model.train()
    i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), report_keys(ds))
    val = {f"val_{k}": (None if v != v else v / n) for k, v in sums.items()}
    return {**val, "val_top1_i2t": i2t, "val_top1_t2i": t2i, "val_pairs": n}


def test_one_encode_per_batch_and_no_host_read_per_batch(parts, monkeypatch):
    model, ds, pad = parts
    keys = report_keys(ds)
    assert len(ds) == 14
    calls = _counted(monkeypatch, model)
    seen = {}
    for batch_size in (7, 2):  # 2 batches, then 7 batches of the same 14 pairs
        calls["reads"] = calls["encodes"] = 0
        validate(model, _feed(batch_size, pad), ds, keys, stage=2)
        seen[batch_size] = dict(calls)
    assert seen[7]["encodes"] == 2 and seen[2]["encodes"] == 7  # once per batch
    # 5 more batches cost at most 2 host reads each: the loader's CPU sentence counts (free)
    # and the text encoder library's mask check; every term of every batch was one read
    # (21 terms here), plus the second encode's
    assert seen[2]["reads"] - seen[7]["reads"] <= 2 * 5
    assert seen[7]["reads"] <= 2 * 2 + 6  # the pass's own: 1 for the terms, 4 for retrieval, 1 seed


def test_the_numbers_equal_the_two_encode_pass(parts):
    model, ds, pad = parts
    for stage in (1, 2):
        torch.manual_seed(3)  # the CM-MIR mask
        want = _reference(model, ds, pad, 4, stage)
        torch.manual_seed(3)
        got = validate(model, _feed(4, pad), ds, report_keys(ds), stage=stage)
        assert got.keys() == want.keys()
        for k, v in want.items():
            if v is None:
                assert got[k] is None, k
            else:
                assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
        assert np.isfinite(got["val_loss"]) and got["val_pairs"] == 14

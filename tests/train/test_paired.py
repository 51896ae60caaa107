from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cmcgns_cli.config import preset
from cmcgns_cli.data import tokenize as tk
from cmcgns_cli.data.paired import EpochSampler, PairedDataset, collate_paired, normalise_pixels
from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.errors import BadInputError


@pytest.fixture(scope="module")
def parts(world, tmp_path_factory):
    prepared = open_prepared(world)
    sents = [s for row in prepared.manifest["sentences"] for s in row]
    tok = tk.train_wordpiece(sents, 300, tmp_path_factory.mktemp("tok") / "tok")
    cfg = preset("tiny")
    cfg.data.image_size, cfg.data.crop_size = 64, 48
    cfg.data.augment = "random_crop"  # the authors' augmentation (the tiny preset has none)
    return prepared, tok, tk.token_cache(prepared, tok), cfg


def test_collate_follows_the_batch_contract(parts):
    prepared, tok, cache, cfg = parts
    ds = PairedDataset(prepared, "train", cache, cfg.data, train=True, seed=3)
    batch = collate_paired([ds[i] for i in range(5)], tok.pad_token_id)
    b, length = batch["input_ids"].shape
    assert batch["images"].shape == (5, 3, 48, 48) and batch["images"].dtype == torch.float32
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1
    assert torch.equal(batch["images"][:, 0], batch["images"][:, 2])
    for key in ("input_ids", "attention_mask", "sentence_index", "num_sentences", "index"):
        assert batch[key].dtype == torch.long
    assert batch["attention_mask"].shape == batch["sentence_index"].shape == (5, length)
    for i in range(5):
        ids, mask, sidx = (
            batch["input_ids"][i],
            batch["attention_mask"][i],
            batch["sentence_index"][i],
        )
        n = int(mask.sum())
        assert ids[0] == tok.cls_token_id and ids[n - 1] == tok.sep_token_id
        assert (ids[n:] == tok.pad_token_id).all() and (sidx[n:] == -1).all()
        assert sidx[0] == -1 and sidx[n - 1] == -1
        body = sidx[1 : n - 1]
        assert (body >= 0).all() and (body[1:] >= body[:-1]).all()
        assert int(body.max()) + 1 == int(batch["num_sentences"][i])
        row = int(batch["index"][i])
        kept = list(prepared.manifest["sentences"].iat[row])
        decoded = tok.decode(ids[1 : n - 1].tolist())
        assert decoded == " ".join(kept[: int(batch["num_sentences"][i])])


def test_augmentation_is_a_function_of_seed_epoch_row(parts):
    prepared, _, cache, cfg = parts
    a = PairedDataset(prepared, "train", cache, cfg.data, train=True, seed=1)
    b = PairedDataset(prepared, "train", cache, cfg.data, train=True, seed=1)
    assert torch.equal(a[4]["pixels"], b[4]["pixels"])
    b.set_epoch(1)
    assert not torch.equal(a[4]["pixels"], b[4]["pixels"])
    ev = PairedDataset(prepared, "validate", cache, cfg.data, train=False)
    assert torch.equal(ev[0]["pixels"], ev[0]["pixels"])
    img = torch.from_numpy(np.asarray(prepared.images[ev.rows[0]], dtype=np.float32)) / 255
    center = img[8:56, 8:56] * 2 - 1  # no resize needed at 64 px: a plain center crop
    torch.testing.assert_close(normalise_pixels(ev[0]["pixels"])[0], center)


def test_sampler_order_depends_only_on_seed_and_epoch():
    s = EpochSampler(50, seed=5)
    s.set_epoch(2)
    t = EpochSampler(50, seed=5)
    t.set_epoch(2)
    assert list(s) == list(t) and sorted(s) == list(range(50))
    t.set_epoch(3)
    assert list(s) != list(t)


def test_missing_split_and_empty_reports_are_bad_input(tmp_path, parts):
    _, tok, _, cfg = parts
    manifest = pd.DataFrame(
        {
            "id": ["a", "b"],
            "split": ["train", "train"],
            "patient_id": "p",
            "study_id": "s",
            "view": "PA",
            "sentences": [["x y."], []],
        }
    )
    root = write_prepared(
        tmp_path / "p", dataset="mimic", manifest=manifest, images=np.zeros((2, 64, 64), np.uint8)
    )
    prepared = open_prepared(root)
    cache = tk.token_cache(prepared, tok)
    ds = PairedDataset(prepared, "train", cache, cfg.data, train=True)
    assert len(ds) == 1 and ds.dropped == 1
    with pytest.raises(BadInputError, match="no rows in split 'validate'"):
        PairedDataset(prepared, "validate", cache, cfg.data, train=False)
    no_text = write_prepared(
        tmp_path / "q",
        dataset="chexpert",
        manifest=manifest.drop(columns="sentences"),
        images=np.zeros((2, 64, 64), np.uint8),
    )
    with pytest.raises(BadInputError, match="no 'sentences' column"):
        tk.token_cache(open_prepared(no_text), tok)

"""The Python API (`cm.load`): same vectors as the model's own forward, and the CLI's errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

import cmcgns_cli as cm
from cmcgns_cli.errors import BadInputError
from tests.data.rawfix import write_dicom
from tests.embed.test_embed import _inputs, _reference


def test_encode_images_and_reports_equal_the_model_forward(trained, tmp_path) -> None:
    data, run = trained
    p, rows, paths, _, _ = _inputs(data, tmp_path)
    img_ref, txt_ref = _reference(run, p, rows)
    model = cm.load(run, device="cpu")
    # paths and arrays mixed: the prepared images are already letterboxed at the run's size
    mixed = [str(paths[0]), np.asarray(p.images[rows[1]]), *map(str, paths[2:])]
    img = model.encode_images(mixed)
    assert img.dtype == np.float32 and img.shape == (len(rows), model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(img, img_ref["global"].numpy(), atol=1e-5)
    texts = [". ".join(str(s) for s in p.manifest["sentences"].iat[r]) for r in rows]
    txt = model.encode_reports(texts)
    np.testing.assert_allclose(txt, txt_ref["global"].numpy(), atol=1e-5)


def test_arrays_paths_and_dicom_share_one_preprocessing(trained, tmp_path) -> None:
    _, run = trained
    model = cm.load(run)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(48, 80), dtype=np.uint8)  # not square: letterboxed
    cv2.imwrite(str(tmp_path / "a.png"), arr)
    write_dicom(tmp_path / "m1.dcm", 255 - arr, photometric="MONOCHROME1")
    out = model.encode_images([arr, tmp_path / "a.png", tmp_path / "m1.dcm"])
    np.testing.assert_allclose(out[1], out[0], atol=1e-6)
    np.testing.assert_allclose(out[2], out[0], atol=1e-6)  # MONOCHROME1 inverted back
    # one input alone: a path or a 2-D array is one image, a stack (N, H, W) is N images
    assert model.encode_images(str(tmp_path / "a.png")).shape == (1, model.embed_dim)
    np.testing.assert_allclose(model.encode_images(arr), out[:1], atol=1e-6)
    assert model.encode_images(np.stack([arr, 255 - arr])).shape == (2, model.embed_dim)


def test_similarity_is_cosine() -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    sim = cm.Model.similarity(a, b)
    np.testing.assert_allclose(sim, cosine_similarity(a, b), atol=1e-6)
    assert sim[0, 0] == pytest.approx(0.8)  # (3*0 + 4*2) / (5 * 2)


def test_attention_matches_explain(trained, tmp_path) -> None:
    from cmcgns_cli.embedding.runs import open_run
    from cmcgns_cli.explain import attention_grid, make_batch

    data, run = trained
    p, rows, paths, _, _ = _inputs(data, tmp_path, n=1)
    model = cm.load(run)
    report = "Small left pleural effusion. Heart size is enlarged."
    att = model.attention(str(paths[0]), report)
    assert att.sentences == ["small left pleural effusion", "heart size is enlarged"]
    # resnet_tiny downsamples by 32: a 64 px crop gives a 2 x 2 grid
    assert att.maps.shape == (2, 2, 2) and att.maps.dtype == np.float32
    loaded = open_run(run)
    x = torch.from_numpy(att.image)[None, None]
    ref, grid = attention_grid(loaded, make_batch(loaded, x, [att.sentences]))
    assert grid == (2, 2)
    np.testing.assert_allclose(att.maps, ref[0].numpy(), atol=1e-6)
    assert [s for s, _ in att] == att.sentences


def test_errors_are_the_cli_messages(trained, tmp_path, cli) -> None:
    _, run = trained
    model = cm.load(run)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(BadInputError) as exc:
        model.encode_images([bad])
    res = cli("embed", "--checkpoint", run, "--images", bad)
    assert f"skipped image {exc.value}" in " ".join(res.stderr.split())
    with pytest.raises(BadInputError, match="expected a uint8 \\(H, W\\)"):
        model.encode_images([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(BadInputError, match=f"^{re.escape(str(tmp_path / 'nope'))}: not found$"):
        cm.load(tmp_path / "nope")
    res = cli("embed", "--checkpoint", tmp_path / "nope", "--reports", bad)
    assert res.exit_code == 2

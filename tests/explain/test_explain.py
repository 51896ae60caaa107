"""`cmcgns explain`: valid PNGs, and attention that peaks where the named finding is drawn."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.embedding.inputs import ImagePrep
from cmcgns_cli.embedding.runs import open_run
from cmcgns_cli.explain import sentence_peaks
from tests.train.worlds import FINDINGS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# where tests/train/worlds.py draws each finding, as a test on the peak (x, y) in [0, 1):
# the quadrant holding the finding (a uniformly random peak would score 0.25)
REGIONS = {
    0: ("left pleural effusion (image right, lower)", lambda x, y: x >= 0.5 and y >= 0.5),
    2: ("right upper lobe opacity (image left, upper)", lambda x, y: x < 0.5 and y < 0.5),
    4: ("right pneumothorax (image left, upper)", lambda x, y: x < 0.5 and y < 0.5),
}


def test_explain_writes_valid_pngs_and_json(trained, tmp_path, cli):
    data, run = trained
    p = open_prepared(data)
    row = int(p.split_indices("test")[0])
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.asarray(p.images[row]))
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: There is a left pleural effusion. The heart is enlarged.\n")
    out = tmp_path / "explain"
    res = cli("explain", "--checkpoint", run, "--image", image, "--report", report,
              "--out", out, "--device", "cpu", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert [s["sentence"] for s in info["sentences"]] == [
        "there is a left pleural effusion",
        "the heart is enlarged",
    ]
    for name in ["sentence_00.png", "sentence_01.png", "reconstruction.png"]:
        raw = (out / name).read_bytes()
        assert raw[:8] == PNG_MAGIC
        img = cv2.imread(str(out / name), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] >= 64 and img.std() > 1
    recon = cv2.imread(str(out / "reconstruction.png"))
    assert recon.shape[1] == 3 * recon.shape[0]  # original | masked | reconstruction
    assert json.loads((out / "explain.json").read_text())["sentences"][0]["cluster"] is not None
    # a bad image is bad input, not a crash
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    res = cli("explain", "--checkpoint", run, "--image", bad, "--report", "no effusion.",
              "--out", out)  # fmt: skip
    assert res.exit_code == 2 and "bad.png" in res.stderr


def peak_rate(run, data) -> tuple[float, int]:
    """Share of (image, finding sentence) pairs whose attention peak is in the finding's
    region, over the validate and test images of the world."""
    p = open_prepared(data)
    rows = np.concatenate([p.split_indices("validate"), p.split_indices("test")])
    prep = ImagePrep(run.cfg, p.image_size)
    hits = total = 0
    for a in range(0, len(rows), 32):
        chunk = rows[a : a + 32]
        images = torch.stack([prep.tensor(np.asarray(p.images[int(r)])) for r in chunk])
        sents = [[str(s) for s in p.manifest["sentences"].iat[int(r)]] for r in chunk]
        peaks = sentence_peaks(run, images, sents)
        size = images.shape[-1]
        for sl, pk in zip(sents, peaks, strict=True):
            for text, (x, y) in zip(sl, pk, strict=False):
                for f, (_, inside) in REGIONS.items():
                    if text in FINDINGS[f]:
                        total += 1
                        hits += bool(inside((x + 0.5) / size, (y + 0.5) / size))
    return hits / max(total, 1), total


@pytest.fixture(scope="module")
def localising_run(tmp_path_factory: pytest.TempPathFactory):
    """A 128 px drawn world (a 4 x 4 patch grid for the tiny ResNet; the shared 64 px run has
    only 2 x 2, too coarse to localise) and an 8 + 1 epoch tiny pretrain on it."""
    from cmcgns_cli.config import preset
    from cmcgns_cli.train.run import run_pretrain
    from tests.train.worlds import make_world

    root = tmp_path_factory.mktemp("localise")
    data = make_world(root / "data", n=400, size=128, seed=3, splits=(0.7, 0.1))
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 128
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 8, 1
    cfg.loss.num_clusters = 8
    cfg.model.local_tokens = "spatial"  # attention peaks are read on the patch grid
    # the training recipe the rates below were measured with, set explicitly
    cfg.data.augment, cfg.train.grad_clip = "resized_crop", 1.0
    cfg.train.optimizer, cfg.train.stage2_init = "adamw", "best"
    run_pretrain(cfg, data=data, out=root / "run", resume=None, nproc=1, as_json=True)
    return data, root / "run"


@pytest.mark.slow
def test_attention_peaks_inside_the_named_finding(localising_run):
    data, run_dir = localising_run
    trained_rate, n = peak_rate(open_run(run_dir), data)
    init_rate, _ = peak_rate(open_run(run_dir, random_init=True), data)
    print(f"peak-in-region rate over {n} sentences: pretrained {trained_rate:.3f}, "
          f"random init {init_rate:.3f}")  # fmt: skip
    # measured when written: pretrained 0.471, random init 0.182 over 121 sentences; with the
    # authors' objective as default 0.099 vs 0.273 (an expected failure then); since the tiny
    # preset batch-normalises the global vectors (model.global_norm) 0.496 vs 0.198 (the
    # same run with model.global_norm=none: 0.264 vs 0.198)
    assert n >= 40
    assert trained_rate >= init_rate + 0.15
    assert trained_rate > 0.25  # above a uniformly random peak too


def test_flat_attention_is_uninformative_and_energy_share_by_hand():
    import numpy as np
    import torch

    from cmcgns_cli.explain import FLAT_RELATIVE_RANGE, dropped_energy_share, is_uninformative

    base = np.full((4, 4), 0.5)
    nearly_flat = base.copy()
    nearly_flat[1, 2] += 0.5 * FLAT_RELATIVE_RANGE * 0.9  # range 4.5 % of the mean 0.5
    peaked = base.copy()
    peaked[1, 2] += 0.5 * FLAT_RELATIVE_RANGE * 1.5  # with the dip below: range 25 % of the mean
    peaked[0, 0] -= 0.05
    assert is_uninformative(nearly_flat) and not is_uninformative(peaked)
    # two patches, four channels; channels 1 and 3 dropped
    local = torch.tensor([[1.0, 2.0, 0.0, 2.0], [3.0, 0.0, 4.0, 0.0]])
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0])
    share = dropped_energy_share(local, local * keep)
    # patch 0: (4 + 4) / (1 + 4 + 4) = 8/9; patch 1: nothing in the dropped channels
    torch.testing.assert_close(share, torch.tensor([8 / 9, 0.0]))


def _channel_view_copy(run, dest):
    """The shared run as if trained with the authors' channel-view tokens (same weights)."""
    import shutil

    shutil.copytree(run, dest)
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["model"]["local_tokens"] == "spatial"
    cfg["model"]["local_tokens"] = "channel_view"
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_explain_and_grounding_refuse_a_channel_view_run(trained, tmp_path, cli):
    data, run = trained
    cv_run = _channel_view_copy(run, tmp_path / "cv-run")
    p = open_prepared(data)
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.asarray(p.images[int(p.split_indices("test")[0])]))
    res = cli("explain", "--checkpoint", cv_run, "--image", image, "--report", "no effusion.",
              "--out", tmp_path / "explain")  # fmt: skip
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "model.local_tokens=channel_view" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "explain").exists()  # refused before any work
    res = cli("evaluate", "--task", "grounding-rsna", "--data", data, "--checkpoint", cv_run,
              "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--task grounding-rsna needs spatial local tokens" in res.stderr

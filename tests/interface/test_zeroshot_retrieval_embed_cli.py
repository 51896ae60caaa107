"""zero-shot on chexpert / covidx / rsna, the retrieval 5x200 Precision@K branch and
`embed` with DICOM images and JSON Lines reports, through the CLI on the shared run.

Expected values are derived without the code under test: a zero-shot score is
cos(image, positive) - cos(image, negative), so swapping every class's positive and negative
prompts negates it and turns each AUROC a into exactly 1 - a; Precision@K is counted by hand
on a similarity matrix written here; a DICOM holding the same pixels as a PNG embeds the
same.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.downstream.zeroshot import DEFAULT_PROMPTS
from tests.interface.conftest import CHEXPERT5, COVIDX

TASKS = [
    ("zeroshot-chexpert", "chexpert", CHEXPERT5),
    ("zeroshot-covidx", "covidx", COVIDX),
    ("zeroshot-rsna", "rsna", ["Pneumonia"]),
]


def _zeroshot(cli, task: str, data: Path, run: Path, *extra) -> dict:
    res = cli("evaluate", "--task", task, "--data", data, "--checkpoint", run, "--json", *extra)
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def _swapped_prompts(classes: list[str], path: Path) -> Path:
    keys = [{"pneumonia": "Pneumonia"}.get(c, c) for c in classes]  # covidx's lower-case name
    swapped = {
        k: {"positive": DEFAULT_PROMPTS[k]["negative"], "negative": DEFAULT_PROMPTS[k]["positive"]}
        for k in keys
    }
    path.write_text(json.dumps(swapped))
    return path


# each evaluate bootstraps its AUROCs (1000 resamples through scikit-learn): about 30 s a call
@pytest.mark.slow
@pytest.mark.parametrize(("task", "fixture", "classes"), TASKS)
def test_zeroshot_tasks_score_each_class_and_swap_to_one_minus(
    task, fixture, classes, trained, cli, tmp_path, request
) -> None:
    data = request.getfixturevalue(fixture)
    run = trained[1]
    got = _zeroshot(cli, task, data, run)
    metrics = got["mean"]
    assert got["task"] == task
    assert got["metric"] == ("accuracy" if task == "zeroshot-covidx" else "macro_auroc")
    per_class = [metrics[c] for c in classes if metrics[c] is not None]
    assert per_class and all(0.0 <= v <= 1.0 for v in per_class)
    assert metrics["macro_auroc"] == pytest.approx(float(np.mean(per_class)))
    written = json.loads((run / "evaluate" / task / "metrics.json").read_text())
    assert written["mean"]["n"] == 20  # the test split of each fixture
    assert written["protocol"]["classes"] == classes
    swapped = _zeroshot(cli, task, data, run, "--prompts",
                        _swapped_prompts(classes, tmp_path / "swap.json"))["mean"]  # fmt: skip
    for c in classes:
        if metrics[c] is not None:
            assert swapped[c] == pytest.approx(1.0 - metrics[c], abs=1e-9), c


@pytest.mark.slow
def test_zeroshot_covidx_accuracy_is_the_argmax_class(trained, covidx, cli) -> None:
    """Accuracy lies on the 1/20 grid of the 20 test images and a wrong dataset is refused."""
    got = _zeroshot(cli, "zeroshot-covidx", covidx, trained[1])["mean"]
    assert round(got["accuracy"] * 20) == pytest.approx(got["accuracy"] * 20)
    res = cli("evaluate", "--task", "zeroshot-covidx", "--data", trained[0], "--checkpoint",
              trained[1])  # fmt: skip
    assert res.exit_code == 2 and "covidx" in res.stderr


def _p_at_k_by_hand(sims: np.ndarray, cls: np.ndarray, k: int) -> float:
    shares = []
    for i in range(len(sims)):
        top = sorted(range(sims.shape[1]), key=lambda j: -sims[i, j])[: min(k, sims.shape[1])]
        shares.append(sum(cls[j] == cls[i] for j in top) / len(top))
    return float(np.mean(shares))


def test_retrieval_5x200_precision_at_k_on_a_hand_made_case(trained, cli, tmp_path,
                                                            monkeypatch) -> None:  # fmt: skip
    """Six test pairs, two per class (Atelectasis, Cardiomegaly, Consolidation), and image /
    report vectors whose similarity matrix is written below."""
    data, run = trained
    p = open_prepared(data)
    cls = np.array([0, 0, 1, 1, 2, 2])
    labels = np.zeros((6, 5), dtype=np.float32)
    labels[np.arange(6), cls] = 1.0
    manifest = pd.DataFrame({
        "id": [f"t{i}" for i in range(6)], "split": "test", "patient_id": [f"p{i}" for i in
        range(6)], "study_id": [f"s{i}" for i in range(6)], "view": "PA",
        "sentences": [[f"report number {i} here"] for i in range(6)],
        "labels": [r.tolist() for r in labels]})  # fmt: skip
    prep = write_prepared(tmp_path / "prep", dataset="mimic", manifest=manifest,
                          images=np.asarray(p.images[:6]),
                          extra_meta={"label_names": CHEXPERT5})  # fmt: skip
    sims = np.array([
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],   # top 1 same class; top 5 holds 1 of 2
        [0.2, 0.1, 0.9, 0.3, 0.4, 0.5],   # top 1 another class
        [0.1, 0.2, 0.3, 0.9, 0.8, 0.4],   # top 1 same class
        [0.5, 0.6, 0.7, 0.1, 0.2, 0.3],   # top 1 same class (index 2)
        [0.9, 0.8, 0.1, 0.2, 0.3, 0.4],   # top 1 another class
        [0.1, 0.2, 0.3, 0.4, 0.9, 0.8],   # top 1 same class
    ])  # fmt: skip
    img, txt = np.eye(6, dtype=np.float32), sims.T.astype(np.float32)  # img @ txt.T == sims

    def fake(run_, ds, batch_size=64):
        assert len(ds) == 6
        return img, txt, np.arange(6)

    monkeypatch.setattr("cmcgns_cli.downstream.retrieval.pair_embeddings", fake)
    res = cli("evaluate", "--task", "retrieval", "--data", prep, "--checkpoint", run, "--json")
    assert res.exit_code == 0, res.stderr
    m = json.loads(res.stdout)["mean"]
    assert m["5x200_n"] == 6
    assert m["5x200_i2t_P@1"] == pytest.approx(4 / 6)  # queries 0, 2, 3, 5 hit
    for k in (1, 5, 10):
        assert m[f"5x200_i2t_P@{k}"] == pytest.approx(_p_at_k_by_hand(sims, cls, k))
        assert m[f"5x200_t2i_P@{k}"] == pytest.approx(_p_at_k_by_hand(sims.T, cls, k))
    # top 10 of 6 reports: every query sees its whole gallery, 2 of 6 of its class
    assert m["5x200_i2t_P@10"] == pytest.approx(2 / 6)


def _dicom(pixels: np.ndarray, path: Path, photometric: str = "MONOCHROME2") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.PatientID = "OT", "x"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_embed_dicom_images_and_jsonl_reports(trained, cli, tmp_path) -> None:
    data, run = trained
    p = open_prepared(data)
    pixels = [np.asarray(p.images[r]) for r in p.split_indices("test")[:3]]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, px in enumerate(pixels):
        cv2.imwrite(str(folder / f"im{i}.png"), px)
        _dicom(px, folder / f"im{i}.dcm")
    # MONOCHROME1 stores the inverted values: it must read back as the same picture
    _dicom(255 - pixels[0], folder / "inv0.dcm", "MONOCHROME1")
    assert pydicom.dcmread(folder / "inv0.dcm").PhotometricInterpretation == "MONOCHROME1"
    texts = ["The heart is enlarged. There is a left pleural effusion.",
             "FINDINGS: The lungs are clear. IMPRESSION: No acute process."]  # fmt: skip
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n"
                             for i, t in enumerate(texts)) + "\n")  # fmt: skip
    plain = tmp_path / "reports.txt"
    plain.write_text("\n".join(texts) + "\n")
    out = tmp_path / "emb.parquet"
    res = cli("embed", "--checkpoint", run, "--images", folder, "--reports", jsonl, "--out", out,
              "--device", "cpu")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    df = pd.read_parquet(out)
    assert df["error"].isna().all()
    images = df[df.kind == "image"].set_index("id")
    assert len(images) == 7

    def vec(name: str) -> np.ndarray:
        return np.asarray(images.loc[str(folder / name), "embedding"], dtype=np.float32)

    for i in range(3):
        np.testing.assert_allclose(vec(f"im{i}.dcm"), vec(f"im{i}.png"), atol=1e-5)
    np.testing.assert_allclose(vec("inv0.dcm"), vec("im0.png"), atol=1e-5)
    assert not np.allclose(vec("im0.png"), vec("im1.png"), atol=1e-3)
    reports = df[df.kind == "report"].reset_index(drop=True)
    assert reports["id"].tolist() == ["r0", "r1"]  # ids from the JSON Lines, blank line skipped
    res = cli("embed", "--checkpoint", run, "--reports", plain, "--format", "jsonl",
              "--device", "cpu")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(rows) == 2
    for i in range(2):
        np.testing.assert_allclose(np.asarray(reports.embedding[i], dtype=np.float32),
                                   np.asarray(rows[i]["embedding"], dtype=np.float32),
                                   atol=1e-5)  # fmt: skip

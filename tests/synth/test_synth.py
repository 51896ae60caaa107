"""The synthetic world, checked with independent readers (pandas, pydicom, cv2)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.synth import write_world
from cmcgns_cli.synth.anatomy import sample_anatomy, sample_pose
from cmcgns_cli.synth.findings import sample_pathology
from cmcgns_cli.synth.render import render_image
from tests.standards import CHEXPERT_CSV_LABELS as CHEXPERT_LABELS
from tests.standards import MIMIC_CSV_LABELS as MIMIC_LABELS

N, SIZE = 14, 128


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, N, seed=7, image_size=SIZE)
    return out


def truth(world: Path, layout: str) -> list[dict]:
    return [json.loads(x) for x in (world / "truth" / f"{layout}.jsonl").read_text().splitlines()]


def test_same_seed_same_bytes(world: Path, tmp_path: Path) -> None:
    write_world(tmp_path, N, seed=7, image_size=SIZE)
    a = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert a == b and len(a) > 100
    for rel in a:
        assert (world / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_layouts_are_independent(world: Path, tmp_path: Path) -> None:
    write_world(tmp_path, N, seed=7, layouts=["covidx"], image_size=SIZE)
    for p in (tmp_path / "covidx").rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (world / p.relative_to(tmp_path)).read_bytes()


def test_bad_arguments() -> None:
    with pytest.raises(BadInputError):
        write_world(Path("/tmp/nowhere"), 0, 0)
    with pytest.raises(BadInputError):
        write_world(Path("/tmp/nowhere"), 2, 0, layouts=["mimicc"])


def test_mimic_tables_and_files(world: Path) -> None:
    root = world / "mimic-cxr-jpg"
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    chex = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    neg = pd.read_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz")
    assert list(meta.columns[:7]) == [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
    ]
    assert len(meta.columns) == 12
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert list(chex.columns) == ["subject_id", "study_id", *MIMIC_LABELS] == list(neg.columns)
    assert len(chex) == N and chex.study_id.nunique() == N
    assert set(split.split) == {"train", "validate", "test"}
    assert set(meta.ViewPosition.fillna("")) >= {"PA", "AP", "LATERAL"}
    vals = set(
        np.unique(
            chex[list(MIMIC_LABELS)]
            .to_numpy()
            .ravel()[~chex[list(MIMIC_LABELS)].isna().to_numpy().ravel()]
        )
    )
    assert vals <= {1.0, 0.0, -1.0} and {1.0, 0.0} <= vals
    for _, r in meta.iterrows():
        sid = str(r.subject_id)
        img = root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{r.study_id}" / f"{r.dicom_id}.jpg"
        im = cv2.imread(str(img), cv2.IMREAD_UNCHANGED)
        assert im is not None and im.ndim == 2 and im.shape == (r.Rows, r.Columns)
        assert (img.parent.parent / f"s{r.study_id}.txt").exists()
    assert len(truth(world, "mimic")) == len(meta)


def test_mimic_reports_sections_and_defects(world: Path) -> None:
    reports = list((world / "mimic-cxr-jpg" / "files").rglob("s*.txt"))
    assert len(reports) == N
    raw = [p.read_bytes() for p in reports]
    bad = [b for b in raw if not _utf8(b)]
    assert len(bad) >= 1
    text = [b.decode("latin-1") for b in raw]
    assert all("FINAL REPORT" in t and "IMPRESSION:" in t for t in text)
    assert any("FINDINGS:" not in t for t in text)  # impression only
    assert any("FINDINGS:\n \n IMPRESSION:" in t for t in text)  # empty findings
    full = [t for t in text if "FINDINGS:" in t]
    assert all(k in t for t in full for k in ("INDICATION:", "COMPARISON:"))
    assert any("___" in t for t in text)
    joined = "\n".join(text)
    assert "No pleural effusion or pneumothorax." in joined or "no pleural effusion" in joined


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_words_follow_the_image(tmp_path: Path) -> None:
    # laterality and zone change the words: a right apical pneumothorax says so
    write_world(tmp_path, 40, seed=3, layouts=["mimic"], image_size=96)
    recs = {r["study_id"]: r for r in truth(tmp_path, "mimic")}
    hits = 0
    for p in (tmp_path / "mimic-cxr-jpg" / "files").rglob("s*.txt"):
        rec = recs[int(p.stem[1:])]
        text = p.read_bytes().decode("latin-1").lower()
        for f in rec["findings"]:
            if f["name"] == "pleural_effusion" and f["side"] in ("right", "left"):
                assert f"{f['side']} pleural effusion" in text
                hits += 1
    assert hits >= 1


def test_chexpert(world: Path) -> None:
    root = world / "chexpert" / "CheXpert-v1.0-small"
    tr, va = pd.read_csv(root / "train.csv"), pd.read_csv(root / "valid.csv")
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    assert list(tr.columns) == cols == list(va.columns)
    assert len(tr) + len(va) == N and len(va) >= 1
    assert tr.Path.str.startswith("CheXpert-v1.0-small/train/").all()
    assert va.Path.str.startswith("CheXpert-v1.0-small/valid/").all()
    assert not (va[list(CHEXPERT_LABELS)] == -1).any().any()
    assert not va[list(CHEXPERT_LABELS)].isna().any().any()
    for p in pd.concat([tr, va]).Path:
        assert cv2.imread(str(world / "chexpert" / p), cv2.IMREAD_GRAYSCALE) is not None


def _dicom_pixels(ds) -> np.ndarray:
    arr = ds.pixel_array.astype(np.float64)
    top = 2**ds.BitsStored - 1
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = top - arr
    return arr * 255.0 / top


def test_rsna(world: Path) -> None:
    root = world / "rsna"
    lab = pd.read_csv(root / "stage_2_train_labels.csv")
    cls = pd.read_csv(root / "stage_2_detailed_class_info.csv")
    assert list(lab.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert list(cls.columns) == ["patientId", "class"] and len(cls) == len(lab)
    assert lab.patientId.nunique() == N
    assert set(cls["class"]) <= {"Lung Opacity", "Normal", "No Lung Opacity / Not Normal"}
    assert lab[lab.Target == 0].x.isna().all() and lab[lab.Target == 1].x.notna().all()
    photometric, windowed, compressed = set(), 0, 0
    for rec in truth(world, "rsna"):
        ds = pydicom.dcmread(root / "stage_2_train_images" / f"{rec['image_id']}.dcm")
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE) and ds.PatientID == rec["image_id"]
        photometric.add(ds.PhotometricInterpretation)
        windowed += "WindowCenter" in ds
        compressed += ds.file_meta.TransferSyntaxUID.is_compressed
        assert _dicom_pixels(ds).shape == (SIZE, SIZE)
        rows = lab[lab.patientId == rec["image_id"]]
        boxes = rows[["x", "y", "width", "height"]].dropna().to_numpy().tolist()
        assert boxes == [[float(v) for v in b] for b in rec["boxes"]]
        assert int(rows.Target.iloc[0]) == rec["label"]
    assert photometric == {"MONOCHROME1", "MONOCHROME2"} and windowed and compressed


def rle_decode(rle: str, h: int, w: int) -> np.ndarray:
    flat = np.zeros(h * w, np.uint8)
    nums = [int(x) for x in rle.split()]
    pos = 0
    for start, length in zip(nums[0::2], nums[1::2], strict=False):
        pos += start
        flat[pos : pos + length] = 255
        pos += length
    return flat.reshape(w, h).T


def test_siim(world: Path) -> None:
    root = world / "siim"
    first = (root / "train-rle.csv").read_text().splitlines()[0]
    assert first == "ImageId, EncodedPixels"
    df = pd.read_csv(root / "train-rle.csv")
    assert list(df.columns) == ["ImageId", " EncodedPixels"]
    assert df.ImageId.nunique() == N
    assert (df[" EncodedPixels"] == " -1").any() and (df[" EncodedPixels"] != " -1").any()
    dcms = {p.stem: p for p in (root / "dicom-images-train").rglob("*.dcm")}
    assert len(dcms) == N
    for image_id, g in df.groupby("ImageId"):
        ds = pydicom.dcmread(dcms[image_id])
        assert ds.SOPInstanceUID == image_id
        assert dcms[image_id].parent.name == ds.SeriesInstanceUID
        assert dcms[image_id].parent.parent.name == ds.StudyInstanceUID
        mask = np.zeros((ds.Rows, ds.Columns), np.uint8)
        for rle in g[" EncodedPixels"]:
            if rle.strip() != "-1":
                mask |= rle_decode(rle, ds.Rows, ds.Columns)
        drawn = cv2.imread(str(world / "truth" / "siim_masks" / f"{image_id}.png"), 0)
        assert np.array_equal(mask, drawn)
    # one J2K-compressed file decodes like any other
    assert any(pydicom.dcmread(p).file_meta.TransferSyntaxUID.is_compressed for p in dcms.values())


def test_pneumothorax_masks_are_drawn(world: Path) -> None:
    for rec in truth(world, "siim"):
        if rec["label"]:
            m = cv2.imread(str(world / "truth" / "siim_masks" / f"{rec['image_id']}.png"), 0) > 0
            assert m.sum() > 20


def test_pneumothorax_region_is_darker_than_the_lung_it_replaces() -> None:
    # Same chest, pose and noise with and without the pneumothorax: inside its mask the
    # image is lucent (air without lung markings), darker than the aerated lung was there,
    # by more than 5 grey levels (measured 10 to 13), and unchanged far from it.
    for k in range(3):
        rng = np.random.default_rng([13, k])
        a, pose = sample_anatomy(rng), sample_pose(rng)
        f = sample_pathology(rng, "pneumothorax")
        with_f = render_image(a, [f], pose, np.random.default_rng(1), 256, 212)
        without = render_image(a, [], pose, np.random.default_rng(1), 256, 212)
        m = with_f.masks["pneumothorax"] > 0
        assert m.sum() > 500, f
        inside_with = with_f.image[m].astype(float).mean()
        inside_without = without.image[m].astype(float).mean()
        assert inside_with < inside_without - 5, (f, inside_with, inside_without)
        near = cv2.dilate(m.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        assert np.array_equal(with_f.image[~near], without.image[~near]), f


def test_covidx(world: Path) -> None:
    root = world / "covidx"
    rows = []
    for split in ("train", "test"):
        for line in (root / f"{split}.txt").read_text().splitlines():
            pid, fname, cls, src = line.split(" ")
            rows.append((split, fname, cls))
            assert cls in {"normal", "pneumonia", "COVID-19"}
    assert len(rows) == N and {c for *_, c in rows} == {"normal", "pneumonia", "COVID-19"}
    exts, channels = set(), set()
    for split, fname, _ in rows:
        im = cv2.imread(str(root / split / fname), cv2.IMREAD_UNCHANGED)
        exts.add(Path(fname).suffix)
        channels.add(1 if im.ndim == 2 else im.shape[2])
    assert exts == {".png", ".jpg"} and channels == {1, 3}


def test_object_cxr(world: Path) -> None:
    root = world / "object-cxr"
    tr = pd.read_csv(root / "train.csv", keep_default_na=False)
    dev = pd.read_csv(root / "dev.csv", keep_default_na=False)
    assert list(tr.columns) == ["image_name", "annotation"] == list(dev.columns)
    assert len(tr) + len(dev) == N
    recs = {r["image_id"]: r for r in truth(world, "object-cxr")}
    types = set()
    for split, df in (("train", tr), ("dev", dev)):
        for name, ann in zip(df.image_name, df.annotation, strict=False):
            im = cv2.imread(str(root / split / name), 0)
            assert im is not None
            rec = recs[name]
            objs = [o.split() for o in ann.split(";")] if ann else []
            assert len(objs) == len(rec["boxes"]) and bool(objs) == bool(rec["label"])
            for o, box in zip(objs, rec["boxes"], strict=False):
                t, pts = int(o[0]), np.array(o[1:], int).reshape(-1, 2)
                types.add(t)
                x0, y0 = pts.min(0)
                x1, y1 = pts.max(0)
                bx, by, bw, bh = box
                assert bx <= x0 + 1 and by <= y0 + 1 and bx + bw >= x1 - 1 and by + bh >= y1 - 1
                # objects are metal: the box is brighter than the image on average
                assert im[by : by + bh, bx : bx + bw].max() > im.mean()
    assert types >= {1, 2}


@pytest.mark.parametrize("name", ["consolidation", "nodule", "mass", "pneumonia"])
def test_box_encloses_its_opacity(name: str) -> None:
    for k in range(3):
        rng = np.random.default_rng([11, k])
        a = sample_anatomy(rng)
        pose = sample_pose(rng)
        f = sample_pathology(rng, name)
        with_f = render_image(a, [f], pose, np.random.default_rng(1), 256, 212)
        without = render_image(a, [], pose, np.random.default_rng(1), 256, 212)
        assert len(with_f.boxes) == 1
        x, y, w, h = with_f.boxes[0]
        diff = with_f.image.astype(int) - without.image.astype(int)
        inside = np.zeros(diff.shape, bool)
        inside[y : y + h, x : x + w] = True
        assert diff[inside].mean() > 8  # the opacity is there
        assert np.abs(diff[~inside]).max() < 20  # and nowhere else (noise is identical)


def test_findings_change_the_image() -> None:
    rng = np.random.default_rng(5)
    a, pose = sample_anatomy(rng), sample_pose(rng)
    base = render_image(a, [], pose, np.random.default_rng(0), 128, 106).image.astype(int)
    for name in (
        "cardiomegaly",
        "pleural_effusion",
        "pneumothorax",
        "edema",
        "atelectasis",
        "covid",
    ):
        f = sample_pathology(np.random.default_rng(2), name)
        f.severity = {"pleural_effusion": "large", "pneumothorax": "large"}.get(name, "severe")
        img = render_image(a, [f], pose, np.random.default_rng(0), 128, 106).image.astype(int)
        assert np.abs(img - base).mean() > 0.5, name

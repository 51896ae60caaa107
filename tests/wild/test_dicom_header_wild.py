"""DICOM headers as real files fill them (issue 27 kinds A, B, E): empty elements, frames
nobody declared, non-radiograph modalities and the patient named only in the header.

Files are built with pydicom's writer; expected grey levels come from the standard's window
formula worked out here by hand (PS3.3 C.11.2.1.2.1), never from cmcgns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cmcgns_cli.data.imageio import ImageError, decode
from tests.wild.builders import dicom_dataset, save_dicom

H, W = 40, 30
ARR = ((np.arange(H * W).reshape(H, W) * 7) % 200 + 20).astype(np.uint8)  # 20..219


def _linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR onto 0..255, by hand."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    y[x <= c - 0.5 - (w - 1) / 2] = 0
    y[x > c - 0.5 + (w - 1) / 2] = 255
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _empty(tag: int, vr: str) -> DataElement:
    return DataElement(tag, vr, None)


def _decode(ds, tmp_path, name="x.dcm"):
    path = tmp_path / name
    save_dicom(ds, path)
    return decode(path)


# ---------------------------------------------------------------------------------------
# E: an empty element is absent


def test_empty_voi_lut_item_beside_a_window_uses_the_window(tmp_path):
    ds = dicom_dataset(ARR)
    ds.WindowCenter, ds.WindowWidth = 100, 120
    item = Dataset()
    item.add(_empty(0x00283002, "US"))  # LUT Descriptor
    item.add(_empty(0x00283006, "US"))  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    dec = _decode(ds, tmp_path)
    assert np.array_equal(dec.image, _linear_window(ARR, 100, 120))
    assert dec.image.max() == 255  # the all-black image of the report is gone
    assert any("VOILUTSequence" in f for f in dec.fallbacks)


@pytest.mark.parametrize(
    "empty",
    [
        ("RescaleSlope", "RescaleIntercept"),
        ("RescaleSlope",),
        ("RescaleIntercept",),
    ],
)
def test_empty_rescale_is_no_rescale(tmp_path, empty):
    ds = dicom_dataset(ARR)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10  # replaced below where empty
    for kw in empty:
        tag = {"RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052}[kw]
        ds[tag] = _empty(tag, "DS")
    ds.WindowCenter, ds.WindowWidth = 120, 200
    dec = _decode(ds, tmp_path)
    # the present value still applies, the empty one takes its identity value
    slope = 1.0 if "RescaleSlope" in empty else 2.0
    inter = 0.0 if "RescaleIntercept" in empty else -10.0
    expect = _linear_window(ARR.astype(np.float64) * slope + inter, 120, 200)
    assert np.array_equal(dec.image, expect)


@pytest.mark.parametrize(
    "keyword, tag, vr",
    [
        ("WindowCenter", 0x00281050, "DS"),
        ("PhotometricInterpretation", 0x00280004, "CS"),
        ("NumberOfFrames", 0x00280008, "IS"),
        ("PresentationLUTShape", 0x20500020, "CS"),
        ("VOILUTFunction", 0x00281056, "CS"),
    ],
)
def test_other_empty_elements_take_the_default(tmp_path, keyword, tag, vr):
    ds = dicom_dataset(ARR)
    ds.WindowCenter, ds.WindowWidth = 120, 200
    ds[tag] = _empty(tag, vr)
    dec = _decode(ds, tmp_path)
    # an empty window centre means no window: 8-bit data is kept as stored
    expect = ARR if keyword == "WindowCenter" else _linear_window(ARR, 120, 200)
    assert np.array_equal(dec.image, expect)
    assert any(keyword in f for f in dec.fallbacks)


@pytest.mark.parametrize("declared", [None, 1])
def test_undeclared_extra_frames_take_the_first(tmp_path, declared):
    ds = dicom_dataset(ARR)
    if declared:
        ds.NumberOfFrames = declared
    ds.PixelData = np.concatenate([ARR, 255 - ARR]).tobytes()  # two frames
    dec = _decode(ds, tmp_path)
    assert dec.image.shape == (H, W)
    assert np.array_equal(dec.image, ARR)
    assert any(f.startswith("undeclared_frames") and f.endswith("_of_2") for f in dec.fallbacks)


def test_declared_frames_take_the_first_and_say_so(tmp_path):
    ds = dicom_dataset(ARR)
    ds.NumberOfFrames = 3
    ds.PixelData = np.concatenate([255 - ARR, ARR, ARR]).tobytes()
    dec = _decode(ds, tmp_path)
    assert np.array_equal(dec.image, 255 - ARR)
    assert "frames:took_first_of_3" in dec.fallbacks


def test_empty_rows_is_a_clean_skip_not_a_traceback(tmp_path):
    ds = dicom_dataset(ARR)
    ds[0x00280010] = _empty(0x00280010, "US")
    with pytest.raises(ImageError):
        _decode(ds, tmp_path)


# ---------------------------------------------------------------------------------------
# A, B: through prepare folder


def _folder(tmp_path, files: dict[str, dict], extra_cols: dict | None = None):
    """One DICOM per entry (header attributes from the dict) and a CSV listing them."""
    src = tmp_path / "src"
    for k, (name, attrs) in enumerate(files.items()):
        ds = dicom_dataset(np.roll(ARR, k, axis=1))
        for kw, v in attrs.items():
            if v is None:
                del ds[kw]
            else:
                setattr(ds, kw, v)
        save_dicom(ds, src / "img" / name)
    cols = {"path": [f"img/{n}" for n in files]}
    cols.update(extra_cols or {})
    pd.DataFrame(cols).to_csv(src / "list.csv", index=False)
    return src


def _prep(cli, src, out, *extra):
    return cli("prepare", "folder", "--src", src, "--out", out, "--size", 16, "--json", *extra)


MODALITIES = {
    "cr.dcm": {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"},
    "dx.dcm": {"Modality": "DX", "BodyPartExamined": "ABDOMEN", "ViewPosition": "AP"},
    "rg.dcm": {"Modality": "RG", "BodyPartExamined": "Chest"},
    "none.dcm": {"Modality": None},
    "ct.dcm": {"Modality": "CT", "BodyPartExamined": "CHEST"},
    "mr.dcm": {"Modality": "MR"},
    "us.dcm": {"Modality": "US"},
    "xa.dcm": {"Modality": "xa"},
    "seg.dcm": {"Modality": "SEG"},
    "xc.dcm": {"Modality": "XC"},  # a photograph
    "mg.dcm": {"Modality": "MG"},
}


def test_non_radiographs_are_skipped_with_the_modality(cli, tmp_path):
    src = _folder(tmp_path, MODALITIES)
    res = _prep(cli, src, tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["count"] == 4  # CR, DX, RG and the file without Modality
    assert s["skipped_by_reason"] == {"not_radiograph": 7}
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", keep_default_na=False)
    named = {row.id: row.detail for row in skipped.itertuples()}
    for name, mod in [("ct", "CT"), ("xa", "XA"), ("seg", "SEG"), ("mg", "MG")]:
        assert named[f"img/{name}.dcm"].startswith(f"Modality {mod} ")
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert man.loc["img/dx.dcm", "modality"] == "DX"
    assert man.loc["img/dx.dcm", "body_part"] == "ABDOMEN"
    assert man.loc["img/dx.dcm", "view"] == "AP"
    assert man.loc["img/rg.dcm", "body_part"] == "CHEST"
    assert man.loc["img/none.dcm", "modality"] == ""
    assert s["non_chest_body_parts"] == {"ABDOMEN": 1}
    # source_path relative to --src, so the dataset names no local folder
    assert set(man["source_path"]) == set(man.index)
    assert set(skipped["source_path"]) == set(skipped["id"])


def test_any_modality_keeps_them(cli, tmp_path):
    src = _folder(tmp_path, MODALITIES)
    res = _prep(cli, src, tmp_path / "out", "--any-modality")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["count"] == len(MODALITIES) and s["skipped"] == 0
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert man.loc["img/seg.dcm", "modality"] == "SEG"


def test_patient_from_the_dicom_groups_the_split(cli, tmp_path):
    # 4 copies of patient P1's radiograph and 16 single-image patients; no patient column
    files = {f"p1_{k}.dcm": {"PatientID": "P1", "StudyInstanceUID": "1.2.3"} for k in range(4)}
    files |= {f"q{k}.dcm": {"PatientID": f"Q{k}"} for k in range(16)}
    files["anon.dcm"] = {"PatientID": None}
    src = _folder(tmp_path, files)
    res = _prep(cli, src, tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    p1 = man.loc[[f"img/p1_{k}.dcm" for k in range(4)]]
    assert set(p1["patient_id"]) == {"P1"} and set(p1["study_id"]) == {"1.2.3"}
    assert p1["split"].nunique() == 1  # one patient, one split
    assert set(p1["patient_source"]) == {"dicom"}
    assert man.loc["img/anon.dcm", "patient_id"] == ""
    assert man.loc["img/anon.dcm", "patient_source"] == ""
    assert man.loc["img/q3.dcm", "patient_id"] == "Q3"


def test_a_patient_column_wins_over_the_header(cli, tmp_path):
    files = {f"a{k}.dcm": {"PatientID": "SAME"} for k in range(3)}
    src = _folder(tmp_path, files, {"patient_id": ["x", "y", "z"]})
    res = _prep(cli, src, tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert list(man.loc[[f"img/a{k}.dcm" for k in range(3)], "patient_id"]) == ["x", "y", "z"]
    assert set(man["patient_source"]) == {"csv"}


@pytest.mark.parametrize("keyword", ["ModalityLUTSequence", "PresentationLUTSequence"])
def test_empty_lut_items_in_other_sequences_are_absent(tmp_path, keyword):
    ds = dicom_dataset(ARR)
    ds.WindowCenter, ds.WindowWidth = 120, 200
    item = Dataset()
    item.add(_empty(0x00283002, "US"))
    item.add(_empty(0x00283006, "US"))
    setattr(ds, keyword, Sequence([item]))
    dec = _decode(ds, tmp_path)
    assert np.array_equal(dec.image, _linear_window(ARR, 120, 200))
    assert any(keyword in f for f in dec.fallbacks)

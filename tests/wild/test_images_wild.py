"""Pictures as scanners, phones and PACS exports write them (README "Inputs from the wild").

Each file is prepared through ``cmcgns prepare folder`` with its upright 8-bit reference
picture, at the same --size; the two prepared images must agree within a mean |difference|
of 3 grey levels (cases H7, H8, H9, H13 and their variants).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.wild.builders import (
    STORED_FOR,
    bare_dataset_bytes,
    dicom_dataset,
    jpeg_bytes,
    picture,
    png_bytes,
    png_with_orientation,
    save_dicom,
    viewer_shows,
    with_orientation,
    ybr_full_native_dicom,
    ybr_jpeg_dicom,
)

SIZE = 64


def prepare_files(cli, tmp_path, files: dict[str, bytes]) -> tuple[dict, pd.DataFrame, object]:
    """Write ``files`` (name -> bytes) plus the reference, prepare them; (images by name,
    skipped.csv, CliResult)."""
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "reference.png").write_bytes(png_bytes(picture()))
    for name, data in files.items():
        (src / name).write_bytes(data)
    names = ["reference.png", *files]
    pd.DataFrame({"path": names}).to_csv(src / "list.csv", index=False)
    out = tmp_path / "out"
    res = cli("prepare", "folder", "--src", src, "--csv", src / "list.csv", "--out", out,
              "--size", SIZE, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    man = pd.read_parquet(out / "manifest.parquet")
    imgs = np.load(out / "images.npy")
    by_name = {row.id: imgs[i] for i, row in enumerate(man.itertuples())}
    skipped = pd.read_csv(out / "skipped.csv")
    return by_name, skipped, man


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_exif_orientation_every_value_jpeg_and_png(cli, tmp_path):
    """H8 and its variants: Orientation 2-8 in JPEG (APP1) and PNG (eXIf): upright."""
    g = picture()
    files = {}
    for o in range(2, 9):
        stored = np.ascontiguousarray(STORED_FOR[o](g))
        data = with_orientation(jpeg_bytes(stored), o)
        # the builder is right: an EXIF-aware viewer (Pillow) shows the upright picture
        assert mad(viewer_shows(data), g) < 1.0
        files[f"o{o}.jpg"] = data
        files[f"o{o}.png"] = png_with_orientation(stored, o)
    imgs, skipped, man = prepare_files(cli, tmp_path, files)
    assert skipped.empty
    ref = imgs["reference.png"]
    for name in files:
        assert mad(imgs[name], ref) <= 3.0, name
    # the sideways-stored file is NOT the reference read as stored (the test can fail)
    stored6 = {"raw6.png": png_bytes(np.ascontiguousarray(STORED_FOR[6](g)))}
    imgs2, _, _ = prepare_files(cli, tmp_path / "raw", stored6)
    assert mad(imgs2["raw6.png"], imgs2["reference.png"]) > 20
    rec = dict(zip(man["id"], man["exif_orientation"], strict=True))
    assert rec["o6.jpg"] == 6 and rec["o3.png"] == 3 and rec["reference.png"] == 1
    assert list(man.loc[man["id"] == "o6.jpg", ["orig_h", "orig_w"]].iloc[0]) == [96, 80]


def test_jpeg_trailing_bytes_taken_truncated_skipped(cli, tmp_path):
    """H9: bytes after EOI (vendor data, 0xFF fill, zeros) are taken; a cut stream is not."""
    data = jpeg_bytes(picture())
    files = {
        "vendor.jpg": data + b"VENDOR-DATA\x00\x01\x02" * 40,
        "ff_fill.jpg": data + b"\xff" * 700,
        "zeros.jpg": data + b"\x00" * 3000,
        "eoi_twice.jpg": data + b"\xff\xd9\xff\xd9",
        "cut.jpg": data[: len(data) * 2 // 3],
    }
    imgs, skipped, _ = prepare_files(cli, tmp_path, files)
    for name in ("vendor.jpg", "ff_fill.jpg", "zeros.jpg", "eoi_twice.jpg"):
        assert mad(imgs[name], imgs["reference.png"]) <= 3.0, name
    assert dict(zip(skipped["id"], skipped["reason"], strict=True)) == {
        "cut.jpg": "truncated_image"
    }


def test_png_trailing_bytes_taken(cli, tmp_path):
    data = png_bytes(picture())
    imgs, skipped, _ = prepare_files(cli, tmp_path, {"tail.png": data + b"\x00garbage" * 10})
    assert skipped.empty and mad(imgs["tail.png"], imgs["reference.png"]) <= 3.0


@pytest.mark.parametrize("keep_jfif", [True, False])
@pytest.mark.parametrize("subsampling", [1, 2])
def test_ybr_jpeg_baseline_dicom_decoded_once(cli, tmp_path, keep_jfif, subsampling):
    """H7: JPEG Baseline YBR_FULL_422 (with / without JFIF; 4:2:2 and 4:2:0 streams) is
    the grey picture at full contrast, not converted twice (77..179)."""
    import io

    ds = ybr_jpeg_dicom(picture(), keep_jfif=keep_jfif, subsampling=subsampling)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    imgs, skipped, _ = prepare_files(cli, tmp_path, {"ybr.dcm": buf.getvalue()})
    assert skipped.empty
    assert mad(imgs["ybr.dcm"], imgs["reference.png"]) <= 3.0
    mask = imgs["reference.png"] > 0
    span = np.ptp(imgs["ybr.dcm"][mask].astype(int))
    assert span >= 0.95 * np.ptp(imgs["reference.png"][mask].astype(int))  # full contrast


def test_other_photometric_interpretations(cli, tmp_path):
    """Native YBR_FULL and RGB: converted once; MONOCHROME1 and Presentation LUT Shape
    INVERSE: inverted once, never twice."""
    import io

    g = picture()
    datasets = {
        "ybr_native.dcm": ybr_full_native_dicom(g),
        "rgb.dcm": dicom_dataset(np.repeat(g[:, :, None], 3, 2), photometric="RGB", samples=3),
        "mono1.dcm": dicom_dataset(255 - g, photometric="MONOCHROME1"),
    }
    both = dicom_dataset(255 - g, photometric="MONOCHROME1")
    both.PresentationLUTShape = "INVERSE"  # what DX requires for MONOCHROME1: one inversion
    datasets["mono1_inverse.dcm"] = both
    inv2 = dicom_dataset(255 - g)
    inv2.PresentationLUTShape = "INVERSE"
    datasets["mono2_inverse.dcm"] = inv2
    ident = dicom_dataset(g)
    ident.PresentationLUTShape = "IDENTITY"
    datasets["mono2_identity.dcm"] = ident
    # a Presentation LUT Sequence that inverts (8-bit, 256 entries, descending)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    seq = dicom_dataset(255 - g)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = list(range(255, -1, -1))
    item["LUTData"].VR = "US"
    seq.PresentationLUTSequence = Sequence([item])
    datasets["mono2_plut_seq.dcm"] = seq
    files = {}
    for name, ds in datasets.items():
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[name] = buf.getvalue()
    imgs, skipped, _ = prepare_files(cli, tmp_path, files)
    assert skipped.empty
    for name in files:
        assert mad(imgs[name], imgs["reference.png"]) <= 3.0, name


def test_bare_dicom_data_set_read_with_force_and_recorded(cli, tmp_path):
    """H13: no preamble, no DICM, no file meta (implicit and explicit VR, with and without a
    .dcm suffix): read, taken, and the assumption recorded in the manifest."""
    g = picture()
    files = {
        "bare_implicit.dcm": bare_dataset_bytes(dicom_dataset(g), implicit=True),
        "bare_explicit.dcm": bare_dataset_bytes(dicom_dataset(g), implicit=False),
        "bare_no_suffix": bare_dataset_bytes(dicom_dataset(g), implicit=True),
    }
    imgs, skipped, man = prepare_files(cli, tmp_path, files)
    assert skipped.empty
    notes = dict(zip(man["id"], man["decode_fallback"], strict=True))
    for name in files:
        assert mad(imgs[name], imgs["reference.png"]) <= 3.0, name
        assert "read_with_force" in notes[name]
    assert "Implicit_VR_Little_Endian" in notes["bare_implicit.dcm"]
    assert "Explicit_VR_Little_Endian" in notes["bare_explicit.dcm"]
    assert notes["reference.png"] == ""


def test_saved_dicom_roundtrip_control(tmp_path):
    """Control for the builders: a regular file with preamble needs no fallback."""
    from cmcgns_cli.data.imageio import decode

    save_dicom(dicom_dataset(picture()), tmp_path / "ok.dcm")
    dec = decode(tmp_path / "ok.dcm")
    assert dec.fallbacks == [] and mad(dec.image, picture()) == 0.0

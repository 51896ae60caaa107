"""Decoding (DICOM windowing / MONOCHROME1 / 16-bit / RLE, JPEG reduced decode), the
letterbox transform and box / mask mapping."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.data import imageio
from cmcgns_cli.data.readers.siim import rle_decode, rle_encode
from tests.data.rawfix import gray, write_dicom, write_jpeg, write_png


def test_dicom_8bit_kept_and_monochrome1_inverted(tmp_path):
    arr = gray(40, 30)
    write_dicom(tmp_path / "a.dcm", arr)
    write_dicom(tmp_path / "b.dcm", arr, photometric="MONOCHROME1", view="AP")
    a, b = imageio.decode(tmp_path / "a.dcm"), imageio.decode(tmp_path / "b.dcm")
    np.testing.assert_array_equal(a.image, arr)
    np.testing.assert_array_equal(b.image, 255 - arr)
    assert (a.orig_h, a.orig_w, a.view, b.view) == (40, 30, "PA", "AP")


def test_dicom_16bit_window_and_full_range(tmp_path):
    arr = np.linspace(0, 4095, 50 * 20).reshape(50, 20).astype(np.uint16)
    write_dicom(tmp_path / "w.dcm", arr, window=(1000.0, 1000.0))
    write_dicom(tmp_path / "n.dcm", arr)
    w = imageio.decode(tmp_path / "w.dcm").image.astype(int)
    n = imageio.decode(tmp_path / "n.dcm").image.astype(int)
    lo, hi = 1000 - 0.5 - 999 / 2, 1000 - 0.5 + 999 / 2
    assert (w[arr <= lo] == 0).all() and (w[arr > hi] == 255).all()
    mid = (arr > lo + 50) & (arr < hi - 50)
    expect = ((arr[mid] - 999.5) / 999 + 0.5) * 255
    assert np.abs(w[mid] - expect).max() <= 1
    assert n.min() == 0 and n.max() == 255
    assert np.abs(n - arr / 4095 * 255).max() <= 1


def test_dicom_voi_lut_sequence(tmp_path):
    arr = (np.arange(64 * 64) % 4096).reshape(64, 64).astype(np.uint16)
    lut = (np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    write_dicom(tmp_path / "l.dcm", arr, voi_lut=lut)
    img = imageio.decode(tmp_path / "l.dcm").image.astype(float)
    expect = np.sqrt(arr / 4095) * 255
    assert np.abs(img - expect).max() <= 1.5


def test_dicom_rle_compressed_equals_uncompressed(tmp_path):
    arr = gray(64, 48, seed=3)
    write_dicom(tmp_path / "u.dcm", arr)
    write_dicom(tmp_path / "r.dcm", arr, rle=True)
    import pydicom

    assert pydicom.dcmread(tmp_path / "r.dcm").file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(imageio.decode(tmp_path / "r.dcm").image, arr)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "missing_file"),
        ("empty", "empty_file"),
        ("garbage", "unreadable_image"),
        ("truncjpeg", "truncated_image"),
        ("truncpng", "truncated_image"),
        ("nopixels", "no_pixel_data"),
        ("truncdicom", "truncated_image"),
        ("baddicom", "unreadable_image"),
    ],
)
def test_bad_inputs_raise_their_reason(tmp_path, kind, reason):
    p = tmp_path / "x.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
    elif kind == "truncjpeg":
        write_jpeg(p, gray(100, 100))
        p.write_bytes(p.read_bytes()[:-300])
    elif kind == "truncpng":
        p = tmp_path / "x.png"
        write_png(p, gray(100, 100))
        p.write_bytes(p.read_bytes()[:-100])
    elif kind == "nopixels":
        p = tmp_path / "x.dcm"
        write_dicom(p, None)
    elif kind == "truncdicom":
        p = tmp_path / "x.dcm"
        write_dicom(p, gray(100, 100))
        p.write_bytes(p.read_bytes()[:-2000])
    elif kind == "baddicom":
        p = tmp_path / "x.dcm"
        p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 20)
    with pytest.raises(imageio.ImageError) as info:
        imageio.decode(p, size=64)
    assert info.value.reason == reason
    if kind == "garbage":  # a ".jpg" without JPEG bytes: the message names no decoder
        assert "not a decodable image" in str(info.value) and "OpenCV" not in str(info.value)


def test_letterbox_geometry_and_box_mapping():
    tf = imageio.letterbox_transform(300, 200, 64)
    assert (tf.new_h, tf.new_w, tf.pad_y) == (64, 43, 0)
    assert tf.pad_x == (64 - 43) // 2 and tf.scale == pytest.approx(64 / 300)
    img = np.full((300, 200), 200, np.uint8)
    out = imageio.letterbox(img, tf, 64)
    assert out.shape == (64, 64)
    assert (out[:, : tf.pad_x] == 0).all() and (out[:, tf.pad_x + 43 :] == 0).all()
    assert (out[:, tf.pad_x : tf.pad_x + 43] == 200).all()
    [box] = imageio.map_boxes([[20, 30, 100, 150]], tf)
    s = 64 / 300
    assert box == pytest.approx([20 * s + tf.pad_x, 30 * s, 100 * s, 150 * s])


def test_mask_mapping_matches_box_fill():
    tf = imageio.letterbox_transform(200, 160, 50)
    full = np.zeros((200, 160), np.uint8)
    full[40:120, 20:100] = 1
    m = imageio.map_mask(full, tf, 50)
    b = imageio.boxes_mask(imageio.map_boxes([[20, 40, 80, 80]], tf), 50)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    assert np.mean(m != b) < 0.01


def test_rle_roundtrip_and_column_major():
    m = np.zeros((6, 4), np.uint8)
    m[1:3, 2] = 1
    m[5, 3] = 1
    rle = rle_encode(m)
    # column-major: column 2 starts at index 2*6 = 12; rows 1..2 -> 13, 14
    assert rle.split()[:2] == ["13", "2"]
    np.testing.assert_array_equal(rle_decode(rle, 6, 4), m)
    assert rle_decode("-1", 6, 4).sum() == 0
    with pytest.raises(ValueError):
        rle_decode("20 10", 6, 4)


def test_jpeg_header_size_and_reduced_decode_close(tmp_path):
    img = gray(1200, 1000, seed=5)
    write_jpeg(tmp_path / "big.jpg", img)
    data = (tmp_path / "big.jpg").read_bytes()
    assert imageio.jpeg_size(data) == (1200, 1000)
    assert imageio.reduce_factor(1200, 1000, 64) == 8
    assert imageio.reduce_factor(1200, 1000, 256) == 2
    assert imageio.reduce_factor(1200, 1000, 512) == 1
    red, tf_r, dec_r = imageio.load_prepared_image(tmp_path / "big.jpg", 128, reduce=True)
    full, tf_f, dec_f = imageio.load_prepared_image(tmp_path / "big.jpg", 128, reduce=False)
    assert dec_r.reduced == 4 and dec_f.reduced == 1
    assert tf_r == tf_f
    assert np.abs(red.astype(int) - full.astype(int)).mean() < 2.0


def test_png_rgb_and_16bit(tmp_path):
    import cv2

    rgb = cv2.cvtColor(gray(30, 40), cv2.COLOR_GRAY2BGR)
    write_png(tmp_path / "c.png", rgb)
    assert imageio.decode(tmp_path / "c.png").image.shape == (30, 40)
    deep = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    write_png(tmp_path / "d.png", deep)
    d = imageio.decode(tmp_path / "d.png").image
    assert d.dtype == np.uint8 and d.min() == 0 and d.max() == 255

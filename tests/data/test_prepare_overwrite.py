"""prepare into a finished dataset: the same settings are a no-op, other settings are refused
with exit 2 unless --overwrite (issue: no silent overwrite)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.data import rawfix


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("siim-src")
    rawfix.build_siim(root, n=12, side=64)
    return root


def _prepare(cli, src, out, *extra):
    return cli("prepare", "siim", "--src", src, "--out", out, "--json", *extra)


def test_other_settings_refused_unless_overwrite(cli, src, tmp_path):
    out = tmp_path / "siim"
    first = _prepare(cli, src, out, "--size", "32")
    assert first.exit_code == 0, first.stderr
    meta_before = (out / "meta.json").read_text()

    again = _prepare(cli, src, out, "--size", "32")
    assert again.exit_code == 0 and json.loads(again.stdout)["already_prepared"] is True

    for extra, what in (
        (("--size", "48"), "image_size 32 -> 48"),
        (("--size", "32", "--protocol", "grouped"), "protocol mgca -> grouped"),
    ):
        res = _prepare(cli, src, out, *extra)
        assert res.exit_code == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and "--overwrite" in lines[0], lines
        assert (out / "meta.json").read_text() == meta_before  # untouched
        assert np.load(out / "images.npy", mmap_mode="r").shape[1:] == (32, 32)

    # another dataset into the folder: named as such, without the settings' internals
    other = tmp_path / "rsna-src"
    rawfix.build_rsna(other, n=12)
    res = cli("prepare", "rsna", "--src", other, "--out", out, "--size", "32")
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert "it is a siim dataset, this is rsna" in line and "->" not in line, line

    res = _prepare(cli, src, out, "--size", "48", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert json.loads((out / "meta.json").read_text())["image_size"] == 48
    assert np.load(out / "images.npy", mmap_mode="r").shape[1:] == (48, 48)

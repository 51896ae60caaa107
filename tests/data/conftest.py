"""Session fixtures: each hand-made raw layout written once and prepared once."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcgns_cli.data.prepare import run_prepare
from tests.data import rawfix

BUILDERS = {
    "mimic": rawfix.build_mimic,
    "chexpert": rawfix.build_chexpert,
    "rsna": rawfix.build_rsna,
    "siim": rawfix.build_siim,
    "covidx": rawfix.build_covidx,
    "object-cxr": rawfix.build_object_cxr,
}
OPTIONS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole"}


@pytest.fixture(scope="session")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raw")


@pytest.fixture(scope="session")
def raw(raw_root: Path):
    """``raw(name) -> (src, truth)``, built on first use."""
    cache: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in cache:
            src = raw_root / name
            src.mkdir()
            cache[name] = (src, BUILDERS[name](src))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def prepared(raw, tmp_path_factory: pytest.TempPathFactory):
    """``prepared(name, size=64, **options) -> (out, summary, truth)``, cached."""
    cache: dict[tuple, tuple[Path, dict, dict]] = {}

    def get(name: str, size: int = 64, workers: int = 0, **opts) -> tuple[Path, dict, dict]:
        key = (name, size, workers, tuple(sorted(opts.items())))
        if key not in cache:
            src, truth = raw(name)
            out = tmp_path_factory.mktemp(f"prep-{name}")
            summary = run_prepare(
                name,
                src=src,
                out=out,
                size=size,
                workers=workers,
                options={**OPTIONS, **opts},
                as_json=True,
            )
            cache[key] = (out, summary, truth)
        return cache[key]

    return get

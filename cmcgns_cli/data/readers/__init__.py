"""One module per raw layout; each has ``read(src, options) -> ReaderResult``."""

from __future__ import annotations

import importlib
from types import ModuleType

READERS = {
    "mimic": "mimic",
    "chexpert": "chexpert",
    "rsna": "rsna",
    "siim": "siim",
    "covidx": "covidx",
    "object-cxr": "object_cxr",
    "folder": "folder",
}


def get_reader(dataset: str) -> ModuleType:
    from cmcgns_cli.errors import BadInputError

    if dataset not in READERS:
        raise BadInputError(f"unknown dataset {dataset!r}; expected one of {', '.join(READERS)}")
    return importlib.import_module(f"cmcgns_cli.data.readers.{READERS[dataset]}")

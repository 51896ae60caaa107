"""The downstream tasks: which prepared dataset each reads and how it is scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.errors import BadInputError

Kind = Literal["multilabel", "binary", "multiclass"]


@dataclass(frozen=True)
class ClsTask:
    """A linear-classification task of the paper's protocol."""

    name: str
    dataset: str  # meta["dataset"] of the prepared data it accepts
    kind: Kind
    metric: str  # the headline metric key in the results

    def targets(self, prepared: Prepared) -> tuple[np.ndarray, list[str]]:
        """Targets for every row: (N, C) floats in {0, 1} for multilabel/binary, (N,) ints
        for multiclass; and the class names."""
        labels = prepared.labels_array()
        names = prepared.label_names or [f"class{i}" for i in range(labels.shape[1])]
        if self.kind == "multiclass":
            if labels.shape[1] > 1:  # one-hot columns
                return np.argmax(np.nan_to_num(labels, nan=0.0), axis=1), names
            classes = prepared.meta.get("classes") or names
            return labels[:, 0].astype(np.int64), list(classes)
        # Unmentioned (NaN) and uncertain (-1) that prepare left in count as negative; the
        # CheXpert uncertainty policy itself is applied by prepare.
        clean = np.where(np.isnan(labels) | (labels < 0), 0.0, labels).astype(np.float32)
        if self.kind == "binary" and clean.shape[1] != 1:
            raise BadInputError(
                f"{prepared.root}: task {self.name} expects one label column, "
                f"found {clean.shape[1]} ({', '.join(names)})"
            )
        return clean, names


CLS_TASKS: dict[str, ClsTask] = {
    "chexpert-cls": ClsTask("chexpert-cls", "chexpert", "multilabel", "macro_auroc"),
    "rsna-cls": ClsTask("rsna-cls", "rsna", "binary", "macro_auroc"),
    "covidx-cls": ClsTask("covidx-cls", "covidx", "multiclass", "accuracy"),
}


def get_cls_task(name: str, prepared: Prepared) -> ClsTask:
    """The task, checked against the prepared dataset it is asked to run on."""
    task = CLS_TASKS[name]
    found = prepared.meta.get("dataset")
    # "folder" datasets (a user's own CSV) may stand in for any task with matching labels.
    if found not in (task.dataset, "folder"):
        raise BadInputError(
            f"{prepared.root / 'meta.json'}: task {name} needs a prepared {task.dataset} "
            f"dataset, this one is {found!r}"
        )
    return task


@dataclass(frozen=True)
class DenseTask:
    """A detection or segmentation task of the paper's protocol."""

    name: str
    datasets: tuple[str, ...]  # meta["dataset"] values it accepts
    kind: Literal["detection", "segmentation"]
    metric: str  # headline metric key
    default_class: str  # box class name when the manifest has no box_labels


DENSE_TASKS: dict[str, DenseTask] = {
    "rsna-det": DenseTask("rsna-det", ("rsna",), "detection", "map", "opacity"),
    "object-cxr-det": DenseTask(
        "object-cxr-det",
        ("object-cxr", "object_cxr", "objectcxr"),
        "detection",
        "map",
        "foreign_object",
    ),  # fmt: skip
    "siim-seg": DenseTask("siim-seg", ("siim",), "segmentation", "dice", "pneumothorax"),
    "rsna-seg": DenseTask("rsna-seg", ("rsna",), "segmentation", "dice", "opacity"),
}


def get_dense_task(name: str, prepared: Prepared) -> DenseTask:
    """The task, checked against the prepared dataset it is asked to run on."""
    task = DENSE_TASKS[name]
    found = prepared.meta.get("dataset")
    if found not in (*task.datasets, "folder"):
        raise BadInputError(
            f"{prepared.root / 'meta.json'}: task {name} needs a prepared {task.datasets[0]} "
            f"dataset, this one is {found!r}"
        )
    return task

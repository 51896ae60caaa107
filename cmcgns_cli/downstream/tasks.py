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
    # a user's own labelled folder (prepare folder --label-cols): one yes/no label per
    # column, each scored by AUROC, as CheXpert's findings are
    "folder-cls": ClsTask("folder-cls", "folder", "multilabel", "macro_auroc"),
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
    if found == "folder":
        _check_folder_layout(task, prepared)
    return task


def _check_folder_layout(task: ClsTask, prepared: Prepared) -> None:
    """Refuse a task whose label layout is not the folder's: one class per image (one-hot
    columns, exactly one 1 per labelled row) for a multiclass task, one column for a binary
    one. Independent yes/no labels read as classes would score a problem nobody posed."""
    labels = prepared.labels_array()
    names = prepared.label_names or [f"class{i}" for i in range(labels.shape[1])]
    where = f"{prepared.root / 'meta.json'}: task {task.name}"
    if labels.shape[1] == 0:
        raise BadInputError(f"{where} needs label columns; prepare the folder with --label-cols")
    if task.kind == "binary" and labels.shape[1] != 1:
        raise BadInputError(
            f"{where} expects one label column, found {labels.shape[1]} ({', '.join(names)}); "
            "use --task folder-cls"
        )
    if task.kind == "multiclass" and labels.shape[1] > 1:
        on = np.nan_to_num(labels, nan=0.0) > 0
        not_one = int((on.sum(axis=1) != 1).sum())
        if not_one:
            raise BadInputError(
                f"{where} expects one class per image, but {not_one} of {len(labels)} images "
                f"have none or several of {', '.join(names)} (independent yes/no labels); "
                "use --task folder-cls"
            )


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

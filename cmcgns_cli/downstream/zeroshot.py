"""`cmcgns evaluate --task zeroshot-<dataset>`: prompt-based zero-shot classification.

Each class has positive and negative prompts (report-style sentences). A prompt set's
embedding is the normalised mean of its prompts' global text embeddings; an image's score
for a class is ``cos(image, positive) - cos(image, negative)``. Scores go through the same
metrics as the classification tasks: per-class and macro AUROC, and accuracy (argmax over
classes) where each image has one class.

Datasets: ``zeroshot-chexpert`` and ``zeroshot-mimic`` (the five CheXpert competition
classes; accuracy on the 5x200-style one-positive rows), ``zeroshot-rsna`` (pneumonia),
``zeroshot-covidx`` (its classes, one per image). ``--prompts FILE`` (TOML, JSON or YAML)
replaces the prompts of the classes it names: ``{"Edema": {"positive": [...], "negative":
[...]}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.embedding.encode import prepared_image_embeddings, report_text_embeddings
from cmcgns_cli.embedding.runs import open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.metrics import accuracy, auroc
from cmcgns_cli.textio import read_text

CHEXPERT5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]

DEFAULT_PROMPTS: dict[str, dict[str, list[str]]] = {
    "Atelectasis": {
        "positive": [
            "bibasilar atelectasis",
            "linear right basilar atelectasis",
            "plate-like atelectasis at the left base",
        ],
        "negative": ["no atelectasis", "the lungs are clear"],
    },
    "Cardiomegaly": {
        "positive": [
            "the heart is moderately enlarged",
            "there is mild cardiomegaly",
            "enlargement of the cardiac silhouette",
        ],
        "negative": ["heart size is normal", "the cardiac silhouette is not enlarged"],
    },
    "Consolidation": {
        "positive": [
            "consolidation in the right lower lobe",
            "there is patchy consolidation of the left upper lobe",
            "airspace consolidation is seen",
        ],
        "negative": ["no focal consolidation", "lungs are clear without focal consolidation"],
    },
    "Edema": {
        "positive": [
            "moderate pulmonary edema with perihilar haziness",
            "there is interstitial pulmonary edema",
        ],
        "negative": ["no pulmonary edema", "there is no pulmonary vascular congestion or edema"],
    },
    "Pleural Effusion": {
        "positive": [
            "there is a right pleural effusion",
            "there is a left pleural effusion",
            "bilateral pleural effusions with blunting of the costophrenic angle",
        ],
        "negative": ["no pleural effusion", "there is no pleural effusion or pneumothorax"],
    },
    "Pneumothorax": {
        "positive": ["there is a right pneumothorax", "there is a left apical pneumothorax"],
        "negative": ["no pneumothorax", "no pleural effusion or pneumothorax"],
    },
    "Pneumonia": {
        "positive": [
            "patchy opacity concerning for pneumonia",
            "right lower lobe opacity compatible with pneumonia",
        ],
        "negative": ["no evidence of pneumonia", "the lungs are clear"],
    },
    "COVID-19": {
        "positive": [
            "bilateral peripheral ground-glass opacities compatible with covid-19",
            "multifocal peripheral opacities concerning for atypical pneumonia",
        ],
        "negative": ["the lungs are clear", "no acute cardiopulmonary process"],
    },
    "normal": {
        "positive": ["the lungs are clear", "no acute cardiopulmonary process"],
        "negative": ["patchy opacity concerning for pneumonia", "multifocal opacities"],
    },
}
ALIASES = {
    "pneumonia": "Pneumonia",
    "covid-19": "COVID-19",
    "positive": "COVID-19",
    "negative": "normal",
}

DATASETS = {
    # task: (accepted meta["dataset"] values, kind)
    "zeroshot-chexpert": (("chexpert",), "chexpert5"),
    "zeroshot-mimic": (("mimic",), "chexpert5"),
    "zeroshot-rsna": (("rsna",), "binary"),
    "zeroshot-covidx": (("covidx",), "multiclass"),
}


def load_prompts(path: Path | None) -> dict[str, dict[str, list[str]]]:
    """The default prompts, with the classes named in ``path`` replaced."""
    prompts = {k: {s: list(v) for s, v in d.items()} for k, d in DEFAULT_PROMPTS.items()}
    if path is None:
        return prompts
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"--prompts {path}: no such file")
    text = read_text(path, name=f"--prompts {path}").text  # any encoding, no byte-order mark
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            given = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            given = yaml.safe_load(text)
        else:
            given = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is bad input
        raise BadInputError(f"{path}: cannot parse ({type(exc).__name__}: {exc})") from None
    if not isinstance(given, dict):
        raise BadInputError(f"{path}: expected a table of classes, got {type(given).__name__}")
    for cls, d in given.items():
        if not isinstance(d, dict) or not d.get("positive") or not d.get("negative"):
            raise BadInputError(
                f"{path}: class {cls!r} needs non-empty 'positive' and 'negative' prompt lists"
            )
        prompts[str(cls)] = {
            "positive": [str(p) for p in _as_list(d["positive"])],
            "negative": [str(p) for p in _as_list(d["negative"])],
        }
    return prompts


def _as_list(v: Any) -> list[Any]:
    return [v] if isinstance(v, str) else list(v)


def _prompt_for(name: str, prompts: dict[str, dict[str, list[str]]], src: Path | None) -> dict:
    key = name if name in prompts else ALIASES.get(name.lower(), name)
    if key not in prompts:
        raise BadInputError(
            f"class {name!r} has no prompts; add it to a --prompts file"
            + (f" (given: {src})" if src else "")
        )
    return prompts[key]


def class_embeddings(
    run: Any, classes: list[str], prompts: dict[str, dict[str, list[str]]], src: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """(positive (C, D), negative (C, D)): normalised means of each class's prompts."""
    pos, neg = [], []
    for name in classes:
        p = _prompt_for(name, prompts, src)
        for side, acc in (("positive", pos), ("negative", neg)):
            e = report_text_embeddings(run, p[side])
            e = e[~torch.isnan(e).any(dim=1)]
            if len(e) == 0:
                raise BadInputError(f"class {name!r}: no {side} prompt has a known token")
            acc.append(torch.nn.functional.normalize(e.mean(0), dim=0))
    return torch.stack(pos).numpy(), torch.stack(neg).numpy()


def zeroshot_scores(img: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(N, C) score = cos(image, positive) - cos(image, negative) (all L2-normalised)."""
    return img @ pos.T - img @ neg.T


def _targets(kind: str, prepared: Any, task: str) -> tuple[np.ndarray, list[str], str]:
    names = prepared.label_names
    labels = prepared.labels_array()
    if kind == "chexpert5":
        missing = [c for c in CHEXPERT5 if c not in names]
        if missing:
            raise BadInputError(
                f"{prepared.root / 'meta.json'}: {task} needs labels {', '.join(missing)}"
            )
        y = labels[:, [names.index(c) for c in CHEXPERT5]]
        return np.where(np.isnan(y) | (y < 0), 0.0, y), list(CHEXPERT5), "multilabel"
    from cmcgns_cli.downstream.tasks import CLS_TASKS

    base = CLS_TASKS["rsna-cls" if kind == "binary" else "covidx-cls"]
    y, cls_names = base.targets(prepared)
    return y, list(cls_names), base.kind


def check_dataset(task: str, meta: dict[str, Any], data: Path) -> None:
    """Refuse (exit 2, one line) a prepared dataset (its ``meta.json`` as ``meta``) that the
    zero-shot ``task`` cannot score: its classes come from that dataset's labels.

    Raises:
        BadInputError: naming ``data``'s meta.json, the task and both dataset names.
    """
    accepted = DATASETS[task][0]
    found = meta.get("dataset")
    if found not in (*accepted, "folder"):
        raise BadInputError(
            f"{Path(data) / 'meta.json'}: task {task} needs a prepared {accepted[0]} dataset, "
            f"this one is {found!r}"
        )


def evaluate_zeroshot(
    task: str,
    data: Path,
    checkpoint: Path,
    dev: torch.device,
    *,
    prompts_file: Path | None = None,
    split: str = "test",
    random_init: bool = False,
    batch_size: int = 64,
) -> dict[str, Any]:
    if task not in DATASETS:
        raise BadInputError(f"--task {task}: choose one of {', '.join(DATASETS)}")
    kind = DATASETS[task][1]
    prompts = load_prompts(prompts_file)
    prepared = open_prepared(data)
    check_dataset(task, prepared.meta, data)
    y_all, classes, ykind = _targets(kind, prepared, task)
    rows = prepared.split_indices(split)
    if len(rows) == 0:
        raise BadInputError(f"{Path(data) / 'manifest.parquet'}: no rows in split {split!r}")
    run = open_run(checkpoint, dev, random_init=random_init)
    img = prepared_image_embeddings(run, prepared.images, rows, batch_size).numpy()
    pos, neg = class_embeddings(run, classes, prompts, prompts_file)
    scores = zeroshot_scores(img, pos, neg)
    y = y_all[rows]
    if ykind == "multiclass":
        onehot = np.eye(len(classes), dtype=np.float32)[y]
        metrics = auroc(onehot, scores, classes)
        metrics["accuracy"] = accuracy(y, scores)
        headline = "accuracy"
        fn = accuracy
    else:
        metrics = auroc(y, scores, classes)
        headline = "macro_auroc"

        def fn(yy: np.ndarray, ss: np.ndarray) -> float:
            return auroc(yy, ss, classes)["macro_auroc"]

        one = np.flatnonzero(y.sum(axis=1) == 1) if y.shape[1] > 1 else np.zeros(0, int)
        if len(one):
            metrics["accuracy"] = accuracy(y[one].argmax(axis=1), scores[one])
            metrics["accuracy_n"] = int(len(one))
    metrics["n"] = int(len(rows))
    return {
        "task": task,
        "metric": headline,
        "metrics": metrics,
        "protocol": {
            "seed": 0,
            "split": split,
            "weights": run.weights,
            "classes": classes,
            "prompts": str(prompts_file) if prompts_file else "default",
            "data_protocol": prepared.meta.get("protocol"),
        },
        "per_image": {"kind": "scores", "y": y, "scores": scores, "fn": fn},
    }

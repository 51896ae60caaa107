"""CheXpert-v1.0(-small): the 5 competition labels, frontal views, MGCA's split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmcgns_cli.data.paths import PathResolver, path_parts
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, parse_label, read_csv_checked
from cmcgns_cli.errors import BadInputError

TASKS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
# MGCA's uncertain (-1) mapping: U-Ones for Atelectasis, Edema, Pleural Effusion; U-Zeros
# for Cardiomegaly, Consolidation. Blanks (unmentioned) -> 0.
UNCERTAIN_TO = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 0.0,
    "Consolidation": 0.0,
    "Edema": 1.0,
    "Pleural Effusion": 1.0,
}
LABEL_POLICY = (
    "5 competition labels (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion); "
    "blank (unmentioned) -> 0; uncertain (-1) -> 1 for Atelectasis, Edema, Pleural Effusion "
    "(U-Ones) and -> 0 for Cardiomegaly, Consolidation (U-Zeros), as in MGCA."
)
# The 14 CheXpert observations less No Finding: the 5x200 rule checks all of them.
OBSERVATIONS = [
    *TASKS,
    "Enlarged Cardiomediastinum",
    "Lung Lesion",
    "Lung Opacity",
    "Pneumonia",
    "Pneumothorax",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
VALID_NUM = 5000
PER_TASK_5X200 = 200


def dataset_root(src: Path) -> Path:
    """Accept the folder holding ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``) or it."""
    if (src / "train.csv").is_file():
        return src
    for name in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
        if (src / name / "train.csv").is_file():
            return src / name
    raise BadInputError(f"{src}: no train.csv here or in CheXpert-v1.0-small/ (chexpert layout)")


def _resolve(root: Path, rel: str) -> Path:
    rel = "/".join(path_parts(rel))  # Windows separators as on Linux
    first, _, rest = rel.partition("/")
    if first.startswith("CheXpert-v1.0") and rest:
        return root / rest
    return root / rel


def _labels(row: dict[str, str]) -> list[float]:
    out = []
    for t in TASKS:
        v = parse_label(row[t])
        if np.isnan(v):
            v = 0.0
        elif v == -1.0:
            v = UNCERTAIN_TO[t]
        out.append(v)
    return out


def _patient(path: str) -> tuple[str, str]:
    m = re.search(r"(patient\d+)/(study\d+)", path)
    return (m.group(1), f"{m.group(1)}/{m.group(2)}") if m else ("", "")


def _candidates_5x200(train: pd.DataFrame, per_task: int) -> list[np.ndarray]:
    """Per competition task, positions (in ``train``, frontal rows) of its 5x200 images.

    A candidate for a task is positive for it and 0 (blank counts as 0) for all twelve
    other observations except No Finding; ``per_task`` of them are drawn with pandas
    ``sample(n, random_state=0)``, as the authors' CheXpert preprocessing does.
    """
    vals = np.stack(
        [train[c].map(parse_label).fillna(0.0).to_numpy(dtype=float) for c in OBSERVATIONS], 1
    )
    out = []
    for i in range(len(TASKS)):
        want = np.zeros(len(OBSERVATIONS))
        want[i] = 1.0
        cand = pd.DataFrame({"pos": np.flatnonzero((vals == want).all(1))})
        n = min(per_task, len(cand))
        out.append(cand.sample(n=n, random_state=0)["pos"].to_numpy() if n else cand["pos"].values)
    return out


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    protocol = options.get("protocol", "mgca")
    root = dataset_root(src)
    required = ["Path", "Frontal/Lateral", *OBSERVATIONS]
    train_all = read_csv_checked(root / "train.csv", required)
    valid = read_csv_checked(root / "valid.csv", ["Path", "Frontal/Lateral", *TASKS])
    skipped: list[Skip] = []

    def is_frontal(df: pd.DataFrame) -> np.ndarray:
        return (df["Frontal/Lateral"].str.strip().str.lower() == "frontal").to_numpy()

    def frontal(df: pd.DataFrame) -> pd.DataFrame:
        keep = is_frontal(df)
        for rel, fl in df.loc[~keep, ["Path", "Frontal/Lateral"]].itertuples(index=False):
            skipped.append(Skip(rel, str(_resolve(root, rel)), "not_frontal", fl))
        return df.loc[keep]  # keeps train.csv's row labels

    train, valid = frontal(train_all), frontal(valid).reset_index(drop=True)
    per_task = min(PER_TASK_5X200, len(train) // 100)
    picks = _candidates_5x200(train, per_task) if per_task > 0 else []
    held_labels = [train.index[p] for pos in picks for p in pos]  # train.csv row labels
    held = set(held_labels)
    # The authors draw the validation rows from ALL views of train.csv less the 5x200
    # images (np.random.seed(0); choice(len, 5000, replace=False)); the frontal ones of
    # them are the validation images.
    pop = train_all.loc[~train_all.index.isin(held_labels)]
    n_valid = min(VALID_NUM, len(pop) // 10)
    drawn = np.random.RandomState(0).choice(len(pop), size=n_valid, replace=False)
    frontal_pop = is_frontal(pop)
    parts: list[tuple[str, list[int], list[int]]] = []  # (split, row labels, mgca order)
    if protocol == "grouped":
        # no patient in two splits: the other images of a 5x200 patient join no split
        held_patients = {_patient(train.at[i, "Path"])[0] for i in held} - {""}
        rest = []
        for i in train.index:
            if i in held:
                continue
            path = str(train.at[i, "Path"])
            if _patient(path)[0] in held_patients:
                skipped.append(Skip(path, str(_resolve(root, path)), "not_in_split",
                                    "patient of a 5x200 image"))  # fmt: skip
            else:
                rest.append(i)
        patients = [_patient(train.at[i, "Path"])[0] or train.at[i, "Path"] for i in rest]
        order = {p: k for k, p in enumerate(dict.fromkeys(patients))}
        k = round(len(order) * int(frontal_pop[drawn].sum()) / max(len(rest), 1))
        chosen = set(np.random.RandomState(0).choice(len(order), size=k, replace=False).tolist())
        val_mask = [order[p] in chosen for p in patients]
        parts.append(("train", [i for i, v in zip(rest, val_mask, strict=True) if not v], []))
        parts.append(("validate", [i for i, v in zip(rest, val_mask, strict=True) if v], []))
    else:
        val_labels = [pop.index[p] for p in drawn if frontal_pop[p]]
        # The authors then drop the drawn POSITIONS as row LABELS (df.drop(valid_ids)):
        # reproduced, so most validation images also stay in train (see docs/protocol.md).
        dropped = set(drawn.tolist())
        train_labels = [i for i in pop.index[frontal_pop] if i not in dropped]
        parts.append(("train", train_labels, []))
        parts.append(("validate", val_labels, []))
    parts.append(("5x200", held_labels, []))
    items: list[Item] = []
    resolver = PathResolver([root, root.parent], first_guess=lambda r: _resolve(root, r))
    frames = [(name, train_all.loc[labels]) for name, labels, _ in parts]
    frames.append(("test", valid))
    for split, df in frames:
        for order, row in enumerate(df.to_dict("records")):
            rel = row["Path"]
            patient, study = _patient(rel)
            items.append(
                Item(
                    id=rel,
                    source_path=str(resolver.resolve(rel)),
                    split=split,
                    patient_id=patient,
                    study_id=study,
                    view=(row.get("AP/PA") or "").strip().upper(),
                    labels=_labels(row),
                    extra={"mgca_order": order},
                )
            )
    desc = (
        "test = official valid.csv (frontal); 5x200 (its own split) = per task "
        f"{per_task} frontal train.csv images positive for that task and 0 for the twelve "
        "other observations except No Finding (pandas sample(n, random_state=0)); "
        f"validate = the frontal ones of {n_valid} rows (min(5000, 10%)) drawn with numpy "
        "RandomState(0) from all views of train.csv less the 5x200 images"
    )
    if protocol == "grouped":
        desc += (
            "; grouped: as many validation images drawn by patient (RandomState(0)) so no "
            "patient is in two splits; the other images of a 5x200 patient are skipped "
            "(not_in_split); train = the rest"
        )
    else:
        desc += (
            "; train = the frontal rows left after dropping the drawn positions as row labels, "
            "as the authors' code does: most validation images stay in train (model "
            "selection only; use --protocol grouped for a leak-free validation)"
        )
    leak = None
    if protocol != "grouped":
        val_set = {i for i in parts[1][1]}
        leak = sum(1 for i in parts[0][1] if i in val_set)
    return ReaderResult(
        items=items,
        skipped=skipped,
        meta={
            "label_names": TASKS,
            "label_policy": LABEL_POLICY,
            "split_description": desc,
            "validate_in_train": leak,
            **({"path_rerooting": resolver.report()} if resolver.rerooted else {}),
        },
    )

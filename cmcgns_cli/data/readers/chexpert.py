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


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    protocol = options.get("protocol", "mgca")
    root = dataset_root(src)
    required = ["Path", "Frontal/Lateral", *TASKS]
    train = read_csv_checked(root / "train.csv", required)
    valid = read_csv_checked(root / "valid.csv", required)
    skipped: list[Skip] = []

    def frontal(df: pd.DataFrame) -> pd.DataFrame:
        keep = df["Frontal/Lateral"].str.strip().str.lower() == "frontal"
        for rel, fl in df.loc[~keep, ["Path", "Frontal/Lateral"]].itertuples(index=False):
            skipped.append(Skip(rel, str(_resolve(root, rel)), "not_frontal", fl))
        return df.loc[keep].reset_index(drop=True)

    train, valid = frontal(train), frontal(valid)
    # 5x200: per task, images positive for that task and negative (after blank->0) for the
    # other four; MGCA holds these out for zero-shot evaluation. Scaled down for small sets.
    per_task = min(PER_TASK_5X200, len(train) // 100)
    held = np.zeros(len(train), dtype=bool)
    if per_task > 0:
        vals = np.stack(
            [train[t].map(parse_label).fillna(0.0).to_numpy(dtype=float) for t in TASKS], 1
        )
        for i in range(len(TASKS)):
            want = np.zeros(len(TASKS))
            want[i] = 1.0
            cand = train.loc[(vals == want).all(1)]
            n = min(per_task, len(cand))
            if n:
                held[cand.sample(n=n, random_state=0).index.to_numpy()] = True
    for rel in train.loc[held, "Path"]:
        skipped.append(Skip(rel, str(_resolve(root, rel)), "held_out_5x200"))
    rest = train.loc[~held].reset_index(drop=True)
    n_valid = min(VALID_NUM, len(rest) // 10)
    split = np.array(["train"] * len(rest), dtype=object)
    if protocol == "grouped":
        patients = [_patient(p)[0] or p for p in rest["Path"]]
        order = {p: i for i, p in enumerate(dict.fromkeys(patients))}
        k = round(len(order) * n_valid / max(len(rest), 1))
        chosen = set(np.random.RandomState(0).choice(len(order), size=k, replace=False).tolist())
        for i, p in enumerate(patients):
            if order[p] in chosen:
                split[i] = "validate"
    elif n_valid:
        split[np.random.RandomState(0).choice(len(rest), size=n_valid, replace=False)] = "validate"
    items: list[Item] = []
    resolver = PathResolver([root, root.parent], first_guess=lambda r: _resolve(root, r))
    for df, splits_ in ((rest, split), (valid, np.array(["test"] * len(valid), dtype=object))):
        for row, s in zip(df.to_dict("records"), splits_, strict=True):
            rel = row["Path"]
            patient, study = _patient(rel)
            items.append(
                Item(
                    id=rel,
                    source_path=str(resolver.resolve(rel)),
                    split=str(s),
                    patient_id=patient,
                    study_id=study,
                    view=(row.get("AP/PA") or "").strip().upper(),
                    labels=_labels(row),
                )
            )
    desc = (
        "test = official valid.csv (frontal); from train.csv (frontal) the 5x200 subset "
        f"({per_task} per task, pandas sample random_state=0) is held out, then "
        f"{n_valid} images (min(5000, 10%)) drawn with numpy RandomState(0) become validate"
    )
    if protocol == "grouped":
        desc += "; grouped: validate drawn by patient so no patient is in two splits"
    meta = {"label_names": TASKS, "label_policy": LABEL_POLICY, "split_description": desc}
    if resolver.rerooted:
        meta["path_rerooting"] = resolver.report()
    return ReaderResult(items=items, skipped=skipped, meta=meta)

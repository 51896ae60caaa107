"""``--protocol mgca`` against the published preprocessing, re-derived here on hand-made
CSVs with scikit-learn / pandas / numpy / shapely called directly (not through cmcgns)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from cmcgns_cli.data.prepared import Prepared
from cmcgns_cli.data.readers import chexpert, object_cxr, rsna, siim
from cmcgns_cli.downstream import pools
from tests.standards import CHEXPERT_TASKS

# --------------------------------------------------------------------------- helpers


def _prepared(items, meta=None) -> Prepared:
    """A Prepared over reader items (no pixels): enough for the samplers."""
    rows = [{"id": i.id, "split": i.split, **i.extra} for i in items]
    manifest = pd.DataFrame(rows)
    return Prepared(
        root=__import__("pathlib").Path("."),
        meta=meta or {"protocol": {"name": "mgca"}},
        manifest=manifest,
        images=np.zeros((len(manifest), 1, 1), np.uint8),
        masks=None,
    )


def _rsna_csv(tmp_path, n=30):
    """30 patients in shuffled id order; every third has a box, patient 3 has two."""
    rng = np.random.default_rng(5)
    pids = [f"p{int(v):04d}" for v in rng.permutation(n) * 7 + 11]
    rows = []
    for k, pid in enumerate(pids):
        if k % 3 == 0:
            rows.append(dict(patientId=pid, x=10 + k, y=20, width=30, height=40, Target=1))
            if k == 3:
                rows.append(dict(patientId=pid, x=200, y=100, width=50, height=60, Target=1))
        else:
            rows.append(dict(patientId=pid, x="", y="", width="", height="", Target=0))
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "stage_2_train_labels.csv", index=False)
    return df


def _published_rsna_table(df: pd.DataFrame) -> pd.DataFrame:
    """The authors' groupby('patientId') table: sorted by id, Target = any box."""
    g = df.groupby("patientId")["Target"].max().reset_index()
    return g


# --------------------------------------------------------------------------- RSNA


def test_rsna_dense_split_matches_published_rule(tmp_path):
    df = _rsna_csv(tmp_path)
    table = _published_rsna_table(df)
    holdout = round(10674 * 30 / 26684)  # 12: the public 2 x 5,337, scaled to 30 patients
    train, held = train_test_split(table, test_size=holdout, random_state=0)
    test, valid = train_test_split(held, test_size=0.5, random_state=0)
    items = rsna.read(tmp_path, {"protocol": "mgca"}).items
    dense = {i.id: i.extra["dense_split"] for i in items}
    assert {k for k, s in dense.items() if s == "test"} == set(test["patientId"])
    assert {k for k, s in dense.items() if s == "validate"} == set(valid["patientId"])
    assert sum(s == "train" for s in dense.values()) == 18
    # positions in the published tables
    order = {i.id: i.extra["dense_order"] for i in items}
    assert [order[p] for p in train["patientId"]] == list(range(18))
    # the classification split stays 70/15/15 (MGCA's preprocess_rsna_data)
    c_train, c_rest = train_test_split(table, test_size=0.3, random_state=0)
    c_test, _ = train_test_split(c_rest, test_size=0.5, random_state=0)
    cls = {i.id: i.split for i in items}
    assert {k for k, s in cls.items() if s == "test"} == set(c_test["patientId"])
    assert len(c_train) == 21 and sum(s == "train" for s in cls.values()) == 21


@pytest.mark.parametrize("fraction,seed", [(0.1, 42), (0.5, 3), (1.0, 42)])
def test_rsna_fraction_draws_match_published(tmp_path, fraction, seed):
    df = _rsna_csv(tmp_path)
    table = _published_rsna_table(df)
    items = rsna.read(tmp_path, {"protocol": "mgca"}).items
    prep = _prepared(items)
    ids = prep.manifest["id"].to_numpy()
    # classification: train_df.sample(frac, random_state=42), whatever the run seed
    c_train, _ = train_test_split(table, test_size=0.3, random_state=0)
    expect_cls = (
        set(c_train["patientId"])
        if fraction == 1.0
        else set(c_train.sample(frac=fraction, random_state=42)["patientId"])
    )
    train_rows = prep.split_indices("train")
    got = pools.cls_subset(prep, train_rows, np.zeros(len(ids)), fraction, seed, "mgca")
    assert set(ids[got]) == expect_cls
    # detection/segmentation: np.random.seed(seed); choice(n, int(p * n), replace=False)
    d_train, _ = train_test_split(table, test_size=round(10674 * 30 / 26684), random_state=0)
    np.random.seed(seed)
    pick = np.random.choice(len(d_train), int(fraction * len(d_train)), replace=False)
    expect_det = set(d_train["patientId"].to_numpy()[pick])
    dense_train = np.flatnonzero(prep.manifest["dense_split"].to_numpy() == "train")
    flags = np.zeros(len(ids), dtype=np.int64)
    got, pool = pools.dense_subset(
        prep, "rsna-det", dense_train, flags, fraction, seed, "mgca", "dense_order"
    )
    assert set(ids[got]) == expect_det and pool["n_pool"] == 18


def test_mgca_and_stratified_samplers_differ_and_tiny_fraction_fails(tmp_path):
    _rsna_csv(tmp_path)
    prep = _prepared(rsna.read(tmp_path, {"protocol": "mgca"}).items)
    train_rows = prep.split_indices("train")
    flags = np.zeros(len(prep.manifest), dtype=np.int64)
    flags[train_rows[::3]] = 1
    a, _ = pools.dense_subset(prep, "rsna-det", train_rows, flags, 0.3, 0, "mgca", "mgca_order")
    b, _ = pools.dense_subset(
        prep, "rsna-det", train_rows, flags, 0.3, 0, "stratified", "mgca_order"
    )
    assert len(a) == int(0.3 * 21) and len(b) == round(0.3 * 7) + round(0.3 * 14)
    from cmcgns_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="keeps no image"):
        pools.dense_subset(prep, "rsna-det", train_rows, flags, 0.01, 0, "mgca", "mgca_order")
    assert pools.resolve_sampler(prep, "auto") == "mgca"
    grouped = _prepared(rsna.read(tmp_path, {}).items, {"preprocess": {"protocol": "grouped"}})
    assert pools.resolve_sampler(grouped, None) == "stratified"


# --------------------------------------------------------------------------- SIIM


def _siim_csv(tmp_path, n_images=26):
    """30 RLE rows: images 0, 5, 9, 13 have two rows; every fourth image is positive."""
    rows = []
    for k in range(n_images):
        image_id = f"1.2.{k}"
        rle = " 3 4 10 2" if k % 4 == 0 else " -1"
        rows.append((image_id, rle))
        if k in (0, 5, 9, 13):
            rows.append((image_id, " 50 5" if k % 4 == 0 else " -1"))
    df = pd.DataFrame(rows, columns=["ImageId", " EncodedPixels"])
    df.to_csv(tmp_path / "train-rle.csv", index=False)
    return pd.read_csv(tmp_path / "train-rle.csv")


@pytest.mark.parametrize("fraction,seed", [(1.0, 42), (0.5, 42), (0.3, 7)])
def test_siim_balanced_pool_and_fraction_match_published(tmp_path, fraction, seed):
    df = _siim_csv(tmp_path)
    assert len(df) == 30
    train_df, _ = train_test_split(df, test_size=0.3, random_state=0)
    # the authors' SIIM dataset: positives + as many negatives, then the fraction
    cls = train_df[" EncodedPixels"].str.strip() != "-1"
    df_pos, df_neg = train_df[cls], train_df[~cls]
    n_pos = df_pos["ImageId"].nunique()
    np.random.seed(seed)
    neg_sel = np.random.choice(df_neg["ImageId"].unique(), size=n_pos, replace=False)
    pool_df = pd.concat([df_pos, df_neg[df_neg["ImageId"].isin(neg_sel)]])
    ids = pool_df["ImageId"].unique()
    expect = (
        set(ids)
        if fraction == 1.0
        else set(np.random.choice(ids, size=int(len(ids) * fraction), replace=False))
    )
    items = siim.read(tmp_path, {"protocol": "mgca"}).items
    prep = _prepared(items)
    flags = np.array([int(i.labels[0]) for i in items])
    train_rows = prep.split_indices("train")
    got, pool = pools.dense_subset(
        prep, "siim-seg", train_rows, flags, fraction, seed, "mgca", "mgca_order"
    )
    assert set(prep.manifest["id"].to_numpy()[got]) == expect
    assert pool["n_pool"] == 2 * n_pos and pool["n_pool_positive"] == n_pos


# --------------------------------------------------------------------------- Object-CXR


def test_object_cxr_valid_is_ten_percent_with_random_state_0(tmp_path):
    names = [f"{k:05d}" for k in range(30)]
    pd.DataFrame({"image_name": [f"{n}.jpg" for n in names], "annotation": ""}).to_csv(
        tmp_path / "train.csv", index=False
    )
    pd.DataFrame({"image_name": ["90000.jpg"], "annotation": "0 1 2 30 40"}).to_csv(
        tmp_path / "dev.csv", index=False
    )
    table = pd.read_csv(tmp_path / "train.csv")
    train, valid = train_test_split(table, test_size=0.1, random_state=0)
    res = object_cxr.read(tmp_path, {"protocol": "mgca"})
    got = {i.id for i in res.items if i.split == "validate"}
    assert got == set(valid["image_name"]) and len(got) == 3
    order = {i.id: i.extra["mgca_order"] for i in res.items if i.split == "train"}
    assert [order[n] for n in train["image_name"]] == list(range(27))
    assert res.meta["box_versions"]["geos"]


@pytest.mark.parametrize(
    "points",
    [
        [(100, 100), (400, 120), (380, 300), (120, 280)],  # a quadrilateral
        [(500, 500), (900, 520), (560, 560), (880, 900), (520, 880)],  # a bow-tie-like star
        [(10, 10), (60, 10)],  # two points: a segment
    ],
)
def test_polygon_box_is_the_published_rule(points):
    from shapely.geometry import LineString
    from shapely.ops import polylabel

    flat = [v for p in points for v in p]
    ring = LineString(points + [points[0]])
    pole = polylabel(ring.buffer(100), tolerance=10)
    (x0, y0, x1, y1) = ring.bounds
    hw = max(abs(x0 - pole.x), abs(x1 - pole.x))
    hh = max(abs(y0 - pole.y), abs(y1 - pole.y))
    expect = [pole.x - hw, pole.y - hh, 2 * hw, 2 * hh]
    [(shape, box)] = object_cxr.parse_annotation("2 " + " ".join(map(str, flat)))
    assert shape == 2
    np.testing.assert_allclose(box, expect, atol=1e-9)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert box[0] <= min(xs) and box[1] <= min(ys)  # contains the polygon's bbox
    assert box[0] + box[2] >= max(xs) and box[1] + box[3] >= max(ys)
    [(_, bb)] = object_cxr.parse_annotation("2 " + " ".join(map(str, flat)), "bbox")
    assert bb == [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def test_polygon_box_by_hand_on_a_square():
    # a 200 x 200 square ring: symmetric, so the pole is its centre (200, 200) within the
    # 10 px tolerance, and the box is the square itself
    [(_, box)] = object_cxr.parse_annotation("2 100 100 300 100 300 300 100 300")
    np.testing.assert_allclose(box, [100, 100, 200, 200], atol=10)


# --------------------------------------------------------------------------- CheXpert

OBS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def _chexpert_csv(tmp_path, n=360):
    base = tmp_path / "CheXpert-v1.0-small"
    base.mkdir()
    rng = np.random.default_rng(11)
    rows = []
    for k in range(n):
        lateral = k % 9 == 4
        vals = {c: "" for c in OBS}
        task = k % 6  # 0..4: one competition task; 5: a mixed row
        if task < 5:
            vals[CHEXPERT_TASKS[task]] = "1.0"
            if k % 7 == 0:  # the old rule would keep it; the published one must not
                vals["Lung Opacity"] = "1.0"
            if k % 11 == 0:
                vals["No Finding"] = "1.0"  # not checked by the rule
            if k % 13 == 0:
                vals["Support Devices"] = "-1.0"
        else:
            for c in CHEXPERT_TASKS:
                vals[c] = str(rng.choice(["1.0", "0.0", "-1.0", ""]))
        rows.append(
            {
                "Path": f"CheXpert-v1.0-small/train/patient{k:05d}/study1/view1_"
                + ("lateral.jpg" if lateral else "frontal.jpg"),
                "Sex": "Female", "Age": "60",
                "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                "AP/PA": "" if lateral else "PA",
                **vals,
            }
        )  # fmt: skip
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBS]
    pd.DataFrame(rows, columns=cols).to_csv(base / "train.csv", index=False)
    valid = [dict(rows[0], Path="CheXpert-v1.0-small/valid/patient90000/study1/view1_frontal.jpg")]
    pd.DataFrame(valid, columns=cols).to_csv(base / "valid.csv", index=False)
    return base


def test_chexpert_5x200_and_validation_match_published(tmp_path):
    base = _chexpert_csv(tmp_path)
    df = pd.read_csv(base / "train.csv")
    frontal = df.astype(object).fillna(0)
    frontal = frontal[frontal["Frontal/Lateral"] == "Frontal"]
    per_task = len(frontal) // 100  # the 200 of the public set, scaled
    others = [c for c in OBS if c != "No Finding"]
    picks = []
    for t in CHEXPERT_TASKS:
        want = {c: (1.0 if c == t else 0.0) for c in others}
        cand = frontal[np.logical_and.reduce([frontal[c] == v for c, v in want.items()])]
        picks.append(cand.sample(n=per_task, random_state=0))
    df_200 = pd.concat(picks)
    pop = df[~df["Path"].isin(df_200["Path"])]
    n_valid = len(pop) // 10
    valid_ids = np.random.RandomState(0).choice(len(pop), size=n_valid, replace=False)
    valid_df = pop.iloc[valid_ids]
    train_df = pop.drop(valid_ids, errors="ignore")
    is_f = "Frontal/Lateral"
    expect_val = set(valid_df.loc[valid_df[is_f] == "Frontal", "Path"])
    expect_train = set(train_df.loc[train_df[is_f] == "Frontal", "Path"])

    res = chexpert.read(tmp_path, {"protocol": "mgca"})
    by = {}
    for i in res.items:
        by.setdefault(i.split, set()).add(i.id)
    assert by["5x200"] == set(df_200["Path"]) and len(by["5x200"]) == 5 * per_task
    assert by["validate"] == expect_val
    assert by["train"] == expect_train
    assert res.meta["validate_in_train"] == len(expect_val & expect_train) > 0
    assert not any(df.set_index("Path").loc[p, "Lung Opacity"] == 1.0 for p in by["5x200"])
    # each held-out image carries exactly the one-hot label of the task it was drawn for
    one_hot = {
        "Atelectasis": [1.0, 0.0, 0.0, 0.0, 0.0],
        "Cardiomegaly": [0.0, 1.0, 0.0, 0.0, 0.0],
        "Consolidation": [0.0, 0.0, 1.0, 0.0, 0.0],
        "Edema": [0.0, 0.0, 0.0, 1.0, 0.0],
        "Pleural Effusion": [0.0, 0.0, 0.0, 0.0, 1.0],
    }
    task_of = {p: t for t, pick in zip(CHEXPERT_TASKS, picks, strict=True) for p in pick["Path"]}
    held = {i.id: list(i.labels) for i in res.items if i.split == "5x200"}
    assert held == {p: one_hot[t] for p, t in task_of.items()}

    g = chexpert.read(tmp_path, {"protocol": "grouped"})
    gs = {}
    for i in g.items:
        gs.setdefault(i.split, set()).add(i.id)
    assert not gs["validate"] & gs["train"] and gs["5x200"] == by["5x200"]


# --------------------------------------------------------------------------- MIMIC text


def test_mgca_report_text_rules():
    from cmcgns_cli.data.mgca_text import mgca_report_text

    report = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___ with cough\n\n"
        " FINDINGS:  Old findings text.\n\n"
        " IMPRESSION:  First impression.\n\n"
        " FINDINGS:  Lungs are clear. Heart size is normal.\n\n"
        " CONCLUSION:  No acute process.\n"
    )
    # joined by a blank line (a sentence boundary), not the authors' single space
    assert mgca_report_text(report) == "No acute process.\n\nLungs are clear. Heart size is normal."
    assert mgca_report_text(" INDICATION: cough\n\n Lungs are clear.\n") is None
    assert mgca_report_text(" FINDINGS:\n\n IMPRESSION:  Clear.\n") == "Clear."
    assert mgca_report_text(" PA AND LATERAL VIEWS OF THE CHEST:  Clear lungs.\n") == (
        "Clear lungs."
    )


def test_mimic_mgca_drops_reports_without_sections_and_validates_on_test(prepared):
    out, _, _ = prepared("mimic")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["pretrain_validate_split"] == "validate+test"
    assert meta["protocol"]["name"] == "mgca"
    assert meta["protocol"]["rules"]["pretrain_validate_split"] == "validate+test"
    gout, _, _ = prepared("mimic", protocol="grouped")
    assert json.loads((gout / "meta.json").read_text())["pretrain_validate_split"] == "validate"


def test_meta_records_protocol_and_box_versions(prepared):
    import shapely

    out, _, _ = prepared("object-cxr")
    meta = json.loads((out / "meta.json").read_text())
    rec = meta["protocol"]
    assert rec["name"] == "mgca" and rec["fraction_sampler"] == "mgca"
    assert rec["versions"]["geos"] == shapely.geos_version_string
    assert rec["versions"]["shapely"] == shapely.__version__
    assert "test_size=0.1" in rec["rules"]["split_description"]
    assert meta["versions"]["shapely"] == shapely.__version__

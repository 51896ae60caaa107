"""Object-CXR (MIDL 2020 foreign objects): boxes from the annotation string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data import splits
from cmcgns_cli.data.paths import PathResolver
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, read_csv_checked

SHAPES = {0: "rectangle", 1: "ellipse", 2: "polygon"}
VALID_FRACTION = 0.1  # the authors' object_cxr preprocessing: test_size=0.1


def polygon_bbox(points: np.ndarray) -> list[float]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    (ax, ay), (bx, by) = pts.min(0), pts.max(0)
    return [float(ax), float(ay), float(bx - ax), float(by - ay)]


def parse_annotation(text: str, polygon_box: str = "pole") -> list[tuple[int, list[float]]]:
    """``TYPE x1 y1 x2 y2 ...;...`` -> [(shape, [x, y, w, h])]. Raises ValueError."""
    out = []
    for obj in str(text).split(";"):
        nums = obj.split()
        if not nums:
            continue
        shape = int(nums[0])
        coords = [float(v) for v in nums[1:]]
        if shape not in SHAPES or len(coords) < 4 or len(coords) % 2:
            raise ValueError(f"bad object {obj.strip()[:40]!r}")
        pts = np.asarray(coords).reshape(-1, 2)
        if shape in (0, 1):
            (ax, ay), (bx, by) = pts[:2].min(0), pts[:2].max(0)
            box = [float(ax), float(ay), float(bx - ax), float(by - ay)]
        elif polygon_box == "bbox":
            box = polygon_bbox(pts)
        else:
            box = mgca.polylabel_box(pts)
        out.append((shape, box))
    return out


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    protocol = options.get("protocol", "mgca")
    polygon_box = options.get("polygon_box") or "pole"
    if polygon_box not in ("pole", "bbox"):
        from cmcgns_cli.errors import BadInputError

        raise BadInputError(f"--polygon-box {polygon_box!r}: expected pole or bbox")
    train = read_csv_checked(src / "train.csv", ["image_name", "annotation"])
    dev = read_csv_checked(src / "dev.csv", ["image_name", "annotation"])
    names = [n.strip() for n in train["image_name"]]
    if protocol == "grouped":
        split_of = splits.grouped(
            names, lambda n, seed: splits.split_train_valid(n, VALID_FRACTION, seed), seed=0
        )
        order_of = list(range(len(names)))
    else:  # the authors' split keeps 10 % of train.csv for validation
        split_of, order_of = mgca.split_train_valid_ordered(len(names), VALID_FRACTION)
    rows = [
        (n, a, s, "train", o)
        for n, a, s, o in zip(names, train["annotation"], split_of, order_of, strict=True)
    ]
    rows += [
        (n.strip(), a, "test", "dev", k)
        for k, (n, a) in enumerate(zip(dev["image_name"], dev["annotation"], strict=True))
    ]
    items: list[Item] = []
    skipped: list[Skip] = []
    resolvers = {f: PathResolver([src / f, src]) for f in ("train", "dev")}
    for name, ann, split, folder, order in rows:
        fname = name if name.lower().endswith((".jpg", ".jpeg", ".png")) else f"{name}.jpg"
        path = str(resolvers[folder].resolve(fname)) if name else str(src / folder / fname)
        if not name:
            skipped.append(Skip("", path, "missing_value:image_name"))
            continue
        try:
            objects = parse_annotation(ann, polygon_box)
        except ValueError as exc:
            skipped.append(Skip(name, path, "bad_annotation", str(exc)))
            continue
        items.append(
            Item(
                id=name,
                source_path=path,
                split=split,
                patient_id=name,
                study_id=name,
                labels=[1.0 if objects else 0.0],
                boxes=[b for _, b in objects],
                box_labels=[0] * len(objects),
                extra={"box_shapes": [SHAPES[s] for s, _ in objects], "mgca_order": order},
            )
        )
    meta = {
        "label_names": ["foreign_object"],
        "box_classes": ["foreign_object"],
        "label_policy": "1 when the annotation lists any object",
        "polygon_box": polygon_box,
        "box_rule": "rectangles and ellipses -> their bounding rectangle; polygons -> "
        + (
            "the authors' rule: the point list closed into a ring (a line), buffered by 100 px; "
            "box centred on the pole of inaccessibility of that shape (shapely polylabel, "
            "tolerance 10 px), half-width/height = the larger distance from the pole to the "
            "ring's bounding-box edges (contains the polygon's bounding box)"
            if polygon_box == "pole"
            else "their bounding box"
        ),
        "box_versions": mgca.box_versions(),
        "split_description": "test = dev.csv; train.csv split 90/10 into train / validate with "
        "scikit-learn train_test_split(test_size=0.1, random_state=0)"
        + (" over unique image names" if protocol == "grouped" else " (MGCA)"),
    }
    if any(r.rerooted for r in resolvers.values()):
        reports = [r.report() for r in resolvers.values()]
        meta["path_rerooting"] = {
            k: sum(int(rep[k]) for rep in reports)
            for k in ("as_recorded", "separators_normalised", "prefix_dropped", "not_found")
        } | {
            "dropped_prefixes": {
                p: n for rep in reports for p, n in rep["dropped_prefixes"].items()
            }
        }
    return ReaderResult(items=items, skipped=skipped, meta=meta)

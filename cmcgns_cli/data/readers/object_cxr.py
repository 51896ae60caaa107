"""Object-CXR (MIDL 2020 foreign objects): boxes from the annotation string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cmcgns_cli.data import splits
from cmcgns_cli.data.paths import PathResolver
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, read_csv_checked

SHAPES = {0: "rectangle", 1: "ellipse", 2: "polygon"}


def polygon_pole_box(points: np.ndarray) -> list[float]:
    """A square around the polygon's pole of inaccessibility (the point inside it farthest
    from its edges): side = 2 x that distance, found on a 1-px raster of the polygon."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0 = np.floor(pts.min(0)) - 1
    x1, y1 = np.ceil(pts.max(0)) + 1
    w, h = int(x1 - x0) + 1, int(y1 - y0) + 1
    raster = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(raster, [np.rint(pts - [x0, y0]).astype(np.int32)], 1)
    if not raster.any():
        return polygon_bbox(pts)
    dist = cv2.distanceTransform(raster, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    r = float(dist[py, px])
    cx, cy = px + x0, py + y0
    return [cx - r, cy - r, 2 * r, 2 * r]


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
            box = polygon_pole_box(pts)
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
        split_of = splits.grouped(names, splits.split_train_valid, seed=0)
    else:
        split_of = splits.split_train_valid(len(names), 0.2, seed=0)
    rows = [
        (n, a, s, "train") for n, a, s in zip(names, train["annotation"], split_of, strict=True)
    ]
    rows += [
        (n.strip(), a, "test", "dev")
        for n, a in zip(dev["image_name"], dev["annotation"], strict=True)
    ]
    items: list[Item] = []
    skipped: list[Skip] = []
    resolvers = {f: PathResolver([src / f, src]) for f in ("train", "dev")}
    for name, ann, split, folder in rows:
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
                extra={"box_shapes": [SHAPES[s] for s, _ in objects]},
            )
        )
    meta = {
        "label_names": ["foreign_object"],
        "box_classes": ["foreign_object"],
        "label_policy": "1 when the annotation lists any object",
        "polygon_box": polygon_box,
        "box_rule": "rectangles and ellipses -> their bounding rectangle; polygons -> "
        + (
            "a square of side 2r around the pole of inaccessibility (r = its distance to the "
            "edge), the MGCA protocol"
            if polygon_box == "pole"
            else "their bounding box"
        ),
        "split_description": "test = dev.csv; train.csv split 80/20 into train / validate with "
        "scikit-learn train_test_split(test_size=0.2, random_state=0)"
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

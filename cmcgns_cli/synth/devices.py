"""Support devices (tubes, lines, pacemaker, ECG leads) and foreign objects (buttons, coins,
jewellery, clips): dense metal or plastic drawn over the chest, each with its annotation.

Object-CXR annotation types: 0 rectangle, 1 ellipse (its bounding rectangle), 2 polygon.
"""

from __future__ import annotations

import cv2
import numpy as np

from cmcgns_cli.synth.anatomy import Anatomy, Canvas, Layers, ellipse_pts
from cmcgns_cli.synth.findings import Annot, Finding

METAL = 0.75
TUBE = 0.32


def _rect_pts(cu: float, cv_: float, hu: float, hv: float) -> np.ndarray:
    return np.array(
        [[cu - hu, cv_ - hv], [cu + hu, cv_ - hv], [cu + hu, cv_ + hv], [cu - hu, cv_ + hv]]
    )


def _bbox_px(cv: Canvas, pts: np.ndarray) -> list[float]:
    p = cv.px(pts)
    x0, y0 = np.clip(p.min(0), 0, [cv.w, cv.h])
    x1, y1 = np.clip(p.max(0), 0, [cv.w, cv.h])
    return [float(np.floor(x0)), float(np.floor(y0)), float(np.ceil(x1)), float(np.ceil(y1))]


def _add_rect(cv: Canvas, out: Annot, pts: np.ndarray, label: str) -> None:
    box = _bbox_px(cv, pts)
    out.boxes.append(box)
    out.box_labels.append(label)
    out.objects.append((0, np.array([[box[0], box[1]], [box[2], box[3]]])))


def _add_ellipse(cv: Canvas, out: Annot, pts: np.ndarray, label: str) -> None:
    box = _bbox_px(cv, pts)
    out.boxes.append(box)
    out.box_labels.append(label)
    out.objects.append((1, np.array([[box[0], box[1]], [box[2], box[3]]])))


def _add_polygon(cv: Canvas, out: Annot, layer: np.ndarray, label: str) -> None:
    """A polygon around what was drawn: the convex hull of its pixels."""
    ys, xs = np.nonzero(layer > 0.05)
    if len(xs) < 3:
        return
    pts = np.stack([xs, ys], 1).astype(np.int32)
    hull = cv2.convexHull(pts)[:, 0, :].astype(np.float64)
    hull[:, 0] = np.clip(hull[:, 0], 0, cv.w - 1)
    hull[:, 1] = np.clip(hull[:, 1], 0, cv.h - 1)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    out.boxes.append(box)
    out.box_labels.append(label)
    out.objects.append((2, hull))


def _curve(p0, p1, bend: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    mid = (p0 + p1) / 2 + np.array([bend, 0.0])
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * mid + t**2 * p1


def draw_device(f: Finding, a: Anatomy, cv: Canvas, L: Layers, out: Annot) -> None:
    """Draw one support device or foreign object and record its annotation."""
    rng = np.random.default_rng(f.seed)
    k = f.kind
    if k == "et_tube":
        tip = 0.30 + rng.uniform(-0.03, 0.03)
        pts = _curve([0.5 + rng.uniform(-0.02, 0.02), -0.05], [0.5, tip], rng.uniform(-0.02, 0.02))
        cv.line(pts, 0.012, TUBE, L.devices)
        cv.line(pts, 0.003, METAL - TUBE, L.devices)  # radio-opaque stripe
    elif k == "ng_tube":
        pts = np.vstack(
            [
                _curve([0.49, -0.05], [0.51, a.dome_l + 0.05], 0.0),
                _curve([0.51, a.dome_l + 0.05], [0.63, 0.86], 0.04),
            ]
        )
        cv.line(pts, 0.006, METAL * 0.7, L.devices)
    elif k == "central_line":
        sgn = -1 if rng.random() < 0.5 else 1
        pts = _curve([0.5 + sgn * 0.3, a.apex - 0.01], [0.47, 0.36], 0.05 * sgn)
        cv.line(pts, 0.006, METAL * 0.6, L.devices)
    elif k == "pacemaker":
        cu, cvv = 0.78 + rng.uniform(-0.03, 0.03), a.apex + 0.06
        body = _rect_pts(cu, cvv, 0.05, 0.035)
        cv.fill([body], METAL, L.devices)
        for tgt in ([0.52, 0.58], [0.56, 0.52]):
            cv.line(_curve([cu - 0.03, cvv + 0.02], tgt, -0.06), 0.004, METAL * 0.8, L.devices)
        _add_rect(cv, out, body, "pacemaker")
    elif k == "ecg_leads":
        for cu, cvv in ((0.25, 0.2), (0.75, 0.2), (0.72, 0.75)):
            cu, cvv = cu + rng.uniform(-0.03, 0.03), cvv + rng.uniform(-0.03, 0.03)
            ring = ellipse_pts(cu, cvv, 0.02, 0.02)
            cv.line(np.vstack([ring, ring[:1]]), 0.006, METAL * 0.8, L.devices)
            cv.fill([ellipse_pts(cu, cvv, 0.007, 0.007)], METAL, L.devices)
            cv.line(
                _curve([cu, cvv], [cu + 0.25 * np.sign(cu - 0.5), cvv - 0.3], 0.05),
                0.003,
                METAL * 0.5,
                L.devices,
            )
            _add_ellipse(cv, out, ring, "ecg_lead")
    elif k == "button":
        cu0, cvv = 0.5 + rng.uniform(-0.04, 0.04), rng.uniform(0.15, 0.35)
        for j in range(int(rng.integers(2, 5))):
            pts = ellipse_pts(cu0, cvv + 0.12 * j, 0.015, 0.013)
            cv.fill([pts], METAL, L.devices)
            _add_ellipse(cv, out, pts, "button")
    elif k == "coin":
        pts = ellipse_pts(rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.7), 0.035, 0.035)
        cv.fill([pts], METAL, L.devices)
        _add_ellipse(cv, out, pts, "coin")
    elif k == "necklace":
        layer = cv.zeros()
        t = np.linspace(0.15, 0.85, 30) * np.pi
        depth = rng.uniform(0.12, 0.25)
        for ti in t:
            cu, cvv = 0.5 + 0.14 * np.cos(ti), 0.02 + depth * np.sin(ti)
            cv.fill([ellipse_pts(cu, cvv, 0.006, 0.006, 12)], 1.0, layer)
        cv.fill([ellipse_pts(0.5, 0.04 + depth, 0.015, 0.025)], 1.0, layer)  # pendant
        L.devices += METAL * layer
        _add_polygon(cv, out, layer, "necklace")
    elif k == "clip":
        cu, cvv = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.75)
        outer = _rect_pts(cu, cvv, 0.012, 0.04)
        cv.line(np.vstack([outer, outer[:1]]), 0.004, METAL, L.devices)
        _add_rect(cv, out, outer, "clip")


def draw_devices(findings: list[Finding], a: Anatomy, cv: Canvas, L: Layers, out: Annot) -> None:
    for f in findings:
        if f.name in ("support_device", "foreign_object"):
            draw_device(f, a, cv, L, out)

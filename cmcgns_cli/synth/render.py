"""One image from (anatomy, findings, pose): density layers -> findings -> exposure.

Large images are drawn at most `MAX_INTERNAL` px on the longer side and resized up before
the noise is added, so a 3000 px world costs little more than a 1024 px one; annotations
are scaled to output pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cmcgns_cli.synth.anatomy import (
    Anatomy,
    Canvas,
    Pose,
    compose,
    ellipse_pts,
    expose,
    render_layers,
)
from cmcgns_cli.synth.devices import draw_devices
from cmcgns_cli.synth.findings import Annot, Finding, anatomy_mods, draw_findings

MAX_INTERNAL = 1024


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (H, W)
    boxes: list[list[int]] = field(default_factory=list)  # x, y, w, h in output pixels
    box_labels: list[str] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # bool, output size
    objects: list[tuple[int, np.ndarray]] = field(default_factory=list)  # output pixels


def _scaled(annot: Annot, sx: float, sy: float, w: int, h: int) -> tuple[list, list, list]:
    boxes = []
    for x0, y0, x1, y1 in annot.boxes:
        bx0, by0 = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
        bx1, by1 = min(w, int(np.ceil(x1 * sx))), min(h, int(np.ceil(y1 * sy)))
        boxes.append([bx0, by0, max(1, bx1 - bx0), max(1, by1 - by0)])
    objects = [(t, np.round(p * np.array([sx, sy])).astype(np.int64)) for t, p in annot.objects]
    return boxes, list(annot.box_labels), objects


def _lateral_density(a: Anatomy, findings: list[Finding], cv: Canvas) -> np.ndarray:
    """A plain lateral view: anterior on the left, spine posterior, heart anterior-basal."""
    heart_scale, _ = anatomy_mods(findings)
    body = cv.blur(cv.fill([ellipse_pts(0.5, 0.55, 0.42, 0.6)]), 0.01)
    lung = cv.fill([ellipse_pts(0.52, 0.45, 0.3, 0.3)])
    heart = cv.fill([ellipse_pts(0.36, 0.62, 0.12 * heart_scale, 0.13)])
    lung = cv.blur(lung * (1 - heart), 0.005)
    spine = cv.fill(
        [
            np.array([[0.78, v], [0.86, v], [0.86, v + 0.04], [0.78, v + 0.04]])
            for v in np.arange(0.0, 1.0, 0.05)
        ]
    )
    d = 0.02 + 0.5 * body - 0.28 * lung + 0.08 * cv.blur(heart, 0.004) + 0.1 * spine * body
    for f in findings:
        if f.name == "pleural_effusion":  # fluid in the posterior sulcus
            d += 0.2 * cv.blur(cv.fill([ellipse_pts(0.72, 0.74, 0.1, 0.05)]), 0.01) * lung
        if f.name == "edema":
            d += 0.12 * np.exp(-(((cv.u - 0.5) / 0.15) ** 2 + ((cv.v - 0.45) / 0.15) ** 2)) * lung
    return d


def render_image(
    a: Anatomy,
    findings: list[Finding],
    pose: Pose,
    noise_rng: np.random.Generator,
    h: int,
    w: int,
    lateral: bool = False,
) -> Rendered:
    """Render one (h, w) uint8 radiograph and its annotations in output pixels."""
    scale = min(1.0, MAX_INTERNAL / max(h, w))
    ih, iw = max(8, round(h * scale)), max(8, round(w * scale))
    cv = Canvas(ih, iw, pose)
    if lateral:
        d = _lateral_density(a, findings, cv)
        annot = Annot()
    else:
        heart_scale, medi = anatomy_mods(findings)
        layers = render_layers(a, cv, heart_scale, medi)
        annot = draw_findings(findings, a, cv, layers)
        draw_devices(findings, a, cv, layers, annot)
        d = compose(layers)
    masks = dict(annot.masks)
    if (ih, iw) != (h, w):
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR)
        masks = {
            k: cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            for k, m in masks.items()
        }
    image = expose(d, pose, noise_rng)
    boxes, labels, objects = _scaled(annot, w / iw, h / ih, w, h)
    return Rendered(image=image, boxes=boxes, box_labels=labels, masks=masks, objects=objects)

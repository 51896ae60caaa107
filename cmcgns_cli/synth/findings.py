"""Findings: what is drawn per study (with laterality, zone, severity) and how it is drawn.

A finding only carries words and a geometry seed; drawing it edits the density layers of
one image and reports the annotation it produces (box, mask). Drawing the same findings
list minus one finding leaves everything else identical, which the tests use to check that
a box really encloses its opacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cmcgns_cli.synth.anatomy import Anatomy, Canvas, Layers, ellipse_pts, lung_polygon

# Pathologies (drawn in the lungs / heart) and their ordering in reports.
PATHOLOGIES = (
    "cardiomegaly",
    "widened_mediastinum",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "pneumonia",
    "covid",
    "edema",
    "atelectasis",
    "nodule",
    "mass",
    "fracture",
    "pleural_thickening",
)
DEVICE_KINDS = ("et_tube", "ng_tube", "central_line", "pacemaker", "ecg_leads")
OBJECT_KINDS = ("button", "coin", "necklace", "clip")
SIZE_WORDS = ("small", "moderate", "large")
GRADE_WORDS = ("mild", "moderate", "severe")


@dataclass
class Finding:
    """One drawn finding. `kind` names a device or object; `seed` fixes its geometry."""

    name: str
    side: str = ""  # right | left | bilateral | ""
    zone: str = ""  # upper | middle | lower | apical | lateral | perihilar | basal | ""
    severity: str = ""
    kind: str = ""
    seed: int = 0

    def truth(self) -> dict:
        d = {"name": self.name, "side": self.side, "zone": self.zone, "severity": self.severity}
        if self.kind:
            d["kind"] = self.kind
        return d


@dataclass
class Annot:
    """Annotations in internal-canvas pixels."""

    boxes: list[list[float]] = field(default_factory=list)  # x0, y0, x1, y1
    box_labels: list[str] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool
    objects: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (type, points px)


def _side_of(rng: np.random.Generator) -> str:
    return "right" if rng.random() < 0.55 else "left"


def _mk(rng: np.random.Generator, name: str, **kw) -> Finding:
    return Finding(name=name, seed=int(rng.integers(0, 2**31)), **kw)


def sample_pathology(rng: np.random.Generator, name: str, side: str | None = None) -> Finding:
    """One pathology with its words drawn at random."""
    side = side or _side_of(rng)
    grade = GRADE_WORDS[int(rng.integers(0, 3))]
    size = SIZE_WORDS[int(rng.integers(0, 3))]
    if name in ("cardiomegaly", "widened_mediastinum"):
        return _mk(rng, name, severity=grade)
    if name == "pleural_effusion":
        bil = rng.random() < 0.2
        return _mk(rng, name, side="bilateral" if bil else side, zone="basal", severity=size)
    if name == "pneumothorax":
        zone = "apical" if rng.random() < 0.6 else "lateral"
        return _mk(rng, name, side=side, zone=zone, severity=size)
    if name in ("consolidation", "pneumonia", "nodule", "mass"):
        zone = ("upper", "middle", "lower")[int(rng.integers(0, 3))]
        return _mk(rng, name, side=side, zone=zone, severity=grade)
    if name == "covid":
        return _mk(rng, name, side="bilateral", zone="peripheral", severity=grade)
    if name == "edema":
        return _mk(rng, name, side="bilateral", zone="perihilar", severity=grade)
    if name == "atelectasis":
        bil = rng.random() < 0.15
        return _mk(rng, name, side="bilateral" if bil else side, zone="basal", severity=grade)
    if name == "fracture":
        return _mk(rng, name, side=side, zone="lateral", severity="")
    if name == "pleural_thickening":
        return _mk(rng, name, side=side, zone="apical", severity="")
    raise ValueError(name)


def anatomy_mods(findings: list[Finding]) -> tuple[float, float]:
    """Heart scale and mediastinal widening asked for by the findings."""
    heart, medi = 1.0, 1.0
    for f in findings:
        g = GRADE_WORDS.index(f.severity) if f.severity in GRADE_WORDS else 1
        if f.name == "cardiomegaly":
            heart = (1.28, 1.40, 1.55)[g]
        if f.name == "widened_mediastinum":
            medi = (1.5, 1.75, 2.0)[g]
    return heart, medi


def _sides(f: Finding) -> list[str]:
    return ["right", "left"] if f.side == "bilateral" else [f.side]


def _zone_v(a: Anatomy, side: str, zone: str) -> tuple[float, float]:
    dome = a.dome_r if side == "right" else a.dome_l
    top, bot = a.apex + 0.03, dome + 0.02
    third = (bot - top) / 3
    k = {"upper": 0, "middle": 1, "lower": 2}[zone]
    return top + k * third, top + (k + 1) * third


def _lat_med(a: Anatomy, side: str) -> tuple[float, float]:
    """u of the lateral wall and the medial edge of one lung."""
    lat, med = 0.5 - a.thorax + 0.03, 0.44
    return (lat, med) if side == "right" else (1 - lat, 1 - med)


def _box_of(mask: np.ndarray) -> list[float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _lung_of(L: Layers, side: str) -> np.ndarray:
    return L.lung_r if side == "right" else L.lung_l


def _blobs(cv: Canvas, rng, cu, cvv, size, count) -> np.ndarray:
    layer = cv.zeros()
    for _ in range(count):
        du, dv = rng.normal(0, size * 0.6, 2)
        ru, rv = size * rng.uniform(0.5, 1.0, 2)
        cv.fill([ellipse_pts(cu + du, cvv + dv, ru, rv, 32)], 1.0, layer)
    return cv.blur(layer, size * 0.25)


def _opacity(f: Finding, a: Anatomy, cv: Canvas, L: Layers, out: Annot, label: str) -> None:
    """Patchy lobar/segmental opacity (consolidation, pneumonia) or a round lesion."""
    rng = np.random.default_rng(f.seed)
    g = GRADE_WORDS.index(f.severity)
    for side in _sides(f):
        v0, v1 = _zone_v(a, side, f.zone)
        lat, med = _lat_med(a, side)
        cu = lat + (med - lat) * rng.uniform(0.3, 0.65)
        cvv = rng.uniform(v0 + 0.25 * (v1 - v0), v1 - 0.25 * (v1 - v0))
        if f.name in ("nodule", "mass"):
            r = (0.016, 0.02, 0.026)[g] if f.name == "nodule" else (0.045, 0.055, 0.065)[g]
            layer = cv.blur(cv.fill([ellipse_pts(cu, cvv, r, r * rng.uniform(0.85, 1.0))]), 0.003)
            amp = 0.34
        else:
            size = (0.045, 0.06, 0.08)[g]
            layer = _blobs(cv, rng, cu, cvv, size, int(rng.integers(3, 6)))
            # mottled texture: patchy, not a uniform disc
            noise = cv2.resize(rng.uniform(0.55, 1.0, (12, 12)).astype(np.float32), (cv.w, cv.h))
            layer *= noise
            amp = (0.24, 0.30, 0.36)[g]
        layer = np.clip(layer, 0, 1) * np.clip(_lung_of(L, side) * 1.5, 0, 1)
        L.extra += amp * layer
        box = _box_of(layer > 0.1)
        if box:
            out.boxes.append(box)
            out.box_labels.append(label)


def _covid(f: Finding, a: Anatomy, cv: Canvas, L: Layers, out: Annot) -> None:
    rng = np.random.default_rng(f.seed)
    g = GRADE_WORDS.index(f.severity)
    for side in ("right", "left"):
        lat, med = _lat_med(a, side)
        layer = cv.zeros()
        for _ in range(int(rng.integers(2, 4)) + g):
            v0, v1 = _zone_v(a, side, ("middle", "lower")[int(rng.integers(0, 2))])
            cu = lat + (med - lat) * rng.uniform(0.05, 0.3)
            layer += _blobs(cv, rng, cu, rng.uniform(v0, v1), 0.05, 2)
        layer = np.clip(layer, 0, 1) * np.clip(_lung_of(L, side) * 1.5, 0, 1)
        L.extra += (0.16, 0.21, 0.26)[g] * layer
        box = _box_of(layer > 0.1)
        if box:
            out.boxes.append(box)
            out.box_labels.append("opacity")


def _effusion(f: Finding, a: Anatomy, cv: Canvas, L: Layers) -> None:
    """Basal fluid with a meniscus climbing the lateral wall; fills the costophrenic angle."""
    g = SIZE_WORDS.index(f.severity)
    for side in _sides(f):
        dome = a.dome_r if side == "right" else a.dome_l
        lat, med = _lat_med(a, side)
        top = dome + 0.09 - (0.14, 0.23, 0.34)[g]
        fr = np.clip((cv.u - lat) / (med - lat), 0, 1)  # 0 at the lateral wall
        meniscus = top + 0.07 * fr**0.6
        fluid = 1.0 / (1.0 + np.exp(np.clip((meniscus - cv.v) / 0.008, -50, 50)))
        lung = _lung_of(L, side)
        L.extra += 0.30 * fluid * np.clip(lung * 1.5, 0, 1)
        L.vessels *= 1 - fluid * lung


def _pneumothorax(f: Finding, a: Anatomy, cv: Canvas, L: Layers, out: Annot) -> None:
    """Collapsed lung edge: a lucent rim without markings, bounded by a visible pleural line."""
    g = SIZE_WORDS.index(f.severity)
    s = (0.88, 0.78, 0.66)[g]
    union = np.zeros((cv.h, cv.w), bool)
    for side in _sides(f):
        poly = lung_polygon(a, side)
        dome = a.dome_r if side == "right" else a.dome_l
        lat, med = _lat_med(a, side)
        # collapse toward the hilum base (apical) or toward the mediastinum (lateral)
        c = (
            np.array([(lat + med) / 2, dome + 0.08])
            if f.zone == "apical"
            else np.array([med, (a.apex + dome) / 2])
        )
        inner = c + s * (poly - c)
        region = (cv.fill([poly]) > 0.5) & ~(cv.fill([inner]) > 0.5) & (_lung_of(L, side) > 0.5)
        union |= region
        soft = cv.blur(region.astype(np.float32), 0.002)
        L.vessels *= 1 - soft
        L.extra -= 0.04 * soft
        rim = cv.line(np.vstack([inner, inner[:1]]), 0.004)
        near = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
        L.extra += 0.22 * rim * near
    out.masks["pneumothorax"] = union


def _other(f: Finding, a: Anatomy, cv: Canvas, L: Layers, out: Annot) -> None:
    rng = np.random.default_rng(f.seed)
    g = GRADE_WORDS.index(f.severity) if f.severity in GRADE_WORDS else 1
    if f.name == "edema":
        haze = cv.zeros()
        sig = (0.10, 0.13, 0.16)[g]
        for sgn in (-1, 1):
            haze += np.exp(
                -(((cv.u - 0.5 - sgn * 0.1) / sig) ** 2 + ((cv.v - 0.46) / (sig * 1.3)) ** 2)
            )
        L.extra += (0.13, 0.18, 0.24)[g] * np.clip(haze, 0, 1) * L.lung
        L.vessels = cv.blur(L.vessels, 0.006)
    elif f.name == "atelectasis":
        for side in _sides(f):
            dome = a.dome_r if side == "right" else a.dome_l
            lat, med = _lat_med(a, side)
            t = np.linspace(0, 1, 10)
            u = lat + 0.04 + (med - lat - 0.08) * t
            v = dome - 0.02 - rng.uniform(0, 0.05) + 0.04 * t * rng.uniform(-1, 1)
            band = cv.blur(cv.line(np.stack([u, v], 1), (0.012, 0.02, 0.03)[g]), 0.005)
            band *= np.clip(_lung_of(L, side) * 1.5, 0, 1)
            L.extra += 0.3 * band
            box = _box_of(band > 0.1)
            if box:
                out.boxes.append(box)
                out.box_labels.append("atelectasis")
    elif f.name == "fracture":
        lat, _ = _lat_med(a, f.side)
        v = rng.uniform(0.3, 0.55)
        gap = cv.fill([ellipse_pts(lat - 0.01 * np.sign(0.5 - lat), v, 0.012, 0.03)])
        L.bones *= 1 - gap
        L.extra += 0.08 * cv.line(np.array([[lat - 0.03, v + 0.01], [lat + 0.03, v - 0.01]]), 0.012)
    elif f.name == "pleural_thickening":
        lat, med = _lat_med(a, f.side)
        cap = cv.fill([ellipse_pts((lat + med) / 2, a.apex + 0.01, abs(med - lat) / 2, 0.03)])
        L.extra += 0.18 * cv.blur(cap, 0.006) * np.clip(L.lung * 1.5, 0, 1)


def draw_findings(findings: list[Finding], a: Anatomy, cv: Canvas, L: Layers) -> Annot:
    """Draw every pathology onto the layers (devices are drawn by devices.py)."""
    out = Annot()
    for f in findings:
        if f.name in ("consolidation", "pneumonia"):
            _opacity(f, a, cv, L, out, "opacity")
        elif f.name in ("nodule", "mass"):
            _opacity(f, a, cv, L, out, f.name)
        elif f.name == "covid":
            _covid(f, a, cv, L, out)
        elif f.name == "pleural_effusion":
            _effusion(f, a, cv, L)
        elif f.name == "pneumothorax":
            _pneumothorax(f, a, cv, L, out)
        elif f.name in ("edema", "atelectasis", "fracture", "pleural_thickening"):
            _other(f, a, cv, L, out)
    return out

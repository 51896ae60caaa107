"""Radiograph phantom: the normal chest, drawn as density layers on a canvas.

Geometry lives in canonical coordinates (u across the image from the patient's right to
left, v down, both in [0, 1]); a per-image affine (pose) maps them to pixels. Shapes are
polygons filled by cv2 or implicit functions over the canonical grid, so rendering is
vectorised. Radiological convention: the patient's RIGHT is on the image LEFT (small u).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

_SHIFT = 4  # cv2 sub-pixel bits: smooth outlines without anti-aliasing on float canvases
_ONE = 1 << _SHIFT


@dataclass
class Anatomy:
    """Per-patient shape parameters (drawn once per study, shared by its views)."""

    thorax: float  # half width of the thorax (canonical units)
    apex: float  # v of the lung apices
    dome_r: float  # v of the right hemidiaphragm dome (higher than the left)
    dome_l: float
    heart_w: float  # half width of the heart (normal)
    heart_cy: float
    body_w: float  # half width of the soft-tissue trunk
    n_ribs: int
    rib_gap: float
    vessel_seed: int
    female: bool


@dataclass
class Pose:
    """Per-image acquisition: pose and exposure."""

    angle: float
    zoom: float
    du: float
    dv: float
    lo: float
    hi: float
    gamma: float
    noise: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a plausible adult chest."""
    dome_r = rng.uniform(0.64, 0.70)
    return Anatomy(
        thorax=rng.uniform(0.33, 0.38),
        apex=rng.uniform(0.11, 0.16),
        dome_r=dome_r,
        dome_l=dome_r + rng.uniform(0.01, 0.04),
        heart_w=rng.uniform(0.14, 0.16),
        heart_cy=rng.uniform(0.55, 0.58),
        body_w=rng.uniform(0.42, 0.49),
        n_ribs=int(rng.integers(9, 11)),
        rib_gap=rng.uniform(0.058, 0.066),
        vessel_seed=int(rng.integers(0, 2**31)),
        female=bool(rng.random() < 0.5),
    )


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw pose, exposure window, gamma and noise for one image."""
    return Pose(
        angle=rng.uniform(-4.0, 4.0),
        zoom=rng.uniform(0.93, 1.05),
        du=rng.uniform(-0.03, 0.03),
        dv=rng.uniform(-0.03, 0.03),
        lo=rng.uniform(-0.02, 0.06),
        hi=rng.uniform(0.78, 0.95),
        gamma=rng.uniform(0.8, 1.25),
        noise=rng.uniform(0.008, 0.025),
    )


@dataclass
class Canvas:
    """Pixel grid plus the canonical<->pixel affine of one image."""

    h: int
    w: int
    pose: Pose
    m: np.ndarray = field(init=False)  # 2x3: canonical -> pixel
    u: np.ndarray = field(init=False)  # canonical coordinates of every pixel
    v: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        p = self.pose
        a = np.deg2rad(p.angle)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * p.zoom
        scale = np.diag([self.w, self.h]).astype(np.float64)
        # pixel = S (R (c - 0.5) + 0.5 + d)
        lin = scale @ rot
        off = scale @ (np.array([0.5 + p.du, 0.5 + p.dv]) - rot @ np.array([0.5, 0.5]))
        self.m = np.hstack([lin, off[:, None]])
        inv = cv2.invertAffineTransform(self.m)
        xs = np.arange(self.w, dtype=np.float32) + 0.5
        ys = np.arange(self.h, dtype=np.float32) + 0.5
        self.u = (inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None] + inv[0, 2]).astype(np.float32)
        self.v = (inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None] + inv[1, 2]).astype(np.float32)

    @property
    def unit(self) -> float:
        """Pixels per canonical unit (for thicknesses)."""
        return float(min(self.h, self.w) * self.pose.zoom)

    def px(self, pts: np.ndarray) -> np.ndarray:
        """Canonical (N, 2) points -> float pixel coordinates."""
        pts = np.asarray(pts, dtype=np.float64)
        return pts @ self.m[:, :2].T + self.m[:, 2]

    def _ipts(self, pts: np.ndarray) -> np.ndarray:
        return np.round(self.px(pts) * _ONE).astype(np.int32)

    def zeros(self) -> np.ndarray:
        return np.zeros((self.h, self.w), np.float32)

    def fill(self, polys: list[np.ndarray], value: float = 1.0, out=None) -> np.ndarray:
        """Fill canonical polygons into a float32 layer."""
        out = self.zeros() if out is None else out
        for p in polys:  # one call per polygon: overlaps in one call would cancel out
            cv2.fillPoly(out, [self._ipts(p)], float(value), cv2.LINE_8, _SHIFT)
        return out

    def line(self, pts: np.ndarray, thick: float, value: float = 1.0, out=None) -> np.ndarray:
        """Draw a canonical polyline with thickness in canonical units."""
        out = self.zeros() if out is None else out
        t = max(1, int(round(thick * self.unit)))
        cv2.polylines(out, [self._ipts(pts)], False, float(value), t, cv2.LINE_8, _SHIFT)
        return out

    def blur(self, layer: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian blur with sigma in canonical units (soft anatomical edges)."""
        s = sigma * self.unit
        return cv2.GaussianBlur(layer, (0, 0), s) if s >= 0.3 else layer


def ellipse_pts(cu: float, cv: float, ru: float, rv: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cu + ru * np.cos(t), cv + rv * np.sin(t)], 1)


def lung_polygon(a: Anatomy, side: str) -> np.ndarray:
    """Outline of one lung field: apex, lateral wall, costophrenic angle, dome, medial edge.

    Built for the right lung (image left) and mirrored for the left.
    """
    dome = a.dome_r if side == "right" else a.dome_l
    lat = 0.5 - a.thorax
    med = 0.455
    t = np.linspace(0, 1, 24)
    # apex to costophrenic angle along the lateral wall (bulges outward mid-height)
    wall_v = a.apex + t * (dome + 0.10 - a.apex)
    wall_u = lat + 0.11 * (1 - t) ** 3 + 0.01 * np.sin(np.pi * t)
    wall_u[0] = 0.5 - 0.55 * a.thorax
    # dome: from the sharp lateral angle up to the dome and down to the cardiophrenic angle
    d_u = np.linspace(lat + 0.01, med - 0.01, 20)
    x = (d_u - d_u[0]) / (d_u[-1] - d_u[0])
    d_v = np.where(
        x < 0.45, dome + 0.13 * (1 - x / 0.45) ** 2, dome + 0.05 * ((x - 0.45) / 0.55) ** 2
    )
    # medial border up to the apex
    m_v = np.linspace(d_v[-1], a.apex + 0.02, 12)
    m_u = np.full_like(m_v, med) + 0.01 * np.sin(np.linspace(0, np.pi, 12))
    pts = np.concatenate(
        [np.stack([wall_u, wall_v], 1), np.stack([d_u, d_v], 1), np.stack([m_u, m_v], 1)]
    )
    if side == "left":
        pts = pts.copy()
        pts[:, 0] = 1.0 - pts[:, 0]
    return pts


def heart_polygon(a: Anatomy, scale: float) -> np.ndarray:
    """Heart silhouette: a squat ellipse sitting on the diaphragm, shifted to the left."""
    w = a.heart_w * scale
    cu = 0.5 + 0.3 * w
    return ellipse_pts(cu, a.heart_cy + 0.02 * (scale - 1), w, 0.12 + 0.03 * (scale - 1))


def mediastinum_polygon(a: Anatomy, widen: float) -> np.ndarray:
    hw = 0.055 * widen
    return np.array(
        [
            [0.5 - hw, 0.0],
            [0.5 + hw, 0.0],
            [0.5 + hw + 0.02, 0.30],
            [0.5 + hw + 0.045, 0.34],  # aortic knob
            [0.5 + hw + 0.02, 0.40],
            [0.5 + hw + 0.02, a.heart_cy],
            [0.5 - hw - 0.02, a.heart_cy],
            [0.5 - hw - 0.02, 0.35],
        ]
    )


def body_polygon(a: Anatomy) -> np.ndarray:
    w = a.body_w
    return np.array(
        [
            [0.41, -0.1],
            [0.59, -0.1],
            [0.60, 0.05],
            [0.5 + w + 0.03, 0.10],
            [0.5 + w + 0.01, 0.5],
            [0.5 + w - 0.02, 1.1],
            [0.5 - w + 0.02, 1.1],
            [0.5 - w - 0.01, 0.5],
            [0.5 - w - 0.03, 0.10],
            [0.40, 0.05],
        ]
    )


@dataclass
class Layers:
    """Density layers of one image; findings edit them before composition."""

    body: np.ndarray
    lung_r: np.ndarray  # lung fields (air), heart excluded
    lung_l: np.ndarray
    vessels: np.ndarray
    medi: np.ndarray  # heart + mediastinum
    abdomen: np.ndarray
    bones: np.ndarray
    extra: np.ndarray  # finding opacities (added density)
    devices: np.ndarray  # radio-opaque devices

    @property
    def lung(self) -> np.ndarray:
        return np.maximum(self.lung_r, self.lung_l)


def _vessels(a: Anatomy, cv: Canvas) -> np.ndarray:
    """Branching vessel tree from each hilum: thick centrally, thin peripherally."""
    rng = np.random.default_rng(a.vessel_seed)
    out = cv.zeros()
    for sgn in (-1.0, 1.0):
        hil = np.array([0.5 + sgn * 0.085, 0.44])
        stack = [(hil, ang, 0) for ang in np.linspace(-2.4, 2.4, 7) + rng.normal(0, 0.15, 7)]
        segs = 0
        while stack and segs < 90:
            p, ang, depth = stack.pop()
            length = 0.07 * 0.82**depth
            # angles measured from straight down; sgn sends branches laterally
            d = np.array([sgn * np.sin(ang), -np.cos(ang) * 0.9])
            q = p + length * d
            cv.line(np.stack([p, q]), 0.007 * 0.7**depth, 1.0 - 0.12 * depth, out)
            segs += 1
            if depth < 4:
                for da in (-0.35, 0.35):
                    stack.append((q, ang + da + rng.normal(0, 0.12), depth + 1))
    return cv.blur(out, 0.002)


def _ribs(a: Anatomy, cv: Canvas) -> np.ndarray:
    out = cv.zeros()
    t = np.linspace(0, 1, 20)
    for k in range(a.n_ribs):
        v0 = a.apex + 0.005 + k * a.rib_gap
        for sgn in (-1.0, 1.0):
            # posterior rib: leaves the spine, arches up then sweeps down laterally
            reach = a.thorax * (0.75 + 0.25 * min(1.0, k / 3))
            u = 0.5 + sgn * (0.03 + reach * t)
            v = v0 - 0.025 * np.sin(np.pi * t * 0.8) + 0.05 * t**2
            cv.line(np.stack([u, v], 1), 0.016, 0.11, out)
            # anterior rib (fainter): from the lateral wall down and medially
            ua = 0.5 + sgn * (a.thorax * (1 - 0.7 * t))
            va = v0 + 0.06 + 0.09 * t
            cv.line(np.stack([ua, va], 1), 0.012, 0.05, out)
    return out


def _spine_and_clavicles(a: Anatomy, cv: Canvas) -> np.ndarray:
    out = cv.zeros()
    polys = []
    for k in range(24):
        v0 = -0.02 + k * 0.047
        polys.append(np.array([[0.47, v0], [0.53, v0], [0.532, v0 + 0.038], [0.468, v0 + 0.038]]))
    cv.fill(polys, 0.06, out)
    t = np.linspace(0, 1, 16)
    for sgn in (-1.0, 1.0):
        u = 0.5 + sgn * (0.04 + 0.30 * t)
        v = a.apex - 0.005 - 0.03 * t + 0.015 * np.sin(2 * np.pi * t)
        cv.line(np.stack([u, v], 1), 0.022, 0.22, out)
    return out


def render_layers(
    a: Anatomy, cv: Canvas, heart_scale: float = 1.0, medi_widen: float = 1.0
) -> Layers:
    """Draw the normal chest (with the heart and mediastinum sizes findings ask for)."""
    body = cv.blur(cv.fill([body_polygon(a)]), 0.01)
    medi = cv.fill([heart_polygon(a, heart_scale), mediastinum_polygon(a, medi_widen)])
    lungs = {}
    for side in ("right", "left"):
        lung = cv.fill([lung_polygon(a, side)])
        lungs[side] = cv.blur(lung * (1.0 - medi), 0.004)
    medi = cv.blur(medi, 0.004)
    # abdomen: everything below the domes inside the body
    below = np.where(cv.u < 0.5, cv.v > a.dome_r + 0.06, cv.v > a.dome_l + 0.06).astype(np.float32)
    abdomen = cv.blur(below, 0.03) * body
    vessels = _vessels(a, cv)
    # ribs only over the thoracic cage (lungs and mediastinum, slightly dilated)
    k = max(3, int(0.05 * cv.unit) | 1)
    cage = cv2.dilate(np.maximum(lungs["right"], lungs["left"]) + medi, np.ones((k, k), np.uint8))
    cage = cv.blur(np.minimum(cage, 1.0), 0.01)
    bones = cv.blur(_ribs(a, cv) * cage + _spine_and_clavicles(a, cv), 0.002)
    return Layers(
        body=body,
        lung_r=lungs["right"],
        lung_l=lungs["left"],
        vessels=vessels,
        medi=medi,
        abdomen=abdomen,
        bones=bones,
        extra=cv.zeros(),
        devices=cv.zeros(),
    )


def compose(L: Layers) -> np.ndarray:
    """Density (0 = air, ~1 = metal) from the layers."""
    lung = L.lung
    d = 0.02 + 0.50 * L.body + 0.10 * L.medi + 0.05 * L.abdomen
    d -= 0.33 * lung
    d += 0.10 * lung * L.vessels
    d += L.bones * L.body + L.extra + L.devices
    return d


def expose(d: np.ndarray, pose: Pose, rng: np.random.Generator) -> np.ndarray:
    """Density -> uint8 radiograph (window, gamma, quantum noise)."""
    x = (d - pose.lo) / (pose.hi - pose.lo)
    x = np.clip(x, 0.0, 1.0) ** pose.gamma
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * pose.noise
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)

"""Objects outside ModelNet40's 40 classes, generated: to train and to measure the in-vocabulary decision.

Eight families (tori, springs, knots, gears, rocks, molecules, pipe elbows, volume noise), each drawn
with seeded random proportions: none is a bathtub, a chair or any other class of the vocabulary.
``core.vocabulary`` shows them to the ``exposure`` score as what is *not* in the vocabulary (seed 1);
``scripts/real_files_study.py`` measures on others (seed 0); ``python scripts/oov_shapes.py --out DIR``
writes them as ``.npy`` files (1024 points, z up, unit sphere).
"""

from __future__ import annotations

import numpy as np

from core.data.preprocess import prepare_points


def _tube(curve: np.ndarray, radius: float, rng: np.random.Generator, n: int = 6000) -> np.ndarray:
    """Points on a tube of ``radius`` around a closed or open polyline ``curve`` (M, 3)."""
    seg = rng.integers(0, len(curve) - 1, n)
    t = rng.random(n)[:, None]
    c = curve[seg] * (1 - t) + curve[seg + 1] * t
    d = curve[seg + 1] - curve[seg]
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)  # repeated curve points
    a = np.cross(d, [0.0, 0.0, 1.0])
    bad = np.linalg.norm(a, axis=1) < 1e-6
    a[bad] = np.cross(d[bad], [1.0, 0, 0])
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # (a repeated point: d is 0)
    b = np.cross(d, a)
    phi = rng.uniform(0, 2 * np.pi, n)[:, None]
    return c + radius * (np.cos(phi) * a + np.sin(phi) * b)


def torus(rng):
    big, small = 1.0, rng.uniform(0.15, 0.45)
    u = np.linspace(0, 2 * np.pi, 200)
    return _tube(np.c_[big * np.cos(u), big * np.sin(u), 0 * u], small, rng)


def spring(rng):
    turns, pitch = rng.uniform(3, 8), rng.uniform(0.2, 0.5)
    u = np.linspace(0, 2 * np.pi * turns, 600)
    return _tube(np.c_[np.cos(u), np.sin(u), pitch * u / (2 * np.pi)], rng.uniform(0.05, 0.15), rng)


def knot(rng):
    p, q = [(2, 3), (3, 5), (2, 5), (3, 4)][rng.integers(4)]
    u = np.linspace(0, 2 * np.pi, 800)
    r = np.cos(q * u) + 2
    return _tube(np.c_[r * np.cos(p * u), r * np.sin(p * u), -np.sin(q * u)], rng.uniform(0.2, 0.4), rng)


def gear(rng):
    teeth, n = int(rng.integers(8, 24)), 8000
    theta = rng.uniform(0, 2 * np.pi, n)
    rad = 1.0 + 0.15 * (np.sin(teeth * theta) > 0)
    r = np.sqrt(rng.uniform(0.09, 1, n)) * rad  # a disc with a hole and teeth
    z = rng.choice([-0.1, 0.1], n)
    rim = rng.random(n) < 0.3
    r[rim] = rad[rim]
    z[rim] = rng.uniform(-0.1, 0.1, rim.sum())
    return np.c_[r * np.cos(theta), r * np.sin(theta), z * rng.uniform(0.5, 2)]


def rock(rng):
    v = rng.normal(size=(8000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    k = rng.normal(size=(6, 3))
    bumps = sum(rng.uniform(0.05, 0.3) * np.sin(v @ kk * rng.uniform(1, 4) + rng.uniform(0, 6)) for kk in k)
    return v * (1 + bumps)[:, None] * rng.uniform(0.6, 1.4, 3)


def molecule(rng):
    centres = rng.normal(size=(int(rng.integers(3, 9)), 3))
    radii = rng.uniform(0.3, 0.7, len(centres))
    parts = []
    for c, r in zip(centres, radii):
        v = rng.normal(size=(1500, 3))
        parts.append(c + r * v / np.linalg.norm(v, axis=1, keepdims=True))
    return np.concatenate(parts)


def elbow(rng):
    angle = rng.uniform(np.pi / 3, np.pi)
    u = np.linspace(0, angle, 100)
    arc = np.c_[np.cos(u), np.sin(u), 0 * u]
    straight = np.linspace(0, rng.uniform(0.5, 1.5), 30)[:, None] * np.array([[0, -1.0, 0]]) + [1, 0, 0]
    return _tube(np.concatenate([straight[::-1], arc]), rng.uniform(0.2, 0.35), rng)


def volume_noise(rng):
    return rng.uniform(-1, 1, (4000, 3)) * rng.uniform(0.4, 1, 3)


FAMILIES = {f.__name__: f for f in (torus, spring, knot, gear, rock, molecule, elbow, volume_noise)}


def oov_shapes(per_family: int = 10, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(F * per_family, 1024, 3) prepared shapes in random orientations about z, and their family names."""
    rng = np.random.default_rng(seed)
    shapes, names = [], []
    for name, make in FAMILIES.items():
        for _ in range(per_family):
            pts = make(rng)
            yaw = rng.uniform(0, 2 * np.pi)
            rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            shapes.append(prepare_points(pts @ rot.T, 1024))
            names.append(name)
    return np.stack(shapes), names

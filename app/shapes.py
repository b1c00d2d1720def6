"""Loading 3D files for the viewer and the models, off the GUI thread (no Qt here).

Thread: every function runs in a worker thread; results are plain numpy containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"
MAX_DISPLAY_POINTS = 80_000  # the view shows at most this many points: frames are rendered on the CPU here
ANALYSIS_MAX_POINTS = 100_000  # up axis and scene check of a larger cloud: on a random sample this large


@dataclass
class Shape:
    """What the viewer and the comparison need from one file."""

    path: str
    kind: str  # 'mesh' | 'points'
    xyz: np.ndarray  # (N, 3) display points (subsampled to MAX_DISPLAY_POINTS)
    colors: np.ndarray | None
    normals: np.ndarray | None
    mesh_vertices: np.ndarray | None
    mesh_faces: np.ndarray | None
    full_xyz: np.ndarray  # every point the loader produced (model input is prepared from these)
    original_points: int = 0
    original_faces: int = 0
    info: dict = field(default_factory=dict)  # format, up_hint, channels, layout, notes (what the reader said)
    bounds: np.ndarray | None = None  # (2, 3) min and max of full_xyz, computed off the GUI thread

    def __post_init__(self) -> None:
        if self.bounds is None and len(self.full_xyz):
            self.bounds = np.stack([self.full_xyz.min(0), self.full_xyz.max(0)])

    @property
    def name(self) -> str:
        return Path(self.path).name


def supported_formats() -> dict[str, list[str]]:
    """Kind label -> extensions, for the open dialog (zip archives holding one file included)."""
    from core.data.io import SUPPORTED_FORMATS

    return {**SUPPORTED_FORMATS, "Archives": [".zip"]}


def dialog_filters() -> list[str]:
    """Qt name filters: one line for all supported files, then one per kind."""
    fmts = supported_formats()
    pat = lambda exts: " ".join(f"*{e if e.startswith('.') else '.' + e}" for e in exts)
    every = sorted({e for exts in fmts.values() for e in exts})
    return [f"All 3D files ({pat(every)})"] + [f"{k} ({pat(v)})" for k, v in fmts.items()] + ["All files (*)"]


def is_bundled_sample(path: str | Path) -> bool:
    """Whether ``path`` is one of the bundled ModelNet samples (z up by construction)."""
    try:
        return Path(path).resolve().parent == SAMPLES.resolve()
    except OSError:
        return False


def load_shape(path: str | Path, progress: Callable[[str, int, int], None] | None = None,
               num_samples: int = 20000, channels: int | None = None) -> Shape:
    """Read a file and subsample it for display. Raises T3DError/ValueError with a one-line message
    (``core.errors.ChannelsNeededError`` when a headerless float32 file needs ``channels``)."""
    report = progress or (lambda *a: None)
    report("reading", 0, 3)
    from core.data.io import load_point_cloud

    cloud = load_point_cloud(str(path), num_samples=num_samples, channels=channels)
    report("preparing view", 1, 3)
    xyz = np.asarray(cloud.xyz, np.float32)
    if xyz.ndim != 2 or len(xyz) == 0:
        raise ValueError(f"{path}: no points")
    finite = np.isfinite(xyz).all(1)
    colors = getattr(cloud, "colors", None)
    normals = getattr(cloud, "normals", None)
    if not finite.all():
        xyz = xyz[finite]
        colors = colors[finite] if colors is not None else None
        normals = normals[finite] if normals is not None else None
    full = xyz
    if len(xyz) > MAX_DISPLAY_POINTS:
        idx = np.random.default_rng(0).choice(len(xyz), MAX_DISPLAY_POINTS, replace=False)
        xyz = xyz[idx]
        colors = colors[idx] if colors is not None else None
        normals = normals[idx] if normals is not None else None
    report("done", 3, 3)
    return Shape(path=str(cloud.path if getattr(cloud, "path", None) else path), kind=getattr(cloud, "kind", "points"),
                 xyz=xyz, colors=None if colors is None else np.asarray(colors, np.float32),
                 normals=None if normals is None else np.asarray(normals, np.float32),
                 mesh_vertices=getattr(cloud, "mesh_vertices", None), mesh_faces=getattr(cloud, "mesh_faces", None),
                 full_xyz=full, original_points=int(getattr(cloud, "original_points", len(full)) or len(full)),
                 original_faces=int(getattr(cloud, "original_faces", 0) or 0),
                 info={"format": getattr(cloud, "format", Path(path).suffix[1:]),
                       # the bundled samples are ModelNet shapes: z up, whatever an estimate would say
                       "up_hint": "z" if is_bundled_sample(path) else getattr(cloud, "up_hint", None),
                       "channels": getattr(cloud, "channels", None), "layout": getattr(cloud, "layout", None),
                       "notes": list(getattr(cloud, "notes", []) or [])})


def analysis_input(shape: Shape, max_points: int = ANALYSIS_MAX_POINTS) -> SimpleNamespace:
    """What ``core.inference.Comparison.analyze`` reads from a loaded cloud, built from a Shape; a cloud
    larger than ``max_points`` is analysed on a fixed random sample of that many points (the scene check
    reduces it to ~20k voxels and the estimate to 1,024 points anyway, while its voxel grouping holds
    the GIL, and so freezes the window, for ~1.5 s per pass on 1M points)."""
    info = shape.info
    xyz = shape.full_xyz
    if len(xyz) > max_points:
        xyz = xyz[np.sort(np.random.default_rng(0).choice(len(xyz), max_points, replace=False))]
    return SimpleNamespace(xyz=xyz, path=shape.path, format=info.get("format", ""), kind=shape.kind,
                           original_points=shape.original_points, channels=info.get("channels"),
                           layout=info.get("layout"), notes=list(info.get("notes", [])),
                           up_hint=info.get("up_hint"))


@dataclass
class Perturbation:
    """Robustness controls applied to the model input (not to the displayed shape)."""

    num_points: int = 1024
    dropout: float = 0.0  # fraction of the prepared points removed (then refilled by repetition)
    noise: float = 0.0  # Gaussian jitter sigma, in unit-sphere units
    rotation_deg: float = 0.0  # about the up axis (z of the models' frame)
    up_axis: str = "z"  # the file's signed up axis: rotated to z for the models
    up_rotation: np.ndarray | None = None  # (3, 3) file -> z up; replaces ``up_axis`` (a scene's support plane)

    def is_identity(self) -> bool:
        return self.dropout == 0 and self.noise == 0 and self.rotation_deg == 0


def prepare_model_points(xyz: np.ndarray, pert: Perturbation, seed: int = 0) -> np.ndarray:
    """The exact (num_points, 3) cloud both models see: core's preparation (up axis to z, unit
    sphere), then the perturbation."""
    from core.data.preprocess import prepare_points

    if pert.up_rotation is not None:  # as core.inference.Comparison.predict_objects turns an object
        pts = prepare_points(np.asarray(xyz) @ np.asarray(pert.up_rotation).T, num_points=pert.num_points)
    else:
        pts = prepare_points(xyz, num_points=pert.num_points, up_axis=pert.up_axis)
    rng = np.random.default_rng(seed)
    if pert.dropout > 0:
        keep = rng.random(len(pts)) >= pert.dropout
        keep[0] = True
        kept = pts[keep]
        pts = kept[np.resize(np.arange(len(kept)), len(pts))]  # refill by repetition: the count stays fixed
    if pert.noise > 0:
        pts = pts + rng.normal(0, pert.noise, pts.shape).astype(np.float32)
    if pert.rotation_deg:
        a = np.deg2rad(pert.rotation_deg)
        c, s = np.cos(a), np.sin(a)
        pts = pts @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T
    return np.ascontiguousarray(pts, np.float32)


def to_display_frame(model_pts: np.ndarray, bounds: np.ndarray, up_axis: str = "z",
                     rotation_deg: float = 0.0, up_rotation: np.ndarray | None = None) -> np.ndarray:
    """Map prepared (z-up, unit-sphere) points back onto the displayed input, whose box is ``bounds``
    ((2, 3): min, max): undo the up-axis rotation (``up_rotation``, file -> z up, when given, else
    the signed ``up_axis``'s), then match bounding boxes (farthest-point sampling keeps the extreme
    points, so both boxes nearly coincide). The box of the points is taken before the robustness
    rotation (``rotation_deg``), so a rotated input is shown rotated, not rescaled.
    Cheap: runs on the GUI thread."""
    from core.data.orient import rotation_to_z

    rot = np.asarray(up_rotation if up_rotation is not None else rotation_to_z(up_axis), np.float32)
    identity = np.allclose(rot, np.eye(3))
    to_file = (lambda a: a) if identity else (lambda a: np.asarray(a, np.float32) @ rot)  # rot.T undone
    pts = to_file(model_pts)
    ref = pts
    if rotation_deg:
        a = np.deg2rad(-rotation_deg)
        c, s_ = np.cos(a), np.sin(a)
        ref = to_file(model_pts @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]], np.float32).T)
    lo, hi = bounds[0], bounds[1]
    mlo, mhi = ref.min(0), ref.max(0)
    s = float((hi - lo).max() / max((mhi - mlo).max(), 1e-9))
    return ((pts - (mlo + mhi) / 2) * s + (lo + hi) / 2).astype(np.float32)


def points_in_box(xyz: np.ndarray, lo, hi) -> np.ndarray:
    """Indices of the points of ``xyz`` (N, 3) inside the axis-aligned box [lo, hi] (bounds included)."""
    a = np.asarray(xyz)[:, :3]
    inside = np.all((a >= np.asarray(lo, a.dtype)) & (a <= np.asarray(hi, a.dtype)), axis=1)
    return np.flatnonzero(inside)


def up_and_front(axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Camera ``up`` and ``front`` (from the object towards the eye: front-right, a little above) in the
    file's coordinates for a signed up axis; ``front`` is unit length and ``up`` orthogonal to it."""
    from core.data.orient import rotation_to_z

    rot = rotation_to_z(axis)  # file -> z up; its transpose takes z-up directions back to the file
    front = rot.T @ np.array([0.6, -1.0, 0.55])
    front /= np.linalg.norm(front)
    up = rot.T @ np.array([0.0, 0.0, 1.0])
    up = up - (up @ front) * front  # Open3D keeps a non-orthogonal up as given: its camera matrix then lies
    return up / np.linalg.norm(up), front


def list_samples() -> list[Path]:
    """Bundled sample shapes (assets/samples/<class>.npy), sorted by class name."""
    return sorted(SAMPLES.glob("*.npy")) if SAMPLES.is_dir() else []


def thumbnail_pixels(xyz: np.ndarray, size: int = 96) -> np.ndarray:
    """A cheap grey-scale (size, size) uint8 projection of a cloud for the gallery (no OpenGL)."""
    p = xyz[:: max(1, len(xyz) // 4000)].astype(np.float32)
    p = p - p.mean(0)
    a = np.deg2rad(35.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a) * 0.5, np.cos(a) * 0.5, 0.866], [0, 0, 1]], np.float32)
    q = p @ rot.T
    u, v, depth = q[:, 0], -q[:, 2] * 1.0 + q[:, 1] * 0.0, q[:, 1]
    m = max(np.abs(u).max(), np.abs(v).max(), 1e-9)
    px = ((u / m) * 0.45 * size + size / 2).astype(int).clip(0, size - 1)
    py = ((v / m) * 0.45 * size + size / 2).astype(int).clip(0, size - 1)
    shade = (200 - 120 * (depth - depth.min()) / max(np.ptp(depth), 1e-9)).astype(np.uint8)
    img = np.full((size, size), 255, np.uint8)
    order = np.argsort(-depth)
    for dy in (0, 1):  # 2x2 dots: a 1024-point sample stays readable at thumbnail size
        for dx in (0, 1):
            img[(py[order] + dy).clip(0, size - 1), (px[order] + dx).clip(0, size - 1)] = shade[order]
    return img

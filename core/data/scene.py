"""Scenes and the objects in them: is a cloud one object, and if not, where are the objects?

A classifier of single objects gives one class for any cloud; a LiDAR sweep, a room scan or a
table-top frame is not one object. The check and the object finder use Open3D's own RANSAC plane
segmentation (``segment_plane``) and DBSCAN clustering (``cluster_dbscan``), on a voxel-reduced
copy of the cloud so that a 100k-point scan takes a fraction of a second.

What makes a scene here: a **support plane** (the largest RANSAC plane holds at least
``SceneParams.min_plane_fraction`` of the points, spans most of the cloud) carrying **two or more separate, compact clusters** standing on it, low against the
plane's extent (floor, road and table-top objects are small beside their support). A table's legs
are thin and a guitar's fittings flat, so a table and a guitar stay one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import EmptyCloudError


@dataclass(frozen=True)
class SceneParams:
    """Thresholds of the scene check and the object finder (defaults measured in docs/REAL_FILES.md)."""

    analysis_points: int = 20000  # a cloud over twice this is voxel-reduced to about this many points
    min_plane_fraction: float = 0.3  # a support plane holds at least this share of the points
    min_plane_span: float = 0.5  # ... and spans at least this share of the cloud's extent
    max_object_height: float = 0.45  # objects on a support are lower than this x the plane's span
    min_cluster_share: float = 0.03  # a cluster counts when it holds this share of the non-plane points
    min_cluster_points: int = 20
    min_resting_share: float = 0.2  # the objects standing on the support hold this share of the rest
    max_planes: int = 4  # planes removed before clustering (floor, walls, table top) ...
    min_removed_plane: float = 0.08  # ... each holding at least this share of the points
    seed: int = 0


@dataclass
class Plane:
    """A plane ``normal . x + offset = 0``, the normal pointing to the side the points are on."""

    normal: np.ndarray
    offset: float
    fraction: float  # share of the analysed points within ``threshold``
    span: float  # the inliers' largest extent in the plane, as a share of the cloud's


@dataclass
class SceneCheck:
    """The verdict for one cloud, with what it rests on (shown to the user as ``reason``)."""

    scene: bool
    reason: str
    support: Plane | None = None
    clusters: int = 0


@dataclass
class FoundObject:
    """One object of a scene: its points (indices into the cloud given) and its axis-aligned box."""

    indices: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray

    @property
    def points(self) -> int:
        return int(len(self.indices))


@dataclass
class _Reduced:
    """A voxel-reduced copy of a cloud; ``inverse`` maps each original point to its voxel."""

    xyz: np.ndarray
    inverse: np.ndarray
    spacing: float  # median nearest-neighbour distance of the reduced points
    extent: float  # the diagonal of the cloud's bounding box
    planes: list[Plane] = field(default_factory=list)


def _o3d_cloud(xyz: np.ndarray):
    import open3d as o3d

    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(xyz, dtype=np.float64)))


def _reduce(xyz: np.ndarray, target: int) -> _Reduced:
    a = np.asarray(xyz, dtype=np.float64)
    a = a[np.isfinite(a).all(axis=1)]
    if len(a) < 4:
        raise EmptyCloudError(f"a scene check needs at least 4 finite points, got {len(a)}")
    lo, hi = a.min(axis=0), a.max(axis=0)
    extent = float(np.linalg.norm(hi - lo))
    if extent == 0:
        raise EmptyCloudError(f"all {len(a)} points are at the same position")
    inverse = np.arange(len(a))
    if len(a) > 2 * target:
        # the voxel size that leaves about `target` occupied voxels on a surface-like cloud
        voxel = extent / np.sqrt(target) / 1.5
        for _ in range(6):
            keys = np.floor((a - lo) / voxel).astype(np.int64)
            dims = keys.max(axis=0) + 1  # one int64 per voxel: np.unique on rows holds the GIL 10x longer
            flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
            _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
            if len(counts) <= 1.5 * target:
                break
            voxel *= 1.4
        inverse = inverse.reshape(-1)
        sums = np.zeros((len(counts), 3))
        for d in range(3):
            sums[:, d] = np.bincount(inverse, weights=a[:, d], minlength=len(counts))
        reduced = sums / counts[:, None]
    else:
        reduced = a
    pc = _o3d_cloud(reduced)
    nn = np.asarray(pc.compute_nearest_neighbor_distance())
    spacing = float(np.median(nn)) if len(nn) else extent / 100
    return _Reduced(reduced, inverse, max(spacing, 1e-9 * extent), extent)


def _plane_threshold(r: _Reduced) -> float:
    return float(np.clip(1.5 * r.spacing, 0.003 * r.extent, 0.008 * r.extent))


def _fit_plane(xyz: np.ndarray, threshold: float, seed: int):
    """The largest plane ``(a, b, c, d)`` and its inliers: Open3D's RANSAC, then refined by least
    squares on the inliers (twice), so that the plane and its inliers do not depend on which
    random triple won (Open3D's RANSAC runs on several threads, so the seed alone does not fix it)."""
    import open3d as o3d

    o3d.utility.random.seed(seed)
    model, inliers = _o3d_cloud(xyz).segment_plane(threshold, 3, 300)
    model = np.asarray(model, dtype=np.float64)
    inliers = np.asarray(inliers, dtype=np.int64)
    for _ in range(2):
        if len(inliers) < 3:
            break
        pts = xyz[inliers]
        centre = pts.mean(axis=0)
        normal = np.linalg.svd(pts - centre, full_matrices=False)[2][-1]
        model = np.append(normal, -normal @ centre)
        inliers = np.flatnonzero(np.abs(xyz @ normal + model[3]) <= threshold)
    return model, inliers


def _span(points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Extents of ``points`` along two directions of the plane with ``normal``."""
    u = np.cross(normal, [1.0, 0, 0] if abs(normal[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    return np.ptp(points @ np.stack([u, v], axis=1), axis=0)


def _support_plane(r: _Reduced, p: SceneParams) -> tuple[Plane | None, np.ndarray, str]:
    """The largest plane if it can carry a scene, its inlier mask, and why (not)."""
    x = r.xyz
    thr = _plane_threshold(r)
    model, inl = _fit_plane(x, thr, p.seed)
    mask = np.zeros(len(x), bool)
    mask[inl] = True
    frac = float(mask.mean())
    normal = model[:3] / np.linalg.norm(model[:3])
    offset = float(model[3] / np.linalg.norm(model[:3]))
    if frac < p.min_plane_fraction:
        return None, mask, f"no dominant plane (the largest holds {frac:.0%} of the points)"
    span = float((_span(x[mask], normal) / np.maximum(_span(x, normal), 1e-12)).max())
    if span < p.min_plane_span:
        return None, mask, f"the largest plane spans only {span:.0%} of the cloud"
    rest = x[~mask] @ normal + offset
    if (rest < -thr).sum() > (rest > thr).sum():  # the normal points to where most of the rest is
        normal, offset = -normal, -offset
    return Plane(normal, offset, frac, span), mask, "support plane"


def _neighbourhood_radius(pc, n: int, seed: int, k: int = 8, probes: int = 400) -> float:
    """Median distance to the ``k``-th neighbour over a few hundred probe points: the typical
    spacing of the cloud that clumps of duplicated points do not shrink (unlike the nearest one)."""
    import open3d as o3d

    tree = o3d.geometry.KDTreeFlann(pc)
    rng = np.random.default_rng(seed)
    pts = np.asarray(pc.points)
    dists = []
    for i in rng.choice(n, min(n, probes), replace=False):
        _, _, d2 = tree.search_knn_vector_3d(pts[i], k + 1)
        dists.append(np.sqrt(d2[-1]))
    return float(np.median(dists))


def _clusters(x: np.ndarray, p: SceneParams) -> np.ndarray:
    """DBSCAN labels (-1: noise) of the points ``x``; the radius is 1.5 of their own k-th neighbour spacing."""
    if len(x) < p.min_cluster_points:
        return np.full(len(x), -1)
    import open3d as o3d

    pc = _o3d_cloud(x)
    eps = 1.5 * _neighbourhood_radius(pc, len(x), p.seed)
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        return np.asarray(pc.cluster_dbscan(eps=max(eps, 1e-9), min_points=5), dtype=np.int64)


def _significant(labels: np.ndarray, total: int, p: SceneParams) -> list[int]:
    if not (labels >= 0).any():
        return []
    counts = np.bincount(labels[labels >= 0])
    need = max(p.min_cluster_points, p.min_cluster_share * total)
    return [int(k) for k in np.argsort(-counts) if counts[k] >= need]


def _stands_on(points: np.ndarray, height: np.ndarray, normal: np.ndarray, thr: float, max_height: float) -> bool:
    """Whether a cluster is an object standing on the support: above it, lower than ``max_height``,
    and compact (neither a leg nor a flat fitting: its height is 0.15-5 times its footprint)."""
    tall = float(np.ptp(height))
    wide = float(_span(points, normal).max())
    return bool((height > -thr).mean() > 0.95 and tall < max_height and 0.15 * wide <= tall <= 5 * wide)


def _check(r: _Reduced, p: SceneParams) -> SceneCheck:
    support, mask, why = _support_plane(r, p)
    if support is None:
        return SceneCheck(False, why)
    rest = r.xyz[~mask]
    height = rest @ support.normal + support.offset
    thr = _plane_threshold(r)
    labels = _clusters(rest, p)
    keep = _significant(labels, len(rest), p)
    plane_span = float(_span(r.xyz[mask], support.normal).max())
    resting = [k for k in keep if _stands_on(rest[labels == k], height[labels == k], support.normal, thr,
                                             p.max_object_height * plane_span)]
    share = sum(int((labels == k).sum()) for k in resting) / max(len(rest), 1)
    if len(resting) >= 2 and share >= p.min_resting_share:
        return SceneCheck(True, f"a support plane ({support.fraction:.0%} of the points) with separate "
                                f"objects standing on it", support, len(resting))
    if len(keep) >= 2:
        return SceneCheck(False, "one object: its parts are not separate objects standing on a plane", support,
                          len(keep))
    return SceneCheck(False, f"one object{' on a plane' if keep else ''}", support, len(keep))


def check_scene(xyz: np.ndarray, params: SceneParams | None = None) -> SceneCheck:
    """Whether ``xyz`` (N, 3) is a scene (a support plane with several objects) or one object.

    ``support.normal`` points up: to the side where most of the other points are.
    """
    p = params or SceneParams()
    return _check(_reduce(xyz, p.analysis_points), p)


def find_objects(xyz: np.ndarray, params: SceneParams | None = None) -> tuple[list[FoundObject], np.ndarray | None]:
    """The objects of a scene, largest first, and the support's up direction (or None).

    Dominant planes (floor, road, walls, table top) are removed with RANSAC, the rest is clustered
    with DBSCAN on the voxel-reduced cloud, and each cluster takes back every original point of its
    voxels. Clusters larger than half the scene (what is left of a wall) are not objects.
    """
    p = params or SceneParams()
    a = np.asarray(xyz, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(a).all(axis=1))
    r = _reduce(a[finite], p.analysis_points)
    support, _, _ = _support_plane(r, p)
    thr = _plane_threshold(r)
    keep = np.ones(len(r.xyz), bool)
    for _ in range(p.max_planes):
        idx = np.flatnonzero(keep)
        if len(idx) < 50:
            break
        model, inl = _fit_plane(r.xyz[idx], thr, p.seed)
        span = _span(r.xyz[idx[inl]], model[:3] / np.linalg.norm(model[:3]))
        share = len(inl) / len(r.xyz)
        if share < p.min_removed_plane or (share < 2 * p.min_removed_plane and span.max() < 0.3 * r.extent):
            break  # what is left has no large plane: only objects
        keep[idx[inl]] = False
    idx = np.flatnonzero(keep)
    labels = np.full(len(r.xyz), -1)
    labels[idx] = _clusters(r.xyz[idx], p)
    objects = []
    for k in _significant(labels[idx], len(idx), p):
        vox = np.flatnonzero(labels == k)
        pts = r.xyz[vox]
        if np.linalg.norm(np.ptp(pts, axis=0)) > 0.5 * r.extent:
            continue
        member = np.zeros(len(r.xyz), bool)
        member[vox] = True
        orig = finite[member[r.inverse]]
        sel = a[orig]
        objects.append(FoundObject(orig, sel.min(axis=0), sel.max(axis=0)))
    objects.sort(key=lambda o: -o.points)
    return objects, (None if support is None else support.normal)


def nearest_signed_axis(direction: np.ndarray) -> str:
    """The signed axis (``'z'``, ``'-y'``, ...) closest to a direction."""
    d = np.asarray(direction, dtype=np.float64)
    k = int(np.argmax(np.abs(d)))
    return ("-" if d[k] < 0 else "") + "xyz"[k]


def rotation_between(src: np.ndarray, dst: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """The smallest proper rotation (3x3) taking the unit direction ``src`` to ``dst``."""
    a = np.asarray(src, np.float64) / np.linalg.norm(src)
    b = np.asarray(dst, np.float64) / np.linalg.norm(dst)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: a half turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)

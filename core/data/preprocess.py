"""Turn any cloud into what the classifiers expect: ``num_points`` points, z up, unit sphere.

The models were trained on ModelNet40 as in ``modelnet40_npy1024``: 1024 surface points, z up,
centred on their centroid and scaled so that the farthest point is at distance 1.
"""

from __future__ import annotations

import numpy as np

from core.data.orient import convert_up_axis
from core.errors import EmptyCloudError

__all__ = ["FPS_CANDIDATES", "GRID_CANDIDATES", "METHODS", "PREREDUCE_FACTOR", "convert_up_axis", "farthest_point_indices",
           "normalize_unit_sphere", "prepare_points", "voxel_downsample"]

#: ``method='grid'`` (the default, what the app and the CLI run): a cloud of more than twice this
#: many points is first cut at random to this many, then one point per occupied cell of a grid sized to leave just over
#: ``num_points`` cells (:func:`core.native.grid_sample`), then a random ``num_points`` of those.
#: About 0.15 ms for any cloud size; the models' predictions agree with those on exact FPS over every
#: point as often as FPS from another start does (docs/BENCHMARKS_DEPLOY.md).
GRID_CANDIDATES = 4096
#: ``method='fps'``: a larger cloud is first cut at random to this many points (at least twice
#: ``num_points``), then exact farthest point sampling runs on them (compiled kernel, :mod:`core.native`).
FPS_CANDIDATES = 2048
#: ``method='fps_dataset'``, the preprocessing the dataset caches and partial views were made with:
#: a random cut to this many times ``num_points``, then FPS by fpsample.
PREREDUCE_FACTOR = 8
METHODS = ("grid", "fps", "fps_exact", "fps_dataset", "random")


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """Centre on the centroid and scale so that the farthest point is at distance 1 (float32).

    In float64, as below; :func:`core.native.unit_sphere` computes the same bits faster."""
    from core import native

    fast = native.unit_sphere(xyz)
    if fast is not None:
        out, r = fast
        if not np.isfinite(r) or r == 0:
            raise EmptyCloudError(f"all {len(out)} points are at the same position: nothing to normalise")
        return out
    a = np.asarray(xyz, dtype=np.float64)
    a = a - a.mean(axis=0)
    r = np.sqrt((a * a).sum(axis=1).max()) if len(a) else 0.0
    if not np.isfinite(r) or r == 0:
        raise EmptyCloudError(f"all {len(a)} points are at the same position: nothing to normalise")
    return (a / r).astype(np.float32)


def voxel_downsample(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """One point per occupied voxel: the mean of the points inside it."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    a = np.asarray(xyz, dtype=np.float64)
    keys = np.floor((a - a.min(axis=0)) / voxel_size).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    out = np.zeros((len(counts), 3))
    for d in range(3):
        out[:, d] = np.bincount(inverse, weights=a[:, d], minlength=len(counts))
    return (out / counts[:, None]).astype(np.float32)


def farthest_point_indices(xyz: np.ndarray, n: int, seed: int = 0, approximate: bool = False) -> np.ndarray:
    """Indices of ``n`` points chosen by farthest point sampling, deterministic per seed.

    Exact FPS (start at a seeded random point, then always the point farthest from those
    chosen) costs O(n * N). ``approximate=True`` uses fpsample's kd-tree bucket variant, much
    faster on large clouds (80k -> 20k in ~0.15 s here) but not the same selection.
    """
    a = np.ascontiguousarray(np.asarray(xyz)[:, :3], dtype=np.float32)
    m = len(a)
    if n >= m:
        return np.arange(m)
    start = int(np.random.default_rng(seed).integers(m))
    try:
        import fpsample
    except ImportError:
        fpsample = None
    if fpsample is not None:
        if approximate:
            height = int(np.clip(np.log2(max(m, 2)) - 8, 3, 9))
            return np.asarray(fpsample.bucket_fps_kdline_sampling(a, n, h=height), dtype=np.int64)
        return np.asarray(fpsample.fps_sampling(a, n, start_idx=start), dtype=np.int64)
    idx = np.empty(n, dtype=np.int64)  # plain numpy fallback
    dist = np.full(m, np.inf, dtype=np.float32)
    cur = start
    for i in range(n):
        idx[i] = cur
        d = ((a - a[cur]) ** 2).sum(axis=1)
        np.minimum(dist, d, out=dist)
        cur = int(dist.argmax())
    return idx


def prepare_points(xyz: np.ndarray, num_points: int = 1024, up_axis: str = "z", method: str = "grid",
                   voxel_size: float | None = None, seed: int = 0, candidates: int | None = None) -> np.ndarray:
    """A cloud as the models expect it: (num_points, 3) float32, z up, unit sphere.

    Steps: drop NaN/Inf rows; optional voxel downsampling; reduce a larger cloud; repeat points of a
    smaller cloud; rotate the signed ``up_axis`` to z; centre and scale to the unit sphere. A cloud
    of exactly ``num_points`` keeps its order. Reduction by ``method``:

    * ``grid`` (default): a random cut to ``candidates`` points (default :data:`GRID_CANDIDATES`)
      when there are more than twice as many, then one point per occupied cell of a grid with just over ``num_points`` cells, then a random
      ``num_points`` of those (exact FPS where no grid gets enough cells, e.g. few distinct points);
    * ``fps``: a random cut to ``candidates`` points (default :data:`FPS_CANDIDATES`, at
      least ``2 * num_points``), then exact farthest point sampling from a seeded random start;
    * ``fps_exact``: farthest point sampling over every point (seconds for a million points);
    * ``fps_dataset``: a random cut to ``PREREDUCE_FACTOR * num_points``, then FPS (fpsample): what
      the dataset caches and partial views are made with;
    * ``random``: a random subset.

    Raises:
        EmptyCloudError: no finite points, or all points at one position.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    a = np.asarray(xyz)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"expected points of shape (N, 3), got {a.shape}")
    a = a[:, :3]
    if len(a) == 0:
        raise EmptyCloudError("the cloud has no points")
    if not np.isfinite(a).all():  # (one pass; a per-row all() over 3 columns is 30x slower)
        finite = np.isfinite(a[:, 0]) & np.isfinite(a[:, 1]) & np.isfinite(a[:, 2])
        if not finite.any():
            raise EmptyCloudError(f"all {len(a)} points are NaN or infinite")
        a = a[finite]
    if voxel_size:
        a = voxel_downsample(a, voxel_size)
    rng = np.random.default_rng(seed)
    n = len(a)
    if n > num_points:
        if method == "random":
            a = a[np.sort(rng.choice(n, num_points, replace=False))]
        elif method == "grid":
            a = _grid_reduce(a, num_points, rng, candidates or GRID_CANDIDATES)
        elif method == "fps_dataset":
            cap = PREREDUCE_FACTOR * num_points
            if n > cap:
                a = a[np.sort(rng.choice(n, cap, replace=False))]
            a = a[farthest_point_indices(a, num_points, seed=seed)]
        else:
            cap = max(candidates or FPS_CANDIDATES, 2 * num_points) if method == "fps" else n
            if n > cap:
                a = a[np.sort(rng.choice(n, cap, replace=False))]
            a = np.ascontiguousarray(a, dtype=np.float32)
            a = a[_exact_fps(a, num_points, int(rng.integers(len(a))))]
    elif n < num_points:
        extra = rng.choice(n, num_points - n, replace=num_points - n > n)
        a = a[np.concatenate([np.arange(n), extra])]
    if up_axis != "z":
        a = convert_up_axis(a, up_axis, "z")
    return np.ascontiguousarray(normalize_unit_sphere(a))


def _grid_reduce(a: np.ndarray, num_points: int, rng: np.random.Generator, candidates: int) -> np.ndarray:
    """``method='grid'`` of :func:`prepare_points` for a cloud of more than ``num_points`` points."""
    from core import native

    cap = max(candidates, 2 * num_points)
    if len(a) > 2 * cap:
        # a random cut, drawn with replacement (10x cheaper than without on large clouds; the grid
        # keeps one of any repeated point), gathered by take (3x faster than indexing)
        a = np.take(a, rng.integers(0, len(a), cap), axis=0)
    a = np.ascontiguousarray(a, dtype=np.float32)
    cells = native.grid_sample(a, num_points)
    if cells is None:
        return a[_exact_fps(a, num_points, int(rng.integers(len(a))))]
    return a[np.sort(rng.choice(cells, num_points, replace=False))]


def _exact_fps(a: np.ndarray, n: int, start: int) -> np.ndarray:
    """Exact FPS of ``n`` points of ``a`` (float32) from ``start``: the compiled kernel, else numpy."""
    from core import native

    if native.AVAILABLE:
        return native.farthest_point_indices(a, n, start)
    idx = np.empty(n, dtype=np.int64)
    dist = np.full(len(a), np.inf, dtype=np.float32)
    cur = start
    for i in range(n):
        idx[i] = cur
        np.minimum(dist, ((a - a[cur]) ** 2).sum(axis=1), out=dist)
        cur = int(dist.argmax())
    return idx

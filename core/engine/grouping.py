"""Sampling/grouping indices computed once per shape and reused across epochs and models.

FPS and ball query depend only on distances between points, so they are invariant to the
rotations and translations of augmentation: a set of indices is computed on the clean shape
with a deterministic random FPS start per (shape, variant) and reused for every epoch that
uses that variant (RESEARCH.md §5). Geometric augmentation applies to coordinates afterwards.
"""

from __future__ import annotations

import numpy as np
import torch

from core.models import ClassifierBase

MAX_CACHE_BYTES = 3 * 1024**3


def _flatten(tree, out):
    if torch.is_tensor(tree):
        out.append(tree)
    elif isinstance(tree, dict):
        for k in sorted(tree):
            _flatten(tree[k], out)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _flatten(v, out)
    return out


def _rebuild(tree, it):
    if torch.is_tensor(tree):
        return next(it)
    if isinstance(tree, dict):
        return {k: _rebuild(tree[k], it) for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_rebuild(v, it) for v in tree)
    return tree


class GroupingCache:
    """Per-shape index sets of one model family for a fixed array of shapes.

    Args:
        model: a model whose ``compute_grouping`` defines the indices (``None`` if it has none).
        points: (N, P, 3) float32 clean shapes, or (V, N, P, 3): one array of shapes per variant
            (variant ``v`` uses ``points[v % V]``, e.g. fixed augmented views).
        variants: index sets per shape (0 disables caching: indices are computed per batch).
        seed: makes every FPS start, hence every index, a function of (seed, variant, shape).
        deterministic: one variant starting FPS at point 0 (evaluation).
    """

    def __init__(self, model: ClassifierBase, points: np.ndarray, variants: int, seed: int = 0,
                 deterministic: bool = False) -> None:
        self.model = model
        self.views = points if points.ndim == 4 else points[None]
        n, p = self.views.shape[1:3]
        self.deterministic = deterministic
        self.dtype = np.int16 if p < 32768 else np.int32
        self.variants = 1 if deterministic else max(0, variants)
        rng = np.random.default_rng(seed + 7919)
        nv = max(1, self.variants)
        self.starts = np.zeros((nv, n), np.int64) if deterministic else rng.integers(0, p, (nv, n))
        self.enabled = model.compute_grouping(torch.from_numpy(self.views[0, :1])) is not None
        self._store: list[list[np.ndarray] | None] = [None] * nv
        self._done = [np.zeros(n, bool) for _ in range(nv)]
        self._template = None
        if self.enabled and self.variants:
            sample = model.compute_grouping(torch.from_numpy(self.views[0, :1]))
            per_shape = sum(t[0].numel() * 2 for t in _flatten(sample, []))
            fit = max(1, MAX_CACHE_BYTES // max(1, per_shape * n))
            self.variants = min(self.variants, fit)

    def get(self, index: np.ndarray, variant: int, points: np.ndarray | None = None):
        """Indices for the shapes ``index`` (a batch), variant ``variant % variants``. With caching
        off (``variants == 0``), ``points`` (B, P, 3) replaces the shapes' stored points (a batch
        augmented on the fly)."""
        if not self.enabled:
            return None
        if self.variants == 0:
            v = variant % len(self.starts)
            xyz = torch.from_numpy(self._points(v)[index] if points is None else points)
            return self.model.compute_grouping(xyz, torch.from_numpy(self.starts[v][index]))
        v = variant % self.variants
        missing = index[~self._done[v][index]]
        if len(missing):
            self._fill(v, np.unique(missing))
        arrays = [torch.from_numpy(a[index].astype(np.int64)) for a in self._store[v]]
        return _rebuild(self._template, iter(arrays))

    def _fill(self, v: int, index: np.ndarray) -> None:
        for lo in range(0, len(index), 64):
            chunk = index[lo : lo + 64]
            xyz = torch.from_numpy(self._points(v)[chunk])
            start = None if self.deterministic else torch.from_numpy(self.starts[v][chunk])
            tree = self.model.compute_grouping(xyz, start)
            leaves = _flatten(tree, [])
            if self._store[v] is None:
                n = self.views.shape[1]
                self._template = tree
                self._store[v] = [np.zeros((n, *t.shape[1:]), self.dtype) for t in leaves]
            for arr, t in zip(self._store[v], leaves):
                arr[chunk] = t.numpy().astype(self.dtype)
            self._done[v][chunk] = True

    def _points(self, variant: int) -> np.ndarray:
        return self.views[variant % len(self.views)]

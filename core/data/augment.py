"""Composable point-cloud augmentations for numpy arrays or torch tensors.

Each transform takes points of shape (N, C) or (B, N, C) with xyz in the first three channels
(C > 3: normals in channels 3:6 are rotated with the points, other channels left alone) and
returns the same type, shape, dtype and device. In a batch each sample draws its own parameters.
Randomness comes only from a ``numpy.random.Generator``: pass one as ``rng`` or give the
transform (or :class:`Compose`) a ``seed``; the same seed gives the same result for numpy and torch.

The trainer augments through this module only: :class:`TrainingAugmentation` for its batches and
cached teacher views (its live draws come from the run's checkpointed ``torch.Generator``), and
:func:`partial_views_per_shape` for partial views.
"""

from __future__ import annotations

import math

import numpy as np


def _as_batch(points):
    """(B, N, C) float view of the input, whether it was batched, and a way back to its type."""
    is_torch = type(points).__module__.startswith("torch")
    batched = points.ndim == 3
    if points.ndim not in (2, 3) or points.shape[-1] < 3:
        raise ValueError(f"expected points of shape (N, C>=3) or (B, N, C>=3), got {tuple(points.shape)}")
    x = points if batched else points[None]
    return x, batched, is_torch


def _param(values: np.ndarray, like):
    """Per-sample parameters (numpy) as an array/tensor matching ``like`` (dtype, device)."""
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return values.astype(like.dtype if like.dtype.kind == "f" else np.float32)


def _finish(x, batched: bool):
    return x if batched else x[0]


class Augmentation:
    """Base class: ``aug(points, rng=None)``; ``rng`` defaults to the transform's own generator."""

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    def __call__(self, points, rng: np.random.Generator | None = None):
        x, batched, _ = _as_batch(points)
        return _finish(self.apply(x, rng if rng is not None else self.rng), batched)

    def apply(self, x, rng: np.random.Generator):  # (B, N, C) -> (B, N, C)
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "rng")
        return f"{type(self).__name__}({args})"


def _with_xyz(x, xyz):
    """``x`` with its first three channels replaced (copy; the input is never modified)."""
    if x.shape[-1] == 3:
        return xyz
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.cat([xyz, x[..., 3:]], dim=-1)
    return np.concatenate([xyz, x[..., 3:]], axis=-1)


class RandomScale(Augmentation):
    """Multiply xyz by a factor in [low, high]; ``anisotropic`` draws one factor per axis."""

    def __init__(self, low: float = 2 / 3, high: float = 3 / 2, anisotropic: bool = False, seed: int | None = None):
        super().__init__(seed)
        self.low, self.high, self.anisotropic = low, high, anisotropic

    def apply(self, x, rng):
        s = rng.uniform(self.low, self.high, size=(x.shape[0], 1, 3 if self.anisotropic else 1))
        return _with_xyz(x, x[..., :3] * _param(s, x))


class RandomShift(Augmentation):
    """Translate xyz by a vector with each component uniform in [-shift, shift]."""

    def __init__(self, shift: float = 0.2, seed: int | None = None):
        super().__init__(seed)
        self.shift = shift

    def apply(self, x, rng):
        t = rng.uniform(-self.shift, self.shift, size=(x.shape[0], 1, 3))
        return _with_xyz(x, x[..., :3] + _param(t, x))


class RandomRotate(Augmentation):
    """Rotate about the up axis by an angle uniform in [-max_angle, max_angle] (default: any)."""

    def __init__(self, axis: str = "z", max_angle: float = math.pi, seed: int | None = None):
        super().__init__(seed)
        if axis not in ("x", "y", "z"):
            raise ValueError(f"axis must be x, y or z, got {axis!r}")
        self.axis, self.max_angle = axis, max_angle

    def matrices(self, b: int, rng: np.random.Generator) -> np.ndarray:
        a = rng.uniform(-self.max_angle, self.max_angle, size=b)
        c, s = np.cos(a), np.sin(a)
        r = np.zeros((b, 3, 3))
        i, j = {"z": (0, 1), "y": (2, 0), "x": (1, 2)}[self.axis]
        k = 3 - i - j
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j], r[:, k, k] = c, -s, s, c, 1.0
        return r

    def apply(self, x, rng):
        rt = _param(np.transpose(self.matrices(x.shape[0], rng), (0, 2, 1)), x)  # row vectors: p @ R^T
        out = x[..., :3] @ rt
        if x.shape[-1] >= 6:  # normals turn with the shape
            n = x[..., 3:6] @ rt
            rest = x[..., 6:]
            if type(x).__module__.startswith("torch"):
                import torch

                return torch.cat([out, n, rest], dim=-1)
            return np.concatenate([out, n, rest], axis=-1)
        return _with_xyz(x, out)


class Jitter(Augmentation):
    """Add Gaussian noise (std ``sigma``, clipped to +-``clip``) to every coordinate."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.sigma, self.clip = sigma, clip

    def apply(self, x, rng):
        noise = np.clip(self.sigma * rng.standard_normal(size=(*x.shape[:2], 3)), -self.clip, self.clip)
        return _with_xyz(x, x[..., :3] + _param(noise, x))


class PointDropout(Augmentation):
    """Drop a random share (up to ``max_ratio``) of each sample's points, keeping the shape:
    dropped points are replaced by the sample's first point (as in PointNet++)."""

    def __init__(self, max_ratio: float = 0.875, seed: int | None = None):
        super().__init__(seed)
        self.max_ratio = max_ratio

    def apply(self, x, rng):
        b, n = x.shape[:2]
        ratio = rng.uniform(0, self.max_ratio, size=(b, 1))
        drop = rng.random((b, n)) < ratio
        drop[:, 0] = False
        if type(x).__module__.startswith("torch"):
            import torch

            mask = torch.as_tensor(drop, device=x.device)[..., None]
            return torch.where(mask, x[:, :1].expand_as(x), x)
        return np.where(drop[..., None], x[:, :1], x)


class ShufflePoints(Augmentation):
    """Random order of the points of each sample (all channels move together)."""

    def apply(self, x, rng):
        b, n = x.shape[:2]
        perm = np.argsort(rng.random((b, n)), axis=1)
        if type(x).__module__.startswith("torch"):
            import torch

            idx = torch.as_tensor(perm, device=x.device)[..., None].expand(-1, -1, x.shape[-1])
            return torch.gather(x, 1, idx)
        return np.take_along_axis(x, perm[..., None], axis=1)


class PartialView(Augmentation):
    """Turn a share ``prob`` of the samples into single-viewpoint partial views (:mod:`core.data.partial`):
    points visible from a random camera (hidden point removal), a random share of them kept, noise
    along the camera rays, re-sampled to the sample's point count and re-normalised to the unit
    sphere (z up kept). Each chosen sample draws its own viewpoint and a severity uniform in
    ``severity`` (parameters interpolated between the benchmark's levels 1..3), so draws differ per
    sample and per call. Other channels follow their points. Runs on the CPU (Open3D), numpy or torch
    in and out. ``prob=0`` returns the input's values and draws nothing."""

    def __init__(self, prob: float = 0.0, severity: tuple[float, float] = (1.0, 3.0), seed: int | None = None):
        super().__init__(seed)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        lo, hi = severity
        if not 1.0 <= lo <= hi <= 3.0:
            raise ValueError(f"severity must be a range within [1, 3], got {severity}")
        self.prob, self.severity = prob, (float(lo), float(hi))

    def apply(self, x, rng):
        if self.prob <= 0:
            return x
        from core.data.partial import partial_view_indices

        b, n = x.shape[:2]
        chosen = rng.random(b) < self.prob
        sev = rng.uniform(*self.severity, size=b)
        seeds = rng.integers(2**63, size=b)
        if not chosen.any():
            return x
        is_torch = type(x).__module__.startswith("torch")
        a = x.detach().cpu().numpy() if is_torch else np.asarray(x)
        out = a.copy()
        for i in np.flatnonzero(chosen):
            rows, xyz = partial_view_indices(a[i, :, :3], np.random.default_rng(seeds[i]), sev[i], num_points=n)
            out[i] = a[i, rows]
            out[i, :, :3] = xyz
        if is_torch:
            import torch

            return torch.as_tensor(out, dtype=x.dtype, device=x.device)
        return out


def partial_views_per_shape(points: np.ndarray, prob: float, severity: tuple[float, float] = (1.0, 3.0),
                            seed=0, indices=None, progress=None) -> np.ndarray:
    """:class:`PartialView` applied to each shape of ``points`` (N, P, C) with its own generator
    ``np.random.default_rng((*seed, indices[k]))`` (``seed`` an int or a tuple of ints), so a
    shape's draw does not depend on the other shapes or on batching: fixed views for caches, or
    per-epoch draws that a resumed run repeats. ``progress(done, total)`` every 256 shapes and at the end."""
    aug = PartialView(prob, severity)
    base = tuple(seed) if isinstance(seed, (tuple, list)) else (int(seed),)
    idx = np.arange(len(points)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.array(points, copy=True)
    for k, i in enumerate(idx):
        out[k] = aug(out[k], np.random.default_rng((*base, int(i))))
        if progress is not None and ((k + 1) % 256 == 0 or k + 1 == len(out)):
            progress(k + 1, len(out))
    return out


class Compose(Augmentation):
    """Apply transforms in order, all drawing from this object's generator (or ``rng``)."""

    def __init__(self, transforms: list[Augmentation], seed: int | None = None):
        super().__init__(seed)
        self.transforms = list(transforms)

    def apply(self, x, rng):
        for t in self.transforms:
            x = t.apply(x, rng)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


def default_train_augmentation(seed: int | None = None, partial_prob: float = 0.0,
                               partial_severity: tuple[float, float] = (1.0, 3.0)) -> Compose:
    """The usual ModelNet training recipe: anisotropic scale, shift, jitter, shuffle; with
    ``partial_prob > 0`` a :class:`PartialView` of that share of the samples comes first."""
    first = [PartialView(partial_prob, partial_severity)] if partial_prob > 0 else []
    return Compose([*first, RandomScale(2 / 3, 3 / 2, anisotropic=True), RandomShift(0.2), Jitter(0.01, 0.05),
                    ShufflePoints()], seed=seed)


class TrainingAugmentation:
    """The trainer's geometric augmentation of training batches (``augment:`` of a job), applied after
    the sampling and grouping indices are chosen (they are invariant to it).

    One transform, two sources of parameters. A live batch draws them from the run's
    ``torch.Generator`` (checkpointed, so a resumed run repeats the draws), in this order: a rotation
    about z (``rotate_up``), a scale in [scale_low, scale_high] (per axis when ``anisotropic``), a
    shift in [-shift, shift] per axis, Gaussian jitter (``jitter`` sigma, clipped to 5 sigma). Cached
    teacher views hold one fixed scale and shift per view and shape (:meth:`view_params`), applied by
    the same :meth:`scale_shift` to the student's and the teacher's points. A cache cannot hold a
    rotation or per-point jitter: :meth:`uncacheable` names them, and a job that asks for both is refused.
    Partial views (:class:`PartialView`) are drawn per shape before this, by :func:`partial_views_per_shape`.
    """

    def __init__(self, scale_low: float = 0.8, scale_high: float = 1.25, anisotropic: bool = True, shift: float = 0.1,
                 jitter: float = 0.0, rotate_up: bool = False) -> None:
        self.scale_low, self.scale_high, self.anisotropic = scale_low, scale_high, anisotropic
        self.shift, self.jitter, self.rotate_up = shift, jitter, rotate_up

    @classmethod
    def from_config(cls, a) -> "TrainingAugmentation":
        """From an ``AugmentConfig`` (``core.engine.config``)."""
        return cls(a.scale_low, a.scale_high, a.anisotropic, a.shift, a.jitter, a.rotate_up)

    def uncacheable(self) -> list[str]:
        """The settings fixed cached views cannot honour (``augment.`` keys), empty when none."""
        return [k for k, on in (("rotate_up", self.rotate_up), ("jitter", self.jitter > 0)) if on]

    @staticmethod
    def scale_shift(points, scale, shift):
        """``points * scale + shift``: (B, P, 3) points, (B, 1, 1 or 3) scales and (B, 1, 3) shifts."""
        return points * scale + shift

    def __call__(self, points, generator):
        """A live batch (B, P, 3) torch tensor, augmented with parameters drawn from ``generator``."""
        import torch

        g, b, pts = generator, points.shape[0], points
        if self.rotate_up:
            theta = torch.rand(b, generator=g) * 2 * math.pi
            c, s = torch.cos(theta), torch.sin(theta)
            rot = torch.zeros(b, 3, 3)
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
            pts = pts @ rot
        k = 3 if self.anisotropic else 1
        scale = self.scale_low + (self.scale_high - self.scale_low) * torch.rand(b, 1, k, generator=g)
        shift = (torch.rand(b, 1, 3, generator=g) * 2 - 1) * self.shift
        pts = self.scale_shift(pts, scale, shift)
        if self.jitter > 0:
            pts = pts + (torch.randn(pts.shape, generator=g) * self.jitter).clamp(-5 * self.jitter, 5 * self.jitter)
        return pts

    def view_params(self, views: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Fixed (views, n, 3) float32 scales and shifts for ``views`` cached views of ``n`` shapes."""
        rng = np.random.default_rng(seed)
        scale = rng.uniform(self.scale_low, self.scale_high, (views, n, 3 if self.anisotropic else 1))
        if not self.anisotropic:
            scale = np.repeat(scale, 3, axis=2)
        shift = rng.uniform(-self.shift, self.shift, (views, n, 3))
        return scale.astype(np.float32), shift.astype(np.float32)

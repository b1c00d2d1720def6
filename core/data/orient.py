"""The up axis of a file, decided in one place for single files and datasets alike.

An up axis is one of six signed axes (``x y z -x -y -z``). The models expect z up; a cloud is
brought there by a proper rotation (never a mirror). The decision for a file follows one order:

1. ``user``: the axis the user names (``--up y``, the app's axis box);
2. ``format``: the file format fixes it (the PointNet++ text format and glTF are y up, LAS and
   the LiDAR ``.bin`` layouts z up; :attr:`core.data.io.PointCloud.up_hint`);
3. ``estimated``: an estimate from the points (objects: the orientation the models find most
   familiar, :meth:`core.inference.Comparison.estimate_up_axis`; scenes: the normal of the
   dominant support plane, :func:`core.data.scene.support_plane_up`);
4. ``default``: z, when nothing else is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Every up axis a user can name, z (the models' own) first.
UP_AXES = ("z", "y", "x", "-z", "-y", "-x")
#: The choices of an up-axis option: ``auto`` decides by the order above.
UP_CHOICES = ("auto",) + UP_AXES
#: Where a decided axis came from.
UP_SOURCES = ("user", "format", "estimated", "default")
#: An estimate whose chosen axis has a lower probability than this is reported as unsure. Chosen for
#: the bundled estimator on the held-out tenth of the training split (docs/REAL_FILES.md, "When to
#: call an estimate unsure", by ``scripts/real_files_study.py``).
UP_UNSURE_BELOW = 0.9

_ABOUT_X_180 = np.diag([1.0, -1.0, -1.0])
_POSITIVE_TO_Z = {
    "z": np.eye(3),
    "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # (x, y, z) -> (x, -z, y)
    "x": np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]),  # (x, y, z) -> (-z, y, x)
}


def check_up_axis(axis: str) -> str:
    """``axis`` in canonical form (``'+y'`` and ``'Y'`` become ``'y'``), or ValueError."""
    a = str(axis).strip().lower().lstrip("+")
    if a not in UP_AXES:
        raise ValueError(f"up axis must be one of {', '.join(UP_AXES)} (got {axis!r})")
    return a


def rotation_to_z(axis: str) -> np.ndarray:
    """The proper rotation (3x3, det +1) that takes the signed ``axis`` to +z.

    For a negative axis it is the positive axis's rotation followed by a half turn about x, so
    ``-y`` (a camera frame: y down) maps (x, y, z) to (x, z, -y).
    """
    a = check_up_axis(axis)
    rot = _POSITIVE_TO_Z[a[-1]]
    return _ABOUT_X_180 @ rot if a.startswith("-") else rot.copy()


def convert_up_axis(xyz: np.ndarray, src: str, dst: str = "z") -> np.ndarray:
    """Rotate ``xyz`` (..., 3) so that the signed axis ``src`` points where ``dst`` pointed.

    A rotation, not an axis swap, so shapes are never mirrored. y-up -> z-up maps
    (x, y, z) to (x, -z, y).
    """
    src, dst = check_up_axis(src), check_up_axis(dst)
    a = np.asarray(xyz)
    if src == dst:
        return a
    rot = rotation_to_z(dst).T @ rotation_to_z(src)
    return a @ rot.T.astype(a.dtype if a.dtype.kind == "f" else np.float64)


def turn_z_up_to(xyz: np.ndarray, axis: str) -> np.ndarray:
    """The inverse of bringing ``axis`` to z: a z-up cloud turned so that ``axis`` points up."""
    return convert_up_axis(xyz, "z", axis)


@dataclass
class UpAxis:
    """A decided up axis: which one, where it came from, and, when it was estimated for this cloud,
    the estimate's log-probability of each axis (``scores``)."""

    axis: str
    source: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def confidence(self) -> float | None:
        """The estimate's probability of the chosen axis; None when the axis was not estimated
        from this cloud's own scores (named, fixed by the format, a scene's support plane, a folder's)."""
        if self.source != "estimated" or self.axis not in self.scores:
            return None
        return float(np.exp(min(float(self.scores[self.axis]), 0.0)))

    @property
    def unsure(self) -> bool:
        """The estimate is unsure (:data:`UP_UNSURE_BELOW`): the user should check the axis."""
        return is_unsure(self.confidence)

    @property
    def likelier(self) -> str | None:
        """:func:`likelier_axis` of this estimate."""
        return likelier_axis(self.axis, self.scores)

    def to_dict(self) -> dict:
        return {"up_axis": self.axis, "up_axis_source": self.source}

    def describe(self) -> str:
        """:func:`up_axis_text` of this axis."""
        return up_axis_text(self.axis, self.source, self.confidence)


def is_unsure(confidence: float | None) -> bool:
    """An estimate of this confidence (None: not estimated) is unsure (:data:`UP_UNSURE_BELOW`)."""
    return confidence is not None and confidence < UP_UNSURE_BELOW


def up_axis_text(axis: str, source: str, confidence: float | None = None) -> str:
    """An axis for people: ``z (estimated)``, or for an unsure estimate ``z (estimated, unsure: 62%)``
    (rounded down, so an unsure estimate never reads as the threshold)."""
    if is_unsure(confidence):
        return f"{axis} ({source}, unsure: {math.floor(100 * confidence + 1e-6)}%)"  # (exp(log 0.35) is 0.34999...)
    return f"{axis} ({source})"


def likelier_axis(axis: str, scores: dict[str, float]) -> str | None:
    """The axis the estimate's ``scores`` rate likelier than the chosen ``axis`` (which the margin in
    favour of z can keep), or None."""
    if not scores:
        return None
    best = max(scores, key=scores.get)
    return best if best != axis and scores[best] > scores.get(axis, -math.inf) else None


def unsure_advice(likelier: str | None) -> str:
    """What to tell the user of an unsure estimate."""
    hint = f" ({likelier} looks likelier)" if likelier else ""
    return f"the up-axis estimate is unsure{hint}: check that the shape stands upright, or name the axis"


def decide_up_axis(requested: str, format_hint: str | None, estimate=None) -> UpAxis:
    """Apply the order of this module: the user's axis, the format's, an estimate, then z.

    Args:
        requested: ``'auto'`` or a signed axis named by the user.
        format_hint: the axis the file format fixes, or None.
        estimate: a callable returning ``(axis, scores)``, called only when needed; None when no
            estimate is available.
    """
    req = str(requested).strip().lower()
    if req != "auto":
        return UpAxis(check_up_axis(req), "user")
    if format_hint:
        return UpAxis(check_up_axis(format_hint), "format")
    if estimate is not None:
        axis, scores = estimate()
        return UpAxis(check_up_axis(axis), "estimated", dict(scores))
    return UpAxis("z", "default")

"""Which points a classifier's decision rests on, and whether teacher and student look at the same ones.

Importance of point ``i`` (gradient saliency, Simonyan et al. 2014 on images; used on point clouds
by Zheng et al., ICCV 2019): ``|d z_c / d p_i|``, the L2 norm over x, y, z of the gradient of the
logit ``z_c`` of the model's own predicted class with respect to the point's position. Points the
model never looks at (not sampled, in no neighbourhood) get 0. One forward and one backward pass per
model; the same rule for every architecture of the zoo (sampling and grouping indices are not
differentiated: they depend on the points only through which points are chosen).

Overlap: the intersection over union of the two models' top ``TOP_FRACTION`` (10%) most important
points, on the same input points (``|A ∩ B| / |A ∪ B|``: 1 the same points, 0 none in common; two
random sets of 10% overlap by about 0.05).

No Qt here; the GUI calls :func:`compare_attributions` from a worker.
"""

from __future__ import annotations

import math

import numpy as np

TOP_FRACTION = 0.10
METHOD = "gradient saliency: |∂ logit of the predicted class / ∂ point position|"
#: The colour ramp of importance ranks (low -> high), RGB in 0..1; the app's colour bar uses it too.
RAMP = np.array([[0.16, 0.18, 0.42], [0.25, 0.45, 0.72], [0.45, 0.75, 0.55], [0.98, 0.78, 0.2], [0.85, 0.15, 0.1]])


def gradient_saliency(model, points: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int]:
    """Per-point importance (N,) of one prepared cloud (N, 3) for ``model``, and the class it is for
    (``target``, default the model's prediction). The model's parameters get no gradients."""
    import torch

    model.eval()
    x = torch.tensor(np.asarray(points, np.float32)[None], requires_grad=True)
    with torch.enable_grad():
        logits = model(x)
        c = int(logits[0].detach().argmax()) if target is None else int(target)
        (grad,) = torch.autograd.grad(logits[0, c], x)
    return grad[0].double().norm(dim=1).numpy(), c


def top_indices(importance: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """The ``ceil(fraction * N)`` most important points (ties: the lower index first)."""
    v = np.asarray(importance, np.float64)
    k = max(1, math.ceil(fraction * len(v)))
    return np.argsort(-v, kind="stable")[:k]


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Intersection over union of the top ``fraction`` points of two importance vectors of one cloud."""
    if len(a) != len(b):
        raise ValueError(f"importance of the same points expected, got {len(a)} and {len(b)} values")
    ta, tb = set(top_indices(a, fraction).tolist()), set(top_indices(b, fraction).tolist())
    return len(ta & tb) / len(ta | tb)


def importance_rank(importance: np.ndarray) -> np.ndarray:
    """Each point's importance as a percentile rank in [0, 1] (ties share their mean rank): the
    colour scale, robust to the heavy tail of gradient magnitudes."""
    v = np.asarray(importance, np.float64)
    if len(v) < 2:
        return np.ones(len(v))
    s = np.sort(v)
    lo, hi = np.searchsorted(s, v, "left"), np.searchsorted(s, v, "right")
    return (lo + hi - 1) / 2 / (len(v) - 1)


def ramp_colors(t: np.ndarray) -> np.ndarray:
    """RGB (N, 3) in 0..1 of values in [0, 1] along :data:`RAMP`."""
    t = np.clip(np.asarray(t, np.float64), 0, 1) * (len(RAMP) - 1)
    i = np.minimum(t.astype(int), len(RAMP) - 2)
    f = (t - i)[:, None]
    return RAMP[i] * (1 - f) + RAMP[i + 1] * f


def compare_attributions(teacher, student, points: np.ndarray, fraction: float = TOP_FRACTION) -> dict:
    """Both models' importance on the same prepared cloud (N, 3): per role ``importance``, ``rank``
    (percentile), ``colors`` (RGB) and ``class_index``; ``iou`` of their top ``fraction``."""
    out = {"points": np.asarray(points, np.float32), "fraction": fraction, "method": METHOD}
    for role, model in (("teacher", teacher), ("student", student)):
        imp, c = gradient_saliency(model, points)
        rank = importance_rank(imp)
        out[role] = {"importance": imp, "rank": rank, "colors": ramp_colors(rank), "class_index": c}
    out["iou"] = top_overlap(out["teacher"]["importance"], out["student"]["importance"], fraction)
    return out


__all__ = ["TOP_FRACTION", "METHOD", "RAMP", "gradient_saliency", "top_indices", "top_overlap", "importance_rank",
           "ramp_colors", "compare_attributions"]

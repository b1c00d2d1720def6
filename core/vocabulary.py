"""An honest "not sure": does a model know this kind of object at all?

A classifier always names one of its classes. Each model here also decides whether its input is
*in its vocabulary*, from a score of its logits and a threshold:

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
- ``energy``: the free energy's negative, ``logsumexp(logits)`` (Liu et al., NeurIPS 2020);
  higher means more familiar for both.

The threshold is calibrated on a fixed slice of the **training** split (never the test split) so
that at most ``flag_rate`` of those in-vocabulary shapes fall below it, and it is stored in the
checkpoint (key ``vocabulary``), so a re-trained, re-bundled or imported model carries its own.
A checkpoint without one is *uncalibrated*: its decision is None, never a guess.

A model is more confident on the exact point sets it was trained on than on new scans of the same
kind of object (the bundled teacher: a threshold fitted on its raw training shapes flags 31% of the
test split). Each calibration shape is therefore **re-sampled** first: a seeded random half of its
points, the rest refilled by repetition, so the model sees a new point set of a known object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCORES = ("msp", "energy")
#: The score ``calibrate`` uses unless told otherwise: it separated out-of-vocabulary shapes
#: better for both bundled models (docs/REAL_FILES.md, ``scripts/real_files_study.py``).
DEFAULT_SCORE = "msp"
#: Checkpoint key of the calibration record.
CHECKPOINT_KEY = "vocabulary"


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def vocabulary_score(logits, kind: str) -> np.ndarray:
    """Per-row familiarity score of logits (B, C) (array or tensor): higher is more in-vocabulary."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if kind == "msp":
        return np.exp(x.max(axis=1) - _logsumexp(x))
    if kind == "energy":
        return _logsumexp(x)
    raise ValueError(f"vocabulary score must be one of {', '.join(SCORES)} (got {kind!r})")


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative (ties count 1/2)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("AUROC needs at least one positive and one negative score")
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse.reshape(-1)]  # 1-based, ties share their mean rank
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@dataclass
class VocabularyCalibration:
    """What a checkpoint stores: the score, its threshold and where the threshold came from."""

    score: str
    threshold: float
    flag_rate: float  # share of the calibration shapes below the threshold (target)
    shapes: int  # calibration shapes
    source: str  # e.g. "modelnet40_npy1024 train, 1000 shapes (every 10th)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "VocabularyCalibration | None":
        if not d:
            return None
        try:
            cal = cls(str(d["score"]), float(d["threshold"]), float(d["flag_rate"]), int(d["shapes"]),
                      str(d.get("source", "")))
        except (KeyError, TypeError, ValueError):
            return None
        return cal if cal.score in SCORES and np.isfinite(cal.threshold) else None

    def in_vocabulary(self, logits) -> np.ndarray:
        """One boolean per row of logits."""
        return vocabulary_score(logits, self.score) >= self.threshold


def calibration_indices(total: int, shapes: int = 1000) -> np.ndarray:
    """A fixed, evenly spread slice of ``shapes`` indices out of ``total`` (the same every time)."""
    if total <= shapes:
        return np.arange(total)
    return np.linspace(0, total - 1, shapes).round().astype(np.int64)


def fit_threshold(scores: np.ndarray, flag_rate: float = 0.05) -> float:
    """The largest threshold that flags at most ``flag_rate`` of ``scores`` (in-vocabulary shapes)."""
    s = np.sort(np.asarray(scores, np.float64))
    if not len(s):
        raise ValueError("no calibration scores")
    k = int(np.floor(flag_rate * len(s)))  # k shapes may fall strictly below the threshold
    return float(s[k])


def model_logits(model, points: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of a torch model, in eval mode, on prepared clouds (B, N, 3)."""
    import torch

    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(np.ascontiguousarray(points[lo:lo + batch_size], np.float32))).float().numpy()
               for lo in range(0, len(points), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def resample_half(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each cloud (B, N, 3) as a new point set of the same surface: a seeded random half of its
    points, refilled to N by repeating points of that half (float32)."""
    rng = np.random.default_rng(seed)
    out = np.empty(points.shape, np.float32)
    n = points.shape[1]
    for i, x in enumerate(points):
        keep = rng.choice(n, n // 2, replace=False)
        out[i] = x[np.concatenate([keep, rng.choice(keep, n - len(keep))])]
    return out


def calibrate_model(model, points: np.ndarray, source: str, score: str = DEFAULT_SCORE,
                    flag_rate: float = 0.05) -> VocabularyCalibration:
    """Fit the threshold of ``score`` on in-vocabulary training shapes ``points`` (B, N, 3), re-sampled."""
    if score not in SCORES:
        raise ValueError(f"vocabulary score must be one of {', '.join(SCORES)} (got {score!r})")
    scores = vocabulary_score(model_logits(model, resample_half(points)), score)
    return VocabularyCalibration(score, fit_threshold(scores, flag_rate), flag_rate, len(points), source)

"""An honest "not sure": does a model know this kind of object at all?

A classifier always names one of its classes. Each model here also decides whether its input is
*in its vocabulary*, from a score of its logits and a threshold:

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
- ``energy``: the free energy's negative, ``logsumexp(logits)`` (Liu et al., NeurIPS 2020);
- ``exposure``: a small network on the logits (one hidden ReLU layer), trained to tell training
  shapes from generated objects of none of the classes (``core.data.oov``): outlier exposure
  (Hendrycks et al., ICLR 2019) on a frozen classifier. Its weights are stored with the threshold.

Higher means more familiar for all three. A model's logits carry more than their maximum: a cow
gets the shape of logits of no real class, though its top class may be confident.

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

from dataclasses import asdict, dataclass, field

import numpy as np

SCORES = ("msp", "energy", "exposure")
#: The score ``calibrate`` uses unless told otherwise: it flags far more real out-of-vocabulary
#: meshes than msp and far fewer partial views of known objects, at about the same rate on complete
#: ones; on kinds of generated objects held out of its training it separates somewhat less well
#: (docs/REAL_FILES.md, ``scripts/real_files_study.py``).
DEFAULT_SCORE = "exposure"
#: The exposure score's training: in-vocabulary training shapes (outside the calibration slice) and
#: generated objects per family (``core.data.oov``, seed 1; measurements use seed 0).
EXPOSURE_SHAPES = 3000
EXPOSURE_PER_FAMILY = 40
#: Checkpoint key of the calibration record.
CHECKPOINT_KEY = "vocabulary"


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def vocabulary_score(logits, kind: str, probe: dict | None = None) -> np.ndarray:
    """Per-row familiarity score of logits (B, C) (array or tensor): higher is more in-vocabulary.
    ``probe``: the ``exposure`` score's network (:func:`fit_exposure`)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if kind == "msp":
        return np.exp(x.max(axis=1) - _logsumexp(x))
    if kind == "energy":
        return _logsumexp(x)
    if kind == "exposure":
        if probe is None:
            raise ValueError("the exposure score needs its network (fit_exposure)")
        p = {k: np.asarray(v, np.float64) for k, v in probe.items()}
        h = np.maximum(((x - p["mean"]) / p["scale"]) @ p["hidden_weight"] + p["hidden_bias"], 0.0)
        return h @ p["weight"] + float(p["bias"])
    raise ValueError(f"vocabulary score must be one of {', '.join(SCORES)} (got {kind!r})")


def fit_exposure(inside, outside, hidden: int = 64, epochs: int = 40, seed: int = 0) -> dict:
    """The ``exposure`` score's network: logits (standardised) -> one hidden ReLU layer -> a score,
    trained as a logistic regression of "in the vocabulary" on the logits of in-vocabulary shapes
    ``inside`` (N, C) against those of objects of none of the classes ``outside`` (M, C), the two
    weighted equally. Dropout and weight decay keep it from learning the generated families by heart.
    Returns float32 tensors (stored in the checkpoint with the threshold) and the bias."""
    import torch

    torch.manual_seed(seed)
    x = np.concatenate([inside, outside]).astype(np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.cat([torch.ones(len(inside)), torch.zeros(len(outside))])
    layer, out = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 1)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), layer, torch.nn.ReLU(), torch.nn.Dropout(0.3), out)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    pos_weight = torch.tensor(len(outside) / len(inside))
    for _ in range(epochs):
        for i in torch.randperm(len(xt)).split(128):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[i])[:, 0], yt[i], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"mean": torch.tensor(mean, dtype=torch.float32), "scale": torch.tensor(scale, dtype=torch.float32),
            "hidden_weight": layer.weight.detach().T.contiguous(), "hidden_bias": layer.bias.detach().clone(),
            "weight": out.weight.detach()[0].clone(), "bias": float(out.bias.detach()[0])}


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
    # the exposure score's network (fit_exposure); None for msp and energy. (Left out of ==: tensors.)
    probe: dict | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        """The whole record, as the checkpoint stores it."""
        return asdict(self)

    def summary(self) -> dict:
        """The record without the exposure network's weights (for answers and listings)."""
        return {k: v for k, v in asdict(self).items() if k != "probe"}

    @classmethod
    def from_dict(cls, d: dict | None, num_classes: int | None = None) -> "VocabularyCalibration | None":
        """The record ``d`` (a checkpoint's), or None when there is none or it cannot be used (a damaged
        record, or an exposure network for another number of classes than ``num_classes``): uncalibrated."""
        if not d:
            return None
        try:
            cal = cls(str(d["score"]), float(d["threshold"]), float(d["flag_rate"]), int(d["shapes"]),
                      str(d.get("source", "")), d.get("probe"))
            if cal.score == "exposure":
                width = num_classes or len(cal.probe["mean"])
                if not np.isfinite(vocabulary_score(np.zeros((1, width)), "exposure", cal.probe)).all():
                    return None
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        return cal if cal.score in SCORES and np.isfinite(cal.threshold) else None

    def in_vocabulary(self, logits) -> np.ndarray:
        """One boolean per row of logits."""
        return vocabulary_score(logits, self.score, self.probe) >= self.threshold


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


def exposure_indices(total: int, shapes: int = EXPOSURE_SHAPES, calibration: int = 1000) -> np.ndarray:
    """Training-split indices the exposure score learns from: evenly spread over those outside the
    calibration slice (:func:`calibration_indices`), so the threshold is fitted on shapes it never saw."""
    rest = np.setdiff1d(np.arange(total), calibration_indices(total, calibration))
    return rest[calibration_indices(len(rest), shapes)]


def as_scanned(points: np.ndarray, seed: int = 0, copies: int = 9, sigma: float = 0.01) -> np.ndarray:
    """Each cloud (B, N, 3) as a scanned file reaches a model: made dense (each point and ``copies``
    jittered copies of it, ``sigma`` in unit-sphere units), then reduced by
    :func:`core.data.preprocess.prepare_points` (the default grid), as ``predict`` reduces a file."""
    from core.data.preprocess import prepare_points

    rng = np.random.default_rng(seed)
    out = np.empty((len(points), points.shape[1], 3), np.float32)
    for i, x in enumerate(points):
        dense = np.concatenate([x] + [x + rng.normal(0, sigma, x.shape) for _ in range(copies)])
        out[i] = prepare_points(dense, points.shape[1])
    return out


def calibration_clouds(points: np.ndarray, score: str) -> np.ndarray:
    """What the threshold of ``score`` is fitted on, from the calibration slice's shapes: each
    re-sampled, and for ``exposure`` also :func:`as_scanned`."""
    clouds = resample_half(points)
    return np.concatenate([clouds, as_scanned(points, seed=0)]) if score == "exposure" else clouds


def exposure_inside(points: np.ndarray) -> np.ndarray:
    """The in-vocabulary clouds the exposure network learns from: each shape re-sampled and
    :func:`as_scanned`, with seeds other than the calibration's."""
    return np.concatenate([resample_half(points, seed=1), as_scanned(points, seed=1)])


def calibrate_model(model, points: np.ndarray, source: str, score: str = DEFAULT_SCORE,
                    flag_rate: float = 0.05, exposure_points: np.ndarray | None = None) -> VocabularyCalibration:
    """Fit the threshold of ``score`` on in-vocabulary training shapes ``points`` (B, N, 3), re-sampled.

    For ``exposure``, its network is trained first on ``exposure_points`` (other in-vocabulary
    training shapes) against the generated objects of :func:`core.data.oov.oov_shapes` (seed 1),
    and both it and the threshold see each in-vocabulary shape twice: re-sampled, and
    :func:`as_scanned` (the generated objects reach it through ``prepare_points`` too, so how a cloud
    was sampled cannot tell the two sets apart; the threshold then holds for files as well).
    """
    if score not in SCORES:
        raise ValueError(f"vocabulary score must be one of {', '.join(SCORES)} (got {score!r})")
    probe = None
    if score == "exposure":
        from core.data.oov import oov_shapes

        if exposure_points is None or not len(exposure_points):
            raise ValueError("the exposure score needs in-vocabulary training shapes to learn from")
        outside, _ = oov_shapes(EXPOSURE_PER_FAMILY, seed=1)
        probe = fit_exposure(model_logits(model, exposure_inside(exposure_points)), model_logits(model, outside))
        source += (f", and as scanned files; exposure network trained on {len(exposure_points)} other training "
                   f"shapes (both ways) and {len(outside)} generated objects (core.data.oov, seed 1)")
    scores = vocabulary_score(model_logits(model, calibration_clouds(points, score)), score, probe)
    return VocabularyCalibration(score, fit_threshold(scores, flag_rate), flag_rate, len(points), source, probe)

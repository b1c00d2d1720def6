"""Calibration: does a model's confidence match how often it is right?

- **ECE** (expected calibration error, Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017): the shapes are binned by their confidence (the top class's softmax probability) into
  ``ECE_BINS`` = 15 equal-width bins ``(0, 1/15], (1/15, 2/15], …, (14/15, 1]``;
  ``ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|``, a fraction (0 is perfect).
- **Reliability diagram**: the accuracy and mean confidence of every bin (:func:`reliability`).
- **Temperature scaling** (same paper): one scalar ``T > 0`` divides the logits,
  ``softmax(z / T)``; it changes no prediction (the arg-max is kept), only the confidence. ``T`` is
  fitted by minimising the negative log-likelihood over ``log T`` (L-BFGS, float64) on a fixed,
  evenly spread slice of at most ``TEMPERATURE_SHAPES`` shapes of the **training** split
  (:func:`temperature_indices`), never on the split that is reported. Each of those shapes is
  **re-sampled** first (a seeded random half of its points, refilled: ``core.vocabulary.resample_half``),
  as for the "not sure" threshold: on the exact point sets it was trained on, the bundled teacher is
  right on 100% and a fitted ``T`` collapses towards 0 (0.095 on 300 shapes, test NLL 1.54 instead
  of 0.31); on re-sampled shapes it fits 0.565, near the 0.647 that the test split itself would give.

Pure numpy/torch; no Qt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Equal-width confidence bins of the ECE and of the reliability diagrams.
ECE_BINS = 15
#: At most this many training shapes for fitting the temperature (evenly spread, always the same).
TEMPERATURE_SHAPES = 1000
#: Seed of the re-sampling of the temperature slice's shapes.
RESAMPLE_SEED = 0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _confidence_and_correct(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probabilities (N, C) and N labels expected, got {probs.shape} and {labels.shape}")
    return probs.max(axis=1), (probs.argmax(axis=1) == labels)


def bin_index(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence: bin ``b`` holds ``(b / bins, (b + 1) / bins]``; 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(np.asarray(confidence, np.float64), edges[1:-1], right=True), 0, bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Reliability-diagram data: per equal-width confidence bin its edges, shape count, mean
    confidence and accuracy (None for an empty bin), and the ECE computed from them."""
    conf, correct = _confidence_and_correct(probs, labels)
    idx = bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    correct_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins)
    n = max(len(conf), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, correct_sum / np.maximum(count, 1), np.nan)
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    opt = lambda a: [None if np.isnan(v) else float(v) for v in a]
    return {
        "bins": bins,
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "count": count.astype(int).tolist(),
        "confidence": opt(mean_conf),
        "accuracy": opt(acc),
        "ece": float((count * gaps).sum() / n) if len(conf) else float("nan"),
        "mean_confidence": float(conf.mean()) if len(conf) else float("nan"),
        "accuracy_overall": float(correct.mean()) if len(conf) else float("nan"),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (a fraction) over ``bins`` equal-width confidence bins (see the module docstring)."""
    return reliability(probs, labels, bins)["ece"]


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL (nats) of the labels under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, np.float64) / float(temperature)
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float((lse - z[np.arange(len(z)), np.asarray(labels, np.int64)]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature ``T`` that minimises the NLL of ``labels`` under ``softmax(logits / T)``.

    Optimised over ``log T`` (so ``T`` stays positive) with L-BFGS and a strong-Wolfe line
    search, in float64, starting from ``T = 1``. Deterministic for the same inputs.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits, np.float64))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    if z.ndim != 2 or len(z) != len(y) or not len(z):
        raise ValueError(f"logits (N, C) and N labels expected, got {tuple(z.shape)} and {tuple(y.shape)}")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def temperature_indices(total: int, shapes: int = TEMPERATURE_SHAPES) -> np.ndarray:
    """The fixed, evenly spread slice of at most ``shapes`` (<= TEMPERATURE_SHAPES) training
    shapes that a temperature is fitted on (the same every time)."""
    from core.vocabulary import calibration_indices

    return calibration_indices(total, min(int(shapes), TEMPERATURE_SHAPES))


def training_slice_logits(model, data, shapes: int = TEMPERATURE_SHAPES, batch_size: int = 64,
                          up: str | None = None, channels: int | None = None, class_names=None,
                          progress=None) -> dict:
    """A torch model's logits on the temperature slice of ``data``'s training split, each shape
    re-sampled (see the module docstring): ``logits``, ``labels``, ``indices`` and ``source`` (which
    slice, in words).

    ``class_names``: the model's classes, checked against the dataset's; ``progress(done, total)``
    is called after every batch.
    """
    import torch

    from core.data.datasets import load_split
    from core.errors import T3DError
    from core.vocabulary import resample_half

    ds = load_split(data, "train", 1024, source_up_axis=up, channels=channels)
    if class_names is not None and list(ds.class_names) != list(class_names):
        raise T3DError(f"{data}: its training split's {len(ds.class_names)} classes differ from the model's "
                       f"{len(class_names)}: fit the temperature on the data the model was trained on")
    idx = temperature_indices(len(ds), shapes)
    points = resample_half(ds.points[idx], RESAMPLE_SEED)
    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(idx), batch_size):
            out.append(model(torch.from_numpy(points[lo:lo + batch_size])).float().numpy())
            if progress is not None:
                progress(min(lo + batch_size, len(idx)), len(idx))
    source = f"{Path(str(data)).name} train split, {len(idx)} of {len(ds)} shapes (evenly spread), each re-sampled"
    return {"logits": np.concatenate(out), "labels": ds.labels[idx], "indices": idx, "source": source}


def fit_checkpoint_temperature(model, data, shapes: int = TEMPERATURE_SHAPES, batch_size: int = 64,
                               up: str | None = None, channels: int | None = None, class_names=None,
                               progress=None) -> dict:
    """:func:`fit_temperature` on :func:`training_slice_logits`: ``temperature``, ``source`` and
    the slice's ``shapes``."""
    t = training_slice_logits(model, data, shapes, batch_size, up, channels, class_names, progress)
    return {"temperature": fit_temperature(t["logits"], t["labels"]), "source": t["source"],
            "shapes": len(t["indices"])}


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float | None = None,
                        bins: int = ECE_BINS) -> dict:
    """ECE and reliability data of ``logits`` on ``labels``; with a fitted ``temperature`` also
    the ECE and reliability after temperature scaling (predictions unchanged)."""
    out = {"ece": None, "ece_bins": bins, "reliability": reliability(softmax(logits), labels, bins)}
    out["ece"] = out["reliability"]["ece"]
    out["nll"] = negative_log_likelihood(logits, labels)
    if temperature is not None:
        scaled = reliability(softmax(logits, temperature), labels, bins)
        out.update(temperature=float(temperature), ece_temperature_scaled=scaled["ece"],
                   reliability_temperature_scaled=scaled,
                   nll_temperature_scaled=negative_log_likelihood(logits, labels, temperature))
    return out


__all__ = ["ECE_BINS", "TEMPERATURE_SHAPES", "softmax", "bin_index", "reliability", "expected_calibration_error",
           "negative_log_likelihood", "fit_temperature", "temperature_indices", "training_slice_logits",
           "fit_checkpoint_temperature", "calibration_summary"]

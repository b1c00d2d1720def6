"""Calibration (core.calibration): ECE against a hand-computed example, temperature scaling on
synthetic logits, and ``evaluate --json``'s ``ece``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.calibration import (ECE_BINS, bin_index, expected_calibration_error, fit_temperature,
                              negative_log_likelihood, reliability, softmax, temperature_indices)

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "models" / "student.pt"


def _probs(top: list[float], predicted: list[int], classes: int = 4) -> np.ndarray:
    """Probability rows whose maximum is ``top[i]`` at class ``predicted[i]`` (the rest shared)."""
    p = np.zeros((len(top), classes))
    for i, (c, k) in enumerate(zip(top, predicted)):
        p[i] = (1 - c) / (classes - 1)
        p[i, k] = c
    return p


@pytest.mark.timeout(30)
def test_ece_matches_a_hand_computed_example():
    # 5 bins of width 0.2. Confidences 0.9 (right) and 0.85 (wrong) share (0.8, 1]: accuracy 0.5,
    # mean confidence 0.875, gap 0.375. 0.7 (wrong) in (0.6, 0.8]: gap 0.7. 0.5 (right) in
    # (0.4, 0.6]: gap 0.5. 0.3 (right) in (0.2, 0.4]: gap 0.7.
    # ECE = (2 * 0.375 + 0.7 + 0.5 + 0.7) / 5 = 0.53.
    probs = _probs([0.9, 0.85, 0.7, 0.5, 0.3], [0, 1, 2, 3, 0])
    labels = np.array([0, 0, 0, 3, 0])
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.53)
    r = reliability(probs, labels, bins=5)
    assert r["count"] == [0, 1, 1, 1, 2]
    assert r["accuracy"] == [None, 1.0, 1.0, 0.0, 0.5]
    assert r["confidence"][4] == pytest.approx(0.875)
    assert r["lower"][4] == pytest.approx(0.8) and r["upper"][4] == pytest.approx(1.0)


@pytest.mark.timeout(30)
def test_ece_default_binning_is_15_equal_width_bins_closed_on_the_right():
    assert ECE_BINS == 15
    assert bin_index(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 1.0])).tolist() == [0, 0, 1, 7, 14]
    # Perfectly calibrated by construction: confidence 0.75 and 3 of 4 right in one bin.
    probs = _probs([0.75] * 4, [0, 0, 0, 0])
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_fitting_recovers_a_known_temperature(true_t):
    """Labels drawn from softmax(z / T): the NLL-optimal temperature of logits z is T."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(20000, 10))
    p = softmax(z, true_t)
    labels = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    t = fit_temperature(z, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    assert negative_log_likelihood(z, labels, t) <= negative_log_likelihood(z, labels, 1.0)
    # Scaling keeps every prediction and moves the ECE towards 0.
    assert (softmax(z, t).argmax(1) == z.argmax(1)).all()
    assert expected_calibration_error(softmax(z, t), labels) < expected_calibration_error(softmax(z), labels)
    assert expected_calibration_error(softmax(z, t), labels) < 0.02


@pytest.mark.timeout(30)
def test_temperature_slice_is_fixed_and_at_most_1000_shapes():
    a, b = temperature_indices(9843), temperature_indices(9843, 5000)
    assert len(a) == 1000 and (a == b).all() and a[0] == 0 and a[-1] == 9842
    assert len(temperature_indices(300, 1000)) == 300


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_evaluate_json_reports_ece_and_a_temperature_fitted_on_the_training_split(modelnet40, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "T3DNET_CACHE": os.environ["T3DNET_CACHE"]}
    cmd = [sys.executable, str(ROOT / "main.py"), "evaluate", "--checkpoint", str(STUDENT), "--data", str(modelnet40),
           "--limit", "30", "--fit-temperature", "40"]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=200)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)  # stdout is only the JSON
    assert 0 <= out["ece"] <= 1 and out["ece_bins"] == 15
    assert out["temperature"] > 0 and 0 <= out["ece_temperature_scaled"] <= 1
    assert "train split, 40 of" in out["temperature_fitted_on"]

    # The ECE is the one of the probabilities the model gives on those shapes.
    import torch

    from core.data.datasets import load_split
    from core.engine.checkpoint import load_model

    ds = load_split(modelnet40, "test", 1024)
    idx = np.linspace(0, len(ds) - 1, 30).round().astype(int)
    model, _ = load_model(STUDENT)
    with torch.no_grad():
        logits = model(torch.from_numpy(ds.points[idx])).float().numpy()
    assert out["ece"] == pytest.approx(expected_calibration_error(softmax(logits), ds.labels[idx]), abs=1e-6)
    assert out["ece_temperature_scaled"] == pytest.approx(
        expected_calibration_error(softmax(logits, out["temperature"]), ds.labels[idx]), abs=1e-6)

    text = subprocess.run(cmd[:-2], capture_output=True, text=True, cwd=ROOT, env=env, timeout=200)
    assert text.returncode == 0 and "ECE" in text.stdout

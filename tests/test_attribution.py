"""Per-point importance (core.attribution) on synthetic models whose answer is known, on every model
of the zoo, and in the app's Compare view (the Importance tab colours the viewer's overlay)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.attribution import (TOP_FRACTION, compare_attributions, gradient_saliency, importance_rank, ramp_colors,
                              top_indices, top_overlap)


class WeightedNorm(nn.Module):
    """Class 0's logit is ``sum_i w_i |p_i|^2 / 2``, class 1's a constant: the gradient at point i is
    ``w_i p_i``, so on the unit sphere point i's importance is exactly ``|w_i|``."""

    def __init__(self, w: np.ndarray, bias1: float = -1e6) -> None:
        super().__init__()
        self.w = torch.tensor(w, dtype=torch.float32)
        self.bias1 = bias1

    def forward(self, x):
        z0 = 0.5 * (self.w[None] * (x ** 2).sum(-1)).sum(1)
        return torch.stack([z0, torch.full_like(z0, self.bias1)], 1)


class MaxX(nn.Module):
    """PointNet's max-pooling in one channel: the logit is the largest x, won by one point."""

    def forward(self, x):
        z = x[..., 0].max(1).values
        return torch.stack([z, -z], 1)


def _sphere(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.timeout(30)
def test_saliency_equals_the_known_gradient_and_the_overlap_the_known_iou():
    n = 100
    pts = _sphere(n)
    w_teacher = np.zeros(n)
    w_teacher[:10] = np.arange(10, 0, -1) + 1.0  # the top 10% are points 0..9
    w_student = np.zeros(n)
    w_student[5:15] = 5.0  # the top 10% are points 5..14
    imp, c = gradient_saliency(WeightedNorm(w_teacher), pts)
    assert c == 0
    assert np.allclose(imp, w_teacher, atol=1e-4)
    assert sorted(top_indices(imp).tolist()) == list(range(10))
    r = compare_attributions(WeightedNorm(w_teacher), WeightedNorm(w_student), pts)
    assert r["iou"] == pytest.approx(5 / 15)  # 5 shared of 15 distinct points
    assert r["teacher"]["rank"].argmax() == 0 and r["teacher"]["colors"].shape == (n, 3)
    assert top_overlap(imp, imp) == 1.0


@pytest.mark.timeout(30)
def test_a_max_pooling_model_depends_on_the_one_point_that_wins_the_max():
    pts = _sphere(64, seed=3)
    imp, _ = gradient_saliency(MaxX(), pts)
    winner = int(pts[:, 0].argmax())
    assert imp[winner] == pytest.approx(1.0) and np.count_nonzero(imp) == 1


@pytest.mark.timeout(30)
def test_saliency_is_for_the_predicted_class_unless_told_and_leaves_parameters_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 4))
    pts = _sphere(10)
    imp, c = gradient_saliency(model, pts)
    with torch.no_grad():
        assert c == int(model(torch.from_numpy(pts[None])).argmax())
    other = (c + 1) % 4
    imp2, c2 = gradient_saliency(model, pts, target=other)
    w = model[1].weight.detach().numpy()[other].reshape(10, 3)
    assert c2 == other and np.allclose(imp2, np.linalg.norm(w, axis=1), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.timeout(30)
def test_ranks_share_ties_and_colours_follow_the_ramp():
    rank = importance_rank(np.array([0.0, 0.0, 1.0, 3.0, 2.0]))
    assert rank.tolist() == [0.125, 0.125, 0.5, 1.0, 0.75]
    c = ramp_colors(np.array([0.0, 1.0]))
    from core.attribution import RAMP

    assert np.allclose(c, RAMP[[0, -1]])
    assert len(top_indices(np.arange(1024.0))) == int(np.ceil(TOP_FRACTION * 1024))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", __import__("core.models", fromlist=["list_models"]).list_models())
def test_every_zoo_model_gives_a_finite_importance_per_point(name):
    from core.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=5, width=0.125).eval()
    pts = _sphere(256, seed=1) * np.float32(0.9)
    imp, c = gradient_saliency(model, pts)
    assert imp.shape == (256,) and np.isfinite(imp).all() and (imp >= 0).all() and imp.max() > 0
    assert 0 <= c < 5


# --- the app: Importance tab -> coloured overlay in the view --------------------------------------
@pytest.fixture
def window(make_window, checkpoints):
    pytest.importorskip("pytestqt")
    return make_window(*checkpoints)


@pytest.mark.timeout(180)
def test_importance_overlay_is_computed_in_a_worker_and_coloured_in_the_view(qtbot, window):
    from app.shapes import list_samples

    samples = list_samples()
    if not samples:
        pytest.skip("no bundled samples (assets/samples)")
    with qtbot.waitSignal(window.compare.predicted, timeout=60000):
        window.open_path(str(samples[0]))
    comp = window.compare
    with qtbot.waitSignal(comp.attribution_changed, timeout=60000) as blocker:
        comp.set_importance_role("teacher")
        assert comp.importance_overlap.text().startswith("Computing")  # the GUI thread did not wait for it
    view = blocker.args[0]
    a = comp.attribution
    assert view["role"] == "teacher" and view["iou"] == a["iou"] and 0 <= a["iou"] <= 1
    expected = compare_attributions(comp.teacher.model, comp.student.model, comp.last_result["points"])
    assert a["iou"] == pytest.approx(expected["iou"])
    assert np.allclose(window.viewer.overlay_colors, expected["teacher"]["colors"])
    assert "IoU" in window.viewer.overlay_legend and f"{a['iou']:.2f}" in comp.importance_overlap.text()
    assert window.viewer.colorbar_rect().width() > 50

    # The student's importance: the same computation, no new worker; off: the red overlay again.
    with qtbot.waitSignal(comp.attribution_changed, timeout=5000):
        comp.set_importance_role("student")
    assert np.allclose(window.viewer.overlay_colors, expected["student"]["colors"])
    with qtbot.waitSignal(comp.attribution_changed, timeout=5000) as off:
        comp.set_importance_role(None)
    assert off.args == [None] and window.viewer.overlay_colors is None

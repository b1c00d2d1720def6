"""The up-axis estimator: its probe (core.inference) and its training script (scripts/train_up_estimator.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.datasets import load_split
from core.data.orient import UP_AXES
from core.inference import PROBE_KEY, UpEstimator, probe_log_probabilities, probe_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_up_estimator", ROOT / "scripts" / "train_up_estimator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _six_views(n: int, rng: np.random.Generator, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6, 8) view features and the upright view's index: the upright view stands out on
    feature 0, by +3 (``signed`` False: a linear score finds it) or by 3 of either sign (True: only
    a hidden layer can)."""
    feats = rng.normal(size=(n, 6, 8)).astype(np.float32)
    labels = rng.integers(0, 6, n)
    sign = rng.choice([-1.0, 1.0], n) if signed else np.ones(n)
    feats[np.arange(n), labels, 0] += 3.0 * sign
    return feats, labels


def _accuracy(probe: dict, feats: np.ndarray, labels: np.ndarray) -> float:
    return float((probe_log_probabilities(feats, probe).argmax(1) == labels).mean())


def test_a_linear_probe_finds_the_upright_view(script):
    rng = np.random.default_rng(0)
    probe = script.fit_probe(*_six_views(600, rng, signed=False), hidden=0)
    assert "hidden_weight" not in probe
    assert _accuracy(probe, *_six_views(400, rng, signed=False)) > 0.9


def test_the_hidden_layer_finds_what_a_linear_score_cannot(script):
    rng = np.random.default_rng(1)
    train = _six_views(1500, rng, signed=True)
    held_out = _six_views(400, rng, signed=True)
    linear = script.fit_probe(*train, hidden=0)
    mlp = script.fit_probe(*train, hidden=16)
    assert mlp["hidden_weight"].shape == (8, 16) and mlp["hidden_bias"].shape == (16,) and mlp["weight"].shape == (16,)
    assert _accuracy(linear, *held_out) < 0.6  # |feature 0| is not linear in it
    assert _accuracy(mlp, *held_out) > 0.85


def test_unsure_rows_count_what_a_threshold_on_the_chosen_axis_flags(script):
    # four files, truth z, y, z, -x; chosen (margin 0): z at 0.95, y at 0.6, y at 0.7 (wrong), -x at 0.85
    probs = np.array([[0.95, 0.01, 0.01, 0.01, 0.01, 0.01],
                      [0.30, 0.60, 0.025, 0.025, 0.025, 0.025],
                      [0.20, 0.70, 0.025, 0.025, 0.025, 0.025],
                      [0.03, 0.03, 0.03, 0.03, 0.03, 0.85]])
    rows = {r["below"]: r for r in script.unsure_rows(np.log(probs), np.array([0, 1, 0, 5]), margin=0.0)}
    assert rows[0.5] == {"below": 0.5, "unsure": 0.0, "wrong_if_unsure": 0.0, "wrong_if_sure": 0.25, "z_unsure": 0.0}
    assert rows[0.9] == {"below": 0.9, "unsure": 0.75, "wrong_if_unsure": pytest.approx(1 / 3), "wrong_if_sure": 0.0,
                         "z_unsure": 0.5}
    # a margin of 1 keeps z for the second file (y beats it by log 2): chosen wrongly, and unsure at 0.5
    rows = {r["below"]: r for r in script.unsure_rows(np.log(probs), np.array([0, 1, 0, 5]), margin=1.0)}
    assert rows[0.5]["unsure"] == 0.25 and rows[0.5]["wrong_if_unsure"] == 1.0
    assert rows[0.5]["wrong_if_sure"] == pytest.approx(1 / 3)  # the third: y beats z by log 3.5, wrongly


def test_probe_scores_are_the_network_they_describe():
    torch.manual_seed(0)
    layer, out = torch.nn.Linear(5, 7), torch.nn.Linear(7, 1, bias=False)
    feats = np.random.default_rng(2).normal(size=(3, 6, 5)).astype(np.float32)
    mean, scale = feats.reshape(-1, 5).mean(0), feats.reshape(-1, 5).std(0)
    probe = {"mean": mean, "scale": scale, "hidden_weight": layer.weight.detach().T.numpy(),
             "hidden_bias": layer.bias.detach().numpy(), "weight": out.weight.detach()[0].numpy()}
    with torch.no_grad():
        expected = out(torch.relu(layer(torch.from_numpy((feats - mean) / scale)))).squeeze(-1).numpy()
    np.testing.assert_allclose(probe_scores(feats, probe), expected, rtol=1e-5, atol=1e-5)
    logp = probe_log_probabilities(feats, probe)
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(logp - logp[:, :1], expected - expected[:, :1], rtol=1e-5, atol=1e-5)


def _cones(root: Path, per_class: int = 12) -> Path:
    """A dataset folder of two classes of cones standing z up (wide base, narrow top)."""
    rng = np.random.default_rng(3)
    for cls in ("short", "tall"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h = rng.uniform(0, 1, 1024)
            r = (1 - h) * (0.5 if cls == "short" else 0.3)
            a = rng.uniform(0, 2 * np.pi, 1024)
            z = h * (1.0 if cls == "short" else 2.0)
            np.save(root / cls / f"{i}.npy", np.stack([r * np.cos(a), r * np.sin(a), z], 1).astype(np.float32))
    return root


def test_the_training_script_bundles_an_estimator_and_reuses_its_features(script, checkpoints, tmp_path, capsys):
    teacher, _ = checkpoints
    data = _cones(tmp_path / "cones")
    features, out = tmp_path / "features.npz", tmp_path / "up.pt"
    args = ["--data", str(data), "--model", teacher, "--out", str(out), "--features", str(features),
            "--hidden", "8", "--threads", "1"]
    assert script.main(args) == 0
    assert "features read from" not in capsys.readouterr().out
    saved = np.load(features)
    n = len(load_split(data, "train", 1024, progress=False))
    assert saved["train"].shape[1] == 6 and len(saved["train"]) == len(saved["train_labels"]) == n - n // 10
    assert len(saved["val"]) == len(saved["val_yaw"]) == n // 10  # held out, at the dataset's and at any heading

    probe = torch.load(out, weights_only=True)[PROBE_KEY]
    assert probe["axes"] == list(UP_AXES) and probe["hidden"] == 8 and probe["margin"] in script.MARGINS
    assert [r["margin"] for r in probe["validation"]["rows"]] == list(script.MARGINS)
    assert "99.5%" in probe["validation"]["margin_rule"]
    est = UpEstimator.load(out)
    axis, scores = est.estimate(np.load(data / "tall" / "0.npy"))
    assert axis in UP_AXES and set(scores) == set(UP_AXES)
    np.testing.assert_allclose(sum(np.exp(v) for v in scores.values()), 1.0, rtol=1e-5)

    assert script.main(args) == 0  # same settings: the features are read back, not recomputed
    assert "features read from" in capsys.readouterr().out
    assert script.main(args[:-4] + ["--hidden", "0", "--seed", "1", "--threads", "1"]) == 0  # other settings: recomputed
    assert "features read from" not in capsys.readouterr().out
    assert "hidden_weight" not in torch.load(out, weights_only=True)[PROBE_KEY]


def test_the_inference_module_gives_the_models_view_features():
    from core.inference import candidate_views, embedding_module, six_view_features
    from core.models import create_model

    torch.manual_seed(0)
    model = create_model("pointnet2_ssg", num_classes=40, width=0.25).eval()
    module = embedding_module(model)
    assert module is not model and hasattr(module, "forward_features")  # PointNet++: the folded module
    rng = np.random.default_rng(4)
    views = np.stack([candidate_views(rng.normal(size=(1500, 3))) for _ in range(3)])
    np.testing.assert_allclose(six_view_features(model, views, module), six_view_features(model, views, model),
                               rtol=1e-4, atol=1e-4)
    small = np.stack([candidate_views(rng.normal(size=(700, 3)), 512) for _ in range(2)])  # another size: eager
    assert six_view_features(model, small).shape == (2, 6, model.feature_dim + 2)


def test_a_damaged_probe_is_a_checkpoint_error(checkpoints, tmp_path):
    from core.engine.checkpoint import CheckpointError, load_model

    teacher, _ = checkpoints
    ck = torch.load(teacher, weights_only=True)
    c = load_model(teacher)[0].feature_dim + 2  # what the probe reads per view

    def probe(**change):
        p = {"mean": torch.zeros(c), "scale": torch.ones(c), "hidden_weight": torch.zeros(c, 4),
             "hidden_bias": torch.zeros(4), "weight": torch.zeros(4), "margin": 1.0, "axes": list(UP_AXES)}
        p.update(change)
        return {k: v for k, v in p.items() if v is not None}

    path = tmp_path / "estimator.pt"
    torch.save({**ck, PROBE_KEY: probe()}, path)
    assert UpEstimator.load(path).margin == 1.0  # intact: loads
    for damage in ({"margin": None}, {"hidden_bias": None}, {"weight": torch.zeros(3)},
                   {"mean": torch.zeros(c - 1)}, {"margin": float("nan")}):
        torch.save({**ck, PROBE_KEY: probe(**damage)}, path)
        with pytest.raises(CheckpointError, match="up-axis probe"):
            UpEstimator.load(path)

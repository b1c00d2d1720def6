"""The checkpoints shipped in assets/models/ (PointNet++ SSG pair; PointNet pair in pointnet/):
they load, are what models.json says they are, and classify the bundled sample shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.inference import LoadedModel

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = [ROOT / "assets" / "models", ROOT / "assets" / "models" / "pointnet"]
SAMPLES = ROOT / "assets" / "samples"


def _samples() -> tuple[np.ndarray, list[str]]:
    index = json.loads((SAMPLES / "index.json").read_text())["samples"]
    return np.stack([np.load(SAMPLES / s["file"]) for s in index]), [s["class"] for s in index]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=["pointnet2_ssg", "pointnet"])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_bundled_checkpoint_matches_its_record_and_classifies_the_samples(bundle, role):
    record = json.loads((bundle / "models.json").read_text())[role]
    model = LoadedModel.load(bundle / f"{role}.pt")
    assert model.model.model_config.name == record["model"]["name"]
    assert model.model.model_config.width == record["model"]["width"]
    assert model.params == record["params"] and model.macs == record["macs"]
    assert model.size_bytes == record["size_bytes"] == (bundle / f"{role}.pt").stat().st_size
    assert model.class_names == record["class_names"] and len(model.class_names) == 40
    # every bundled model says when it does not know an object: calibrated on training shapes
    assert model.vocabulary is not None and model.vocabulary.to_dict() == record["vocabulary"]
    assert "train split" in model.vocabulary.source and model.vocabulary.flag_rate == 0.05
    if role == "student":  # the compression: every hidden width / 8
        teacher = json.loads((bundle / "models.json").read_text())["teacher"]
        assert record["model"]["width"] == 0.125 and teacher["params"] / record["params"] > 50
    # One test shape per class: a trained model gets most of them (the recorded test-split OA is
    # 85-91%); an untrained or mismatched one gets about 1 in 40.
    points, labels = _samples()
    hits = sum(model.class_names[int(np.argmax(model.probabilities(p)[0]))] == c for p, c in zip(points, labels))
    assert hits >= 30, f"{hits}/40 sample shapes right"


PARTIAL_TEACHER = ROOT / "assets" / "models" / "partial" / "teacher.pt"


@pytest.mark.slow
@pytest.mark.timeout(900)  # two passes over the test split, one of them building its partial views
def test_partial_view_teacher_matches_its_recorded_accuracies(modelnet40):
    """assets/models/partial/teacher.pt: clean and partial-view (severity 2) OA on the whole test split
    as its checkpoint records them (and its README states)."""
    from core.engine.checkpoint import read_checkpoint
    from core.inference import evaluate_checkpoint

    recorded = read_checkpoint(PARTIAL_TEACHER)["metrics"]
    clean = evaluate_checkpoint(PARTIAL_TEACHER, modelnet40)
    partial = evaluate_checkpoint(PARTIAL_TEACHER, modelnet40, views="partial", severity=2)
    assert clean["n"] == partial["n"] == 2468
    assert clean["oa"] == pytest.approx(recorded["oa"], abs=1e-3)
    assert partial["oa"] == pytest.approx(recorded["partial_severity2_oa"], abs=1e-3)
    readme = (PARTIAL_TEACHER.parent / "README.md").read_text()
    assert f"{recorded['oa'] * 100:.2f}%" in readme and f"{recorded['partial_severity2_oa'] * 100:.2f}%" in readme
    # the partial-view training is what lifts it: far above the bundled teacher on the same views
    bundled = json.loads((ROOT / "assets" / "models" / "models.json").read_text())["teacher"]
    assert partial["oa"] > 0.6 and clean["oa"] >= bundled["oa_fp32"] - 0.005

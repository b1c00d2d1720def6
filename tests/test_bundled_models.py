"""The checkpoints shipped in assets/models/ (the default PointNet++ SSG pair, trained with partial
views; the PointNet pair in pointnet/; the PointNet++ SSG pair trained on complete shapes only, which
the default pair was fine-tuned from, in complete/): they load, are what models.json says they are,
and classify the bundled sample shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.inference import LoadedModel

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = [ROOT / "assets" / "models", ROOT / "assets" / "models" / "pointnet", ROOT / "assets" / "models" / "complete"]
SAMPLES = ROOT / "assets" / "samples"


def _samples() -> tuple[np.ndarray, list[str]]:
    index = json.loads((SAMPLES / "index.json").read_text())["samples"]
    return np.stack([np.load(SAMPLES / s["file"]) for s in index]), [s["class"] for s in index]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=["default", "pointnet", "complete"])
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
    assert model.vocabulary is not None and model.vocabulary.summary() == record["vocabulary"]
    assert "train split" in model.vocabulary.source and model.vocabulary.flag_rate == 0.05
    # the default pair's score has its network with it; the others keep the msp they were calibrated with
    assert model.vocabulary.score == ("exposure" if bundle == BUNDLES[0] else "msp")
    assert (model.vocabulary.probe is not None) == (model.vocabulary.score == "exposure")
    if role == "student":  # the compression: every hidden width / 8
        teacher = json.loads((bundle / "models.json").read_text())["teacher"]
        assert record["model"]["width"] == 0.125 and teacher["params"] / record["params"] > 50
    # One test shape per class: a trained model gets most of them (the recorded test-split OA is
    # 85-91%); an untrained or mismatched one gets about 1 in 40.
    points, labels = _samples()
    hits = sum(model.class_names[int(np.argmax(model.probabilities(p)[0]))] == c for p, c in zip(points, labels))
    assert hits >= 30, f"{hits}/40 sample shapes right"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the whole test split twice, once building its partial views
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_default_pair_matches_its_recorded_accuracies(role, modelnet40):
    """assets/models/ROLE.pt: clean and partial-view (the default severity) OA on the whole test split
    as its models.json records them, and the bar it was bundled at against the complete-shape pair it
    was fine-tuned from: at most 0.5 points below it on clean shapes, at least 10 above it on partial
    views."""
    from core.inference import evaluate_checkpoint

    bundle, complete = BUNDLES[0], BUNDLES[2]
    record = json.loads((bundle / "models.json").read_text())[role]
    before = json.loads((complete / "models.json").read_text())[role]
    clean = evaluate_checkpoint(bundle / f"{role}.pt", modelnet40)
    partial = evaluate_checkpoint(bundle / f"{role}.pt", modelnet40, views="partial")
    assert clean["n"] == partial["n"] == 2468 and partial["severity"] == record["partial"]["severity"] == 2
    assert clean["oa"] == pytest.approx(_bundled_oa(record), abs=1e-3)
    assert partial["oa"] == pytest.approx(record["partial"]["oa"], abs=1e-3)
    assert clean["oa"] >= _bundled_oa(before) - 0.005
    assert partial["oa"] >= before["partial"]["oa"] + 0.10
    readme = (bundle / "README.md").read_text()
    assert f"{clean['oa'] * 100:.2f}%" in readme and f"{partial['oa'] * 100:.2f}%" in readme


def _bundled_oa(record: dict) -> float:
    """The recorded test-split OA of the weights as bundled."""
    return record["oa_fp16" if record["dtype"] == "float16" else "oa_fp32"]

"""Real files beyond the readers: the up axis, scenes and their objects, the in-vocabulary decision,
and the ``predict --json`` contract that scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.orient import (UP_AXES, check_up_axis, convert_up_axis, decide_up_axis, rotation_to_z,
                              turn_z_up_to)
from core.data.scene import check_scene, find_objects, nearest_signed_axis, rotation_between
from core.vocabulary import (VocabularyCalibration, as_scanned, auroc, calibration_clouds, calibration_indices,
                             exposure_inside, fit_exposure, fit_threshold, vocabulary_score)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"
SCANS = ROOT.parent / "shared" / "data" / "scans"


# ---------------------------------------------------------------------------------------------
# Up axis


@pytest.mark.parametrize("axis", UP_AXES)
def test_every_signed_axis_is_brought_to_z_by_a_proper_rotation(axis):
    rot = rotation_to_z(axis)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    direction = np.zeros(3)
    direction["xyz".index(axis[-1])] = -1.0 if axis.startswith("-") else 1.0
    np.testing.assert_allclose(rot @ direction, [0, 0, 1], atol=1e-12)


def test_camera_frame_y_down_becomes_z_up():
    # a pole standing in a camera frame (y down): its top has the smallest y
    pole = np.stack([np.zeros(50), -np.linspace(0, 2, 50), np.full(50, 3.0)], axis=1)
    up = convert_up_axis(pole, "-y", "z")
    assert up[-1, 2] - up[0, 2] == pytest.approx(2.0)  # the top is highest along z
    np.testing.assert_allclose(turn_z_up_to(up, "-y"), pole, atol=1e-12)


def test_axis_names_are_checked():
    assert check_up_axis("+Y") == "y" and check_up_axis(" -x") == "-x"
    with pytest.raises(ValueError, match="up axis must be one of"):
        check_up_axis("w")


def test_the_decision_order_is_user_then_format_then_estimate_then_default():
    calls = []

    def estimate():
        calls.append(1)
        return "-x", {"-x": 3.0}

    assert decide_up_axis("-y", "y", estimate).to_dict() == {"up_axis": "-y", "up_axis_source": "user"}
    assert decide_up_axis("auto", "y", estimate).to_dict() == {"up_axis": "y", "up_axis_source": "format"}
    assert not calls  # the estimate is not paid for when something fixes the axis
    est = decide_up_axis("auto", None, estimate)
    assert (est.axis, est.source, est.scores) == ("-x", "estimated", {"-x": 3.0})
    assert decide_up_axis("auto", None, None).to_dict() == {"up_axis": "z", "up_axis_source": "default"}


def test_an_estimate_says_how_sure_it_is():
    from core.data.orient import UP_UNSURE_BELOW, UpAxis

    def estimated(axis, probs):
        return UpAxis(axis, "estimated", {a: float(np.log(p)) for a, p in zip(UP_AXES, probs)})

    sure = estimated("z", [0.95, 0.01, 0.01, 0.01, 0.01, 0.01])
    assert sure.confidence == pytest.approx(0.95) and not sure.unsure and sure.describe() == "z (estimated)"
    # z kept by the margin although y looks likelier: the estimate is unsure, and says how much
    kept = estimated("z", [0.30, 0.60, 0.025, 0.025, 0.025, 0.025])
    assert kept.confidence == pytest.approx(0.30) and kept.confidence < UP_UNSURE_BELOW and kept.unsure
    assert kept.describe() == "z (estimated, unsure: 30%)" and kept.likelier == "y" and sure.likelier is None
    almost = estimated("x", [0.02, 0.02, 0.8995, 0.02, 0.02, 0.0205])
    assert almost.unsure and almost.describe() == "x (estimated, unsure: 89%)"  # rounded down, never "90%"
    # no probability of its own: named, fixed by the format, assumed, or a folder's shared estimate
    for up in (UpAxis("y", "user"), UpAxis("y", "format"), UpAxis("z", "default"), UpAxis("-x", "estimated")):
        assert up.confidence is None and not up.unsure and up.describe() == f"{up.axis} ({up.source})"


def test_rotation_between_directions_and_the_nearest_axis():
    for d in ([0.1, -0.9, 0.2], [0, 0, -1.0], [1.0, 0, 0]):
        r = rotation_between(np.array(d))
        np.testing.assert_allclose(r @ (np.array(d) / np.linalg.norm(d)), [0, 0, 1], atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0)
    assert nearest_signed_axis(np.array([0.1, -0.9, 0.2])) == "-y"


# ---------------------------------------------------------------------------------------------
# Scenes


def _sample(name: str) -> np.ndarray:
    return np.load(SAMPLES / f"{name}.npy").astype(np.float64)


def _dense(name: str, rng: np.random.Generator) -> np.ndarray:
    """A sample shape as dense as a scan: its 1024 points four times, jittered."""
    return np.repeat(_sample(name), 4, axis=0) + rng.normal(0, 0.004, (4096, 3))


def compose_scene(names: list[str], seed: int = 0, plane_points: int = 36000) -> np.ndarray:
    """ModelNet sample shapes (z up, about 0.6 m) standing apart on a floor 3 m wide, about as dense
    as the shapes (a scan samples a floor and the objects on it alike)."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(-1.5, 1.5, (plane_points, 2)), rng.normal(0, 0.002, plane_points)]
    parts = [floor]
    for k, name in enumerate(names):
        shape = _dense(name, rng) * 0.3
        shape[:, 2] -= shape[:, 2].min()
        angle = 2 * np.pi * k / len(names)
        shape[:, :2] += 0.9 * np.array([np.cos(angle), np.sin(angle)])
        parts.append(shape)
    return np.concatenate(parts)


@pytest.mark.parametrize("names", [["chair", "lamp", "vase"], ["toilet", "sofa", "bottle", "airplane"]])
def test_a_composed_scene_is_a_scene_with_its_objects_found(names):
    xyz = compose_scene(names)
    check = check_scene(xyz)
    assert check.scene, check.reason
    objects, up = find_objects(xyz)
    assert len(objects) == len(names)
    assert abs(up @ [0, 0, 1]) > 0.99
    # each object is one of the shapes: 1024 points, within its own footprint
    for obj in objects:
        assert 3500 <= obj.points <= 4200  # noise voxels at the edges may be left out
        assert np.all(obj.bbox_max - obj.bbox_min < 0.7)


def test_a_scene_turned_camera_style_keeps_its_objects():
    xyz = convert_up_axis(compose_scene(["chair", "lamp", "vase"]), "z", "-y")
    assert check_scene(xyz).scene
    objects, up = find_objects(xyz)
    assert len(objects) == 3 and nearest_signed_axis(up) == "-y"


@pytest.mark.parametrize("name", ["chair", "table", "airplane", "guitar", "bed", "lamp", "car", "bottle"])
def test_single_shapes_are_not_scenes(name, comparison):
    dense = _dense(name, np.random.default_rng(0))

    class Cloud:
        xyz, path, format, kind, original_points, up_hint = dense, "x.npy", "npy", "points", 4096, None

    assert comparison.analyze(Cloud(), "z")["scene"] is False


@pytest.mark.slow
def test_real_scans_scene_or_object():
    if not SCANS.is_dir():
        pytest.skip(f"{SCANS} is absent (the shared data folder)")
    from core.data.io import load_point_cloud

    assert check_scene(load_point_cloud(SCANS / "table_scene_mug_stereo_textured.pcd").xyz).scene
    assert check_scene(load_point_cloud(SCANS / "fragment.pcd").xyz).scene
    for name in ("bun_zipper.ply", "teapot.obj", "cow.obj", "knot.ply", "milk.pcd"):
        assert not check_scene(load_point_cloud(SCANS / name).xyz).scene, name
    objects, _ = find_objects(load_point_cloud(SCANS / "table_scene_mug_stereo_textured.pcd").xyz)
    assert len(objects) >= 2


# ---------------------------------------------------------------------------------------------
# In-vocabulary decision


def test_scores_against_hand_computed_values():
    logits = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(vocabulary_score(logits, "msp"),
                               [np.exp(2) / (np.exp(2) + 2), 1 / 3])
    np.testing.assert_allclose(vocabulary_score(logits, "energy"), [np.log(np.exp(2) + 2), 1 + np.log(3)])
    with pytest.raises(ValueError):
        vocabulary_score(logits, "entropy")


def test_auroc_and_the_threshold():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auroc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5
    scores = np.arange(100, dtype=float)
    t = fit_threshold(scores, 0.05)
    assert (scores < t).sum() == 5 and (scores < t).mean() <= 0.05
    idx = calibration_indices(9843, 1000)
    assert len(idx) == 1000 and len(set(idx)) == 1000 and idx[0] == 0 and idx[-1] == 9842
    np.testing.assert_array_equal(idx, calibration_indices(9843, 1000))


def test_a_calibration_round_trips_and_decides():
    cal = VocabularyCalibration("energy", 5.0, 0.05, 1000, "train slice")
    assert VocabularyCalibration.from_dict(cal.to_dict()) == cal
    assert VocabularyCalibration.from_dict(None) is None
    assert VocabularyCalibration.from_dict({"score": "nope", "threshold": 1}) is None
    logits = np.array([[10.0, 0.0], [0.1, 0.2]])
    assert cal.in_vocabulary(logits).tolist() == [True, False]


def _logits(n: int, rng: np.random.Generator, inside: bool) -> np.ndarray:
    """(n, 8) logits: in the vocabulary one class stands out; outside, none does."""
    x = rng.normal(0, 0.5, (n, 8))
    if inside:
        x[np.arange(n), rng.integers(0, 8, n)] += rng.uniform(2, 6, n)
    return x


def test_the_exposure_score_is_its_network_and_learns_what_lies_outside():
    rng = np.random.default_rng(0)
    probe = fit_exposure(_logits(1000, rng, True), _logits(500, rng, False), hidden=16)
    inside, outside = _logits(300, rng, True), _logits(300, rng, False)
    assert auroc(vocabulary_score(inside, "exposure", probe), vocabulary_score(outside, "exposure", probe)) > 0.95
    # the score is the network the record describes, in plain numpy
    x = (inside - np.asarray(probe["mean"], np.float64)) / np.asarray(probe["scale"], np.float64)
    w1, b1, w2 = (np.asarray(probe[k], np.float64) for k in ("hidden_weight", "hidden_bias", "weight"))
    by_hand = np.maximum(x @ w1 + b1, 0) @ w2 + probe["bias"]
    np.testing.assert_allclose(vocabulary_score(inside, "exposure", probe), by_hand, rtol=1e-9)
    with pytest.raises(ValueError, match="network"):
        vocabulary_score(inside, "exposure")

    cal = VocabularyCalibration("exposure", 0.0, 0.05, 1000, "train slice", probe)
    back = VocabularyCalibration.from_dict(cal.to_dict())
    assert back == cal and all(np.array_equal(back.probe[k], probe[k]) for k in probe)
    assert all(probe[k].dtype == torch.float32 for k in probe if k != "bias")  # compact in the checkpoint
    assert "probe" not in cal.summary() and cal.summary()["score"] == "exposure"
    assert cal.in_vocabulary(inside).mean() > 0.8 and cal.in_vocabulary(outside).mean() < 0.2
    broken = {**cal.to_dict(), "probe": {**probe, "weight": probe["weight"][:-1]}}
    assert VocabularyCalibration.from_dict(broken) is None  # a damaged record: uncalibrated, not a crash
    assert VocabularyCalibration.from_dict({**cal.to_dict(), "probe": None}) is None
    assert VocabularyCalibration.from_dict(cal.to_dict(), num_classes=8) == cal
    assert VocabularyCalibration.from_dict(cal.to_dict(), num_classes=40) is None  # another model's network
    nan = {**probe, "bias": float("nan")}
    assert VocabularyCalibration.from_dict({**cal.to_dict(), "probe": nan}) is None


def test_the_exposure_score_sees_known_shapes_as_files_are_seen():
    shapes = np.stack([_sample(n)[:, :3] for n in ("chair", "airplane")])
    scanned = as_scanned(shapes, seed=3)
    assert scanned.shape == shapes.shape and scanned.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(scanned, axis=2).max(1), 1.0, rtol=1e-5)  # prepared: unit sphere
    assert not np.allclose(scanned, shapes)  # a new point set of the same surface
    np.testing.assert_array_equal(as_scanned(shapes, seed=3), scanned)  # seeded
    # the threshold of exposure is fitted on each calibration shape re-sampled and as scanned
    assert len(calibration_clouds(shapes, "exposure")) == 4 and len(calibration_clouds(shapes, "msp")) == 2
    assert len(exposure_inside(shapes)) == 4


def test_calibrate_adds_the_decision_to_a_checkpoint_that_has_none(checkpoints, tmp_path, capsys):
    from core.cli import main
    from core.data.datasets import MODELNET40_CLASSES
    from core.engine.checkpoint import read_checkpoint
    from core.inference import LoadedModel

    _, student = checkpoints
    data = tmp_path / "tiny40"
    rng = np.random.default_rng(0)
    for cls in MODELNET40_CLASSES:
        (data / cls).mkdir(parents=True)
        for i in range(3):
            np.save(data / cls / f"{i}.npy", rng.normal(size=(1024, 3)).astype(np.float32))
    before = open(student, "rb").read()
    assert LoadedModel.load(student).vocabulary is None  # uncalibrated until calibrated
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", student, "--data", str(data), "--out", str(out), "--shapes", "20", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["score"] == "exposure" and record["shapes"] == 20 and "probe" not in record
    assert open(student, "rb").read() == before  # --out: the original is untouched
    m = LoadedModel.load(out)
    assert m.vocabulary.score == "exposure" and m.vocabulary.threshold == pytest.approx(record["threshold"])
    assert all(isinstance(v, bool) for v in m.in_vocabulary(m.logits(np.load(SAMPLES / "chair.npy")[None, :, :3])))
    assert read_checkpoint(out)["model"] == read_checkpoint(student)["model"]

    assert main(["calibrate", str(out), "--data", str(data), "--score", "msp", "--shapes", "20"]) == 0  # in place
    assert LoadedModel.load(out).vocabulary.score == "msp" and LoadedModel.load(out).vocabulary.probe is None
    capsys.readouterr()
    other = tmp_path / "other"
    for cls in ("a", "b"):
        (other / cls).mkdir(parents=True)
        for i in range(12):
            np.save(other / cls / f"{i}.npy", rng.normal(size=(1024, 3)).astype(np.float32))
    assert main(["calibrate", str(out), "--data", str(other)]) == 2  # another vocabulary: one line, exit 2
    assert "classes differ" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The predict JSON contract


@pytest.fixture(scope="module")
def comparison():
    from core.inference import Comparison

    return Comparison.from_paths()


def _predict_json(tmp_path, capsys, *args) -> dict:
    from core.cli import main

    assert main(["predict", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_json_contract_for_a_single_object(tmp_path, capsys):
    out = _predict_json(tmp_path, capsys, SAMPLES / "chair.npy", "--up", "z")
    inp = out["input"]
    assert inp["path"].endswith("chair.npy") and inp["format"] == "npy"
    assert isinstance(inp["points_in_file"], int) and inp["points_in_file"] == 1024
    assert (inp["up_axis"], inp["up_axis_source"]) == ("z", "user")
    assert inp["up_axis_confidence"] is None and inp["up_axis_unsure"] is False  # named: nothing estimated
    assert inp["scene"] is False and isinstance(inp["analysis_ms"], float)
    for role in ("teacher", "student"):
        assert out[role]["top"][0]["class"] == "chair"
        assert out[role]["in_vocabulary"] in (True, False, None)
    assert out["verdict"] in ("agree", "only_teacher_recognises", "only_student_recognises")


def test_predict_json_takes_the_axis_from_the_format(tmp_path, capsys):
    # the PointNet++ text format: x,y,z,nx,ny,nz with y up
    pts = convert_up_axis(_sample("airplane"), "z", "y")
    normals = np.tile([0.0, 1.0, 0.0], (len(pts), 1))
    f = tmp_path / "airplane_0627.txt"
    np.savetxt(f, np.c_[pts, normals], fmt="%.6f", delimiter=",")
    out = _predict_json(tmp_path, capsys, f)
    assert (out["input"]["up_axis"], out["input"]["up_axis_source"]) == ("y", "format")
    assert out["teacher"]["top"][0]["class"] == "airplane"


def test_predict_objects_json(tmp_path, capsys):
    f = tmp_path / "scene.npy"
    np.save(f, compose_scene(["chair", "lamp", "vase"]).astype(np.float32))
    out = _predict_json(tmp_path, capsys, f, "--objects")
    assert out["input"]["scene"] is True and out["verdict"] == "scene"
    assert out["input"]["up_axis_source"] == "estimated" and out["input"]["up_axis"] == "z"
    assert len(out["objects"]) == 3
    for obj in out["objects"]:
        assert len(obj["bbox_min"]) == len(obj["bbox_max"]) == 3 and isinstance(obj["points"], int)
        for role in ("teacher", "student"):
            assert obj[role]["top"] and "in_vocabulary" in obj[role]
    tops = sorted(o["teacher"]["top"][0]["class"] for o in out["objects"])
    assert sum(c in ("chair", "lamp", "vase") for c in tops) >= 2, tops


def test_predict_channels_with_objects(tmp_path, capsys):
    xyz = compose_scene(["chair", "lamp", "vase"]).astype(np.float32)
    ring = (np.arange(len(xyz)) % 32).astype(np.float32)
    rows = np.c_[xyz, np.random.default_rng(0).random(len(xyz)).astype(np.float32), ring]
    f = tmp_path / "sweep.bin"
    rows.astype("<f4").tofile(f)
    out = _predict_json(tmp_path, capsys, f, "--channels", "5", "--objects")
    assert out["input"]["points_in_file"] == len(xyz)
    assert len(out["objects"]) == 3


def test_predict_says_how_sure_the_axis_estimate_is(tmp_path, capsys, monkeypatch):
    from core.cli import main
    from core.data.orient import UP_UNSURE_BELOW
    from core.inference import Comparison

    out = _predict_json(tmp_path, capsys, SAMPLES / "chair.npy")  # .npy: no axis of its own, so estimated
    inp = out["input"]
    assert inp["up_axis_source"] == "estimated" and 0.0 < inp["up_axis_confidence"] <= 1.0
    assert inp["up_axis_confidence"] == pytest.approx(np.exp(inp["up_axis_scores"][inp["up_axis"]]))
    assert inp["up_axis_unsure"] is (inp["up_axis_confidence"] < UP_UNSURE_BELOW)
    # an unsure estimate: the JSON says so, and the text output tells the user what to do
    unsure = {a: float(np.log(p)) for a, p in zip(UP_AXES, [0.4, 0.5, 0.025, 0.025, 0.025, 0.025])}
    monkeypatch.setattr(Comparison, "estimate_up_axis", lambda self, xyz: ("z", unsure))
    inp = _predict_json(tmp_path, capsys, SAMPLES / "chair.npy")["input"]
    assert inp["up_axis_unsure"] is True and inp["up_axis_confidence"] == pytest.approx(0.4)
    assert main(["predict", str(SAMPLES / "chair.npy")]) == 0
    text = capsys.readouterr().out
    assert "up axis z (estimated, unsure: 40%)" in text
    assert "note: the up-axis estimate is unsure (y looks likelier)" in text and "name the axis with --up" in text


def test_without_the_estimator_the_axis_scores_are_still_log_probabilities(comparison, monkeypatch):
    from core.inference import UP_ESTIMATE_MARGIN, candidate_views

    monkeypatch.setattr(comparison, "_up_estimator", None, raising=False)  # as when none is installed
    cloud = turn_z_up_to(_sample("chair"), "y")
    axis, scores = comparison.estimate_up_axis(cloud)
    logp = np.array([scores[a] for a in UP_AXES])
    assert np.exp(logp).sum() == pytest.approx(1.0)
    # the pick is the energies' (softmax keeps their differences, which the margin compares)
    views = candidate_views(cloud)
    energy = sum(torch.logsumexp(torch.from_numpy(m.logits(views)), 1).numpy()
                 for m in (comparison.teacher, comparison.student))
    np.testing.assert_allclose(logp - logp[0], energy - energy[0], atol=1e-4)
    best = int(energy.argmax())
    assert axis == (UP_AXES[best] if energy[best] - energy[0] >= UP_ESTIMATE_MARGIN else "z")


def test_bad_up_and_channels_are_one_line_errors(capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["predict", str(SAMPLES / "chair.npy"), "--up", "w"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["predict", str(SAMPLES / "chair.npy"), "--channels", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--channels" in err[0]


# ---------------------------------------------------------------------------------------------
# Up-axis estimate


def test_another_axis_must_beat_z_by_the_margin():
    from core.inference import _pick_axis

    scores = {"z": -1.0, "y": -0.5, "x": -3.0, "-z": -4.0, "-y": -4.0, "-x": -4.0}
    assert _pick_axis(scores, margin=1.0)[0] == "z"
    assert _pick_axis(scores, margin=0.25)[0] == "y"


def test_candidate_views_turn_each_axis_up():
    from core.inference import candidate_views

    pole = np.stack([np.zeros(300), np.linspace(-1, 1, 300), np.zeros(300)], axis=1)  # along y
    views = candidate_views(pole, 256)
    assert views.shape == (6, 256, 3)
    spread = np.ptp(views, axis=1)  # (6, 3)
    assert spread[1, 2] > 1.5 and spread[4, 2] > 1.5  # 'y' and '-y' put the pole along z
    assert spread[0, 2] < 0.1  # 'z' leaves it lying


@pytest.mark.slow
def test_the_bundled_estimator_keeps_z_up_and_brings_turned_samples_back():
    from core.inference import DEFAULT_UP_ESTIMATOR, UpEstimator

    if not DEFAULT_UP_ESTIMATOR.is_file():
        pytest.skip("no bundled up-axis estimator")
    est = UpEstimator.load()
    names = sorted(p.stem for p in SAMPLES.glob("*.npy"))
    right = {axis: sum(est.estimate(turn_z_up_to(_sample(n), axis))[0] == axis for n in names) for axis in UP_AXES}
    # z-up files stay z up (its margin); most turned ones come back (a guess: 1 in 6). On these 40
    # samples: 39 of 40 z kept, 80% of the turned ones back. The measured rates over test shapes
    # (87% over the six turns, 99% z kept) are in docs/REAL_FILES.md.
    assert right["z"] >= 0.95 * len(names), right
    turned = sum(v for a, v in right.items() if a != "z")
    assert turned >= 0.7 * 5 * len(names), right

"""Partial views: deterministic benchmark, correct visibility, measurable severities, augmentation, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import partial
from core.data.augment import PartialView, default_train_augmentation
from core.data.partial import (
    SEVERITIES,
    params_at,
    partial_benchmark,
    partial_view,
    partial_view_indices,
    visible_points,
)
from core.data.preprocess import prepare_points

ROOT = Path(__file__).resolve().parents[1]


def _sphere(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _torus_mesh():
    import open3d as o3d

    return o3d.geometry.TriangleMesh.create_torus(torus_radius=0.75, tube_radius=0.25)


def _shapes(n: int = 6, points: int = 1024) -> np.ndarray:
    """Unit-sphere clouds of a few different shapes (tori, spheres, boxes), 1024 points each like the data."""
    import open3d as o3d

    out = []
    for i in range(n):
        m = [_torus_mesh(), o3d.geometry.TriangleMesh.create_sphere(1.0),
             o3d.geometry.TriangleMesh.create_box(1.0, 0.5, 2.0)][i % 3]
        pts = np.asarray(m.sample_points_uniformly(4 * points).points)
        pts = pts[np.random.default_rng(i).choice(len(pts), points, replace=False)] * [1, 1 + 0.1 * i, 1]
        out.append(prepare_points(pts, points))
    return np.stack(out)


def _residual(src: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """What is left of ``src`` (n, 3) after fitting ``pts * r + m`` (one scale, one shift) by least squares:
    the noise, if ``pts`` is ``src`` plus noise, re-normalised (and not rotated)."""
    n = len(pts)
    design = np.zeros((n, 3, 4))
    design[..., 0] = pts
    design[:, np.arange(3), 1 + np.arange(3)] = 1.0
    design = design.reshape(-1, 4)
    sol = np.linalg.lstsq(design, src.reshape(-1).astype(np.float64), rcond=None)[0]
    return (design @ sol - src.reshape(-1)).reshape(n, 3)


@pytest.fixture(scope="module")
def shapes() -> np.ndarray:
    return _shapes()


# ---------------------------------------------------------------------------------------------
# the benchmark


def test_benchmark_is_deterministic_and_independent_of_the_batch(shapes):
    a = partial_benchmark(shapes, severity=2, seed=0)
    assert a.shape == (len(shapes), 1024, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, partial_benchmark(shapes, severity=2, seed=0))
    assert not np.allclose(a, partial_benchmark(shapes, severity=2, seed=1))
    # shape i alone (given its index) equals shape i within the whole set, whatever else is processed
    for i in (0, 4):
        np.testing.assert_array_equal(partial_benchmark(shapes[i : i + 1], 2, 0, indices=[i])[0], a[i])
    np.testing.assert_array_equal(partial_benchmark(shapes[[5, 1]], 2, 0, indices=[5, 1]), a[[5, 1]])
    # the same shape at two indices: two different viewpoints
    same = partial_benchmark(np.stack([shapes[0], shapes[0]]), 2, 0)
    assert not np.allclose(same[0], same[1])


def test_benchmark_clouds_are_z_up_unit_sphere_views_of_the_shape(shapes):
    out = partial_benchmark(shapes, severity=2)
    np.testing.assert_allclose(np.linalg.norm(out, axis=2).max(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    # only translated and scaled, never turned: the source rows map onto the output by x * r + m
    rows, pts = partial_view_indices(shapes[2], np.random.default_rng(3), 1)
    assert np.abs(_residual(shapes[2][rows], pts)).max() < 0.05  # the noise of level 1 only


def test_bad_severity_or_shape_is_rejected(shapes):
    with pytest.raises(ValueError, match="severity"):
        partial_benchmark(shapes, severity=4)
    with pytest.raises(ValueError, match="shape"):
        partial_benchmark(shapes[0], severity=2)


def test_resampling_is_prepare_points():
    rng = np.random.default_rng(0)
    for n in (100, 1024, 3000, 9000):  # repeat, keep, FPS, random cut then FPS
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        rows = partial._resample_indices(n, xyz, 1024, seed=7)
        np.testing.assert_allclose(partial.normalize_unit_sphere(xyz[rows]), prepare_points(xyz, 1024, seed=7, method="fps_dataset"),
                                   atol=1e-6)


def test_camera_on_the_upper_cap_at_the_stated_distance():
    cams = np.stack([partial.draw_camera(np.random.default_rng(i), (2.0, 4.0)) for i in range(2000)])
    d = np.linalg.norm(cams, axis=1)
    assert d.min() >= 2.0 and d.max() <= 4.0
    z = cams[:, 2] / d
    assert z.min() >= partial.CAMERA_MIN_Z and z.max() <= 1.0
    assert abs(np.mean(z) - (1 + partial.CAMERA_MIN_Z) / 2) < 0.03  # uniform on the cap: z uniform
    assert np.abs(np.mean(cams[:, :2] / d[:, None], axis=0)).max() < 0.05  # all azimuths


# ---------------------------------------------------------------------------------------------
# visibility


def test_sphere_from_above_keeps_the_facing_cap():
    s = _sphere(4000)
    for dist in (1.5, 3.0, 10.0):
        idx = visible_points(s, [0, 0, dist])
        assert s[idx, 2].min() > 0.0  # nothing of the far side
        # a point is visible iff z > 1/d (tangent cone); nearly all of the cap is kept
        cap = np.flatnonzero(s[:, 2] > 1 / dist + 0.05)
        assert np.isin(cap, idx).mean() > 0.98
        assert (s[idx, 2] > 1 / dist - 0.1).mean() > 0.95


def test_cube_and_two_sided_plane_lose_their_far_side():
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, size=(6000, 3))
    c[np.arange(6000), rng.integers(3, size=6000)] = rng.choice([-1.0, 1.0], 6000)
    idx = visible_points(c, [0.3, 0.2, 3.0])
    top, bottom = c[:, 2] > 0.999, c[:, 2] < -0.999
    assert np.isin(np.flatnonzero(top), idx).mean() > 0.99 and not np.isin(np.flatnonzero(bottom), idx).any()
    # a two-sided plate (two sheets 0.1 apart, points ~0.04 apart) seen from its +z side: only the upper sheet
    xy = rng.uniform(-1, 1, size=(6000, 2))
    plate = np.c_[xy, np.where(np.arange(6000) % 2 == 0, 0.05, -0.05)]
    idx = visible_points(plate, [0.2, -0.1, 2.5])
    assert (plate[idx, 2] > 0).mean() > 0.99 and np.isin(np.flatnonzero(plate[:, 2] > 0), idx).mean() > 0.99


def test_visibility_agrees_with_ray_casting_on_a_sparse_torus():
    """1024 points like the dataset: the kept points are mostly truly visible, most visible ones kept."""
    import open3d as o3d

    mesh = _torus_mesh()
    pts = np.asarray(mesh.sample_points_uniformly(1024).points)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    prec, rec = [], []
    for i in range(8):
        cam = partial.draw_camera(np.random.default_rng(i), (2.0, 4.0))
        ray = pts - cam
        dist = np.linalg.norm(ray, axis=1)
        rays = np.c_[np.repeat(cam[None], len(pts), 0), ray / dist[:, None]].astype(np.float32)
        truth = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy() >= dist - 1e-3
        pred = np.zeros(len(pts), bool)
        pred[visible_points(pts, cam)] = True
        prec.append((pred & truth).sum() / pred.sum())
        rec.append((pred & truth).sum() / truth.sum())
    assert np.mean(prec) > 0.85 and np.mean(rec) > 0.8, (np.mean(prec), np.mean(rec))


def test_degenerate_cloud_counts_as_visible():
    line = np.c_[np.linspace(0, 1, 20), np.zeros(20), np.zeros(20)]
    np.testing.assert_array_equal(visible_points(line, [0, 0, 3]), np.arange(20))


# ---------------------------------------------------------------------------------------------
# severities


def test_severity_table_and_interpolation():
    assert sorted(SEVERITIES) == [1, 2, 3]
    a, b, c = (SEVERITIES[k] for k in (1, 2, 3))
    assert a.keep > b.keep > c.keep and a.depth_sigma < b.depth_sigma < c.depth_sigma
    assert a.distance[0] > b.distance[0] > c.distance[0]
    assert params_at(2) == b and params_at(0) == a and params_at(7) == c
    mid = params_at(1.5)
    assert mid.keep == pytest.approx((a.keep + b.keep) / 2) and mid.distance[1] == pytest.approx((a.distance[1] + b.distance[1]) / 2)


def test_higher_severity_keeps_fewer_points_and_adds_more_noise(shapes):
    distinct, noise = {}, {}
    for sev in (1, 2, 3):
        out = partial_benchmark(shapes, severity=sev)
        distinct[sev] = np.mean([len(np.unique(x, axis=0)) for x in out])
        res = []
        for i, shape in enumerate(shapes):
            rows, pts = partial_view_indices(shape, np.random.default_rng((0, i)), SEVERITIES[sev])
            res.append(_residual(shape[rows], pts).std())
        noise[sev] = np.mean(res)
    assert distinct[1] > 1.3 * distinct[2] > 1.3 * 1.3 * distinct[3], distinct
    assert noise[1] < noise[2] < noise[3], noise
    assert distinct[3] >= partial.MIN_KEPT


# ---------------------------------------------------------------------------------------------
# augmentation


def test_augmentation_probability_zero_leaves_the_batch_and_the_generator_alone(shapes):
    rng = np.random.default_rng(0)
    out = PartialView(0.0)(shapes, rng)
    np.testing.assert_array_equal(out, shapes)
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn
    assert "PartialView" not in repr(default_train_augmentation())
    assert "PartialView" in repr(default_train_augmentation(partial_prob=0.5))


def test_augmentation_draws_differ_per_sample_and_per_call():
    one = _shapes(1)[0]
    batch = np.stack([one] * 4)
    before = batch.copy()
    aug = PartialView(1.0, severity=(1.0, 3.0), seed=0)
    a, b = aug(batch), aug(batch)
    np.testing.assert_array_equal(batch, before)  # input untouched
    assert a.shape == batch.shape and a.dtype == batch.dtype
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(a[i], a[j])  # same shape, different views
        assert not np.allclose(a[i], b[i])  # the next epoch another view
    np.testing.assert_array_equal(PartialView(1.0, seed=0)(batch), a)  # seeded
    np.testing.assert_allclose(np.linalg.norm(a, axis=2).max(1), 1.0, atol=1e-5)


def test_augmentation_share_torch_and_extra_channels(shapes):
    x = np.concatenate([shapes, shapes], axis=2)  # channels 3:6 carry the original position
    out = PartialView(0.5, seed=1)(x)
    changed = ~np.all(out == x, axis=(1, 2))
    assert 0 < changed.sum() < len(x)
    for i in np.flatnonzero(changed):  # channels 3:6 are the source rows of the output points
        assert np.abs(_residual(out[i, :, 3:], out[i, :, :3])).max() < 0.15
    t = torch.from_numpy(shapes[:2].copy()).double()
    tout = PartialView(1.0)(t, np.random.default_rng(2))
    assert isinstance(tout, torch.Tensor) and tout.dtype == torch.float64 and tout.shape == t.shape
    np.testing.assert_allclose(tout.numpy(), PartialView(1.0)(shapes[:2], np.random.default_rng(2)), atol=1e-5)
    with pytest.raises(ValueError):
        PartialView(1.5)
    with pytest.raises(ValueError):
        PartialView(0.5, severity=(0.5, 2.0))


def test_partial_view_accepts_a_float_severity(shapes):
    out = partial_view(shapes[0], np.random.default_rng(0), 2.5, num_points=256)
    assert out.shape == (256, 3) and out.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# evaluate --views partial


@pytest.mark.slow
def test_evaluate_partial_views_json(tmp_path):
    student = ROOT / "assets" / "models" / "student.pt"
    if not student.is_file():
        pytest.skip(f"bundled student checkpoint not found at {student}")
    from core.engine.checkpoint import read_checkpoint

    classes = read_checkpoint(student)["class_names"]
    root = tmp_path / "tiny"
    for k, cls in enumerate(classes):  # one small ModelNet-like shape per class: <class>/test/<file>.npy
        d = root / cls / "test"
        d.mkdir(parents=True)
        np.save(d / f"{cls}_0001.npy", _shapes(1)[0] * [1, 1, 0.5 + k / 40])
    env = dict(os.environ, OMP_NUM_THREADS="2", T3DNET_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(ROOT / "main.py"), "evaluate", "--checkpoint", str(student), "--data", str(root)]
    r = subprocess.run([*cmd, "--views", "partial", "--severity", "3", "--json"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["views"] == "partial" and result["severity"] == 3 and result["n"] == len(classes)
    assert 0 <= result["oa"] <= 1 and 0 <= result["macc"] <= 1
    r = subprocess.run([*cmd, "--views", "partial", "--limit", "5"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=env)
    assert r.returncode == 0 and "partial views, severity 2" in r.stdout, r.stderr


# ---------------------------------------------------------------------------------------------
# partial views in training


def test_per_shape_views_are_fixed_per_shape_and_independent_of_the_batch(shapes):
    from core.data.augment import partial_views_per_shape

    a = partial_views_per_shape(shapes, 0.5, seed=(0, 1))
    np.testing.assert_array_equal(partial_views_per_shape(shapes, 0.5, seed=(0, 1)), a)
    sub = partial_views_per_shape(shapes[[4, 1]], 0.5, seed=(0, 1), indices=[4, 1])
    np.testing.assert_array_equal(sub, a[[4, 1]])  # a shape's draw ignores the others
    changed = [not np.array_equal(a[i], shapes[i]) for i in range(len(shapes))]
    assert 0 < sum(changed) < len(shapes)  # about half, at prob 0.5, on these six
    np.testing.assert_array_equal(partial_views_per_shape(shapes, 0.0), shapes)
    assert all(not np.array_equal(v, s) for v, s in zip(partial_views_per_shape(shapes, 1.0, seed=3), shapes))
    assert not np.array_equal(partial_views_per_shape(shapes, 1.0, seed=(0, 2)), partial_views_per_shape(shapes, 1.0, seed=(0, 1)))


SMALL = {"limit_train": 48, "limit_test": 24, "batch_size": 8}


@pytest.mark.slow
def test_training_uses_cached_partial_views_and_their_own_indices(modelnet40, tmp_path):
    """With cached indices, each variant is one fixed set of views drawn once (and cached on disk for
    the next run); the grouping indices are those of the views, not of the clean shapes."""
    from core.data.augment import partial_views_per_shape
    from core.engine.config import load_config
    from core.engine.trainer import Trainer, run_job

    over = {"job": "train", "model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL,
            "grouping_variants": 2, "augment": {"partial_prob": 1.0, "partial_severity": [2.0, 2.0]}}
    cfg = load_config("smoke", overrides=over)
    events = []
    report = run_job(cfg, tmp_path / "a", sink=events.append)
    assert 0 <= report["oa"] <= 1
    assert any(e.type == "progress" and e.what == "partial views" for e in events)
    trainer = Trainer(cfg, tmp_path / "b")
    trainer._setup()
    views, clean = trainer.train_views, trainer.train_set.points
    assert views.shape == (2, *clean.shape)
    expect = partial_views_per_shape(clean[:3], 1.0, (2.0, 2.0), seed=(0, 1))
    np.testing.assert_array_equal(views[1, :3], expect)  # variant 1: the draw with seed (VIEW_SEED, 1)
    assert not np.array_equal(views[0], views[1])
    idx = np.array([0, 5])
    got = trainer.train_groups.get(idx, 1)
    start = torch.from_numpy(trainer.train_groups.starts[1][idx])
    want = trainer.model.compute_grouping(torch.from_numpy(views[1][idx]), start)
    from core.engine.grouping import _flatten

    got, want = _flatten(got, []), _flatten(want, [])
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    clean = trainer.model.compute_grouping(torch.from_numpy(trainer.train_set.points[idx]), start)
    assert not all(torch.equal(a, b) for a, b in zip(got, _flatten(clean, [])))
    # A second run reads the views from the cache instead of drawing them again.
    events2 = []
    run_job(cfg, tmp_path / "c", sink=events2.append)
    assert not any(e.type == "progress" and e.what == "partial views" for e in events2)


def test_fresh_partial_views_per_batch_without_cached_indices(modelnet40, tmp_path):
    from core.engine.config import load_config
    from core.engine.trainer import Trainer

    over = {"job": "train", "model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL,
            "grouping_variants": 0, "augment": {"partial_prob": 1.0}}
    trainer = Trainer(load_config("smoke", overrides=over), tmp_path)
    trainer._setup()
    idx = np.arange(4)
    e0, e1 = trainer.train_points(idx, 0, epoch=0), trainer.train_points(idx, 0, epoch=1)
    assert not np.array_equal(e0, e1)  # another epoch, other views
    np.testing.assert_array_equal(trainer.train_points(idx, 0, epoch=0), e0)  # a resumed run repeats them
    assert not np.array_equal(e0, trainer.train_set.points[idx])
    batch = trainer.batch(idx, 0)
    losses = trainer.method.training_step(batch)
    assert torch.isfinite(losses["loss"]) and batch.logits.shape == (4, 40)


@pytest.mark.slow
def test_cached_teacher_views_are_partial_views(modelnet40, tmp_path):
    """Distillation with cached teacher outputs: the teacher saw the same partial views as the student."""
    from core.engine.checkpoint import load_model
    from core.engine.config import load_config
    from core.engine.trainer import Trainer, run_job

    t = run_job(load_config("smoke", overrides={"job": "train", "model": "pointnet", "width": 0.125, "epochs": 1,
                                                "data": str(modelnet40), **SMALL}), tmp_path / "teacher")
    over = {"job": "kd", "model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL,
            "augment": {"partial_prob": 1.0}, "distill": {"teacher": t["checkpoint"], "cache_views": 2}}
    trainer = Trainer(load_config("smoke", overrides=over), tmp_path / "kd")
    trainer._setup()
    cache = trainer.teacher_cache
    teacher, _ = load_model(t["checkpoint"])
    idx = np.arange(3)
    pts = torch.from_numpy(trainer.train_views[1][idx]) * cache["scale"][1, :3].unsqueeze(1) + cache["shift"][1, :3].unsqueeze(1)
    assert not np.array_equal(trainer.train_views[1][idx], trainer.train_set.points[idx])
    with torch.no_grad():
        expect = teacher.eval()(pts)
    assert torch.allclose(cache["logits"][1, :3].float(), expect, atol=2e-2)


@pytest.mark.slow
def test_a_train_job_can_start_from_a_trained_model(modelnet40, tmp_path):
    from core.engine.checkpoint import load_model
    from core.engine.config import ConfigError, load_config
    from core.engine.trainer import Trainer, run_job

    base = {"job": "train", "model": "pointnet", "width": 0.125, "data": str(modelnet40), **SMALL, "epochs": 1}
    first = run_job(load_config("smoke", overrides=base), tmp_path / "first")
    trainer = Trainer(load_config("smoke", overrides=base | {"init": first["checkpoint"]}), tmp_path / "second")
    trainer._setup()
    init, _ = load_model(first["checkpoint"])
    for k, v in init.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="init"):
        load_config("smoke", overrides=base | {"job": "netaug", "init": first["checkpoint"]})
    # A run cancelled mid-way resumes from its own folder, even when the init file is gone.
    import shutil
    import threading

    from core.engine.trainer import JobCancelled, resume_run

    init = tmp_path / "init.pt"
    shutil.copyfile(first["checkpoint"], init)
    cancel = threading.Event()
    with pytest.raises(JobCancelled):
        run_job(load_config("smoke", overrides=base | {"init": str(init)}), tmp_path / "third",
                sink=lambda e: cancel.set() if e.type == "step" and e.step >= 2 else None, cancel=cancel)
    init.unlink()
    assert resume_run(tmp_path / "third")["oa"] >= 0

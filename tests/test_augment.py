"""Augmentations keep type/shape, are seeded, treat numpy and torch alike and do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.data.augment import (
    Compose,
    Jitter,
    PointDropout,
    RandomRotate,
    RandomScale,
    RandomShift,
    ShufflePoints,
    default_train_augmentation,
)

X = np.random.default_rng(0).normal(size=(4, 256, 3)).astype(np.float32)

ALL = [
    lambda: RandomScale(0.5, 2.0), lambda: RandomScale(0.5, 2.0, anisotropic=True), lambda: RandomShift(0.3),
    lambda: RandomRotate("z"), lambda: Jitter(0.02, 0.05), lambda: PointDropout(0.5), lambda: ShufflePoints(),
    lambda: default_train_augmentation(),
]


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("batched", [True, False])
def test_type_shape_dtype_preserved_and_input_untouched(make, batched):
    x = X if batched else X[0]
    before = x.copy()
    out = make()(x, np.random.default_rng(1))
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    t = torch.from_numpy(x.copy()).double()
    tout = make()(t, np.random.default_rng(1))
    assert isinstance(tout, torch.Tensor) and tout.shape == t.shape and tout.dtype == torch.float64
    # same generator state -> same numbers, whatever the array library
    np.testing.assert_allclose(tout.numpy(), out, atol=1e-5)


def test_seeded_and_per_sample():
    aug = Compose([RandomScale(anisotropic=True), RandomRotate(), Jitter()], seed=5)
    a = aug(X)
    b = Compose([RandomScale(anisotropic=True), RandomRotate(), Jitter()], seed=5)(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, aug(X))  # the generator moves on
    s = RandomScale(0.5, 2.0)(np.ones((8, 10, 3), np.float32), np.random.default_rng(0))
    assert len(np.unique(s[:, 0, 0])) == 8  # each sample its own factor


def test_rotation_turns_about_the_up_axis_only():
    out = RandomRotate("z")(X, np.random.default_rng(0))
    np.testing.assert_allclose(out[..., 2], X[..., 2], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(X, axis=-1), atol=1e-5)
    assert not np.allclose(out[..., :2], X[..., :2])
    y = RandomRotate("y", max_angle=math.pi / 2)(X, np.random.default_rng(0))
    np.testing.assert_allclose(y[..., 1], X[..., 1], atol=1e-6)


def test_rotation_turns_normals_with_the_points():
    pts = X[0]
    with_n = np.concatenate([pts, pts / np.linalg.norm(pts, axis=1, keepdims=True)], axis=1)
    out = RandomRotate()(with_n, np.random.default_rng(3))
    np.testing.assert_allclose(out[:, 3:], out[:, :3] / np.linalg.norm(out[:, :3], axis=1, keepdims=True), atol=1e-5)


def test_scale_shift_jitter_bounds():
    ones = np.ones((16, 32, 3), np.float32)
    s = RandomScale(0.8, 1.25)(ones, np.random.default_rng(0))
    assert s.min() >= 0.8 - 1e-6 and s.max() <= 1.25 + 1e-6
    iso = RandomScale(0.8, 1.25)(ones, np.random.default_rng(0))
    assert np.allclose(iso[..., 0], iso[..., 1])  # isotropic: the same factor on every axis
    aniso = RandomScale(0.8, 1.25, anisotropic=True)(ones, np.random.default_rng(0))
    assert not np.allclose(aniso[..., 0], aniso[..., 1])
    sh = RandomShift(0.1)(X, np.random.default_rng(0)) - X
    assert np.abs(sh).max() <= 0.1 + 1e-6 and np.allclose(sh, sh[:, :1])  # one vector per sample
    j = Jitter(0.01, 0.02)(X, np.random.default_rng(0)) - X
    assert np.abs(j).max() <= 0.02 + 1e-6 and 0.005 < j.std() < 0.015


def test_dropout_and_shuffle():
    d = PointDropout(0.875)(X, np.random.default_rng(0))
    dropped = (d == d[:, :1]).all(axis=-1).sum(axis=1) - 1
    assert (dropped >= 0).all() and dropped.max() > 0 and (dropped < 256 * 0.95).all()
    s = ShufflePoints()(X, np.random.default_rng(0))
    assert not np.array_equal(s, X)
    for b in range(len(X)):
        np.testing.assert_array_equal(np.sort(s[b], axis=0), np.sort(X[b], axis=0))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        Jitter()(np.zeros((10, 2)))

"""Every dataset layout loads into the same arrays (z up, unit sphere), cached and kept up to date."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from core.data import datasets
from core.data.datasets import DatasetArrays, describe_dataset, detect_layout, load_split
from core.errors import DatasetError

P = 64  # points per shape in the small synthetic datasets


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("T3DNET_CACHE", str(d))
    return d


def _tall_shape(seed: int, up: str = "z", n: int = 300) -> np.ndarray:
    """A shape 4x taller along ``up`` than across, off-centre and not normalised."""
    p = np.random.default_rng(seed).normal(size=(n, 3)) * [1, 1, 4] + [5, 5, 5]
    if up == "y":
        p = p[:, [0, 2, 1]]
    return p.astype(np.float32)


def _assert_clean(ds: DatasetArrays, n: int, classes: list[str]):
    assert ds.points.shape == (n, P, 3) and ds.points.dtype == np.float32
    assert ds.labels.dtype == np.int64 and len(ds.shape_ids) == n
    assert ds.class_names == classes and ds.up_axis == "z"
    np.testing.assert_allclose(np.linalg.norm(ds.points, axis=2).max(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds.points.mean(axis=1), 0, atol=1e-5)


def _assert_z_up(ds: DatasetArrays):
    ext = ds.points.max(axis=1) - ds.points.min(axis=1)
    assert (ext[:, 2] > 2 * ext[:, 0]).all() and (ext[:, 2] > 2 * ext[:, 1]).all()


# ---------------------------------------------------------------------------------------------
# synthetic layouts


def test_class_split_folders_of_mixed_formats(tmp_path, cache):
    root = tmp_path / "mine"
    for c, cls in enumerate(["cup", "lamp"]):
        for split, n in (("train", 3), ("test", 2)):
            d = root / cls / split
            d.mkdir(parents=True)
            for i in range(n):
                pts = _tall_shape(10 * c + i)
                if i == 0:
                    np.save(d / f"{cls}_{i}.npy", pts)
                else:
                    (d / f"{cls}_{i}.xyz").write_text("\n".join(" ".join(map(str, r)) for r in pts))
    (root / "README.md").write_text("notes")
    ds = load_split(root, "train", P, progress=False)
    assert ds.layout == "split_folders"
    _assert_clean(ds, 6, ["cup", "lamp"])
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    _assert_z_up(ds)
    assert len(load_split(root, "test", P, progress=False)) == 4


def test_split_first_folders(tmp_path, cache):
    root = tmp_path / "ds"
    for split in ("training", "testing"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            np.save(root / split / cls / "s0.npy", _tall_shape(1))
    ds = load_split(root, "train", P, progress=False)
    assert ds.layout == "split_first" and ds.class_names == ["a", "b"] and len(ds) == 2


def test_custom_class_folders_without_splits(tmp_path, cache):
    root = tmp_path / "custom"
    for cls in ("chair", "table"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            np.save(root / cls / f"{i:03d}.npy", _tall_shape(i))
    lay = detect_layout(root)
    assert lay.kind == "class_folders" and "20%" in lay.note
    train, test = load_split(root, "train", P, progress=False), load_split(root, "test", P, progress=False)
    assert (len(train), len(test)) == (16, 4)
    pairs = lambda ds: set(zip(ds.labels.tolist(), ds.shape_ids))
    assert not pairs(train) & pairs(test) and len(pairs(train) | pairs(test)) == 20
    assert np.bincount(test.labels).tolist() == [2, 2]  # 20% of each class
    assert len(load_split(root, "all", P, progress=False)) == 20
    # the split is fixed: same files in test every time
    assert load_split(root, "test", P, progress=False).shape_ids == test.shape_ids


def test_custom_y_up_override(tmp_path, cache):
    root = tmp_path / "yup"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            np.save(root / cls / f"{i}.npy", _tall_shape(i, up="y"))
    _assert_z_up(load_split(root, "train", P, source_up_axis="y", progress=False))


def _normal_resampled(root, classes=("airplane", "chair")):
    root.mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    lists = {"train": [], "test": []}
    for cls in classes:
        (root / cls).mkdir()
        for i in range(1, 4):
            sid = f"{cls}_{i:04d}"
            pts = _tall_shape(i, up="y", n=400)
            nrm = pts / np.linalg.norm(pts, axis=1, keepdims=True)
            rows = np.concatenate([pts, nrm], axis=1)
            (root / cls / f"{sid}.txt").write_text("\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
            lists["test" if i == 3 else "train"].append(sid)
    for s, ids in lists.items():
        (root / f"modelnet40_{s}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_modelnet40_normal_resampled(tmp_path, cache):
    root = _normal_resampled(tmp_path / "modelnet40_normal_resampled")
    ds = load_split(root, "train", P, progress=False)
    assert ds.layout == "modelnet_normal_resampled" and ds.source_up_axis == "y"
    _assert_clean(ds, 4, ["airplane", "chair"])
    assert ds.shape_ids == ["airplane_0001", "airplane_0002", "chair_0001", "chair_0002"]
    _assert_z_up(ds)  # y-up text files come out z up


def test_normal_resampled_missing_file_is_reported(tmp_path, cache):
    root = _normal_resampled(tmp_path / "mn")
    (root / "chair" / "chair_0001.txt").unlink()
    with pytest.raises(DatasetError, match="chair_0001"):
        load_split(root, "train", P, progress=False)


def _h5(path, data, labels):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels


def test_modelnet40_ply_hdf5_2048(tmp_path, cache):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("a\nb\nc\n")
    for name, n in (("ply_data_train0.h5", 4), ("ply_data_train1.h5", 3), ("ply_data_test0.h5", 2)):
        data = np.stack([_tall_shape(i, up="y", n=128) for i in range(n)])
        _h5(root / name, data, (np.arange(n) % 3).reshape(-1, 1).astype(np.uint8))
    ds = load_split(root, "train", P, progress=False)
    assert ds.layout == "modelnet_hdf5" and ds.source_up_axis == "y"
    _assert_clean(ds, 7, ["a", "b", "c"])
    assert ds.labels.tolist() == [0, 1, 2, 0, 0, 1, 2]
    _assert_z_up(ds)
    assert describe_dataset(root)["splits"] == {"train": 7, "test": 2}


def test_hdf5_labels_beyond_class_names(tmp_path, cache):
    root = tmp_path / "h5bad"
    root.mkdir()
    (root / "shape_names.txt").write_text("a\nb\n")
    _h5(root / "ply_data_train0.h5", np.stack([_tall_shape(0, n=128)] * 2), np.array([[0], [5]]))
    with pytest.raises(DatasetError, match="labels go up to 5"):
        load_split(root, "train", P, progress=False)


def test_scanobjectnn_main_split(tmp_path, cache):
    root = tmp_path / "h5_files"
    main = root / "main_split"
    main.mkdir(parents=True)
    for pre, n in (("training", 5), ("test", 3)):
        for variant in ("objectdataset.h5", "objectdataset_augmentedrot_scale75.h5"):
            _h5(main / f"{pre}_{variant}", np.stack([_tall_shape(i, up="y", n=256) for i in range(n)]),
                np.arange(n) % 15)
    ds = load_split(root, "train", P, progress=False)
    assert ds.layout == "scanobjectnn" and len(ds.class_names) == 15 and ds.class_names[0] == "bag"
    _assert_clean(ds, 5, datasets.SCANOBJECTNN_CLASSES)
    _assert_z_up(ds)
    assert "augmentedrot" in detect_layout(root).note  # other variants are mentioned
    hard = load_split(main / "training_objectdataset_augmentedrot_scale75.h5", "test", P, progress=False)
    assert len(hard) == 3


# ---------------------------------------------------------------------------------------------
# bad layouts


def test_unknown_empty_and_mismatched_layouts(tmp_path, cache):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_split(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_split(tmp_path / "empty")
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "a" / "readme.md").write_text("x")
    with pytest.raises(DatasetError, match="no readable 3D files"):
        load_split(tmp_path / "docs")
    mixed = tmp_path / "mixed"
    (mixed / "a" / "train").mkdir(parents=True)
    np.save(mixed / "a" / "train" / "0.npy", _tall_shape(0))
    (mixed / "b").mkdir()
    np.save(mixed / "b" / "0.npy", _tall_shape(0))
    with pytest.raises(DatasetError, match="mixed layout") as ei:
        load_split(mixed)
    assert str(mixed) in str(ei.value) and "\n" not in str(ei.value)
    shutil.rmtree(mixed / "b")
    with pytest.raises(DatasetError, match="no 'test' split"):
        load_split(mixed, "test")


def test_unreadable_shape_names_the_file(tmp_path, cache):
    root = tmp_path / "broken"
    (root / "a" / "train").mkdir(parents=True)
    np.save(root / "a" / "train" / "ok.npy", _tall_shape(0))
    (root / "a" / "train" / "bad.ply").write_bytes(b"not a ply at all")
    with pytest.raises(DatasetError, match="bad.ply"):
        load_split(root, "train", P, progress=False)


# ---------------------------------------------------------------------------------------------
# cache


def test_cache_is_reused_then_rebuilt_when_a_source_changes(tmp_path, cache, monkeypatch):
    root = tmp_path / "ds"
    for cls in ("a", "b"):
        (root / cls / "train").mkdir(parents=True)
        for i in range(3):
            np.save(root / cls / "train" / f"{i}.npy", _tall_shape(i))
    first = load_split(root, "train", P, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1

    builds = []
    real = datasets._build_from_files
    monkeypatch.setattr(datasets, "_build_from_files", lambda *a, **k: builds.append(1) or real(*a, **k))
    again = load_split(root, "train", P, progress=False)
    assert builds == [] and np.array_equal(again.points, first.points)  # from the cache

    f = root / "a" / "train" / "0.npy"
    np.save(f, _tall_shape(99))
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    changed = load_split(root, "train", P, progress=False)
    assert builds == [1] and not np.array_equal(changed.points[0], first.points[0])
    np.save(root / "b" / "train" / "9.npy", _tall_shape(5))  # a new file
    assert len(load_split(root, "train", P, progress=False)) == 7 and builds == [1, 1]
    assert len(list(cache.glob("*.npz"))) == 1  # stale versions are removed


def test_progress_callback_reports_every_shape(tmp_path, cache):
    root = tmp_path / "ds"
    (root / "a" / "train").mkdir(parents=True)
    for i in range(5):
        np.save(root / "a" / "train" / f"{i}.npy", _tall_shape(i))
    seen = []
    load_split(root, "train", P, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5, 5) and len(seen) == 5


# ---------------------------------------------------------------------------------------------
# real data


def test_modelnet40_counts(modelnet40):
    info = describe_dataset(modelnet40)
    assert info["layout"] == "split_folders" and info["classes"] == 40
    assert info["splits"] == {"train": 9843, "test": 2468}


@pytest.mark.slow
def test_modelnet40_test_split_arrays(modelnet40):
    ds = load_split(modelnet40, "test", 1024, progress=False)
    assert ds.points.shape == (2468, 1024, 3) and len(ds.class_names) == 40
    assert np.bincount(ds.labels, minlength=40).min() > 0
    # already unit sphere z up: loading keeps the shapes as they are
    first = np.load(modelnet40 / ds.class_names[ds.labels[0]] / "test" / f"{ds.shape_ids[0]}.npy")
    np.testing.assert_allclose(ds.points[0], first, atol=1e-5)
    t = time.perf_counter()
    load_split(modelnet40, "test", 1024, progress=False)
    assert time.perf_counter() - t < 5.0  # cached


def test_modelnet10_pcd_set_loads_and_is_normalised(shared_data):
    root = shared_data / "modelnet10_pcd1024_test"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    ds = load_split(root, "test", 1024, progress=False)
    assert ds.points.shape == (908, 1024, 3) and len(ds.class_names) == 10
    r = np.linalg.norm(ds.points, axis=2)
    np.testing.assert_allclose(r.max(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds.points.mean(axis=1), 0, atol=1e-5)
    with pytest.raises(DatasetError, match="no 'train' split"):
        load_split(root, "train", 1024, progress=False)


def test_damaged_cache_file_is_rebuilt(tmp_path, cache):
    root = tmp_path / "ds"
    (root / "a" / "train").mkdir(parents=True)
    np.save(root / "a" / "train" / "0.npy", _tall_shape(0))
    first = load_split(root, "train", P, progress=False)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"PK\x03\x04 broken")
    again = load_split(root, "train", P, progress=False)
    np.testing.assert_array_equal(again.points, first.points)


def test_building_a_cache_spares_another_process_file_in_flight(tmp_path, cache):
    """Two jobs started together build the same split: the stale-version sweep of one must not
    delete the other's temporary file (it did, and the other job died on its rename)."""
    root = tmp_path / "ds"
    (root / "a" / "train").mkdir(parents=True)
    for i in range(2):
        np.save(root / "a" / "train" / f"{i}.npy", _tall_shape(i))
    load_split(root, "train", P, progress=False)
    (built,) = cache.glob("*.npz")
    stale = built.with_name(built.name.rsplit("_", 1)[0] + "_000000000000.npz")
    built.rename(stale)  # an older version of the split
    in_flight = built.with_name(built.stem + ".99999.tmp.npz")
    in_flight.write_bytes(b"another process is writing this")
    load_split(root, "train", P, progress=False)
    assert built.is_file() and in_flight.is_file() and not stale.exists()

"""Classification datasets as compact arrays, with a preprocessing cache.

Layouts are detected from the folder itself (:func:`detect_layout`):

- ``split_folders``: ``<class>/<split>/<file>`` of any readable format: ``modelnet40_npy1024``
  (``.npy``), ``modelnet10_pcd1024_test`` (``.pcd``), the official ``ModelNet40.zip`` (``.off``).
- ``split_first``: ``<split>/<class>/<file>``.
- ``class_folders``: ``<class>/<file>`` without splits; a fixed, seeded 80/20 split per class
  (``train``/``test``; ``all`` is everything).
- ``modelnet_normal_resampled``: text files + ``modelnet40_{train,test}.txt`` + shape names; y up.
- ``modelnet_hdf5``: ``modelnet40_ply_hdf5_2048`` (``ply_data_*.h5`` + ``shape_names.txt``); y up.
- ``scanobjectnn``: ScanObjectNN ``training_/test_objectdataset*.h5`` (15 classes); y up.

Every split comes out the same way: (N, P, 3) float32, z up, each shape in the unit sphere,
cached as one ``.npz`` per (dataset, split, points) under :func:`cache_dir`, rebuilt when a
source file is added, removed or changed (names, sizes, mtimes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.orient import check_up_axis
from core.errors import DatasetError, T3DError

CACHE_VERSION = 2  # bump when the preprocessing changes

SPLIT_ALIASES = {
    "train": ("train", "training"),
    "test": ("test", "testing"),
    "val": ("val", "valid", "validation"),
}

SCANOBJECTNN_CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf",
                        "table", "bed", "pillow", "sink", "sofa", "toilet"]

_HOLDOUT = 0.2  # share of each class that goes to 'test' in class_folders layouts

#: ModelNet40's classes in label order (``modelnet40_shape_names.txt``: alphabetical).
MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)


@dataclass
class DatasetArrays:
    """One split of a classification dataset, preprocessed to ``num_points`` per shape.

    ``points`` are always z up; ``source_up_axis`` says which axis was up in the files.
    """

    points: np.ndarray  # (N, P, 3) float32, unit sphere, z up
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    shape_ids: list[str] = field(default_factory=list)
    split: str = "train"
    up_axis: str = "z"
    source_up_axis: str = "z"
    layout: str = ""
    root: str = ""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetLayout:
    """What :func:`detect_layout` found: where the shapes of each split are and what they mean."""

    kind: str
    root: Path
    class_names: list[str]
    up_axis: str  # of the source files
    # file layouts: split -> [(file, label, shape_id)]; HDF5 layouts: split -> [h5 file]
    items: dict[str, list] = field(default_factory=dict)
    note: str = ""

    @property
    def splits(self) -> list[str]:
        return [s for s, v in self.items.items() if v]

    def count(self, split: str) -> int | None:
        """Shapes in a split (None for HDF5 layouts until the files are opened)."""
        v = self.items.get(split, [])
        return len(v) if self.kind in FILE_LAYOUTS else _h5_count(v)


FILE_LAYOUTS = ("split_folders", "split_first", "class_folders", "modelnet_normal_resampled")


def cache_dir() -> Path:
    d = Path(os.environ.get("T3DNET_CACHE", Path.home() / ".cache" / "t3dnet"))
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# Layout detection


def _point_extensions() -> set[str]:
    from core.data.io import all_extensions

    return set(all_extensions())


def _visible_dirs(p: Path) -> list[Path]:
    return sorted((d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))),
                  key=lambda d: d.name)


def _shape_files(folder: Path, exts: set[str]) -> list[Path]:
    with os.scandir(folder) as it:
        files = [Path(e.path) for e in it if e.is_file() and not e.name.startswith(".")
                 and os.path.splitext(e.name)[1].lower() in exts]
    return sorted(files)


def _canonical_split(name: str) -> str | None:
    low = name.lower()
    for split, aliases in SPLIT_ALIASES.items():
        if low in aliases:
            return split
    return None


def detect_layout(root: str | os.PathLike) -> DatasetLayout:
    """Recognise a dataset folder (or a ScanObjectNN ``.h5`` file) and list its shapes.

    Raises:
        DatasetError: the folder is missing, empty, or not a layout we know.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() in (".h5", ".hdf5"):
        return _scanobjectnn(root.parent, prefer=root.name)
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (a dataset is a folder of class folders or HDF5 files)")
    names = {p.name for p in root.iterdir()}
    if any(re.match(r"ply_data_(train|test)\d*\.h5$", n) for n in names):
        return _modelnet_hdf5(root, names)
    if any(re.match(r"(training|test)_objectdataset.*\.h5$", n) for n in names) or "main_split" in names:
        return _scanobjectnn(root)
    shape_lists = sorted(n for n in names if re.match(r"modelnet\d+_shape_names\.txt$", n))
    if shape_lists:
        return _normal_resampled(root, shape_lists)
    return _folders(root)


def _folders(root: Path) -> DatasetLayout:
    exts = _point_extensions()
    dirs = _visible_dirs(root)
    if not dirs:
        raise DatasetError(f"{root}: no class folders, HDF5 files or split lists found (empty or unknown layout)")
    split_dirs = [d for d in dirs if _canonical_split(d.name)]
    if split_dirs and len(split_dirs) == len(dirs):  # <split>/<class>/<file>
        classes = sorted({c.name for s in split_dirs for c in _visible_dirs(s)})
        if not classes:
            raise DatasetError(f"{root}: split folders {[d.name for d in split_dirs]} hold no class folders")
        items: dict[str, list] = {}
        for s in split_dirs:
            lst = items.setdefault(_canonical_split(s.name), [])
            for c in _visible_dirs(s):
                lab = classes.index(c.name)
                lst += [(f, lab, f.stem) for f in _shape_files(c, exts)]
        return _non_empty(DatasetLayout("split_first", root, classes, "z", items))

    with_splits = {d.name: [s for s in _visible_dirs(d) if _canonical_split(s.name)] for d in dirs}
    has_split = [n for n, s in with_splits.items() if s]
    if has_split:  # <class>/<split>/<file>
        flat = [n for n in with_splits if not with_splits[n] and _shape_files(root / n, exts)]
        if flat:
            raise DatasetError(f"{root}: mixed layout: '{has_split[0]}' has split folders but '{flat[0]}' "
                               f"holds files directly")
        classes = sorted(has_split)
        items = {}
        for lab, c in enumerate(classes):
            for s in with_splits[c]:
                items.setdefault(_canonical_split(s.name), []).extend(
                    (f, lab, f.stem) for f in _shape_files(s, exts))
        return _non_empty(DatasetLayout("split_folders", root, classes, "z", items))

    # <class>/<file>: a fixed split per class
    classes = [d.name for d in dirs if _shape_files(d, exts)]
    if not classes:
        raise DatasetError(f"{root}: the folders {[d.name for d in dirs[:3]]} hold no readable 3D files "
                           f"({', '.join(sorted(exts))})")
    items = {"train": [], "test": [], "all": []}
    for lab, c in enumerate(classes):
        files = _shape_files(root / c, exts)
        order = np.random.default_rng(int(hashlib.sha1(c.encode()).hexdigest()[:8], 16)).permutation(len(files))
        n_test = int(round(len(files) * _HOLDOUT)) if len(files) > 1 else 0
        test = set(order[:n_test].tolist())
        for i, f in enumerate(files):
            item = (f, lab, f.stem)
            items["all"].append(item)
            items["test" if i in test else "train"].append(item)
    return _non_empty(DatasetLayout("class_folders", root, classes, "z", items,
                                    note=f"no split folders: a fixed {int(_HOLDOUT * 100)}% of each class is 'test'"))


def _non_empty(layout: DatasetLayout) -> DatasetLayout:
    if not layout.splits:
        raise DatasetError(f"{layout.root}: class folders found but no readable 3D files in them")
    return layout


def _read_lines(p: Path) -> list[str]:
    return [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def _normal_resampled(root: Path, shape_lists: list[str]) -> DatasetLayout:
    # both modelnet10_* and modelnet40_* lists ship in modelnet40_normal_resampled: prefer the
    # one named like the folder, else the largest
    tag = next((s.split("_")[0] for s in shape_lists if s.split("_")[0] in root.name.lower()),
               max((s.split("_")[0] for s in shape_lists), key=lambda t: int(t[8:])))
    classes = _read_lines(root / f"{tag}_shape_names.txt")
    index = {c: i for i, c in enumerate(classes)}
    items: dict[str, list] = {}
    for split in ("train", "test"):
        lst_file = root / f"{tag}_{split}.txt"
        if not lst_file.is_file():
            continue
        lst, missing = [], []
        for sid in _read_lines(lst_file):
            cls = sid.rsplit("_", 1)[0]
            if cls not in index:
                raise DatasetError(f"{lst_file}: shape '{sid}' has class '{cls}', not in {tag}_shape_names.txt")
            f = root / cls / f"{sid}.txt"
            lst.append((f, index[cls], sid))
        missing = [f for f, _, _ in lst[:: max(1, len(lst) // 50)] if not f.is_file()]
        if missing:
            raise DatasetError(f"{root}: files listed in {lst_file.name} are missing, e.g. {missing[0]}")
        items[split] = lst
    if not items:
        raise DatasetError(f"{root}: {tag}_shape_names.txt found but no {tag}_train.txt / {tag}_test.txt")
    return DatasetLayout("modelnet_normal_resampled", root, classes, "y", items)


def _modelnet_hdf5(root: Path, names: set[str]) -> DatasetLayout:
    sn = next((root / n for n in ("shape_names.txt", "modelnet40_shape_names.txt") if n in names), None)
    if sn is None:
        raise DatasetError(f"{root}: HDF5 files found but no shape_names.txt with the class names")
    classes = _read_lines(sn)
    items = {}
    for split in ("train", "test"):
        files = sorted((root / n for n in names if re.match(rf"ply_data_{split}\d*\.h5$", n)),
                       key=lambda p: int(re.search(r"(\d*)\.h5$", p.name).group(1) or 0))
        if files:
            items[split] = files
    return DatasetLayout("modelnet_hdf5", root, classes, "y", items)


def _scanobjectnn(root: Path, prefer: str | None = None) -> DatasetLayout:
    if (root / "main_split").is_dir() and not any(root.glob("*objectdataset*.h5")):
        root = root / "main_split"
    train = sorted(p.name for p in root.glob("training_objectdataset*.h5"))
    if prefer:
        variant = re.sub(r"^(training|test)_", "", prefer)
    elif "training_objectdataset.h5" in train:
        variant = "objectdataset.h5"
    elif train:
        variant = train[0][len("training_"):]
    else:
        variant = sorted(p.name for p in root.glob("test_objectdataset*.h5"))[0][len("test_"):]
    items = {s: [root / f"{pre}_{variant}"] for s, pre in (("train", "training"), ("test", "test"))
             if (root / f"{pre}_{variant}").is_file()}
    if not items:
        raise DatasetError(f"{root}: no ScanObjectNN file for variant '{variant}'")
    others = sorted({n[len("training_"):] for n in train} - {variant})
    note = f"variant {variant}" + (f" (also here: {', '.join(others)}; pass the .h5 file to choose)" if others else "")
    return DatasetLayout("scanobjectnn", root, list(SCANOBJECTNN_CLASSES), "y", items, note=note)


def _h5_count(files: list[Path]) -> int:
    import h5py

    n = 0
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                n += len(h["label"])
        except (OSError, KeyError) as exc:
            raise DatasetError(f"{f}: not a readable dataset HDF5 file ({exc})") from None
    return n


def describe_dataset(root: str | os.PathLike) -> dict:
    """Summary of a dataset folder without building anything: layout, classes, shapes per split."""
    lay = detect_layout(root)
    return {
        "root": str(lay.root), "layout": lay.kind, "classes": len(lay.class_names),
        "class_names": lay.class_names, "source_up_axis": lay.up_axis,
        "splits": {s: lay.count(s) for s in lay.splits}, "note": lay.note,
    }


# ---------------------------------------------------------------------------------------------
# Loading and caching


def load_split(root: str | os.PathLike, split: str = "train", num_points: int = 1024, *,
               source_up_axis: str | None = None,
               progress: bool | Callable[[int, int], None] = True,
               workers: int | None = None, channels: int | None = None) -> DatasetArrays:
    """One split of a dataset as arrays, from the cache when it is up to date.

    Args:
        root: dataset folder (any layout of :func:`detect_layout`) or a ScanObjectNN ``.h5`` file.
        split: ``train``, ``test`` (``all`` for class folders without splits).
        num_points: points per shape (farthest point sampling, or repetition for small shapes).
        source_up_axis: override the layout's axis convention, any signed axis (``'y'`` for y-up
            custom data, ``'-y'`` for camera frames).
        progress: tqdm bar on stderr while the cache is built, or a callback ``(done, total)``.
        workers: threads reading files while building (default: CPU count, at most 8).
        channels: floats per point of binary float32 point files (``--channels``), None to detect.

    Raises:
        DatasetError: unknown/empty/inconsistent layout, a missing split, unreadable shapes.
    """
    lay = detect_layout(root)
    split = _canonical_split(split) or split.lower()
    if split not in lay.splits:
        raise DatasetError(f"{lay.root}: no '{split}' split (found: {', '.join(lay.splits) or 'none'})")
    up = check_up_axis(source_up_axis or lay.up_axis)
    sources = lay.items[split]
    key = hashlib.sha1(f"{CACHE_VERSION}|{lay.kind}|{lay.root.resolve()}|{split}|{num_points}|{up}|{channels or ''}".encode())
    key.update(_fingerprint([s[0] if isinstance(s, tuple) else s for s in sources]).encode())
    key.update("\n".join(lay.class_names).encode())
    stem = f"{lay.root.name}-{hashlib.sha1(str(lay.root.resolve()).encode()).hexdigest()[:6]}_{split}_{num_points}"
    cache = cache_dir() / f"{stem}_{key.hexdigest()[:12]}.npz"
    meta = dict(split=split, source_up_axis=up, layout=lay.kind, root=str(lay.root))
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return DatasetArrays(z["points"], z["labels"], list(lay.class_names),
                                     z["shape_ids"].tolist(), **meta)
        except Exception:
            pass
    if lay.kind in FILE_LAYOUTS:
        pts, labels, ids = _build_from_files(lay, sources, num_points, up, progress, workers, channels)
    else:
        pts, labels, ids = _build_from_h5(lay, sources, num_points, up, progress)
    if len(labels) == 0:
        raise DatasetError(f"{lay.root}: the '{split}' split has no shapes")
    for old in cache_dir().glob(f"{stem}_*.npz"):  # stale versions of this split
        # Not another process's file in flight (two jobs started together build the same cache).
        if old != cache and ".tmp." not in old.name:
            old.unlink(missing_ok=True)
    tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, points=pts, labels=labels, shape_ids=np.asarray(ids, dtype=str))
    os.replace(tmp, cache)
    return DatasetArrays(pts, labels, list(lay.class_names), list(ids), **meta)


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}:missing\n".encode())
    return h.hexdigest()


def _progress_bar(progress, total: int, desc: str):
    """A callable ``update(n)`` and a ``close()`` for tqdm or a user callback."""
    if callable(progress):
        done = [0]

        def update(n: int = 1) -> None:
            done[0] += n
            progress(done[0], total)

        return update, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="shape", file=sys.stderr, disable=not progress,
               mininterval=0.5, dynamic_ncols=True)
    return bar.update, bar.close


def _prepare_file(path: Path, num_points: int, up: str, channels: int | None = None) -> np.ndarray:
    from core.data.io import load_point_cloud
    from core.data.preprocess import prepare_points

    cloud = load_point_cloud(path, num_samples=max(4 * num_points, 2048), channels=channels)
    return prepare_points(cloud.xyz, num_points=num_points, up_axis=up, method="fps_dataset")


def _build_from_files(lay: DatasetLayout, sources: list, num_points: int, up: str, progress,
                      workers: int | None, channels: int | None = None):
    n = len(sources)
    pts = np.empty((n, num_points, 3), dtype=np.float32)
    errors: list[str] = []
    update, close = _progress_bar(progress, n, f"caching {lay.root.name}")

    def work(i: int) -> None:
        try:
            pts[i] = _prepare_file(sources[i][0], num_points, up, channels)
        except T3DError as exc:
            errors.append(str(exc))

    workers = workers or min(8, os.cpu_count() or 1)
    try:  # the bar / callback is only touched from this (the calling) thread
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                for _ in ex.map(work, range(n), chunksize=16):
                    update(1)
        else:
            for i in range(n):
                work(i)
                update(1)
    finally:
        close()
    if errors:
        raise DatasetError(f"{lay.root}: {len(errors)} of {n} shapes could not be read; first: {errors[0]}")
    labels = np.fromiter((s[1] for s in sources), dtype=np.int64, count=n)
    return pts, labels, [s[2] for s in sources]


def _build_from_h5(lay: DatasetLayout, files: list[Path], num_points: int, up: str, progress):
    import h5py

    from core.data.preprocess import prepare_points

    chunks, labels, ids = [], [], []
    datas = []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                data = np.asarray(h["data"][...], dtype=np.float32)
                lab = np.asarray(h["label"][...]).reshape(-1).astype(np.int64)
        except (OSError, KeyError) as exc:
            raise DatasetError(f"{f}: not a readable dataset HDF5 file ({exc})") from None
        if data.ndim != 3 or data.shape[2] < 3 or len(data) != len(lab):
            raise DatasetError(f"{f}: 'data' {data.shape} and 'label' {lab.shape} do not match (N, P, 3) / (N,)")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(lay.class_names)):
            raise DatasetError(f"{f}: labels go up to {lab.max()} but the dataset has "
                               f"{len(lay.class_names)} class names")
        datas.append((f, data, lab))
    total = sum(len(d[2]) for d in datas)
    update, close = _progress_bar(progress, total, f"caching {lay.root.name}")
    try:
        for f, data, lab in datas:
            names = _h5_shape_names(f, len(lab))
            out = np.empty((len(data), num_points, 3), dtype=np.float32)
            for i in range(len(data)):
                try:
                    out[i] = prepare_points(data[i, :, :3], num_points=num_points, up_axis=up, method="fps_dataset")
                except T3DError as exc:
                    raise DatasetError(f"{f}: shape {i}: {exc}") from None
                update(1)
            chunks.append(out)
            labels.append(lab)
            ids += names
    finally:
        close()
    return np.concatenate(chunks), np.concatenate(labels), ids


def _h5_shape_names(f: Path, n: int) -> list[str]:
    """Shape ids from ModelNet's ``<file>_id2file.json`` when present, else ``<file>_<index>``."""
    side = f.with_name(f.stem.replace("ply_data_", "ply_data_") + "_id2file.json")
    cand = [side, f.with_name(re.sub(r"(\d+)$", r"_\1", f.stem) + "_id2file.json")]
    for c in cand:
        if c.is_file():
            try:
                names = json.loads(c.read_text())
                if len(names) == n:
                    return [Path(s).stem for s in names]
            except (ValueError, OSError):
                pass
    return [f"{f.stem}_{i:05d}" for i in range(n)]

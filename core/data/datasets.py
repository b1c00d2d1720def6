"""Classification datasets as compact arrays, with a preprocessing cache.

Provisional minimal version: class/split folders of ``.npy`` files (``modelnet40_npy1024``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DatasetArrays:
    """One split of a classification dataset, preprocessed to ``num_points`` per shape."""

    points: np.ndarray  # (N, P, 3) float32, unit sphere
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    shape_ids: list[str] = field(default_factory=list)
    split: str = "train"
    up_axis: str = "z"

    def __len__(self) -> int:
        return len(self.labels)


def cache_dir() -> Path:
    d = Path(os.environ.get("T3DNET_CACHE", Path.home() / ".cache" / "t3dnet"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_split(root: str | os.PathLike, split: str = "train", num_points: int = 1024) -> DatasetArrays:
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for ci, c in enumerate(classes):
        fs = sorted((root / c / split).glob("*.npy"))
        files += fs
        labels += [ci] * len(fs)
    h = hashlib.sha1(f"{root.resolve()}|{split}|{num_points}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache = cache_dir() / f"{root.name}_{split}_{num_points}_{h.hexdigest()[:12]}.npz"
    if cache.exists():
        z = np.load(cache)
        return DatasetArrays(z["points"], z["labels"], classes, [f.stem for f in files], split)
    pts = np.stack([np.load(f)[:num_points].astype(np.float32) for f in files])
    lab = np.asarray(labels, dtype=np.int64)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, points=pts, labels=lab)
    os.replace(tmp, cache)
    return DatasetArrays(pts, lab, classes, [f.stem for f in files], split)

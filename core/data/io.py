"""Read any common 3D file into one :class:`PointCloud`, or fail with a typed one-line error.

The content decides the reader (magic bytes, headers, numeric text, float32 rows); the extension
only breaks ties, and for content we do not recognise it picks the reader that says what is wrong.
Meshes (OFF, OBJ, STL, PLY with faces or triangle strips, GLB/GLTF) are sampled on their surface,
area-weighted and seeded; point formats (PLY, PCD, text, NPY/NPZ, LAS/LAZ, headerless float32
``.bin``) are read as they are; a zip archive holding one such file is read through to it. What a
file holds that is not used (PLY elements, PCD fields, extra columns) is listed in
``PointCloud.notes`` rather than dropped silently.

Libraries are used where they read correctly and fail cleanly, our own parsers where they do not
(checked on the truncated and corrupt files of tests/test_io.py):
- GLB/GLTF through trimesh, LAS/LAZ through laspy.
- OFF, OBJ, STL are ours: trimesh.load returns a partial mesh for a truncated OFF (5 of 12 faces,
  no error), an empty scene with no reason for a truncated or corrupt STL, and an IndexError for an
  OBJ face index past the last vertex.
- PCD is ours: Open3D returns an empty cloud for a truncated file and only prints the reason.
- PLY is ours, so that ignored elements and properties are reported and triangle strips are read.
No reader imports a GUI toolkit.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from core.errors import (ChannelsNeededError, EmptyCloudError, FileReadError, MeshError, T3DError,
                         UnsupportedFormatError)

#: File-dialog groups: kind label -> extensions (lower case, with the dot).
SUPPORTED_FORMATS: dict[str, list[str]] = {
    "Meshes": [".off", ".obj", ".stl", ".ply", ".glb", ".gltf"],
    "Point clouds": [".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts", ".txt", ".csv"],
    "Arrays": [".npy", ".npz"],
    "LiDAR": [".las", ".laz", ".bin"],
}

# extension -> reader name, used only when the content does not decide
_EXT_READER = {
    ".off": "off", ".obj": "obj", ".stl": "stl", ".ply": "ply", ".glb": "gltf", ".gltf": "gltf",
    ".pcd": "pcd", ".xyz": "text", ".xyzn": "text", ".xyzrgb": "text", ".pts": "text", ".txt": "text",
    ".csv": "text", ".npy": "npy", ".npz": "npz", ".las": "las", ".laz": "las", ".bin": "f32", ".zip": "zip",
}
_TEXT_EXTENSIONS = {".xyz", ".xyzn", ".xyzrgb", ".pts", ".txt", ".csv"}

# Peak memory while reading, as a multiple of the file size (text tokens are Python strings).
_MEMORY_FACTOR = {"text": 6, "obj": 24, "off": 24, "las": 16, "gltf": 8}
_DEFAULT_MEMORY_FACTOR = 4

# Coordinates larger than this (LiDAR in UTM metres) are stored relative to `origin`,
# because float32 keeps only ~7 significant digits.
_LARGE_COORDINATE = 1e5

_MAX_CHANNELS = 64


@dataclass
class PointCloud:
    """What was read from one file, ready for preprocessing and display.

    ``xyz`` holds only finite points (rows with NaN/Inf are dropped; ``invalid_points`` counts
    them). For meshes, ``xyz`` are surface samples and the mesh itself is kept for drawing.
    When the file's coordinates are huge (geo-referenced LiDAR), ``xyz + origin`` are the file's
    coordinates; otherwise ``origin`` is None.
    """

    xyz: np.ndarray  # (N, 3) float32
    normals: np.ndarray | None  # (N, 3) float32
    colors: np.ndarray | None  # (N, 3) float32 in [0, 1]
    path: str
    format: str  # the format found in the content, e.g. "ply", "kitti_bin", "zip:obj"
    kind: str  # "mesh" or "points"
    original_points: int  # vertices of a mesh / points in the file
    original_faces: int = 0  # triangles after triangulating polygons and strips
    mesh_vertices: np.ndarray | None = None  # (V, 3) float32
    mesh_faces: np.ndarray | None = None  # (F, 3) int32
    invalid_points: int = 0
    origin: np.ndarray | None = None  # (3,) float64
    channels: int | None = None  # floats per point of a headerless float32 file
    layout: str | None = None  # those floats in words, e.g. "x y z intensity ring"
    up_hint: str | None = None  # up axis the format fixes ("x".."-z"), None when it has no convention
    notes: list[str] = field(default_factory=list)  # what the file held that was not used

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (min, max) of ``xyz``."""
        return self.xyz.min(axis=0), self.xyz.max(axis=0)


@dataclass
class _Raw:
    """A reader's result before validation: float arrays, faces for meshes, what it learnt."""

    xyz: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    faces: np.ndarray | None = None  # (F, 3) int64 for meshes
    is_mesh: bool = False
    fmt: str | None = None  # the format's name when the reader tells it better than the detection
    channels: int | None = None
    layout: str | None = None
    up_hint: str | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Public entry point


def all_extensions() -> list[str]:
    """Every extension in :data:`SUPPORTED_FORMATS`, without duplicates."""
    return sorted({e for exts in SUPPORTED_FORMATS.values() for e in exts})


def readable_extensions() -> list[str]:
    """Extensions that name a reader: every one of :func:`all_extensions` and ``.zip`` (an archive
    of one such file). A folder walk takes these files and skips the rest."""
    return sorted(_EXT_READER)


def check_channels(channels, what: str = "channels") -> int | None:
    """``channels`` (floats per point of a headerless float32 file) as an int, or None when not given.

    Raises:
        T3DError: not a whole number from 3 to the largest layout read; the message starts with ``what``.
    """
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or not 3 <= channels <= _MAX_CHANNELS:
        raise T3DError(f"{what} (floats per point, x y z first) must be a whole number from 3 to {_MAX_CHANNELS}, "
                       f"got {channels!r}")
    return int(channels)


def load_point_cloud(path: str | os.PathLike, num_samples: int = 20000, even: bool = False,
                     seed: int = 0, channels: int | None = None) -> PointCloud:
    """Read a mesh or point cloud file.

    Args:
        path: the file. Its content picks the reader (headers, magic bytes, numeric text, float32
            rows); the extension only breaks ties and explains unrecognised content.
        num_samples: points sampled on a mesh's surface (point files keep all their points).
        even: for meshes, spread the samples evenly (farthest-point refinement of a 4x
            oversample) instead of plain area-weighted random sampling.
        seed: seed of the surface sampling; the same file and seed give the same points.
        channels: floats per point (x, y, z first) of a headerless float32 file such as a LiDAR
            ``.bin``, for when its size and content do not settle it (see :func:`float32_layout`).
            Ignored, with a note, for files in another format.

    Raises:
        FileReadError, UnsupportedFormatError (ChannelsNeededError when ``channels`` is needed),
        EmptyCloudError, MeshError (all T3DError).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    name = os.fspath(path)
    channels = check_channels(channels, f"{name}: channels")
    p = Path(path)
    _check_readable(p, name)
    return _load(p, name, num_samples, even, seed, channels, in_archive=False)


def _load(p: Path, name: str, num_samples: int, even: bool, seed: int, channels: int | None,
          in_archive: bool) -> PointCloud:
    reader, f32_channels = _detect(p, name, channels)
    if reader == "zip":
        if in_archive:
            raise UnsupportedFormatError(f"{name}: an archive inside an archive is not read; extract it first")
        return _load_zip(p, name, num_samples, even, seed, channels)
    _check_memory(p, name, reader)
    try:
        if reader == "f32":
            raw = _read_float32(p, name, f32_channels, detected=channels is None)
        else:
            raw = _READERS[reader](p, name)
    except T3DError:
        raise
    except MemoryError:
        raise FileReadError(f"{name}: not enough memory to read this file") from None
    except Exception as exc:  # a library's own failure on a corrupt file
        raise FileReadError(f"{name}: cannot read as {reader.upper()}: {type(exc).__name__}: {exc}") from None
    fmt = raw.fmt or (p.suffix.lower()[1:] if reader == "text" and p.suffix.lower() in _TEXT_EXTENSIONS
                      else reader)
    if channels is not None and reader != "f32":
        raw.notes.append(f"channels={channels} ignored: the file is {fmt.upper()}, not headerless float32")
    return _finish(raw, name, fmt, num_samples, even, seed)


# ---------------------------------------------------------------------------------------------
# Checks before reading


def _check_readable(p: Path, name: str) -> None:
    if not p.exists():
        raise FileReadError(f"{name}: no such file")
    if p.is_dir():
        raise FileReadError(f"{name}: is a folder, not a file")
    if not p.is_file():
        raise FileReadError(f"{name}: not a regular file")
    if not os.access(p, os.R_OK):
        raise FileReadError(f"{name}: permission denied")
    if p.stat().st_size == 0:
        raise EmptyCloudError(f"{name}: the file is empty (0 bytes)")


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _check_memory(p: Path, name: str, reader: str) -> None:
    size = p.stat().st_size
    need = size * _MEMORY_FACTOR.get(reader, _DEFAULT_MEMORY_FACTOR)
    have = available_memory()
    if need > have:
        raise FileReadError(f"{name}: too large to read ({size / 2**30:.1f} GiB file needs about "
                            f"{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB of memory available)")


# ---------------------------------------------------------------------------------------------
# Which reader: the content first, the extension second


def _detect(p: Path, name: str, channels: int | None) -> tuple[str, int | None]:
    """Reader for the file, and the floats per point when it is headerless float32.

    Recognised content (magic bytes, headers, numeric text, a binary STL whose size matches its
    triangle count) decides whatever the extension says. Other binary content is tried as float32
    rows (:func:`float32_layout`). Content that is neither goes to the extension's reader, which
    says what is wrong with it; with no known extension it is refused as an unknown format.
    """
    ext = p.suffix.lower()
    found, is_text = _sniff(p)
    if found == "zip":
        found = "npz" if ext == ".npz" or _zip_is_npz(p) else "zip"
    if found is not None:
        return found, None
    by_ext = _EXT_READER.get(ext)
    if not is_text:
        if channels is not None:
            return "f32", channels
        if _binary_stl_size_matches(p):
            return "stl", None
        fit = float32_layout(p)
        if len(fit.plausible) == 1:
            return "f32", fit.plausible[0]
        if fit.plausible:
            raise ChannelsNeededError(f"{name}: float32 points, but the layout is ambiguous "
                                      f"({_either(fit.plausible)} floats per point fit); say which with "
                                      f"--channels N", fit.plausible)
        if by_ext in (None, "f32") and fit.looks_like_floats:
            raise ChannelsNeededError(f"{name}: looks like float32 values, but no layout of "
                                      f"{_either(fit.dividing)} floats per point fits its content; if it "
                                      f"holds float32 points, say how many floats per point with --channels N",
                                      fit.dividing)
        if by_ext == "f32":
            problem = _float32_size_problem(p) or "not float32 point data (the values are not plausible coordinates)"
            raise FileReadError(f"{name}: {problem}")
    if by_ext not in (None, "f32"):
        return by_ext, None
    if by_ext == "f32":
        raise FileReadError(f"{name}: text that is not a list of points, where float32 points were expected")
    raise UnsupportedFormatError(f"{name}: unknown format (extension '{p.suffix or 'none'}', and the content "
                                 f"is not PLY, OFF, PCD, OBJ, STL, NPY, LAS, glTF, zip, numeric text or "
                                 f"float32 points)")


def _sniff(p: Path) -> tuple[str | None, bool]:
    """Reader named by the file's first bytes (None when they name none), and whether they are text."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(4096)
    low = head.lstrip().lower()
    if head.startswith(b"\x93NUMPY"):
        return "npy", False
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip archive (an empty one: end record only)
        return "zip", False
    if head.startswith(b"LASF"):
        return "las", False
    if head.startswith(b"glTF"):
        return "gltf", False
    if low.startswith(b"ply"):
        return "ply", False
    first = next((ln for ln in low.splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")), b"")
    if re.match(rb"\s*(st)?c?n?4?off", first) and not first.lstrip().startswith(b"offset"):
        return "off", False
    if low.startswith((b"# .pcd", b"version")) or (b"\nfields " in low and b"\ndata " in low):
        return "pcd", False
    if low.startswith(b"solid") and b"facet" in low:
        return "stl", False
    if not _looks_like_text(head):
        return None, False
    if low.startswith(b"{") and b'"asset"' in head:
        return "gltf", True
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if size > len(head):
        lines = lines[:-1]  # possibly cut in the middle
    lines = [ln.strip() for ln in lines if ln.strip()]
    if lines and any(re.match(r"^(v|f|vn|vt)\s", ln) for ln in lines) and \
            all(re.match(r"^(#|(v|f|vn|vt|vp|o|g|s|l|p|usemtl|mtllib)(\s|$))", ln) for ln in lines):
        return "obj", True
    numeric = [ln for ln in lines if _NUMERIC_ROW.match(ln)]
    if numeric and len(numeric) >= max(1, len(lines) - 3):
        return "text", True
    return None, True


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    b = np.frombuffer(head, np.uint8)
    return bool((((b >= 32) & (b != 127)) | (b == 9) | (b == 10) | (b == 13)).mean() >= 0.95)


def _binary_stl_size_matches(p: Path) -> bool:
    size = p.stat().st_size
    if size < 84:
        return False
    with open(p, "rb") as f:
        f.seek(80)
        count = struct.unpack("<I", f.read(4))[0]
    return size == 84 + 50 * count


_NUMERIC_ROW = re.compile(r"^[-+]?(\d|\.\d|nan|inf)[\w.+\-]*([\s,;]+[-+]?(\d|\.\d|nan|inf)[\w.+\-]*)+$", re.I)


def _either(counts: list[int]) -> str:
    """'4', '4 or 5', '3, 4 or 6'."""
    words = [str(c) for c in counts]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# ---------------------------------------------------------------------------------------------
# Validation, NaN removal, mesh sampling


def _finish(raw: _Raw, name: str, fmt: str, num_samples: int, even: bool, seed: int) -> PointCloud:
    xyz = np.asarray(raw.xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise FileReadError(f"{name}: expected 3 coordinates per point, got an array of shape {xyz.shape}")
    n = len(xyz)
    if n == 0:
        raise EmptyCloudError(f"{name}: the file contains no points")
    finite = np.isfinite(xyz).all(axis=1)
    n_ok = int(finite.sum())
    if n_ok == 0:
        raise EmptyCloudError(f"{name}: all {n} points are NaN or infinite")

    origin = None
    if raw.is_mesh:
        if raw.faces is None or len(raw.faces) == 0:
            raise MeshError(f"{name}: the mesh has {n} vertices but no faces")
        faces = np.asarray(raw.faces, dtype=np.int64)
        if faces.min() < 0 or faces.max() >= n:
            raise MeshError(f"{name}: face indices out of range (vertex count {n})")
        good = finite[faces].all(axis=1)
        faces = faces[good]
        if len(faces) == 0:
            raise MeshError(f"{name}: every face touches a NaN/infinite vertex")
        verts, origin = _recentre_if_huge(xyz.astype(np.float64, copy=False))
        colors = _clean_colors(raw.colors, n)
        s_xyz, s_nrm, s_col = sample_surface(verts, faces, num_samples, even=even, seed=seed,
                                             vertex_colors=colors, name=name)
        return PointCloud(
            xyz=s_xyz, normals=s_nrm, colors=s_col, path=name, format=fmt, kind="mesh",
            original_points=n, original_faces=int(len(raw.faces)),
            mesh_vertices=verts.astype(np.float32), mesh_faces=faces.astype(np.int32),
            invalid_points=n - n_ok, origin=origin, **_learnt(raw),
        )

    keep = None if n_ok == n else finite
    xyz64 = xyz if keep is None else xyz[keep]
    xyz32, origin = _recentre_if_huge(xyz64)
    normals = _take(raw.normals, keep, n)
    colors = _clean_colors(_take(raw.colors, keep, n), len(xyz32))
    if normals is not None:
        normals = np.nan_to_num(normals.astype(np.float32, copy=False))
    return PointCloud(
        xyz=np.ascontiguousarray(xyz32, dtype=np.float32), normals=normals, colors=colors, path=name,
        format=fmt, kind="points", original_points=n, original_faces=0, invalid_points=n - n_ok,
        origin=origin, **_learnt(raw),
    )


def _learnt(raw: _Raw) -> dict:
    return {"channels": raw.channels, "layout": raw.layout, "up_hint": raw.up_hint, "notes": list(raw.notes)}


def _take(a: np.ndarray | None, keep: np.ndarray | None, n: int) -> np.ndarray | None:
    if a is None or len(a) != n:
        return None
    return a if keep is None else a[keep]


def _recentre_if_huge(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if xyz.dtype == np.float64 and len(xyz) and np.abs(xyz).max() > _LARGE_COORDINATE:
        origin = np.floor((xyz.min(axis=0) + xyz.max(axis=0)) / 2)
        return (xyz - origin).astype(np.float32), origin
    return xyz.astype(np.float32, copy=False), None


def _clean_colors(colors: np.ndarray | None, n: int) -> np.ndarray | None:
    if colors is None or len(colors) != n:
        return None
    c = np.asarray(colors, dtype=np.float32)[:, :3]
    if c.shape[1] != 3:
        return None
    c = np.nan_to_num(c)
    if c.max(initial=0) > 1.0:
        c = c / (65535.0 if c.max() > 255.0 else 255.0)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, even: bool = False, seed: int = 0,
                   vertex_colors: np.ndarray | None = None, name: str = "mesh"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Area-weighted random points on a triangle mesh, with the faces' normals.

    ``even=True`` draws 4x more points and keeps ``n`` of them by farthest point sampling, which
    spreads them evenly (no clumps, no holes). Returns (xyz, normals, colors or None), float32.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    double_area = np.linalg.norm(cross, axis=1)
    total = double_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise MeshError(f"{name}: the mesh has zero surface area (all {len(f)} faces are degenerate)")
    rng = np.random.default_rng(seed)
    m = n * 4 if even else n
    cum = np.cumsum(double_area)
    idx = np.minimum(np.searchsorted(cum, rng.random(m) * total, side="right"), len(f) - 1)
    r1, r2 = np.sqrt(rng.random(m)), rng.random(m)
    w0, w1, w2 = 1 - r1, r1 * (1 - r2), r1 * r2
    pts = w0[:, None] * a[idx] + w1[:, None] * b[idx] + w2[:, None] * c[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        fn = cross / double_area[:, None]
    nrm = np.nan_to_num(fn[idx])
    col = None
    if vertex_colors is not None:
        vc = vertex_colors.astype(np.float64)
        col = w0[:, None] * vc[f[idx, 0]] + w1[:, None] * vc[f[idx, 1]] + w2[:, None] * vc[f[idx, 2]]
    if even:
        from core.data.preprocess import farthest_point_indices

        keep = farthest_point_indices(pts, n, seed=seed, approximate=True)
        pts, nrm = pts[keep], nrm[keep]
        col = None if col is None else col[keep]
    return (pts.astype(np.float32), nrm.astype(np.float32),
            None if col is None else np.clip(col, 0, 1).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Text helpers


def _read_text(p: Path, name: str) -> str:
    data = p.read_bytes()
    if b"\x00" in data[:4096]:
        raise FileReadError(f"{name}: binary content where text was expected")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _floats(tokens: list[str], name: str, what: str) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next((t for t in tokens if not _is_number(t)), "?")
        raise FileReadError(f"{name}: {what}: '{bad[:30]}' is not a number") from None


def _is_number(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def _polygons_to_triangles(polys: list[list[int]]) -> np.ndarray:
    tris = []
    for poly in polys:
        for k in range(1, len(poly) - 1):
            tris.append((poly[0], poly[k], poly[k + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _faces_from_rows(rows: list[str], name: str) -> np.ndarray:
    """Faces from 'n i0 i1 ... [colour]' rows (OFF, ASCII PLY); polygons are fan-triangulated."""
    split = [r.split() for r in rows]
    if split and all(len(s) == len(split[0]) for s in split):
        arr = _floats([t for s in split for t in s], name, "face").reshape(len(split), -1).astype(np.int64)
        k = arr[:, 0]
        if (k == 3).all():
            return arr[:, 1:4]
        if (k == 4).all():
            return np.concatenate([arr[:, [1, 2, 3]], arr[:, [1, 3, 4]]])
    polys = []
    for s in split:
        try:
            k = int(s[0])
            polys.append([int(t) for t in s[1:1 + k]])
        except (ValueError, IndexError):
            raise FileReadError(f"{name}: malformed face row '{' '.join(s)[:40]}'") from None
        if len(polys[-1]) != k:
            raise FileReadError(f"{name}: face row has fewer indices than its count (truncated?)")
    return _polygons_to_triangles(polys)


# ---------------------------------------------------------------------------------------------
# PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _ply_type(t: str, name: str) -> str:
    if t not in _PLY_TYPES:
        raise FileReadError(f"{name}: unknown PLY property type '{t}'")
    return _PLY_TYPES[t]


_PLY_NORMALS = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_PLY_COLORS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_PLY_INDEX_LISTS = ("vertex_indices", "vertex_index")
_PLY_MESH_ELEMENTS = ("face", "tristrips")


def _read_ply(p: Path, name: str) -> _Raw:
    data = p.read_bytes()
    if not data[:3].lower() == b"ply":
        raise FileReadError(f"{name}: not a PLY file (no 'ply' header line)")
    m = re.search(rb"end_header[ \t]*\r?\n", data[:1 << 20])
    if not m:
        raise FileReadError(f"{name}: PLY header has no 'end_header' (truncated or corrupt)")
    header = data[:m.start()].decode("latin-1").splitlines()
    body_start = m.end()
    fmt, elements = None, []
    for line in header[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element" and len(tok) >= 3:
            try:
                elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
            except ValueError:
                raise FileReadError(f"{name}: bad PLY element line '{line}'") from None
        elif tok[0] == "property" and elements:
            if tok[1] == "list" and len(tok) >= 5:
                elements[-1]["props"].append((tok[4], "list", _ply_type(tok[2], name), _ply_type(tok[3], name)))
            elif len(tok) >= 3:
                elements[-1]["props"].append((tok[2], _ply_type(tok[1], name)))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise FileReadError(f"{name}: unknown PLY format '{fmt}'")
    vertex = next((e for e in elements if e["name"] == "vertex"), None)
    if vertex is None:
        raise FileReadError(f"{name}: PLY file has no 'vertex' element")
    if fmt == "ascii":
        tables = _ply_ascii(data[body_start:].decode("latin-1"), elements, name)
    else:
        tables = _ply_binary(data, body_start, elements, "<" if fmt == "binary_little_endian" else ">", name)
    v = tables["vertex"]
    names = set(v)
    if not {"x", "y", "z"} <= names:
        raise FileReadError(f"{name}: PLY vertices have no x, y, z properties")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    normals, nkeys = _pick3_keys(v, *_PLY_NORMALS)
    colors, ckeys = _pick3_keys(v, *_PLY_COLORS)
    if colors is not None and any(v[k].dtype.kind in "ui" for k in ckeys):
        colors = colors / (65535.0 if colors.max() > 255 else 255.0)
    notes = _ply_notes(elements, {"x", "y", "z", *nkeys, *ckeys})
    tris = [tables[e] for e in _PLY_MESH_ELEMENTS if e in tables and len(tables[e])]
    if tris:
        return _Raw(xyz, normals, colors, np.concatenate(tris), is_mesh=True, notes=notes)
    return _Raw(xyz, normals, colors, notes=notes)


def _ply_notes(elements: list[dict], used_vertex: set[str]) -> list[str]:
    """One sentence for each PLY element or property that the reader does not use."""
    notes = []
    for el in elements:
        props = [pr[0] for pr in el["props"]]
        if el["name"] == "vertex":
            unused = [pr for pr in props if pr not in used_vertex]
            if unused:
                notes.append(f"PLY vertex properties ignored: {', '.join(unused)}")
        elif el["name"] in _PLY_MESH_ELEMENTS:
            lists = [pr[0] for pr in el["props"] if pr[1] == "list"]
            if el["count"] and not lists:
                notes.append(f"PLY element '{el['name']}' ({el['count']:,} rows) has no vertex index list: ignored")
            unused = props[1:] if lists and props[0] == lists[0] else [pr for pr in props if pr not in lists[:1]]
            if unused:
                notes.append(f"PLY {el['name']} properties ignored: {', '.join(unused)}")
        elif el["count"]:
            notes.append(f"PLY element '{el['name']}' ({el['count']:,} rows) ignored")
    return notes


def _pick3(table: dict, *choices: tuple[str, str, str]) -> np.ndarray | None:
    return _pick3_keys(table, *choices)[0]


def _pick3_keys(table: dict, *choices: tuple[str, str, str]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The first triple of columns present in ``table``, stacked, and their names."""
    for keys in choices:
        if all(k in table for k in keys):
            return np.stack([table[k] for k in keys], axis=1).astype(np.float64), keys
    return None, ()


def _strips_to_triangles(strips: list[np.ndarray]) -> np.ndarray:
    """Triangles of triangle strips: -1 restarts a strip, every second triangle is flipped back to
    the strip's winding, and the degenerate triangles that join strips are dropped."""
    tris = []
    for strip in strips:
        strip = np.asarray(strip, dtype=np.int64)
        for part in np.split(strip, np.flatnonzero(strip < 0)):
            part = part[part >= 0]
            if len(part) < 3:
                continue
            t = np.stack([part[:-2], part[1:-1], part[2:]], axis=1)
            t[1::2, [0, 1]] = t[1::2, [1, 0]]
            tris.append(t)
    if not tris:
        return np.zeros((0, 3), np.int64)
    t = np.concatenate(tris)
    return t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]


def _ply_binary(data: bytes, offset: int, elements: list[dict], endian: str, name: str) -> dict:
    tables: dict = {}
    needed = {"vertex"} | {e["name"] for e in elements if e["name"] in _PLY_MESH_ELEMENTS}
    for el in elements:
        props, count = el["props"], el["count"]
        if needed <= tables.keys():
            break  # the rest (edges, materials, ...) is not needed
        if el["name"] == "vertex" and any(pr[1] == "list" for pr in props):
            raise UnsupportedFormatError(f"{name}: PLY vertices with list properties are not supported")
        if not any(pr[1] == "list" for pr in props):
            dt = np.dtype([(pr[0], endian + pr[1]) for pr in props])
            end = offset + dt.itemsize * count
            if end > len(data):
                raise FileReadError(f"{name}: truncated PLY file: '{el['name']}' needs {end} bytes, "
                                    f"the file has {len(data)}")
            arr = np.frombuffer(data, dt, count, offset)
            tables[el["name"]] = {pr[0]: arr[pr[0]] for pr in props}
            offset = end
            continue
        tris, offset = _ply_binary_lists(data, offset, el, endian, name)
        if el["name"] in _PLY_MESH_ELEMENTS:
            tables[el["name"]] = tris
    return tables


def _ply_binary_lists(data: bytes, offset: int, el: dict, endian: str, name: str):
    """Walk an element with list properties; triangles of its index list (polygons or strips)."""
    props, count = el["props"], el["count"]
    strips = el["name"] == "tristrips"
    if count == 0:
        return np.zeros((0, 3), np.int64), offset
    if len(props) == 1 and not strips:  # only the index list: try fixed-size triangles / quads
        _, _, ct, it = props[0]
        cdt = np.dtype(endian + ct)
        if offset + cdt.itemsize > len(data):
            raise FileReadError(f"{name}: truncated PLY file: face data missing")
        k = int(np.frombuffer(data, cdt, 1, offset)[0])
        dt = np.dtype([("n", endian + ct), ("i", endian + it, (k,))])
        end = offset + dt.itemsize * count
        if k in (3, 4) and end <= len(data):
            arr = np.frombuffer(data, dt, count, offset)
            if (arr["n"] == k).all():
                idx = arr["i"].astype(np.int64)
                tri = idx if k == 3 else np.concatenate([idx[:, [0, 1, 2]], idx[:, [0, 2, 3]]])
                return tri, end
    lists = []
    buf = memoryview(data)
    first_list = next((pr[0] for pr in props if pr[1] == "list"), None)
    for _ in range(count):
        for pr in props:
            if pr[1] == "list":
                cdt, idt = np.dtype(endian + pr[2]), np.dtype(endian + pr[3])
                if offset + cdt.itemsize > len(data):
                    raise FileReadError(f"{name}: truncated PLY file in element '{el['name']}'")
                k = int(np.frombuffer(buf, cdt, 1, offset)[0])
                offset += cdt.itemsize
                if k < 0 or offset + k * idt.itemsize > len(data):
                    raise FileReadError(f"{name}: truncated PLY file in element '{el['name']}'")
                vals = np.frombuffer(buf, idt, k, offset)
                offset += k * idt.itemsize
                if pr[0] in _PLY_INDEX_LISTS or (pr[0] == first_list and not any(
                        q[0] in _PLY_INDEX_LISTS for q in props)):
                    lists.append(vals.astype(np.int64))
            else:
                offset += np.dtype(pr[1]).itemsize
    if offset > len(data):
        raise FileReadError(f"{name}: truncated PLY file in element '{el['name']}'")
    if strips:
        return _strips_to_triangles(lists), offset
    return _polygons_to_triangles([v.tolist() for v in lists]), offset


def _ply_ascii(body: str, elements: list[dict], name: str) -> dict:
    lines = [ln for ln in body.splitlines() if ln.strip()]
    tables: dict = {}
    pos = 0
    for el in elements:
        count, props = el["count"], el["props"]
        rows = lines[pos:pos + count]
        if len(rows) < count:
            raise FileReadError(f"{name}: truncated PLY file: '{el['name']}' has {len(rows)} of {count} rows")
        pos += count
        if el["name"] == "vertex":
            tokens = " ".join(rows).split()
            if len(tokens) != count * len(props):
                raise FileReadError(f"{name}: PLY vertex rows do not have {len(props)} values each")
            arr = _floats(tokens, name, "vertex").reshape(count, len(props))
            tables["vertex"] = {pr[0]: arr[:, i].astype(pr[1]) for i, pr in enumerate(props)}
        elif el["name"] in _PLY_MESH_ELEMENTS and count and any(pr[1] == "list" for pr in props):
            # the index list first, other properties after it
            if props[0][1] != "list" or any(pr[1] == "list" for pr in props[1:]):
                raise UnsupportedFormatError(f"{name}: ASCII PLY {el['name']} rows with the index list not "
                                             f"first, or with several lists, are not supported")
            if el["name"] == "face":
                tables["face"] = _faces_from_rows(rows, name)
            else:
                tables["tristrips"] = _strips_to_triangles([_ascii_list(r, name) for r in rows])
    return tables


def _ascii_list(row: str, name: str) -> np.ndarray:
    """The leading 'k i0 ... ik-1' list of an ASCII PLY row."""
    tok = row.split()
    try:
        k = int(tok[0])
        vals = [int(t) for t in tok[1:1 + k]]
    except (ValueError, IndexError):
        raise FileReadError(f"{name}: malformed PLY list row '{row[:40]}'") from None
    if len(vals) != k:
        raise FileReadError(f"{name}: PLY list row has fewer indices than its count (truncated?)")
    return np.asarray(vals, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# OFF, OBJ, STL, GLTF


def _read_off(p: Path, name: str) -> _Raw:
    text = _read_text(p, name)
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise EmptyCloudError(f"{name}: the file contains no data")
    m = re.match(r"^(ST)?(C)?(N)?(4)?(n)?OFF(\s+BINARY)?", lines[0], re.I)
    if not m:
        raise FileReadError(f"{name}: not an OFF file (first line '{lines[0][:30]}')")
    if m.group(6):
        raise UnsupportedFormatError(f"{name}: binary OFF is not supported")
    rest = lines[0][m.end():].split()  # ModelNet writes "OFF490 1234 0" on one line
    body = lines[1:]
    if not rest:
        if not body:
            raise FileReadError(f"{name}: OFF file has no vertex/face counts (truncated)")
        rest, body = body[0].split(), body[1:]
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise FileReadError(f"{name}: bad OFF counts line '{' '.join(rest)[:40]}'") from None
    if len(body) < nv + nf:
        raise FileReadError(f"{name}: truncated OFF file: {len(body)} rows for {nv} vertices and {nf} faces")
    vrows = [r.split() for r in body[:nv]]
    ncol = min(len(r) for r in vrows) if vrows else 3
    if ncol < 3:
        raise FileReadError(f"{name}: OFF vertex row with fewer than 3 coordinates")
    arr = _floats([t for r in vrows for t in r[:ncol]], name, "vertex").reshape(nv, ncol)
    normals = arr[:, 3:6] if m.group(3) and ncol >= 6 else None
    colors = None
    if m.group(2):
        c0 = 6 if m.group(3) else 3
        if ncol >= c0 + 3:
            colors = arr[:, c0:c0 + 3]
    faces = _faces_from_rows(body[nv:nv + nf], name) if nf else None
    return _Raw(arr[:, :3], normals, colors, faces, is_mesh=True)


def _read_obj(p: Path, name: str) -> _Raw:
    text = _read_text(p, name)
    vtok, polys, vcols = [], [], []
    skipped = {"l": 0, "p": 0}  # polylines and point elements: nothing to sample
    for line in text.splitlines():
        if line[:2] in ("l ", "p "):
            skipped[line[0]] += 1
        elif line.startswith("v "):
            t = line.split()
            vtok.append(t[1:4])
            if len(t) >= 7:
                vcols.append(t[4:7])
        elif line.startswith("f "):
            idx = []
            for t in line.split()[1:]:
                try:
                    idx.append(int(t.split("/", 1)[0]))
                except ValueError:
                    raise FileReadError(f"{name}: malformed OBJ face '{line[:40]}'") from None
            polys.append(idx)
    if any(len(t) < 3 for t in vtok):
        raise FileReadError(f"{name}: OBJ vertex with fewer than 3 coordinates")
    nv = len(vtok)
    xyz = _floats([t for r in vtok for t in r], name, "vertex").reshape(nv, 3)
    # 1-based indices; negative ones count back from the vertices read so far (approximated by nv)
    polys = [[i - 1 if i > 0 else nv + i for i in poly] for poly in polys]
    colors = _floats([t for r in vcols for t in r], name, "colour").reshape(-1, 3) if len(vcols) == nv else None
    notes = [f"OBJ '{k}' elements ({n:,}) ignored" for k, n in skipped.items() if n]
    return _Raw(xyz, None, colors, _polygons_to_triangles(polys), is_mesh=True, notes=notes)


def _read_stl(p: Path, name: str) -> _Raw:
    data = p.read_bytes()
    n_bin = struct.unpack("<I", data[80:84])[0] if len(data) >= 84 else -1
    if len(data) >= 84 and len(data) == 84 + 50 * n_bin:
        dt = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
        tri = np.frombuffer(data, dt, n_bin, 84)["v"].astype(np.float64)
    elif data.lstrip()[:5].lower() == b"solid":
        text = data.decode("latin-1")
        verts = re.findall(r"vertex\s+(\S+)\s+(\S+)\s+(\S+)", text)
        if len(verts) % 3:
            raise FileReadError(f"{name}: truncated ASCII STL ({len(verts)} vertices, not a multiple of 3)")
        tri = _floats([t for v in verts for t in v], name, "vertex").reshape(-1, 3, 3)
    else:
        raise FileReadError(f"{name}: not a valid STL file (binary size does not match its triangle "
                            f"count, and it does not start with 'solid')")
    if len(tri) == 0:
        raise EmptyCloudError(f"{name}: the STL file has no triangles")
    verts, inverse = np.unique(tri.reshape(-1, 3), axis=0, return_inverse=True)
    return _Raw(verts, None, None, inverse.reshape(-1, 3), is_mesh=True)


def _read_gltf(p: Path, name: str) -> _Raw:
    import trimesh

    try:
        scene = trimesh.load(p, force="scene")
    except Exception as exc:
        raise FileReadError(f"{name}: cannot read glTF: {exc}") from None
    meshes = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh)] if hasattr(scene, "dump") else []
    if not meshes:
        clouds = [g for g in getattr(scene, "geometry", {}).values() if hasattr(g, "vertices")]
        if clouds:
            return _Raw(np.concatenate([np.asarray(c.vertices) for c in clouds]), fmt=_gltf_name(p), up_hint="y")
        raise MeshError(f"{name}: the glTF file contains no triangle mesh")
    mesh = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
    return _Raw(np.asarray(mesh.vertices, dtype=np.float64), None, None,
                np.asarray(mesh.faces, dtype=np.int64), is_mesh=True, fmt=_gltf_name(p), up_hint="y")


def _gltf_name(p: Path) -> str:
    """'glb' for binary glTF (its magic bytes), 'gltf' for the JSON form."""
    with open(p, "rb") as f:
        return "glb" if f.read(4) == b"glTF" else "gltf"


# ---------------------------------------------------------------------------------------------
# PCD

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}


def _read_pcd(p: Path, name: str) -> _Raw:
    data = p.read_bytes()
    m = re.search(rb"^DATA[ \t]+(\w+)[ \t]*\r?\n?", data[:1 << 16], re.M)
    if not m:
        raise FileReadError(f"{name}: PCD header has no DATA line (truncated or not a PCD file)")
    hdr: dict[str, list[str]] = {}
    for line in data[:m.start()].decode("latin-1").splitlines():
        tok = line.split()
        if tok and not tok[0].startswith("#"):
            hdr[tok[0].upper()] = tok[1:]
    mode = m.group(1).decode().lower()
    fields = hdr.get("FIELDS")
    if not fields:
        raise FileReadError(f"{name}: PCD header has no FIELDS line")
    nf = len(fields)
    try:
        sizes = [int(s) for s in hdr.get("SIZE", ["4"] * nf)]
        types = [t.upper() for t in hdr.get("TYPE", ["F"] * nf)]
        counts = [int(c) for c in hdr.get("COUNT", ["1"] * nf)]
        if "POINTS" in hdr:
            npts = int(hdr["POINTS"][0])
        else:
            npts = int(hdr["WIDTH"][0]) * int(hdr.get("HEIGHT", ["1"])[0])
    except (ValueError, KeyError, IndexError):
        raise FileReadError(f"{name}: malformed PCD header (SIZE/TYPE/COUNT/POINTS)") from None
    if not (len(sizes) == len(types) == len(counts) == nf):
        raise FileReadError(f"{name}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ")
    names, seen = [], set()
    for f in fields:
        nm = f if f not in seen else f"{f}_{len(seen)}"
        seen.add(nm)
        names.append(nm)
    try:
        dts = [np.dtype("<" + _PCD_TYPES[(t, s)]) for t, s in zip(types, sizes)]
    except KeyError:
        raise FileReadError(f"{name}: unsupported PCD field type in TYPE/SIZE") from None
    body = data[m.end():]
    cols: dict[str, np.ndarray] = {}
    if mode == "ascii":
        rows = [ln for ln in body.decode("latin-1").splitlines() if ln.strip()]
        width = sum(counts)
        if len(rows) < npts:
            raise FileReadError(f"{name}: truncated PCD file: {len(rows)} of {npts} points")
        tokens = " ".join(rows[:npts]).split()
        if len(tokens) != npts * width:
            raise FileReadError(f"{name}: PCD rows do not have {width} values each")
        arr = _floats(tokens, name, "point").reshape(npts, width)
        c = 0
        for nm, dt, k in zip(names, dts, counts):
            col = arr[:, c:c + k]
            if dt.kind in "ui" and nm in ("rgb", "rgba"):
                col = col.astype(dt)
            elif nm in ("rgb", "rgba"):
                col = col.astype(np.float32)
            cols[nm] = col[:, 0] if k == 1 else col
            c += k
    elif mode == "binary":
        dt = np.dtype([(nm, d, (k,)) if k > 1 else (nm, d) for nm, d, k in zip(names, dts, counts)])
        if len(body) < dt.itemsize * npts:
            raise FileReadError(f"{name}: truncated PCD file: {len(body)} bytes of data for {npts} points "
                                f"x {dt.itemsize} bytes")
        arr = np.frombuffer(body, dt, npts)
        cols = {nm: arr[nm] for nm in names}
    elif mode == "binary_compressed":
        if len(body) < 8:
            raise FileReadError(f"{name}: truncated PCD file: compressed data missing")
        csize, usize = struct.unpack("<II", body[:8])
        need = sum(d.itemsize * k for d, k in zip(dts, counts)) * npts
        if usize != need:
            raise FileReadError(f"{name}: corrupt PCD: uncompressed size {usize} differs from {need} expected")
        if usize > 300 * csize + 4096:  # LZF cannot compress that well: a corrupt header
            raise FileReadError(f"{name}: corrupt PCD: {usize} bytes claimed from {csize} compressed bytes")
        if len(body) < 8 + csize:
            raise FileReadError(f"{name}: truncated PCD file: {len(body) - 8} of {csize} compressed bytes")
        try:
            raw = lzf_decompress(body[8:8 + csize], usize)
        except ValueError as exc:
            raise FileReadError(f"{name}: corrupt compressed PCD data ({exc})") from None
        off = 0
        for nm, d, k in zip(names, dts, counts):  # field-major: all x, then all y, ...
            col = np.frombuffer(raw, d, npts * k, off)
            cols[nm] = col if k == 1 else col.reshape(npts, k)
            off += d.itemsize * k * npts
    else:
        raise UnsupportedFormatError(f"{name}: unknown PCD DATA encoding '{mode}'")
    if not {"x", "y", "z"} <= set(cols):
        raise FileReadError(f"{name}: PCD file has no x, y, z fields")
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float64)
    normals, used = _pick3_keys(cols, ("normal_x", "normal_y", "normal_z"), ("nx", "ny", "nz"))
    used = {"x", "y", "z", *used}
    colors = None
    for key in ("rgb", "rgba"):
        if key in cols:
            packed = np.ascontiguousarray(cols[key])
            u = packed.view(np.uint32) if packed.dtype.itemsize == 4 else packed.astype(np.uint32)
            colors = np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1) / 255.0
            used.add(key)
            break
    notes = []
    unused = [f for f in fields if f not in used and f != "_"]  # "_" pads PCL's binary rows
    if unused:
        notes.append(f"PCD fields ignored: {', '.join(unused)}")
    viewpoint = hdr.get("VIEWPOINT", [])
    if viewpoint and _pcd_viewpoint_moves(viewpoint):
        notes.append(f"PCD VIEWPOINT {' '.join(viewpoint)} not applied: points are kept in the file's frame")
    return _Raw(xyz, normals, colors, notes=notes)


def _pcd_viewpoint_moves(viewpoint: list[str]) -> bool:
    """True unless the PCD VIEWPOINT is the identity (0 0 0 1 0 0 0) or unreadable."""
    try:
        v = [float(t) for t in viewpoint]
    except ValueError:
        return False
    return len(v) == 7 and not np.allclose(v, [0, 0, 0, 1, 0, 0, 0])


def lzf_decompress(src: bytes, out_len: int) -> bytes:
    """Decompress LZF data (the codec of PCD ``binary_compressed``) of known output length."""
    out = bytearray(out_len)
    ip = op = 0
    n = len(src)
    try:
        while ip < n:
            ctrl = src[ip]
            ip += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                length = ctrl + 1
                if ip + length > n or op + length > out_len:
                    raise ValueError("literal run past the end")
                out[op:op + length] = src[ip:ip + length]
                ip += length
                op += length
            else:  # back reference
                length = ctrl >> 5
                if length == 7:
                    length += src[ip]
                    ip += 1
                ref = op - ((ctrl & 0x1F) << 8) - src[ip] - 1
                ip += 1
                length += 2
                if ref < 0 or op + length > out_len:
                    raise ValueError("back reference out of range")
                if ref + length <= op:
                    out[op:op + length] = out[ref:ref + length]
                else:  # overlapping: the pattern repeats with period op - ref
                    pattern = bytes(out[ref:op])
                    reps = -(-length // len(pattern))
                    out[op:op + length] = (pattern * reps)[:length]
                op += length
    except IndexError:
        raise ValueError("data ends in the middle of a block") from None
    if op != out_len:
        raise ValueError(f"{op} of {out_len} bytes decoded")
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Text point lists, arrays, LiDAR


def _read_text_points(p: Path, name: str) -> _Raw:
    with open(p, "rb") as f:
        head_bytes = f.read(1 << 16)
        more = bool(f.read(1))
    if b"\x00" in head_bytes:
        raise FileReadError(f"{name}: binary content where text was expected")
    head = head_bytes.decode("latin-1").splitlines()
    if more and head:
        head = head[:-1]  # possibly cut in the middle
    # header lines: anything before the first numeric row (column names, comments)
    start, header = None, []
    for i, ln in enumerate(head[:100]):
        st = ln.strip()
        if not st:
            continue
        if _NUMERIC_ROW.match(st):
            start = i
            break
        header.append(st)
    if start is None:
        if len(head) == 1 and re.fullmatch(r"\s*\d+\s*", head[0]):
            raise EmptyCloudError(f"{name}: the file contains no points")
        raise FileReadError(f"{name}: no rows of numbers found")
    first = head[start].strip()
    sep = "," if "," in first else (";" if ";" in first else None)
    ncol = len(first.split(sep)) if sep else len(first.split())
    skip = start
    if ncol == 1:  # PTS: a single number on the first row is the point count
        skip += 1
        nxt = next((ln.strip() for ln in head[start + 1:] if ln.strip()), "")
        ncol = len(nxt.split(sep)) if sep else len(nxt.split())
    if ncol < 3:
        raise FileReadError(f"{name}: rows have {ncol} value(s); at least x, y, z are needed")
    import warnings

    try:  # numpy's C parser: fast and lean; on any irregularity the slow path explains it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(p, dtype=np.float64, delimiter=sep, skiprows=skip, comments=("#", "//"),
                             ndmin=2, encoding="latin-1")
    except ValueError:
        arr = None
    if arr is None or (arr.size and arr.shape[1] != ncol):
        arr = _text_rows_slow(p, name, skip, sep, ncol)
    if len(arr) == 0:
        raise EmptyCloudError(f"{name}: the file contains no points")
    names = _column_names(header, sep, ncol)
    ext = p.suffix.lower()
    xyz = arr[:, :3]
    normals = colors = None
    used = {0, 1, 2}
    if names:
        idx = {n: i for i, n in enumerate(names)}
        used = set()
        normals = _cols(arr, idx, used, ("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
        colors = _cols(arr, idx, used, ("r", "g", "b"), ("red", "green", "blue"))
        pos = _cols(arr, idx, used, ("x", "y", "z"))
        if pos is not None:
            xyz = pos
        else:
            used |= {0, 1, 2}
    elif ext == ".xyzn" and ncol >= 6:
        normals = arr[:, 3:6]
    elif ext == ".xyzrgb" and ncol >= 6:
        colors = arr[:, 3:6]
    elif ncol == 6:  # x y z + normals (ModelNet resampled) or + colours
        tail = arr[:, 3:6]
        norms = np.linalg.norm(tail, axis=1)
        if np.nanmedian(np.abs(norms - 1)) < 0.05:
            normals = tail
        elif np.nanmin(tail) >= 0:
            colors = tail
    elif ncol == 7:  # PTS: x y z intensity r g b
        colors = arr[:, 4:7]
        used |= {4, 5, 6}
    if not names and (normals is not None or colors is not None) and ncol >= 6 and ncol != 7:
        used |= {3, 4, 5}
    raw = _Raw(xyz, normals, colors)
    unused = [names[i] if names else str(i + 1) for i in range(ncol) if i not in used]
    if unused:
        raw.notes.append(f"text columns not used: {', '.join(unused)}{'' if names else f' (of {ncol})'}")
    if _is_modelnet_text(sep, ncol, names, normals, xyz):
        raw.fmt, raw.up_hint = "modelnet_txt", "y"
    return raw


def _is_modelnet_text(sep: str | None, ncol: int, names: list[str] | None, normals: np.ndarray | None,
                      xyz: np.ndarray) -> bool:
    """The PointNet++ ``modelnet40_normal_resampled`` rows: x,y,z,nx,ny,nz with unit normals, inside
    about the unit sphere (y up, unlike the ModelNet OFF meshes)."""
    if sep != "," or ncol != 6 or names or normals is None or not len(xyz):
        return False
    radius = np.linalg.norm(xyz, axis=1)
    return bool(np.nanmax(radius) <= 1.1)


def _text_rows_slow(p: Path, name: str, skip: int, sep: str | None, ncol: int) -> np.ndarray:
    """Row-by-row parse that names the first bad row (used when np.loadtxt refuses the file)."""
    lines = _read_text(p, name).splitlines()[skip:]
    rows = [ln.replace(sep, " ") if sep else ln for ln in lines
            if ln.strip() and not ln.lstrip().startswith(("#", "//"))]
    arr = np.empty((len(rows), ncol), dtype=np.float64)
    step = 1 << 18
    for lo in range(0, len(rows), step):
        block = rows[lo:lo + step]
        tokens = " ".join(block).split()
        if len(tokens) != ncol * len(block):
            bad = lo + next(i for i, r in enumerate(block) if len(r.split()) != ncol)
            raise FileReadError(f"{name}: data row {bad + 1} has {len(rows[bad].split())} values, the first "
                                f"has {ncol}{' (truncated file?)' if bad == len(rows) - 1 else ''}")
        arr[lo:lo + len(block)] = _floats(tokens, name, "point").reshape(len(block), ncol)
    return arr


def _column_names(header: list[str], sep: str | None, ncol: int) -> list[str] | None:
    if not header:
        return None
    last = header[-1].lstrip("/#").strip().lower()
    names = [t.strip() for t in (last.split(sep) if sep and sep in last else last.split())]
    return names if len(names) == ncol and "x" in names else None


def _cols(arr: np.ndarray, idx: dict, used: set[int], *choices: tuple[str, ...]) -> np.ndarray | None:
    """The first named triple of columns present; their indices are added to ``used``."""
    for keys in choices:
        if all(k in idx for k in keys):
            used.update(idx[k] for k in keys)
            return arr[:, [idx[k] for k in keys]]
    return None


def _array_to_raw(a: np.ndarray, name: str) -> _Raw:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise FileReadError(f"{name}: array of {a.dtype} is not numeric coordinates")
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] < 3:
        raise FileReadError(f"{name}: expected an array of shape (N, 3) or (N, 3+k), got {a.shape}")
    a = a.astype(np.float64, copy=False)
    normals = a[:, 3:6] if a.shape[1] >= 6 else None
    if normals is not None and np.nanmedian(np.abs(np.linalg.norm(normals, axis=1) - 1)) > 0.05:
        normals = None  # not unit vectors: some other attribute
    raw = _Raw(a[:, :3], normals)
    first_unused = 6 if normals is not None else 3
    if a.shape[1] > first_unused:
        raw.notes.append(f"array columns {first_unused + 1} to {a.shape[1]} not used (of {a.shape[1]})"
                         if a.shape[1] > first_unused + 1 else f"array column {a.shape[1]} not used")
    return raw


def _read_npy(p: Path, name: str) -> _Raw:
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PK\x03\x04":
        return _read_npz(p, name)
    if magic != b"\x93NUMPY":
        raise FileReadError(f"{name}: not an NPY file (no NUMPY magic bytes)")
    try:
        a = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise FileReadError(f"{name}: not a readable NPY array ({exc})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        return _npz_to_raw(a, name)
    return _array_to_raw(a, name)


def _read_npz(p: Path, name: str) -> _Raw:
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        return _read_npy(p, name)
    if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise FileReadError(f"{name}: not an NPZ file (not a zip archive)")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise FileReadError(f"{name}: not a readable NPZ archive ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        return _array_to_raw(z, name)
    with z:
        return _npz_to_raw(z, name)


def _npz_to_raw(z, name: str) -> _Raw:
    keys = list(z.files)
    if not keys:
        raise EmptyCloudError(f"{name}: the NPZ archive holds no arrays")
    if "vertices" in keys and "faces" in keys:
        raw = _Raw(np.asarray(z["vertices"], np.float64)[:, :3], None, None,
                   np.asarray(z["faces"], np.int64), is_mesh=True)
        used = {"vertices", "faces"}
    else:
        for k in ("points", "xyz", "pos", "point_cloud", "pc", "data", "arr_0"):
            if k in keys:
                raw = _array_to_raw(z[k], f"{name}['{k}']")
                break
        else:
            cand = [k for k in keys if z[k].ndim == 2 and z[k].shape[1] >= 3]
            if not cand:
                raise FileReadError(f"{name}: no (N, 3) array among {keys}")
            k = cand[0]
            raw = _array_to_raw(z[k], name)
        used = {k}
        if "normals" in keys:
            raw.normals = np.asarray(z["normals"], np.float64)
            used.add("normals")
        for c in ("colors", "colours", "rgb"):
            if c in keys:
                raw.colors = np.asarray(z[c], np.float64)
                used.add(c)
    unused = [k for k in keys if k not in used]
    if unused:
        raw.notes.append(f"NPZ arrays ignored: {', '.join(unused)}")
    return raw


def _read_las(p: Path, name: str) -> _Raw:
    import laspy

    try:
        las = laspy.read(p)
    except Exception as exc:
        raise FileReadError(f"{name}: cannot read LAS/LAZ: {exc}") from None
    xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1).astype(np.float64)
    colors = None
    dims = set(las.point_format.dimension_names)
    if {"red", "green", "blue"} <= dims:
        rgb = np.stack([las.red, las.green, las.blue], axis=1).astype(np.float64)
        if rgb.max(initial=0) > 0:
            colors = rgb / (65535.0 if rgb.max() > 255 else 255.0)
    notes = []
    extra = list(las.point_format.extra_dimension_names)
    if extra:
        notes.append(f"LAS extra dimensions ignored: {', '.join(extra)}")
    with open(p, "rb") as f:  # LAZ sets the top bits of the point format id (byte 104)
        head = f.read(105)
    fmt = "laz" if len(head) == 105 and head[104] & 0xC0 else "las"
    return _Raw(xyz, None, colors, fmt=fmt, up_hint="z", notes=notes)


# ---------------------------------------------------------------------------------------------
# Headerless float32 rows (LiDAR and RGB-D .bin)

_F32_CANDIDATES = (3, 4, 5, 6)
_F32_SAMPLE_FLOATS = 60 * 2000  # a multiple of every candidate: the sample ends on a row boundary
_PHASE_ROWS = 2520  # divisible by every period 2..8 tested
_PHASE_PERIODS = range(2, 9)


@dataclass
class Float32Fit:
    """How the floats-per-point candidates of a headerless float32 file fare (see float32_layout)."""

    dividing: list[int]  # candidates whose row size divides the file size
    plausible: list[int]  # those whose rows look like points
    looks_like_floats: bool  # some candidate's x, y, z look like coordinates


def float32_layout(path: str | os.PathLike) -> Float32Fit:
    """Which numbers of float32 values per point (3 to 6, x y z first) the file's content supports.

    The size alone is ambiguous (a KITTI scan of 800 points, 12,800 bytes, divides into rows of 4
    and of 5 floats), so each candidate c whose 4*c bytes divide the size is read from the first
    120,000 floats and kept only if its rows look like points:
      1. x, y, z: at least half the rows finite; no |value| above 1e6, and at most 1% of values
         below 1e-20 in magnitude but not zero (the denormals of random or non-float bytes);
      2. every further column is one homogeneous attribute: integers (ring, 0-255 intensity or
         colour), within [0, 1] (intensity, colour), non-negative (Waymo intensity, elongation),
         near-constant (a timestamp), or, for columns 4-6 together, unit normals. A wrong c slides
         the columns, so signed coordinates land in every attribute column;
      3. no column mixes attributes with a period of 2-8 rows: rows i, i+k, i+2k, ... (for each
         phase of each k) must share one distribution with the other phases (Kolmogorov-Smirnov
         distance under max(0.55, 2.3*sqrt(2/m)) for m rows per phase, on the first 2,520 rows,
         also on the distance of x, y, z from the origin). A wrong c puts attribute j of row i in
         column (i*C + j) mod c, so its columns cycle through the true columns (x, then colour,
         ...) row after row; a true layout's phases differ only by noise and by ordering, such as
         the 32 lasers of a nuScenes firing, which the threshold leaves room for.
    The caller accepts a layout only when exactly one candidate is plausible; several is a
    ChannelsNeededError, as is none when x, y, z look like coordinates for some candidate.
    Scan order is not relied on (colour clouds are often shuffled).
    """
    p = Path(path)
    size = p.stat().st_size
    if size % 4:
        return Float32Fit([], [], False)
    n = size // 4
    dividing = [c for c in _F32_CANDIDATES if n % c == 0]
    with open(p, "rb") as f:
        data = f.read(4 * min(n, _F32_SAMPLE_FLOATS))
    plausible, floats = [], False
    with np.errstate(all="ignore"):  # random bytes hold signalling NaNs and overflows
        flat = np.frombuffer(data, "<f4").astype(np.float64)
        for c in dividing:
            rows = flat[: len(flat) // c * c].reshape(-1, c)
            xyz_ok = _xyz_plausible(rows)
            floats = floats or xyz_ok
            if xyz_ok and None not in _column_kinds(rows) and _phase_mixing(rows) < 1.0:
                plausible.append(c)
    return Float32Fit(dividing, plausible, floats)


def _xyz_plausible(rows: np.ndarray) -> bool:
    finite = np.isfinite(rows).all(axis=1)
    if not len(rows) or finite.mean() < 0.5:
        return False
    a = np.abs(rows[finite, :3])
    return bool(a.max(initial=0) <= 1e6 and ((a > 0) & (a < 1e-20)).mean() <= 0.01)


def _column_kinds(rows: np.ndarray) -> list[str | None]:
    """What each column after x, y, z holds: 'normal', 'const', 'int', 'unit', 'nonneg' or None."""
    x = rows[np.isfinite(rows).all(axis=1)]
    c = rows.shape[1]
    kinds: list[str | None] = []
    if c >= 6 and len(x):
        if np.median(np.abs(np.linalg.norm(x[:, 3:6], axis=1) - 1)) < 0.01:
            kinds = ["normal"] * 3
    for j in range(3 + len(kinds), c):
        v = x[:, j]
        if not len(v):
            kinds.append(None)
        elif np.ptp(v) <= 1e-6 * max(1.0, abs(float(np.median(v)))):
            kinds.append("const")
        elif np.abs(v).max() <= 2**24 and np.all(v == np.round(v)):
            kinds.append("int")
        elif v.min() >= 0 and v.max() <= 1:
            kinds.append("unit")
        elif v.min() >= 0:
            kinds.append("nonneg")
        else:
            kinds.append(None)
    return kinds


def _phase_mixing(rows: np.ndarray) -> float:
    """Strongest sign that a column changes distribution with the row's phase (>= 1: mixed)."""
    x = rows[:_PHASE_ROWS]
    cols = np.column_stack([x, np.linalg.norm(x[:, :3], axis=1)])
    worst = 0.0
    for k in _PHASE_PERIODS:
        m = len(cols) // k
        if m < 8:
            break
        limit = max(0.55, 2.3 * np.sqrt(2 / m))
        for col in cols[: m * k].T:
            worst = max(worst, _max_ks(col.reshape(m, k).T) / limit)
    return worst


def _max_ks(groups: np.ndarray) -> float:
    """Largest Kolmogorov-Smirnov distance between two rows of ``groups`` (CDFs on 65 pooled quantiles)."""
    pooled = groups[np.isfinite(groups)]
    if pooled.size == 0 or pooled.min() == pooled.max():
        return 0.0
    grid = np.unique(np.quantile(pooled, np.linspace(0, 1, 65)))
    cdfs = []
    for g in groups:
        g = np.sort(g[np.isfinite(g)])
        if len(g):
            cdfs.append(np.searchsorted(g, grid, side="right") / len(g))
    cdf = np.array(cdfs)
    return float(np.abs(cdf[:, None, :] - cdf[None, :, :]).max())


def _float32_size_problem(p: Path) -> str | None:
    size = p.stat().st_size
    if size % 4:
        return f"{size:,} bytes is not a whole number of float32 values (truncated, or not float32 points)"
    if not any((size // 4) % c == 0 for c in _F32_CANDIDATES):
        return (f"{size:,} bytes is not a whole number of points of 3 to 6 float32 values (truncated?); "
                f"for another layout say how many floats per point with --channels N")
    return None


def _name_layout(rows: np.ndarray) -> tuple[str, str, str | None]:
    """(format, columns in words, up axis) of float32 rows whose floats per point are known."""
    c = rows.shape[1]
    kinds = _column_kinds(rows)
    x = rows[np.isfinite(rows).all(axis=1)]
    if c == 3:
        return "float32_bin", "x y z", None
    if None in kinds:  # a column that is no single attribute: a --channels the content does not back
        return "float32_bin", f"x y z + {c - 3} value{'s' if c > 4 else ''}", None
    if c == 4:
        return "kitti_bin", "x y z intensity", "z"
    if c == 5:
        if kinds[1] in ("int", "const") and len(x) and x[:, 4].min() >= 0 and x[:, 4].max() <= 255:
            return "nuscenes_bin", "x y z intensity ring", "z"
        return "waymo_bin", "x y z intensity elongation", "z"
    if c == 6:
        if kinds[0] == "normal":
            return "float32_bin", "x y z nx ny nz", None
        rgb = x[:, 3:6]
        if len(rgb) and rgb.min() >= 0 and (rgb.max() <= 1 or (rgb.max() <= 255 and np.all(rgb == np.round(rgb)))):
            return "xyzrgb_bin", "x y z r g b", "z"
        if len(rgb) and x[:, 3:5].min() >= 0 and (kinds[2] == "const" or abs(float(np.median(x[:, 5]))) > 1e6):
            return "waymo_bin", "x y z intensity elongation timestamp", "z"
    return "float32_bin", f"x y z + {c - 3} value{'s' if c > 4 else ''}", None


def _read_float32(p: Path, name: str, c: int, detected: bool) -> _Raw:
    size = p.stat().st_size
    if size % (4 * c):
        raise FileReadError(f"{name}: {size:,} bytes is not a whole number of points of {c} float32 values "
                            f"({4 * c} bytes each): wrong --channels, or a truncated file")
    a = np.fromfile(p, dtype="<f4").reshape(-1, c)
    with np.errstate(all="ignore"):
        fmt, layout, up = _name_layout(a[: _F32_SAMPLE_FLOATS // c].astype(np.float64))
    words = layout.split()
    normals = colors = None
    if words[3:6] == ["nx", "ny", "nz"]:
        normals = a[:, 3:6].astype(np.float64)
    elif words[3:6] == ["r", "g", "b"]:
        colors = a[:, 3:6].astype(np.float64)
    raw = _Raw(a[:, :3].astype(np.float64), normals, colors, fmt=fmt, channels=c, layout=layout, up_hint=up)
    if detected:
        raw.notes.append(f"{c} floats per point ({layout}), told from the file's size and content; "
                         f"say --channels N if that is wrong")
    else:
        fit = float32_layout(p)
        if fit.plausible and c not in fit.plausible:
            raw.notes.append(f"the content looks like {_either(fit.plausible)} floats per point, not {c}: "
                             f"check --channels")
    if "+" in words:
        raw.notes.append(f"float32 columns 4 to {c} not used")
    elif normals is None and colors is None and c > 3:
        raw.notes.append(f"float32 columns not used: {', '.join(words[3:])}")
    return raw


# ---------------------------------------------------------------------------------------------
# Zip archives holding one cloud or mesh


def _zip_is_npz(p: Path) -> bool:
    """True for a zip whose files are all .npy arrays: NumPy's NPZ, whatever its extension."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return bool(names) and all(n.lower().endswith(".npy") for n in names)


def _zip_junk(member: str) -> bool:
    """macOS resource forks and hidden files, which archivers add beside the real content."""
    parts = PurePosixPath(member).parts
    return not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


def _load_zip(p: Path, name: str, num_samples: int, even: bool, seed: int, channels: int | None) -> PointCloud:
    """Read the one cloud or mesh in a zip archive, unpacked to a temporary file and detected as usual."""
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileReadError(f"{name}: not a readable zip archive ({exc})") from None
    with zf:
        files = [i for i in zf.infolist() if not i.is_dir() and not _zip_junk(i.filename)]
        known = set(all_extensions())
        readable = [i for i in files if PurePosixPath(i.filename).suffix.lower() in known]
        if not readable and len(files) == 1:
            readable = files  # a lone file without a known extension: its content will tell
        listing = ", ".join(i.filename for i in files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        if not readable:
            raise UnsupportedFormatError(f"{name}: the zip archive holds no 3D file "
                                         f"({'members: ' + listing if files else 'no files at all'})")
        if len(readable) > 1:
            shown = ", ".join(i.filename for i in readable[:8]) + (" ..." if len(readable) > 8 else "")
            raise UnsupportedFormatError(f"{name}: the zip archive holds {len(readable)} 3D files ({shown}); "
                                         f"extract the one to read")
        info = readable[0]
        inner = f"{name}:{info.filename}"
        suffix = PurePosixPath(info.filename).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""
        factor = _MEMORY_FACTOR.get(_EXT_READER.get(suffix, ""), _DEFAULT_MEMORY_FACTOR)
        need, have = info.file_size * (factor + 1), available_memory()
        if need > have:
            raise FileReadError(f"{inner}: too large to read ({info.file_size / 2**30:.1f} GiB unpacked needs about "
                                f"{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB of memory available)")
        with tempfile.TemporaryDirectory(prefix="t3d-zip-") as tmp:
            if shutil.disk_usage(tmp).free < info.file_size + (64 << 20):
                raise FileReadError(f"{inner}: not enough free disk space to unpack "
                                    f"{info.file_size / 2**20:,.0f} MiB")
            target = Path(tmp) / f"member{suffix}"
            _unpack(zf, info, target, inner)
            _check_readable(target, inner)
            cloud = _load(target, inner, num_samples, even, seed, channels, in_archive=True)
    cloud.path = name
    cloud.format = f"zip:{cloud.format}"
    others = [i.filename for i in files if i is not info]
    if others:
        cloud.notes.append(f"zip members not read: {', '.join(others[:8])}{' ...' if len(others) > 8 else ''}")
    return cloud


def _unpack(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, inner: str) -> None:
    """Copy one member to ``target``, stopping at its declared size (a zip bomb may lie about it)."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > info.file_size:
                    raise FileReadError(f"{inner}: unpacks to more than its declared {info.file_size:,} bytes "
                                        f"(corrupt archive or zip bomb)")
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise FileReadError(f"{inner}: corrupt zip member ({exc})") from None
    except RuntimeError as exc:  # encrypted member
        raise UnsupportedFormatError(f"{inner}: cannot unpack ({exc})") from None


_READERS = {
    "ply": _read_ply, "off": _read_off, "obj": _read_obj, "stl": _read_stl, "gltf": _read_gltf,
    "pcd": _read_pcd, "text": _read_text_points, "npy": _read_npy, "npz": _read_npz, "las": _read_las,
}

"""Every supported file format reads into the same PointCloud; bad files give typed one-line errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from core.data import io
from core.data.io import SUPPORTED_FORMATS, PointCloud, load_point_cloud
from core.errors import EmptyCloudError, FileReadError, MeshError, T3DError, UnsupportedFormatError

RNG = np.random.default_rng(0)
PTS = RNG.normal(size=(500, 3)).astype(np.float32)
NRM = (PTS / np.linalg.norm(PTS, axis=1, keepdims=True)).astype(np.float32)
RGB8 = RNG.integers(0, 256, size=(500, 3)).astype(np.uint8)

# unit cube: 8 vertices, 6 quads
CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float32)
CUBE_Q = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
CUBE_T = np.concatenate([CUBE_Q[:, [0, 1, 2]], CUBE_Q[:, [0, 2, 3]]])


# ---------------------------------------------------------------------------------------------
# writers (by hand, so that the tests do not trust the code under test)


def write_ply_points(path, fmt="binary_little_endian", normals=True, colors=True, pts=PTS):
    props = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if normals:
        props += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    if colors:
        props += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    names = {"f4": "float", "u1": "uchar"}
    head = f"ply\nformat {fmt} 1.0\ncomment test\nelement vertex {len(pts)}\n"
    head += "".join(f"property {names[t]} {n}\n" for n, t in props) + "end_header\n"
    endian = ">" if fmt == "binary_big_endian" else "<"
    arr = np.zeros(len(pts), dtype=[(n, endian + t) for n, t in props])
    arr["x"], arr["y"], arr["z"] = pts.T
    if normals:
        arr["nx"], arr["ny"], arr["nz"] = NRM[: len(pts)].T
    if colors:
        arr["red"], arr["green"], arr["blue"] = RGB8[: len(pts)].T
    with open(path, "wb") as f:
        f.write(head.encode())
        if fmt == "ascii":
            for row in arr:
                f.write((" ".join(str(v) for v in row) + "\n").encode())
        else:
            f.write(arr.tobytes())


def write_ply_mesh(path, binary=True, quads=False):
    faces = CUBE_Q if quads else CUBE_T
    k = faces.shape[1]
    head = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex 8\n"
            "property float x\nproperty float y\nproperty float z\n"
            f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    with open(path, "wb") as f:
        f.write(head.encode())
        if binary:
            f.write(CUBE_V.astype("<f4").tobytes())
            for face in faces:
                f.write(struct.pack("<B", k) + face.astype("<i4").tobytes())
        else:
            f.write("".join(f"{a} {b} {c}\n" for a, b, c in CUBE_V).encode())
            f.write("".join(f"{k} " + " ".join(map(str, face)) + "\n" for face in faces).encode())


def _pcd_header(n, fields="x y z", size="4 4 4", typ="F F F", count="1 1 1", data="binary"):
    return (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\n"
            f"TYPE {typ}\nCOUNT {count}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
            f"DATA {data}\n").encode()


def write_pcd(path, data="binary", pts=PTS):
    n = len(pts)
    rgb = ((RGB8[:n, 0].astype(np.uint32) << 16) | (RGB8[:n, 1].astype(np.uint32) << 8) | RGB8[:n, 2]).view("<f4")
    hdr = _pcd_header(n, "x y z rgb", "4 4 4 4", "F F F F", "1 1 1 1", data)
    with open(path, "wb") as f:
        f.write(hdr)
        if data == "ascii":
            for p, c in zip(pts, rgb):
                f.write(f"{float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {float(c)!r}\n".encode())
        elif data == "binary":
            arr = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
            arr["x"], arr["y"], arr["z"] = pts.T
            arr["rgb"] = rgb
            f.write(arr.tobytes())
        else:  # binary_compressed, field-major, LZF with literal runs only (a valid LZF stream)
            raw = b"".join(np.ascontiguousarray(col, dtype="<f4").tobytes()
                           for col in (pts[:, 0], pts[:, 1], pts[:, 2], rgb))
            comp = b"".join(bytes([len(raw[i:i + 32]) - 1]) + raw[i:i + 32] for i in range(0, len(raw), 32))
            f.write(struct.pack("<II", len(comp), len(raw)) + comp)


def check_points(cloud: PointCloud, pts=PTS, normals=False, colors=False):
    assert cloud.kind == "points"
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == pts.shape
    np.testing.assert_allclose(cloud.xyz, pts, atol=1e-5)
    assert cloud.original_points == len(pts) and cloud.original_faces == 0
    if normals:
        np.testing.assert_allclose(cloud.normals, NRM[: len(pts)], atol=1e-5)
    if colors:
        assert cloud.colors.dtype == np.float32
        np.testing.assert_allclose(cloud.colors, RGB8[: len(pts)] / 255.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_points_all_encodings(tmp_path, fmt):
    f = tmp_path / "cloud.ply"
    write_ply_points(f, fmt)
    c = load_point_cloud(f)
    assert c.format == "ply"
    check_points(c, normals=True, colors=True)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("quads", [True, False])
def test_ply_mesh_is_sampled_on_its_surface(tmp_path, binary, quads):
    f = tmp_path / "cube.ply"
    write_ply_mesh(f, binary, quads)
    c = load_point_cloud(f, num_samples=2000)
    assert c.kind == "mesh" and c.original_points == 8 and c.original_faces == 12
    assert c.xyz.shape == (2000, 3) and c.mesh_faces.shape == (12, 3) and c.mesh_faces.dtype == np.int32
    # every sample lies on a face of the unit cube
    on_face = (np.isclose(c.xyz, 0, atol=1e-5) | np.isclose(c.xyz, 1, atol=1e-5)).any(axis=1)
    assert on_face.all() and (c.xyz >= -1e-6).all() and (c.xyz <= 1 + 1e-6).all()
    assert np.allclose(np.linalg.norm(c.normals, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_pcd_all_encodings(tmp_path, data):
    f = tmp_path / "cloud.pcd"
    write_pcd(f, data)
    c = load_point_cloud(f)
    assert c.format == "pcd"
    check_points(c, colors=True)


def test_pcd_compressed_by_open3d_with_back_references(tmp_path):
    o3d = pytest.importorskip("open3d")
    f = tmp_path / "o3d.pcd"
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.round(PTS, 2).astype(np.float64)))
    pc.normals = o3d.utility.Vector3dVector(NRM.astype(np.float64))
    assert o3d.io.write_point_cloud(str(f), pc, write_ascii=False, compressed=True)
    assert b"binary_compressed" in f.read_bytes()[:400]
    c = load_point_cloud(f)
    np.testing.assert_allclose(c.xyz, np.round(PTS, 2), atol=1e-6)
    np.testing.assert_allclose(c.normals, NRM, atol=1e-6)


def test_pcd_nan_points_are_dropped_and_counted(tmp_path):
    pts = PTS.copy()
    pts[::5] = np.nan
    f = tmp_path / "holes.pcd"
    write_pcd(f, "binary", pts)
    c = load_point_cloud(f)
    assert c.original_points == 500 and c.invalid_points == 100 and len(c.xyz) == 400
    assert np.isfinite(c.xyz).all() and len(c.colors) == 400


def test_off_mesh_including_modelnet_header_quirk(tmp_path):
    body = "".join(f"{a} {b} {c}\n" for a, b, c in CUBE_V) + "".join(f"3 {a} {b} {c}\n" for a, b, c in CUBE_T)
    for header in ("OFF\n8 12 0\n", "OFF8 12 0\n", "# comment\nOFF\n# another\n8 12 0\n"):
        f = tmp_path / "cube.off"
        f.write_text(header + body)
        c = load_point_cloud(f, num_samples=300)
        assert (c.format, c.kind, c.original_points, c.original_faces) == ("off", "mesh", 8, 12)
        assert len(c.xyz) == 300


def test_obj_mesh_with_polygons_and_slashes(tmp_path):
    f = tmp_path / "cube.obj"
    lines = ["# cube", "o cube"] + [f"v {a} {b} {c}" for a, b, c in CUBE_V] + ["vn 0 0 1"]
    lines += ["f " + " ".join(f"{i + 1}//1" for i in q) for q in CUBE_Q]
    f.write_text("\n".join(lines) + "\n")
    c = load_point_cloud(f, num_samples=100)
    assert (c.kind, c.original_points, c.original_faces) == ("mesh", 8, 12)


def test_stl_binary_and_ascii(tmp_path):
    tri = CUBE_V[CUBE_T]
    fb = tmp_path / "b.stl"
    with open(fb, "wb") as fh:
        fh.write(b"\0" * 80 + struct.pack("<I", len(tri)))
        for t in tri:
            fh.write(np.zeros(3, "<f4").tobytes() + t.astype("<f4").tobytes() + b"\0\0")
    fa = tmp_path / "a.stl"
    fa.write_text("solid cube\n" + "".join(
        "facet normal 0 0 0\nouter loop\n" + "".join(f"vertex {x} {y} {z}\n" for x, y, z in t) +
        "endloop\nendfacet\n" for t in tri) + "endsolid cube\n")
    for f in (fb, fa):
        c = load_point_cloud(f, num_samples=100)
        assert (c.format, c.kind, c.original_points, c.original_faces) == ("stl", "mesh", 8, 12)


def test_glb_mesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    f = tmp_path / "cube.glb"
    trimesh.Trimesh(CUBE_V, CUBE_T, process=False).export(f)
    c = load_point_cloud(f, num_samples=500)
    assert c.kind == "mesh" and c.format == "glb" and c.original_faces == 12 and len(c.xyz) == 500


@pytest.mark.parametrize("name,text,expect", [
    ("a.xyz", "\n".join(f"{x} {y} {z}" for x, y, z in PTS[:50]), "xyz"),
    ("a.txt", "\n".join(f"{x},{y},{z},{a},{b},{c}" for (x, y, z), (a, b, c) in zip(PTS[:50], NRM)), "normals"),
    ("a.csv", "x,y,z,nx,ny,nz\n" + "\n".join(f"{x},{y},{z},{a},{b},{c}" for (x, y, z), (a, b, c)
                                            in zip(PTS[:50], NRM)), "normals"),
    ("a.xyzn", "\n".join(f"{x} {y} {z} {a} {b} {c}" for (x, y, z), (a, b, c) in zip(PTS[:50], NRM)), "normals"),
    ("a.xyzrgb", "\n".join(f"{x} {y} {z} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(PTS[:50], RGB8)), "colors"),
    ("a.pts", "50\n" + "\n".join(f"{x} {y} {z} 7 {r} {g} {b}" for (x, y, z), (r, g, b) in zip(PTS[:50], RGB8)),
     "colors"),
    ("a.txt", "// X Y Z\n# exported\n" + "\n".join(f"{x}\t{y}\t{z}" for x, y, z in PTS[:50]), "xyz"),
])
def test_text_point_lists(tmp_path, name, text, expect):
    f = tmp_path / name
    f.write_text(text + "\n")
    c = load_point_cloud(f)
    check_points(c, PTS[:50], normals=expect == "normals", colors=expect == "colors")


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", PTS)
    np.save(tmp_path / "n.npy", np.concatenate([PTS, NRM], axis=1))
    np.savez(tmp_path / "a.npz", points=PTS, normals=NRM)
    np.savez(tmp_path / "m.npz", vertices=CUBE_V, faces=CUBE_T)
    check_points(load_point_cloud(tmp_path / "a.npy"))
    check_points(load_point_cloud(tmp_path / "n.npy"), normals=True)
    check_points(load_point_cloud(tmp_path / "a.npz"), normals=True)
    assert load_point_cloud(tmp_path / "m.npz", num_samples=64).kind == "mesh"


@pytest.mark.parametrize("ext", [".las", ".laz"])
def test_las_laz_with_large_coordinates(tmp_path, ext):
    laspy = pytest.importorskip("laspy")
    hdr = laspy.LasHeader(point_format=2, version="1.2")
    hdr.scales = [0.001] * 3
    hdr.offsets = [500000.0, 4000000.0, 0.0]
    las = laspy.LasData(hdr)
    geo = PTS.astype(np.float64) + [500123.0, 4000456.0, 100.0]
    las.x, las.y, las.z = geo.T
    las.red, las.green, las.blue = (RGB8.astype(np.uint16) * 257).T
    f = tmp_path / f"scan{ext}"
    las.write(f)
    c = load_point_cloud(f)
    assert c.format == ext[1:] and len(c.xyz) == 500
    assert c.origin is not None, "UTM coordinates must be kept relative to an origin (float32 precision)"
    np.testing.assert_allclose(c.xyz + c.origin, geo, atol=2e-3)
    np.testing.assert_allclose(c.colors, RGB8 / 255.0, atol=1e-3)


def test_kitti_bin(tmp_path):
    f = tmp_path / "000000.bin"
    np.concatenate([PTS, np.ones((500, 1), np.float32)], axis=1).astype("<f4").tofile(f)
    c = load_point_cloud(f)
    assert c.format == "kitti_bin"
    check_points(c)


def test_unknown_extension_is_sniffed(tmp_path):
    write_ply_points(tmp_path / "scan.dat")
    assert load_point_cloud(tmp_path / "scan.dat").format == "ply"
    write_pcd(tmp_path / "scan.data", "binary")
    assert load_point_cloud(tmp_path / "scan.data").format == "pcd"
    np.save(tmp_path / "arr.npy", PTS)
    (tmp_path / "arr.npy").rename(tmp_path / "arr.bin2")
    assert load_point_cloud(tmp_path / "arr.bin2").format == "npy"
    (tmp_path / "pts.asc").write_text("\n".join(f"{x} {y} {z}" for x, y, z in PTS) + "\n")
    check_points(load_point_cloud(tmp_path / "pts.asc"))
    (tmp_path / "cube.mesh").write_text("OFF\n8 12 0\n" + "".join(f"{a} {b} {c}\n" for a, b, c in CUBE_V) +
                                        "".join(f"3 {a} {b} {c}\n" for a, b, c in CUBE_T))
    assert load_point_cloud(tmp_path / "cube.mesh", num_samples=10).format == "off"
    (tmp_path / "cube.model").write_text("# exported\n" + "".join(f"v {a} {b} {c}\n" for a, b, c in CUBE_V) +
                                         "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in CUBE_T))
    assert load_point_cloud(tmp_path / "cube.model", num_samples=10).format == "obj"


def test_supported_formats_cover_every_reader():
    exts = {e for group in SUPPORTED_FORMATS.values() for e in group}
    assert set(SUPPORTED_FORMATS) == {"Meshes", "Point clouds", "Arrays", "LiDAR"}
    assert all(e.startswith(".") and e == e.lower() for e in exts)
    assert {".ply", ".off", ".obj", ".stl", ".glb", ".pcd", ".xyz", ".csv", ".npy", ".npz", ".las", ".laz",
            ".bin"} <= exts


# ---------------------------------------------------------------------------------------------
# meshes: sampling


def test_mesh_sampling_is_deterministic_and_area_weighted(tmp_path):
    # two triangles: the first has 3x the area of the second
    v = np.array([[0, 0, 0], [3, 0, 0], [0, 1, 0], [10, 0, 0], [11, 0, 0], [10, 1, 0]], np.float32)
    np.savez(tmp_path / "two.npz", vertices=v, faces=np.array([[0, 1, 2], [3, 4, 5]]))
    a = load_point_cloud(tmp_path / "two.npz", num_samples=20000)
    b = load_point_cloud(tmp_path / "two.npz", num_samples=20000)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    share = (a.xyz[:, 0] < 5).mean()
    assert 0.73 < share < 0.77


def test_even_sampling_spreads_points(tmp_path):
    np.savez(tmp_path / "cube.npz", vertices=CUBE_V, faces=CUBE_T)

    def min_gap(xyz):
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)
        np.fill_diagonal(d, np.inf)
        return d.min(axis=1).mean()

    rnd = load_point_cloud(tmp_path / "cube.npz", num_samples=600)
    even = load_point_cloud(tmp_path / "cube.npz", num_samples=600, even=True)
    assert len(even.xyz) == 600
    assert min_gap(even.xyz) > 1.3 * min_gap(rnd.xyz)


# ---------------------------------------------------------------------------------------------
# bad input: typed, one line, names the file


def _assert_error(exc_type, path, **kw):
    with pytest.raises(exc_type) as ei:
        load_point_cloud(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_missing_path_and_directory(tmp_path):
    assert "no such file" in _assert_error(FileReadError, tmp_path / "nope.ply")
    assert "folder" in _assert_error(FileReadError, tmp_path)


def test_empty_file(tmp_path):
    for name in ("e.ply", "e.pcd", "e.xyz", "e.npy", "e.unknown"):
        (tmp_path / name).write_bytes(b"")
        _assert_error(EmptyCloudError, tmp_path / name)


def test_truncated_binary_ply_and_pcd(tmp_path):
    write_ply_points(tmp_path / "t.ply")
    write_ply_mesh(tmp_path / "m.ply")
    write_pcd(tmp_path / "t.pcd", "binary")
    write_pcd(tmp_path / "c.pcd", "binary_compressed")
    for name in ("t.ply", "m.ply", "t.pcd", "c.pcd"):
        f = tmp_path / name
        f.write_bytes(f.read_bytes()[:-37])
        assert "truncated" in _assert_error(FileReadError, f) or name == "c.pcd"


def test_truncated_text_npy_and_kitti(tmp_path):
    (tmp_path / "t.xyz").write_text("1 2 3\n4 5 6\n7 8")
    assert "truncated" in _assert_error(FileReadError, tmp_path / "t.xyz")
    np.save(tmp_path / "t.npy", PTS)
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:300])
    _assert_error(FileReadError, tmp_path / "t.npy")
    (tmp_path / "t.bin").write_bytes(b"\0" * 30)
    _assert_error(FileReadError, tmp_path / "t.bin")


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".off", ".obj", ".stl", ".npy", ".npz", ".las", ".laz", ".glb",
                                 ".xyz", ".csv"])
def test_garbage_bytes_with_a_known_extension(tmp_path, ext):
    f = tmp_path / f"garbage{ext}"
    f.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(T3DError) as ei:
        load_point_cloud(f)
    assert "\n" not in str(ei.value) and str(f) in str(ei.value)


def test_garbage_with_unknown_extension_is_unsupported(tmp_path):
    f = tmp_path / "thing.weird"
    f.write_bytes(np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert "unknown format" in _assert_error(UnsupportedFormatError, f)


def test_all_nan_cloud(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((100, 3), np.nan, np.float32))
    assert "NaN" in _assert_error(EmptyCloudError, tmp_path / "nan.npy")
    (tmp_path / "nan.xyz").write_text("nan nan nan\ninf 1 2\n")
    _assert_error(EmptyCloudError, tmp_path / "nan.xyz")


def test_mesh_without_faces(tmp_path):
    (tmp_path / "nf.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    assert "no faces" in _assert_error(MeshError, tmp_path / "nf.off")
    (tmp_path / "nf.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    _assert_error(MeshError, tmp_path / "nf.obj")
    (tmp_path / "flat.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    assert "zero surface area" in _assert_error(MeshError, tmp_path / "flat.off")
    (tmp_path / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 7\n")
    assert "out of range" in _assert_error(MeshError, tmp_path / "bad.off")


def test_file_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    write_ply_points(tmp_path / "big.ply")
    monkeypatch.setattr(io, "available_memory", lambda: 1000)
    assert "too large" in _assert_error(FileReadError, tmp_path / "big.ply")


def test_unreadable_file(tmp_path):
    import os

    f = tmp_path / "secret.ply"
    write_ply_points(f)
    f.chmod(0)
    try:
        if os.access(f, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        assert "permission" in _assert_error(FileReadError, f)
    finally:
        f.chmod(0o644)


# ---------------------------------------------------------------------------------------------
# real scans


def test_real_scans_read(shared_data):
    scans = shared_data / "scans"
    if not scans.is_dir():
        pytest.skip(f"{scans} absent")
    table = load_point_cloud(scans / "table_scene_mug_stereo_textured.pcd")
    assert table.original_points == 307200 and table.invalid_points > 0 and np.isfinite(table.xyz).all()
    frag = load_point_cloud(scans / "fragment.pcd")
    assert len(frag.xyz) == 113662 and frag.normals is not None and frag.colors is not None
    bunny = load_point_cloud(scans / "bun_zipper.ply", num_samples=5000)
    assert (bunny.kind, bunny.original_points, bunny.original_faces) == ("mesh", 35947, 69451)

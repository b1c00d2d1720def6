"""Every supported file format reads into the same PointCloud; bad files give typed one-line errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from core.data import io
from core.data.io import SUPPORTED_FORMATS, PointCloud, load_point_cloud
from core.errors import (ChannelsNeededError, EmptyCloudError, FileReadError, MeshError, T3DError,
                         UnsupportedFormatError)

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


# ---------------------------------------------------------------------------------------------
# the content decides the reader, the extension only breaks ties


def test_headerless_text_named_ply_reads_as_text(tmp_path):
    f = tmp_path / "points.ply"
    f.write_text("\n".join(f"{x} {y} {z}" for x, y, z in PTS) + "\n")
    c = load_point_cloud(f)
    assert c.format == "text"
    check_points(c)
    one = tmp_path / "one.ply"
    one.write_text("1 2 3")  # a single row without a newline
    assert load_point_cloud(one).xyz.tolist() == [[1, 2, 3]]


def test_formats_named_wrongly_read_by_content(tmp_path):
    write_ply_points(tmp_path / "cloud.txt")
    assert load_point_cloud(tmp_path / "cloud.txt").format == "ply"
    write_pcd(tmp_path / "cloud.ply", "binary")
    check_points(load_point_cloud(tmp_path / "cloud.ply"), colors=True)
    np.save(tmp_path / "a.npy", PTS)
    (tmp_path / "a.npy").rename(tmp_path / "a.xyz")
    assert load_point_cloud(tmp_path / "a.xyz").format == "npy"
    (tmp_path / "cube.obj").write_text("OFF\n8 12 0\n" + "".join(f"{a} {b} {c}\n" for a, b, c in CUBE_V) +
                                       "".join(f"3 {a} {b} {c}\n" for a, b, c in CUBE_T))
    assert load_point_cloud(tmp_path / "cube.obj", num_samples=10).format == "off"


def test_unrecognised_content_gets_the_extension_readers_error(tmp_path):
    f = tmp_path / "broken.pcd"
    f.write_bytes(b"\x01\x02" * 50)
    assert "PCD" in _assert_error(FileReadError, f)


# ---------------------------------------------------------------------------------------------
# headerless float32 points: the layout from the size and the content


def lidar_scan(n, seed, rings=64, firing=False):
    """n points of a simulated spinning LiDAR (ground and walls) in scan order, their ring, and an rng.

    ``firing``: one firing of all rings after another (nuScenes) instead of one ring after another.
    """
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(-25, 3, rings))
    az = np.linspace(-np.pi, np.pi, 600, endpoint=False)
    if firing:
        a, e = (g.ravel() for g in np.meshgrid(az, elev, indexing="ij"))
        ring = np.tile(np.arange(rings), len(az))
    else:
        e, a = (g.ravel() for g in np.meshgrid(elev, az, indexing="ij"))
        ring = np.repeat(np.arange(rings), len(az))
    r = np.where(e < -0.02, 1.73 / np.maximum(np.sin(-e), 1e-3), 20 + 15 * np.abs(np.sin(3 * a)))
    r = np.minimum(r, 80) + rng.normal(0, 0.02, len(e))
    xyz = np.stack([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e)], axis=1)
    keep = np.sort(rng.choice(len(e), n, replace=False))
    return xyz[keep], ring[keep], rng


def room_rgb(n, seed, centred, unit_colours):
    """A shuffled indoor cloud with colours, as ScanNet / S3DIS / SUN RGB-D points are stored."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, [6, 4, 3], (n, 3)) - ([3, 2, 0.2] if centred else 0)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.float64)
    return np.concatenate([xyz, rgb / 255 if unit_colours else rgb], axis=1)


def _layout_case(kind):
    if kind == "kitti":  # 600 points: 9,600 bytes divide into rows of 3, 4, 5 and 6 floats
        xyz, _, rng = lidar_scan(600, 1)
        return np.c_[xyz, np.round(rng.beta(2, 5, 600), 2)], "x y z intensity", "kitti_bin"
    if kind == "kitti_0_255":
        xyz, _, rng = lidar_scan(600, 2)
        return np.c_[xyz, rng.integers(0, 256, 600)], "x y z intensity", "kitti_bin"
    if kind == "nuscenes":
        xyz, ring, rng = lidar_scan(480, 3, rings=32, firing=True)
        return np.c_[xyz, rng.integers(0, 256, 480), ring], "x y z intensity ring", "nuscenes_bin"
    if kind == "waymo5":
        xyz, _, rng = lidar_scan(600, 4)
        return np.c_[xyz, rng.gamma(1, 0.2, 600), rng.gamma(1, 0.3, 600)], "x y z intensity elongation", "waymo_bin"
    if kind == "waymo6":
        xyz, _, rng = lidar_scan(600, 5)
        return (np.c_[xyz, rng.gamma(1, 0.2, 600), rng.gamma(1, 0.3, 600), np.full(600, 1.55e15)],
                "x y z intensity elongation timestamp", "waymo_bin")
    if kind == "rgb_0_255":
        return room_rgb(300, 6, centred=False, unit_colours=False), "x y z r g b", "xyzrgb_bin"
    if kind == "rgb_0_255_centred":
        return room_rgb(300, 7, centred=True, unit_colours=False), "x y z r g b", "xyzrgb_bin"
    if kind == "rgb_0_1":
        return room_rgb(300, 8, centred=True, unit_colours=True), "x y z r g b", "xyzrgb_bin"
    if kind == "xyz":
        return lidar_scan(600, 9)[0], "x y z", "float32_bin"
    raise KeyError(kind)


LAYOUTS = ["kitti", "kitti_0_255", "nuscenes", "waymo5", "waymo6", "rgb_0_255", "rgb_0_255_centred", "rgb_0_1",
           "xyz"]


@pytest.mark.parametrize("kind", LAYOUTS)
def test_float32_layout_told_from_content(tmp_path, kind):
    rows, layout, fmt = _layout_case(kind)
    rows = rows.astype("<f4")
    f = tmp_path / f"{kind}.bin"
    rows.tofile(f)
    c = load_point_cloud(f)
    assert (c.format, c.channels, c.layout) == (fmt, rows.shape[1], layout)
    assert c.original_points == len(rows) and c.kind == "points"
    np.testing.assert_array_equal(c.xyz, rows[:, :3])
    assert c.up_hint == (None if kind == "xyz" else "z")
    assert any("told from the file's size and content" in n for n in c.notes)
    if layout.endswith("r g b"):
        scale = 1.0 if kind == "rgb_0_1" else 255.0
        np.testing.assert_allclose(c.colors, rows[:, 3:6] / scale, atol=1e-6)
    else:
        assert c.colors is None
    # the same bytes, told explicitly, read the same; under another name the content still decides
    e = load_point_cloud(f, channels=rows.shape[1])
    np.testing.assert_array_equal(e.xyz, c.xyz)
    assert not any("told from" in n for n in e.notes)
    other = tmp_path / f"{kind}.dat"
    rows.tofile(other)
    assert load_point_cloud(other).channels == rows.shape[1]


def test_kitti_scan_whose_size_also_fits_rows_of_6(tmp_path):
    rows, _, _ = _layout_case("kitti")
    assert rows.astype("<f4").nbytes % 24 == 0 and rows.astype("<f4").nbytes % 20 == 0
    rows.astype("<f4").tofile(tmp_path / "000042.bin")
    assert io.float32_layout(tmp_path / "000042.bin").plausible == [4]


def test_ambiguous_float32_layout_asks_for_channels(tmp_path):
    f = tmp_path / "scan.bin"
    np.random.default_rng(3).random(480).astype("<f4").tofile(f)  # values in [0, 1] fit every layout
    with pytest.raises(ChannelsNeededError) as ei:
        load_point_cloud(f)
    msg = str(ei.value)
    assert isinstance(ei.value, UnsupportedFormatError) and ei.value.candidates == [3, 4, 5, 6]
    assert "\n" not in msg and str(f) in msg and "--channels" in msg and "ambiguous" in msg
    c = load_point_cloud(f, channels=4)
    assert (c.original_points, c.channels, c.format) == (120, 4, "kitti_bin")


@pytest.mark.parametrize("extra", [3, 4])  # 7 and 8 floats per point: no known layout
def test_unknown_float32_layout_is_refused_not_misread(tmp_path, extra):
    xyz, _, rng = lidar_scan(600, 10 + extra)
    rows = np.c_[xyz, rng.random(600), rng.gamma(1, 0.3, (600, extra))].astype("<f4")
    f = tmp_path / "scan.bin"
    rows.tofile(f)
    with pytest.raises(ChannelsNeededError) as ei:
        load_point_cloud(f)
    assert "--channels" in str(ei.value)
    c = load_point_cloud(f, channels=rows.shape[1])
    assert c.original_points == 600 and c.layout == f"x y z + {rows.shape[1] - 3} values"
    np.testing.assert_array_equal(c.xyz, rows[:, :3])
    assert any("not used" in n for n in c.notes)


def test_explicit_channels_that_do_not_divide_the_size(tmp_path):
    f = tmp_path / "scan.bin"
    np.zeros((10, 4), "<f4").tofile(f)
    msg = _assert_error(FileReadError, f, channels=6)
    assert "6 float32" in msg and "--channels" in msg


def test_explicit_channels_against_the_content_is_noted(tmp_path):
    rows, _, _ = _layout_case("kitti")
    rows.astype("<f4").tofile(tmp_path / "k.bin")
    c = load_point_cloud(tmp_path / "k.bin", channels=5)
    assert c.original_points == 480 and any("looks like 4 floats per point" in n for n in c.notes)


@pytest.mark.parametrize("bad", [0, 2, 65, True, 4.0])
def test_channels_out_of_range(tmp_path, bad):
    np.zeros((10, 4), "<f4").tofile(tmp_path / "a.bin")
    with pytest.raises(T3DError) as ei:
        load_point_cloud(tmp_path / "a.bin", channels=bad)
    assert "channels" in str(ei.value)


def test_channels_is_ignored_with_a_note_for_other_formats(tmp_path):
    write_ply_points(tmp_path / "a.ply")
    c = load_point_cloud(tmp_path / "a.ply", channels=4)
    assert c.channels is None and any("channels=4 ignored" in n for n in c.notes)


def test_bin_that_is_not_float32_points(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\0" * 30)
    assert "float32" in _assert_error(FileReadError, tmp_path / "odd.bin")
    (tmp_path / "seven.bin").write_bytes(np.ones(7, "<f4").tobytes())  # 28 bytes: no row size of 3-6 floats
    assert "truncated" in _assert_error(FileReadError, tmp_path / "seven.bin")
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(5).integers(0, 256, 4800, dtype=np.uint8).tobytes())
    assert "not float32 point data" in _assert_error(FileReadError, tmp_path / "noise.bin")


# ---------------------------------------------------------------------------------------------
# zip archives


def _zip(path, members: dict):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if name.endswith("/"):
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return path


def _obj_text():
    return ("".join(f"v {a} {b} {c}\n" for a, b, c in CUBE_V) +
            "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in CUBE_T))


def test_zip_holding_one_mesh(tmp_path):
    f = _zip(tmp_path / "cube.zip", {"cube/": b"", "cube/cube.obj": _obj_text(), "cube/cube.mtl": "newmtl a\n",
                                     "__MACOSX/cube/._cube.obj": b"\0\1junk", "cube/.DS_Store": b"\0\0"})
    c = load_point_cloud(f, num_samples=200)
    assert (c.format, c.kind, c.original_faces, c.path, len(c.xyz)) == ("zip:obj", "mesh", 12, str(f), 200)
    assert any("cube/cube.mtl" in n for n in c.notes) and not any("MACOSX" in n or "DS_Store" in n for n in c.notes)


def test_zip_content_with_another_extension_and_float32_inside(tmp_path):
    rows, _, _ = _layout_case("kitti")
    f = _zip(tmp_path / "scan.data", {"velodyne/000000.bin": rows.astype("<f4").tobytes()})
    c = load_point_cloud(f)
    assert (c.format, c.channels, c.original_points, c.up_hint) == ("zip:kitti_bin", 4, 600, "z")


def test_zip_of_npy_arrays_is_npz(tmp_path):
    buf = __import__("io").BytesIO()
    np.save(buf, PTS)
    f = _zip(tmp_path / "arrays.zip", {"points.npy": buf.getvalue()})
    c = load_point_cloud(f)
    assert c.format == "npz"
    check_points(c)


def test_zip_with_several_or_no_clouds_names_the_members(tmp_path):
    f = _zip(tmp_path / "two.zip", {"a.obj": _obj_text(), "b.ply": b"ply\n", "readme.md": b"hi"})
    msg = _assert_error(UnsupportedFormatError, f)
    assert "a.obj" in msg and "b.ply" in msg
    g = _zip(tmp_path / "none.zip", {"readme.md": b"hi", "photo.jpg": b"\xff\xd8", "__MACOSX/._x": b""})
    msg = _assert_error(UnsupportedFormatError, g)
    assert "readme.md" in msg and "photo.jpg" in msg and "MACOSX" not in msg
    h = _zip(tmp_path / "empty.zip", {})
    assert "no 3D file" in _assert_error(UnsupportedFormatError, h)


def test_zip_inside_zip_and_corrupt_zip(tmp_path):
    inner = _zip(tmp_path / "inner.zip", {"cube.obj": _obj_text()}).read_bytes()
    nested = _zip(tmp_path / "outer.zip", {"inner.zip": inner})
    assert "archive inside an archive" in _assert_error(UnsupportedFormatError, nested)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    _assert_error(FileReadError, bad)


def test_zip_member_too_large_for_memory(tmp_path, monkeypatch):
    f = _zip(tmp_path / "big.zip", {"cube.obj": _obj_text() * 50})
    monkeypatch.setattr(io, "available_memory", lambda: 5000)
    assert "too large" in _assert_error(FileReadError, f)


def test_zip_member_that_unpacks_past_its_declared_size(tmp_path):
    """A zip bomb that under-declares its size is stopped, never unpacked in full."""
    import zipfile

    data = b"0 0 0\n1 0 0\n0 1 0\n" * 2000
    f = _zip(tmp_path / "bomb.zip", {"pts.xyz": data})
    raw = bytearray(f.read_bytes())
    central = raw.index(b"PK\x01\x02")
    for at in (22, central + 24):  # uncompressed size in the local header and in the central directory
        assert struct.unpack_from("<I", raw, at)[0] == len(data)
        struct.pack_into("<I", raw, at, 100)
    f.write_bytes(bytes(raw))
    assert zipfile.ZipFile(f).infolist()[0].file_size == 100
    _assert_error(FileReadError, f)


# ---------------------------------------------------------------------------------------------
# PLY: triangle strips, and what is not used is noted


def _ply_strip(path, strip, binary):
    v = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [2, 0, 0], [2, 1, 0]], np.float32)
    head = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex 6\n"
            "property float x\nproperty float y\nproperty float z\nelement tristrips 1\n"
            "property list int int vertex_indices\nend_header\n")
    with open(path, "wb") as f:
        f.write(head.encode())
        if binary:
            f.write(v.astype("<f4").tobytes() + struct.pack("<i", len(strip)) + np.asarray(strip, "<i4").tobytes())
        else:
            f.write("".join(f"{a} {b} {c}\n" for a, b, c in v).encode())
            f.write((f"{len(strip)} " + " ".join(map(str, strip)) + "\n").encode())


@pytest.mark.parametrize("binary", [True, False])
def test_ply_triangle_strips(tmp_path, binary):
    f = tmp_path / "strip.ply"
    _ply_strip(f, [0, 1, 2, 3, 4, 5], binary)
    c = load_point_cloud(f, num_samples=500)
    assert c.kind == "mesh" and c.original_faces == 4
    v = c.mesh_vertices[c.mesh_faces]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    assert (normal_z < 0).all() or (normal_z > 0).all(), "alternate strip triangles must keep one winding"
    assert (c.xyz[:, 0] >= -1e-6).all() and (c.xyz[:, 0] <= 2 + 1e-6).all() and np.allclose(c.xyz[:, 2], 0)
    _ply_strip(f, [0, 1, 2, -1, 3, 4, 5, 5, 5], binary)  # restart; a repeated index makes degenerate triangles
    c = load_point_cloud(f, num_samples=50)
    assert c.original_faces == 2 and sorted(map(sorted, c.mesh_faces.tolist())) == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("binary", [True, False])
def test_ply_unused_elements_and_properties_are_noted(tmp_path, binary):
    head = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex 8\n"
            "property float x\nproperty float y\nproperty float z\nproperty float quality\n"
            "property float confidence\nelement face 12\nproperty list uchar int vertex_indices\n"
            "property uchar red\nelement edge 2\nproperty int vertex1\nproperty int vertex2\n"
            "element material 0\nproperty float ambient\nend_header\n")
    f = tmp_path / "noted.ply"
    with open(f, "wb") as fh:
        fh.write(head.encode())
        if binary:
            fh.write(np.c_[CUBE_V, np.ones((8, 2))].astype("<f4").tobytes())
            for face in CUBE_T:
                fh.write(struct.pack("<B", 3) + face.astype("<i4").tobytes() + b"\x07")
            fh.write(np.array([[0, 1], [1, 2]], "<i4").tobytes())
        else:
            fh.write("".join(f"{a} {b} {c} 1 1\n" for a, b, c in CUBE_V).encode())
            fh.write("".join(f"3 {a} {b} {c} 7\n" for a, b, c in CUBE_T).encode())
            fh.write(b"0 1\n1 2\n")
    c = load_point_cloud(f, num_samples=100)
    assert c.original_faces == 12
    assert "PLY vertex properties ignored: quality, confidence" in c.notes
    assert "PLY face properties ignored: red" in c.notes
    assert "PLY element 'edge' (2 rows) ignored" in c.notes
    assert not any("material" in n for n in c.notes)  # no rows: nothing was dropped


def test_ply_with_everything_used_has_no_notes(tmp_path):
    write_ply_points(tmp_path / "a.ply")
    assert load_point_cloud(tmp_path / "a.ply").notes == []


# ---------------------------------------------------------------------------------------------
# notes of the other readers


def test_pcd_text_npz_obj_notes(tmp_path):
    n = 50
    f = tmp_path / "i.pcd"
    arr = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    arr["x"], arr["y"], arr["z"] = PTS[:n].T
    f.write_bytes(_pcd_header(n, "x y z intensity", "4 4 4 4", "F F F F", "1 1 1 1") + arr.tobytes())
    assert load_point_cloud(f).notes == ["PCD fields ignored: intensity"]
    t = tmp_path / "named.csv"
    t.write_text("x,y,z,intensity,label\n" + "\n".join(f"{x},{y},{z},0.5,3" for x, y, z in PTS[:n]) + "\n")
    assert load_point_cloud(t).notes == ["text columns not used: intensity, label"]
    u = tmp_path / "plain.xyz"
    u.write_text("\n".join(f"{x} {y} {z} 0.5" for x, y, z in PTS[:n]) + "\n")
    assert load_point_cloud(u).notes == ["text columns not used: 4 (of 4)"]
    np.savez(tmp_path / "a.npz", points=PTS, labels=np.zeros(500))
    assert load_point_cloud(tmp_path / "a.npz").notes == ["NPZ arrays ignored: labels"]
    o = tmp_path / "lines.obj"
    o.write_text(_obj_text() + "l 1 2\nl 2 3\n")
    assert load_point_cloud(o, num_samples=10).notes == ["OBJ 'l' elements (2) ignored"]


def test_las_extra_dimensions_noted_and_z_up(tmp_path):
    laspy = pytest.importorskip("laspy")
    las = laspy.LasData(laspy.LasHeader(point_format=3, version="1.2"))
    las.add_extra_dim(laspy.ExtraBytesParams(name="reflectance", type=np.float32))
    las.x, las.y, las.z = PTS.astype(np.float64).T
    las.reflectance = np.ones(500, np.float32)
    f = tmp_path / "scan.las"
    las.write(f)
    c = load_point_cloud(f)
    assert (c.format, c.up_hint) == ("las", "z")
    assert c.notes == ["LAS extra dimensions ignored: reflectance"]
    las.write(tmp_path / "scan.laz")
    (tmp_path / "scan.laz").rename(tmp_path / "compressed.las")
    assert load_point_cloud(tmp_path / "compressed.las").format == "laz"


# ---------------------------------------------------------------------------------------------
# up axis fixed by the format


def test_modelnet_resampled_text_is_y_up(tmp_path):
    unit = NRM * RNG.random((500, 1)).astype(np.float32)  # inside the unit sphere
    f = tmp_path / "airplane_0001.txt"
    f.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in np.c_[unit, NRM]) + "\n")
    c = load_point_cloud(f)
    assert (c.format, c.up_hint) == ("modelnet_txt", "y") and c.normals is not None
    big = tmp_path / "scan.txt"  # the same layout far outside the unit sphere: plain text, no convention
    big.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in np.c_[unit * 50, NRM]) + "\n")
    assert (load_point_cloud(big).format, load_point_cloud(big).up_hint) == ("txt", None)


def test_up_hint_per_format(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    trimesh.Trimesh(CUBE_V, CUBE_T, process=False).export(tmp_path / "cube.glb")
    assert load_point_cloud(tmp_path / "cube.glb", num_samples=10).up_hint == "y"
    write_ply_points(tmp_path / "a.ply")
    write_pcd(tmp_path / "a.pcd")
    (tmp_path / "a.obj").write_text(_obj_text())
    np.save(tmp_path / "a.npy", PTS)
    for name in ("a.ply", "a.pcd", "a.obj", "a.npy"):
        assert load_point_cloud(tmp_path / name, num_samples=10).up_hint is None, name

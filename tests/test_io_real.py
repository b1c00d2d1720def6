"""Real files: every LiDAR / RGB-D float32 layout is read with its true point count, or refused naming
--channels, never misread; scans read through a zip archive as they read alone."""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest

from core.data.io import load_point_cloud
from core.errors import ChannelsNeededError


def _documented_layouts(folder):
    """(file, floats per point, columns, points) for each file listed in the folder's README table."""
    readme = folder / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} absent")
    files = sorted(f.name for f in folder.glob("*.bin"))
    rows = []
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*(\S+\.bin)\s*\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*([\d,]+)\s*\|", line)
        if not m:
            continue
        head, _, tail = m.group(1).partition("...")  # long names are shortened with "..."
        for name in files:
            if (name == m.group(1)) or ("..." in m.group(1) and name.startswith(head) and name.endswith(tail)):
                rows.append((name, int(m.group(2)), m.group(3), int(m.group(4).replace(",", ""))))
    if not rows:
        pytest.skip(f"no documented .bin file found in {folder}")
    return rows


@pytest.fixture(scope="module")
def layouts(shared_data):
    return shared_data / "lidar_layouts"


def test_every_documented_file_is_read_exactly_or_refused(layouts):
    for name, channels, _columns, points in _documented_layouts(layouts):
        f = layouts / name
        try:
            c = load_point_cloud(f)
        except ChannelsNeededError as exc:
            assert "--channels" in str(exc) and channels in exc.candidates, name
        else:
            assert (c.channels, c.original_points) == (channels, points), name
            assert c.up_hint == "z", name
        exact = load_point_cloud(f, channels=channels)
        assert (exact.channels, exact.original_points) == (channels, points), name
        np.testing.assert_array_equal(exact.xyz, np.fromfile(f, "<f4").reshape(-1, channels)[:, :3])


@pytest.mark.parametrize("prefix,fmt,layout", [
    ("kitti__", "kitti_bin", "x y z intensity"),
    ("semantickitti__", "kitti_bin", "x y z intensity"),
    ("nuscenes__samples__", "nuscenes_bin", "x y z intensity ring"),
    ("nuscenes__sweeps__", "nuscenes_bin", "x y z intensity ring"),
    ("waymo__", "waymo_bin", "x y z intensity elongation timestamp"),
    ("scannet__", "xyzrgb_bin", "x y z r g b"),
    ("s3dis__", "xyzrgb_bin", "x y z r g b"),
    ("sunrgbd__", "xyzrgb_bin", "x y z r g b"),
])
def test_known_layouts_open_without_channels(layouts, prefix, fmt, layout):
    """These files open as they are (a KITTI scan must, as it always did)."""
    found = sorted(layouts.glob(f"{prefix}*.bin"))
    if not found:
        pytest.skip(f"no {prefix}*.bin in {layouts}")
    for f in found:
        c = load_point_cloud(f)
        assert (c.format, c.layout) == (fmt, layout), f.name
        if layout.endswith("r g b"):
            rgb = np.fromfile(f, "<f4").reshape(-1, 6)[:, 3:6]
            np.testing.assert_allclose(c.colors, rgb / (255.0 if rgb.max() > 1 else 1.0), atol=1e-6)
            assert c.colors.min() >= 0 and c.colors.max() <= 1


def test_wrong_channels_on_a_real_scan_is_noted(layouts):
    f = layouts / "kitti__training__velodyne__000000.bin"
    if not f.is_file():
        pytest.skip(f"{f} absent")
    c = load_point_cloud(f, channels=5)
    assert c.original_points == 640 and any("looks like 4 floats per point" in n for n in c.notes)


def test_real_scan_through_a_zip(shared_data, tmp_path):
    bunny = shared_data / "scans" / "bun_zipper.ply"
    if not bunny.is_file():
        pytest.skip(f"{bunny} absent")
    z = tmp_path / "bunny.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(bunny, "bunny/bun_zipper.ply")
        zf.writestr("__MACOSX/bunny/._bun_zipper.ply", b"\0\5\26\7")
    c = load_point_cloud(z, num_samples=2000)
    assert (c.format, c.kind, c.original_points, c.original_faces) == ("zip:ply", "mesh", 35947, 69451)
    assert "PLY vertex properties ignored: confidence, intensity" in c.notes


def test_real_pcd_notes(shared_data):
    frag = shared_data / "scans" / "fragment.pcd"
    if not frag.is_file():
        pytest.skip(f"{frag} absent")
    assert load_point_cloud(frag).notes == ["PCD fields ignored: curvature"]

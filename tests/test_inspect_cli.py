"""``python main.py inspect``: what a file holds; bad input gives exit 2 and one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *args):
    rc = main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_point_file_report(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(5000, 3)).astype(np.float32) * 10 + 3
    np.save(tmp_path / "c.npy", x)
    rc, out, err = _run(capsys, tmp_path / "c.npy", "--points", 512, "--json")
    assert rc == 0 and err == ""
    info = json.loads(out)
    assert info["format"] == "npy" and info["kind"] == "points"
    assert info["points_in_file"] == 5000 and info["points_prepared"] == 512 and info["faces"] == 0
    np.testing.assert_allclose(info["bounds"]["min"], x.min(axis=0), rtol=1e-5)
    assert max(map(abs, info["bounds_prepared"]["min"] + info["bounds_prepared"]["max"])) <= 1.0 + 1e-6


def test_mesh_report_text(tmp_path, capsys):
    (tmp_path / "t.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n")
    rc, out, _ = _run(capsys, tmp_path / "t.off", "--up", "y")
    assert rc == 0
    assert "mesh, 4 vertices, 2 faces" in out and "1,024 points, up axis y (user) -> z" in out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "missing.ply", "no such file"),
    "empty folder": (lambda d: (d / "nothing").mkdir() or d / "nothing", "empty"),
    "empty file": (lambda d: _write(d / "e.pcd", b""), "empty"),
    "garbage ply": (lambda d: _write(d / "g.ply", b"\x00\x01garbage"), "PLY"),
    "unknown format": (lambda d: _write(d / "x.weird", bytes(range(256)) * 4), "unknown format"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exit_2_one_line(tmp_path, capsys, case):
    make, needle = BAD_INPUTS[case]
    target = make(tmp_path)
    rc, out, err = _run(capsys, target)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and str(target) in lines[0]


def test_dataset_folder_summary(tmp_path, capsys):
    for cls in ("a", "b"):
        for split in ("train", "test"):
            (tmp_path / cls / split).mkdir(parents=True)
            np.save(tmp_path / cls / split / "0.npy", np.random.default_rng(0).normal(size=(50, 3)))
    rc, out, _ = _run(capsys, tmp_path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["classes"] == 2 and info["splits"] == {"train": 2, "test": 2}


@pytest.mark.slow
def test_every_shared_scan_inspects(shared_data, capsys):
    scans = shared_data / "scans"
    if not scans.is_dir():
        pytest.skip(f"{scans} absent")
    files = [f for f in sorted(scans.iterdir()) if not f.name.startswith("LICENSE")]
    assert len(files) >= 8
    for f in files:
        rc, out, err = _run(capsys, f, "--json")
        assert rc == 0, f"{f.name}: {err}"
        info = json.loads(out)
        assert info["points_prepared"] == 1024 and info["points_read"] > 0, f.name


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["inspect", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "python main.py inspect" in out and "--points" in out


@pytest.mark.slow
def test_real_command_line_exit_status(tmp_path):
    """The installed entry point, as a user runs it: one line on stderr and status 2."""
    env = dict(os.environ, T3DNET_NO_TCMALLOC="1")
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", str(tmp_path / "nope.xyz")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr


def _kitti_like(path: Path, n: int = 600) -> np.ndarray:
    """A KITTI-layout scan (x y z intensity), in scan order: one ring after another."""
    rng = np.random.default_rng(0)
    e = np.repeat(np.deg2rad(np.linspace(-25, 3, 64)), 600)
    a = np.tile(np.linspace(-np.pi, np.pi, 600, endpoint=False), 64)
    r = np.where(e < -0.02, 1.73 / np.maximum(np.sin(-e), 1e-3), 20 + 15 * np.abs(np.sin(3 * a)))
    keep = np.sort(rng.choice(len(e), n, replace=False))
    e, a, r = e[keep], a[keep], np.minimum(r[keep], 80)
    rows = np.stack([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e),
                     np.round(rng.random(n), 2)], axis=1).astype("<f4")
    rows.tofile(path)
    return rows


def test_float32_scan_reports_layout_up_hint_and_notes(tmp_path, capsys):
    _kitti_like(tmp_path / "000000.bin")
    rc, out, err = _run(capsys, tmp_path / "000000.bin", "--json")
    info = json.loads(out)
    assert rc == 0 and err == ""
    assert (info["format"], info["channels"], info["layout"], info["up_hint"]) == \
        ("kitti_bin", 4, "x y z intensity", "z")
    assert info["points_in_file"] == 600 and any("told from" in n for n in info["notes"])
    rc, out, _ = _run(capsys, tmp_path / "000000.bin")
    assert rc == 0
    assert "layout    x y z intensity (4 floats per point)" in out and "up hint   z (fixed by the format)" in out
    assert sum(line.startswith("note      ") for line in out.splitlines()) == len(info["notes"])


def test_channels_option(tmp_path, capsys):
    rows = _kitti_like(tmp_path / "scan.bin")
    rc, out, _ = _run(capsys, tmp_path / "scan.bin", "--channels", 5, "--json")
    info = json.loads(out)
    assert rc == 0 and info["channels"] == 5 and info["points_in_file"] == rows.size // 5
    assert any("check --channels" in n for n in info["notes"])


def test_ambiguous_layout_exit_2_names_channels(tmp_path, capsys):
    f = tmp_path / "scan.bin"
    np.random.default_rng(3).random(480).astype("<f4").tofile(f)
    rc, out, err = _run(capsys, f)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and "--channels" in lines[0] and str(f) in lines[0]
    rc, out, _ = _run(capsys, f, "--channels", 4, "--json")
    assert rc == 0 and json.loads(out)["points_in_file"] == 120
    rc, out, err = _run(capsys, f, "--channels", 2)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "channels" in err


def test_mesh_report_has_the_new_keys(tmp_path, capsys):
    (tmp_path / "t.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n")
    rc, out, _ = _run(capsys, tmp_path / "t.off", "--json")
    info = json.loads(out)
    assert rc == 0 and info["format"] == "off"
    assert (info["channels"], info["layout"], info["up_hint"], info["notes"]) == (None, None, None, [])


def test_negative_up_axis_after_a_space_and_the_decision_reported(tmp_path, capsys):
    f = tmp_path / "frame.xyz"
    np.savetxt(f, np.random.default_rng(0).random((300, 3)))
    rc, out, _ = _run(capsys, f, "--up", "-y", "--json")
    assert rc == 0
    info = json.loads(out)
    assert (info["up_axis"], info["up_axis_source"]) == ("-y", "user")
    assert info["up_axis_confidence"] is None and info["up_axis_unsure"] is False  # named: nothing estimated
    assert info["scene"] is False and "fewer than" in info["scene_reason"]

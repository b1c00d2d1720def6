"""``inspect``: what a 3D file (or dataset folder) holds, before and after preprocessing."""

from __future__ import annotations

import json
import time

from core.cli.options import add_channels_option
from core.data.orient import UP_CHOICES, up_axis_text

DESCRIPTION = """\
Read a mesh or point cloud the way the app and `predict` do, and print what was read: format,
mesh or points, point/face counts, bounds, and the same after preprocessing (N points, z up,
unit sphere); for a headerless float32 file (LiDAR .bin) its floats per point and columns; the up
axis the format fixes, if any; and what the file holds that is not used. A folder is described as
a dataset (layout, classes, shapes per split). Bad input prints one line on stderr and exits with
status 2.

examples:
  python main.py inspect ../shared/data/scans/bun_zipper.ply --points 1024
  python main.py inspect scan.xyz --up y --json
  python main.py inspect kinect_frame.pcd --up=-y
  python main.py inspect ../shared/data/lidar_layouts/kitti__training__velodyne__000000.bin
  python main.py inspect sweep.bin --channels 5
  python main.py inspect ../shared/data/modelnet40_npy1024
"""


def add_commands(sub) -> None:
    import argparse

    p = sub.add_parser("inspect", help="show what a 3D file or dataset folder holds",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="mesh, point cloud, array or LiDAR file; or a dataset folder")
    p.add_argument("--points", type=int, default=1024, help="points after preprocessing (default 1024)")
    p.add_argument("--up", choices=UP_CHOICES, default="auto",
                   help="up axis of the file: auto (the format's, else estimated) or a signed axis (default auto)")
    add_channels_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _bounds(xyz) -> dict:
    return {"min": [round(float(v), 6) for v in xyz.min(axis=0)],
            "max": [round(float(v), 6) for v in xyz.max(axis=0)]}


def inspect_file(path: str, points: int = 1024, up: str = "auto", channels: int | None = None) -> dict:
    """Everything ``inspect`` reports about one file (raises T3DError on bad input)."""
    from core.data.io import load_point_cloud
    from core.data.preprocess import prepare_points
    from core.inference import DEFAULT_UP_ESTIMATOR, UpEstimator, analyze_cloud

    if points < 1:
        from core.errors import T3DError

        raise T3DError(f"--points must be positive, got {points}")
    t0 = time.perf_counter()
    cloud = load_point_cloud(path, channels=channels)
    t1 = time.perf_counter()
    estimate = UpEstimator.load().estimate if up == "auto" and DEFAULT_UP_ESTIMATOR.is_file() else None
    analysis = analyze_cloud(cloud, up, estimate)
    up_axis = analysis["_up"]
    prepared = prepare_points(cloud.xyz, num_points=points, up_axis=up_axis.axis)
    t2 = time.perf_counter()
    info = {
        "path": cloud.path, "format": cloud.format, "kind": cloud.kind,
        "points_in_file": cloud.original_points, "faces": cloud.original_faces,
        "invalid_points": cloud.invalid_points, "points_read": len(cloud.xyz),
        "normals": cloud.normals is not None, "colors": cloud.colors is not None,
        "channels": cloud.channels, "layout": cloud.layout, "up_hint": cloud.up_hint,
        "notes": list(cloud.notes),
        "bounds": _bounds(cloud.xyz), "up_axis": up_axis.axis, "up_axis_source": up_axis.source,
        "up_axis_confidence": up_axis.confidence, "up_axis_unsure": up_axis.unsure,
        "scene": analysis["scene"], "scene_reason": analysis["scene_reason"],
        "points_prepared": int(len(prepared)), "bounds_prepared": _bounds(prepared),
        "read_s": round(t1 - t0, 4), "prepare_s": round(t2 - t1, 4),
    }
    if cloud.origin is not None:
        info["origin"] = [float(v) for v in cloud.origin]
    return info


def run(args) -> int:
    from pathlib import Path

    if Path(args.path).is_dir():
        from core.data.datasets import describe_dataset

        info = describe_dataset(args.path)
        if args.json:
            print(json.dumps(info, indent=1))
        else:
            print(f"dataset   {info['root']}\nlayout    {info['layout']}\nclasses   {info['classes']}: "
                  f"{', '.join(info['class_names'][:8])}{' ...' if info['classes'] > 8 else ''}\n"
                  f"up axis   {info['source_up_axis']} in the files (loaded as z up)")
            for s, n in info["splits"].items():
                print(f"{s:<10}{n:,} shapes")
            if info["note"]:
                print(f"note      {info['note']}")
        return 0
    info = inspect_file(args.path, args.points, args.up, args.channels)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    extra = [w for w, on in (("normals", info["normals"]), ("colours", info["colors"])) if on]
    what = (f"mesh, {info['points_in_file']:,} vertices, {info['faces']:,} faces, "
            f"{info['points_read']:,} surface samples" if info["kind"] == "mesh"
            else f"point cloud, {info['points_in_file']:,} points")
    b, bp = info["bounds"], info["bounds_prepared"]
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
    print(f"file      {info['path']}\nformat    {info['format']}: {what}"
          f"{' with ' + ' and '.join(extra) if extra else ''}")
    if info["layout"]:
        per_point = f" ({info['channels']} floats per point)" if info["channels"] else ""
        print(f"layout    {info['layout']}{per_point}")
    if info["up_hint"]:
        print(f"up hint   {info['up_hint']} (fixed by the format)")
    for note in info["notes"]:
        print(f"note      {note}")
    if info["invalid_points"]:
        print(f"dropped   {info['invalid_points']:,} NaN/infinite points")
    if "origin" in info:
        print(f"origin    {fmt(info['origin'])} (large coordinates stored relative to it)")
    print(f"bounds    {fmt(b['min'])} .. {fmt(b['max'])}")
    print(f"scene     {'yes: ' if info['scene'] else 'no: '}{info['scene_reason']}")
    up = up_axis_text(info["up_axis"], info["up_axis_source"], info["up_axis_confidence"])
    print(f"prepared  {info['points_prepared']:,} points, up axis {up} -> z, "
          f"unit sphere\n"
          f"bounds    {fmt(bp['min'])} .. {fmt(bp['max'])}")
    print(f"time      read {info['read_s'] * 1000:.0f} ms, prepare {info['prepare_s'] * 1000:.0f} ms")
    return 0

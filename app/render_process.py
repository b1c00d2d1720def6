"""The Open3D render process: off-screen legacy ``Visualizer`` frames for the 3D view (no Qt here).

Open3D's legacy renderer holds the GIL while it renders and reads pixels back, so rendering in a
thread of the GUI process stalls the GUI thread for the length of every frame. Here it runs in a
child process (multiprocessing, 'spawn'): the GUI sends the geometry once per change and small
camera messages; the child answers with RGB frames. A crash here cannot take the app down.

Protocol (one pickled tuple per message on the command pipe, GUI -> child):
    ("scene", dict | None)     the shape: xyz, colors, normals, mesh_vertices, mesh_faces; frames it
    ("overlay", array | None, dense[, colors])   the model input; ``dense``: draw it as small crosses;
                               ``colors`` (N, 3) in 0..1: one colour per point (importance), the shape grey
    ("boxes", version, list)   axis-aligned wireframe boxes, each (min xyz, max xyz, rgb 0..1, emphasis)
    ("state", dict)            any of color, point_size, mesh, dark, up (a signed axis: z y x -z -y -x)
    ("rotate", dx, dy) / ("pan", dx, dy) / ("zoom", steps) / ("reset",) / ("resize", w, h)
    ("render",) / ("stop",) / ("crash",) (tests: exit at once, as a crash would)
Frames (frame pipe, child -> GUI): ``send_bytes`` of a 12-byte header (seq, width, height as
little-endian uint32), width * height * 3 RGB bytes, then a UTF-8 JSON trailer
``{"boxes": version, "anchors": [[x, y] | null, ...]}``: where each box's label goes in the frame
(above its projected top); width 0 marks a UTF-8 error message instead.

Thread: ``render_main`` runs on the main thread of the child process; the GL context belongs to it.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile

import numpy as np

from app.shapes import up_and_front

HEADER = struct.Struct("<III")
SOLID = np.array([0.55, 0.62, 0.75])
OVERLAY = np.array([0.95, 0.15, 0.1])
UNDER_IMPORTANCE = np.array([0.62, 0.62, 0.64])  # the shape's colour under an importance overlay
AXIS = {"x": 0, "y": 1, "z": 2}
FIT_ZOOM = 0.75  # 1.0 puts the box's largest side at the view's edge; a margin keeps corners inside
BOX_LINE_WIDTH = 2.0
# An emphasised box is drawn as nested copies this far apart (a share of the scene's extent): line
# widths above one pixel are not honoured everywhere, copies are.
EMPHASIS_STEP = 0.003
_BOX_EDGES = np.array([[0, 1], [0, 2], [0, 4], [1, 3], [1, 5], [2, 3], [2, 6], [3, 7], [4, 5], [4, 6], [5, 7],
                       [6, 7]])


def box_corners(lo, hi) -> np.ndarray:
    """The 8 corners (8, 3) of an axis-aligned box; corner k takes hi on axis d when bit d of k is set."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    bits = (np.arange(8)[:, None] >> np.arange(3)[None]) & 1
    return np.where(bits == 1, hi, lo)


def height_colors(xyz: np.ndarray, up: str = "z") -> np.ndarray:
    """A blue-cyan-yellow-red ramp over the (signed) up coordinate."""
    z = xyz[:, AXIS.get(up.lstrip("-"), 2)] * (-1.0 if up.startswith("-") else 1.0)
    t = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    stops = np.array([[0.17, 0.25, 0.7], [0.1, 0.7, 0.8], [0.95, 0.85, 0.2], [0.85, 0.2, 0.15]])
    x = t * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return stops[i] * (1 - f) + stops[i + 1] * f


class OffscreenScene:
    """One hidden legacy Visualizer with the current shape, overlay, options and camera."""

    def __init__(self, width: int, height: int) -> None:
        if not os.environ.get("XDG_RUNTIME_DIR"):  # else the EGL stack prints an error line at every window
            runtime = os.path.join(tempfile.gettempdir(), f"t3dnet-runtime-{os.getuid()}")
            os.makedirs(runtime, mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = runtime
        import open3d as o3d

        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        self.o3d = o3d
        self.size = (width, height)
        self.state = {"color": "height", "point_size": 3.0, "mesh": True, "dark": True, "up": "z"}
        self.scene: dict | None = None
        self.overlay: np.ndarray | None = None
        self.overlay_colors: np.ndarray | None = None  # per-point colours (importance); None: red
        self.dense = False
        self.boxes: list = []  # (lo, hi, rgb, emphasis)
        self.boxes_version = 0
        self.geoms: list = []
        self.vis = self._window(width, height)

    def _window(self, w: int, h: int):
        vis = self.o3d.visualization.Visualizer()
        if not vis.create_window(window_name="t3dnet", width=w, height=h, visible=False):
            raise RuntimeError("Open3D could not create an off-screen window (EGL)")
        self.vis = vis
        self.apply_options()
        return vis

    def apply_options(self) -> None:
        opt = self.vis.get_render_option()
        opt.point_size = float(self.state["point_size"])
        opt.background_color = np.array([0.12, 0.13, 0.15]) if self.state["dark"] else np.array([1.0, 1.0, 1.0])
        opt.mesh_show_back_face = True
        opt.light_on = True
        opt.line_width = BOX_LINE_WIDTH

    # --- geometry -------------------------------------------------------------------------------
    def _point_colors(self, s: dict) -> np.ndarray:
        mode, xyz = self.state["color"], s["xyz"]
        colors, normals = s.get("colors"), s.get("normals")
        if mode == "rgb" and colors is not None and len(colors) == len(xyz):
            return np.asarray(colors, np.float64)
        if mode == "normal":
            if normals is None or len(normals) != len(xyz):
                pc = self.o3d.geometry.PointCloud(self.o3d.utility.Vector3dVector(xyz.astype(np.float64)))
                pc.estimate_normals(self.o3d.geometry.KDTreeSearchParamKNN(16))
                normals = s["normals"] = np.asarray(pc.normals, np.float32)
            return np.abs(normals).astype(np.float64)
        if mode == "solid":
            return np.tile(SOLID, (len(xyz), 1))
        return height_colors(xyz, self.state["up"])

    def _build(self) -> list:
        o3d, s, out = self.o3d, self.scene, []
        colored = self.overlay is not None and self.overlay_colors is not None and len(self.overlay_colors) == len(
            self.overlay)
        if s is not None:
            if self.state["mesh"] and s.get("mesh_faces") is not None and len(s["mesh_faces"]) > 0:
                m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(s["mesh_vertices"].astype(np.float64)),
                                              o3d.utility.Vector3iVector(s["mesh_faces"].astype(np.int32)))
                m.compute_vertex_normals()
                if colored:  # the importance colours must read: the shape under them is grey
                    m.paint_uniform_color(UNDER_IMPORTANCE)
                elif self.state["color"] == "solid":
                    m.paint_uniform_color(SOLID)
                elif self.state["color"] == "normal":
                    m.vertex_colors = o3d.utility.Vector3dVector(np.abs(np.asarray(m.vertex_normals)))
                else:
                    m.vertex_colors = o3d.utility.Vector3dVector(height_colors(np.asarray(m.vertices), self.state["up"]))
                out.append(m)
            else:
                pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(s["xyz"].astype(np.float64)))
                pc.colors = o3d.utility.Vector3dVector(np.tile(UNDER_IMPORTANCE, (len(s["xyz"]), 1)) if colored
                                                       else self._point_colors(s))
                out.append(pc)
        if self.overlay is not None and len(self.overlay):
            p = self.overlay.astype(np.float64)
            if self.dense:
                # The shape has no more points than the models take: red dots would hide it, so each
                # model point is a small red cross drawn over the shape's own points.
                ext = float(np.ptp(p, axis=0).max()) if len(p) > 1 else 1.0
                d = np.eye(3) * ext * 0.006
                ends = np.concatenate([p[:, None, :] + d[None], p[:, None, :] - d[None]], axis=1).reshape(-1, 3)
                n = len(p)
                a = np.arange(n)[:, None] * 6 + np.arange(3)[None]
                lines = np.stack([a.ravel(), (a + 3).ravel()], 1)
                ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(ends), o3d.utility.Vector2iVector(lines))
                if colored:
                    ls.colors = o3d.utility.Vector3dVector(np.repeat(np.asarray(self.overlay_colors, np.float64), 3, 0))
                else:
                    ls.paint_uniform_color(OVERLAY)
                out.append(ls)
            else:
                ov = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
                if colored:
                    ov.colors = o3d.utility.Vector3dVector(np.asarray(self.overlay_colors, np.float64))
                else:
                    ov.paint_uniform_color(OVERLAY)
                out.append(ov)
        if self.boxes:
            out.append(self._box_lines())
        return out

    def _box_lines(self):
        """One LineSet with the edges of every box, coloured per box; emphasised boxes are doubled."""
        o3d = self.o3d
        ext = 1.0
        if self.scene is not None and len(self.scene["xyz"]):
            ext = float(np.ptp(self.scene["xyz"], axis=0).max()) or 1.0
        points, lines, colors = [], [], []
        for lo, hi, rgb, emphasis in self.boxes:
            for k in range(3 if emphasis else 1):
                d = k * EMPHASIS_STEP * ext
                lines.append(_BOX_EDGES + 8 * len(points))
                points.append(box_corners(np.asarray(lo) - d, np.asarray(hi) + d))
                colors.append(np.tile(np.asarray(rgb, np.float64), (len(_BOX_EDGES), 1)))
        ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(np.concatenate(points)),
                                  o3d.utility.Vector2iVector(np.concatenate(lines).astype(np.int32)))
        ls.colors = o3d.utility.Vector3dVector(np.concatenate(colors))
        return ls

    def label_anchors(self) -> list:
        """Where each box's label goes in the frame: the middle of its projected top edge, in pixels
        (None when the box is behind the camera)."""
        if not self.boxes:
            return []
        p = self.vis.get_view_control().convert_to_pinhole_camera_parameters()
        k, ext = np.asarray(p.intrinsic.intrinsic_matrix), np.asarray(p.extrinsic)
        out = []
        for lo, hi, _, _ in self.boxes:
            cam = box_corners(lo, hi) @ ext[:3, :3].T + ext[:3, 3]
            if (cam[:, 2] <= 1e-6).any():
                out.append(None)
                continue
            u = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2]
            v = k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]
            out.append([round(float((u.min() + u.max()) / 2), 1), round(float(v.min()), 1)])
        return out

    def rebuild(self, fit: bool) -> None:
        """Replace the geometries; ``fit`` frames the whole shape, else the camera stays where it is."""
        vc = self.vis.get_view_control()
        params = None if fit or not self.geoms else vc.convert_to_pinhole_camera_parameters()
        self.vis.clear_geometries()
        self.geoms = self._build()
        for g in self.geoms:
            self.vis.add_geometry(g, reset_bounding_box=False)
        if fit or params is None:
            self.fit()
        else:
            self.vis.get_view_control().convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)

    def fit(self) -> None:
        """Frame the shape (not the overlay) from the front-right, a little above, with its up axis up."""
        if not self.geoms or self.scene is None:
            return
        self.vis.reset_view_point(True)
        vc = self.vis.get_view_control()
        box = self.geoms[0].get_axis_aligned_bounding_box()
        up, front = up_and_front(self.state["up"])
        vc.set_lookat(box.get_center())
        vc.set_front(front)
        vc.set_up(up)
        # The zoom sets the visible half-height (the field of view is vertical): a window narrower than
        # it is tall needs proportionally more to keep the shape's width inside.
        w, h = self.size
        vc.set_zoom(FIT_ZOOM / min(1.0, w / h))

    def resize(self, w: int, h: int) -> None:
        """Recreate the window at a new size, keeping the camera's pose and vertical field of view."""
        if (w, h) == self.size:
            return
        params = self.vis.get_view_control().convert_to_pinhole_camera_parameters() if self.geoms else None
        old_h = self.size[1]
        self.vis.destroy_window()
        self._window(w, h)
        self.size = (w, h)
        for g in self.geoms:
            self.vis.add_geometry(g, reset_bounding_box=False)
        if params is None:
            self.fit()
            return
        self.vis.reset_view_point(True)
        fy = params.intrinsic.get_focal_length()[1] * h / old_h
        params.intrinsic.set_intrinsics(w, h, fy, fy, w / 2 - 0.5, h / 2 - 0.5)
        self.vis.get_view_control().convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)

    def camera(self, msg: tuple) -> None:
        vc = self.vis.get_view_control()
        if msg[0] == "rotate":
            vc.rotate(float(msg[1]), float(msg[2]))
        elif msg[0] == "pan":
            vc.translate(float(msg[1]), float(msg[2]))
        elif msg[0] == "zoom":
            vc.scale(-float(msg[1]))
        elif msg[0] == "reset":
            self.fit()

    def frame(self) -> bytes:
        """The RGB pixels of a fresh render, then the JSON trailer with the boxes' label anchors."""
        buf = np.asarray(self.vis.capture_screen_float_buffer(do_render=True))
        trailer = json.dumps({"boxes": self.boxes_version, "anchors": self.label_anchors()}).encode()
        return np.ascontiguousarray((np.clip(buf, 0, 1) * 255).astype(np.uint8)).tobytes() + trailer


def render_main(cmd_conn, frame_conn, width: int, height: int) -> None:
    """Child-process entry: apply the commands that have arrived, render once, send the frame, repeat.

    A burst of camera messages costs one frame. Ends on ("stop",) or when the GUI side closes the
    pipe (the app quit or died).
    """
    try:
        scene = OffscreenScene(width, height)
    except Exception as exc:
        frame_conn.send_bytes(HEADER.pack(0, 0, 0) + f"3D view unavailable: {exc}".encode())
        return
    seq = 0
    while True:
        try:
            msgs = [cmd_conn.recv()]
            while cmd_conn.poll(0):
                msgs.append(cmd_conn.recv())
        except (EOFError, OSError):
            break
        render, stop = False, False
        for msg in msgs:
            kind = msg[0]
            try:
                if kind == "stop":
                    stop = True
                    break
                if kind == "crash":
                    os._exit(3)
                if kind == "scene":
                    scene.scene, scene.overlay = msg[1], None
                    scene.rebuild(fit=True)
                elif kind == "overlay":
                    scene.overlay, scene.dense = msg[1], bool(msg[2])
                    scene.overlay_colors = msg[3] if len(msg) > 3 else None
                    scene.rebuild(fit=False)
                elif kind == "boxes":
                    scene.boxes_version, scene.boxes = int(msg[1]), list(msg[2])
                    scene.rebuild(fit=False)
                elif kind == "state":
                    changed = {k for k, v in msg[1].items() if scene.state.get(k) != v}
                    scene.state.update(msg[1])
                    scene.apply_options()
                    if changed & {"color", "mesh", "up"}:
                        scene.rebuild(fit="up" in changed)
                elif kind == "resize":
                    scene.resize(int(msg[1]), int(msg[2]))
                elif kind in ("rotate", "pan", "zoom", "reset"):
                    scene.camera(msg)
                render = True
            except Exception as exc:
                try:
                    frame_conn.send_bytes(HEADER.pack(0, 0, 0) + f"3D view: {exc}".encode())
                except OSError:
                    return
        if stop:
            break
        if render and scene.scene is not None:
            seq += 1
            w, h = scene.size
            try:
                frame_conn.send_bytes(HEADER.pack(seq, w, h) + scene.frame())
            except (BrokenPipeError, OSError):
                break
    scene.vis.destroy_window()
    sys.exit(0)

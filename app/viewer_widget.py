"""Embedded 3D view: Open3D's legacy Visualizer renders off-screen, frames are painted in a QWidget.

Open3D cannot be a Qt widget; the off-screen legacy Visualizer (EGL without a display) renders into
a buffer that we copy into a QImage (RESEARCH.md §5). Filament's OffscreenRenderer hangs here.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.shapes import Shape

COLOR_MODES = ("height", "normal", "rgb", "solid")
# Open3D's legacy renderer holds the GIL while it renders and reads pixels back, which stalls the GUI
# thread; the read-back grows with the pixel count, so frames are rendered at most this large and scaled.
MAX_RENDER_PIXELS = 330_000
SOLID = np.array([0.55, 0.62, 0.75])
OVERLAY = np.array([0.95, 0.15, 0.1])


def _height_colors(xyz: np.ndarray) -> np.ndarray:
    """A blue-cyan-yellow-red ramp over z."""
    z = xyz[:, 2]
    t = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    stops = np.array([[0.17, 0.25, 0.7], [0.1, 0.7, 0.8], [0.95, 0.85, 0.2], [0.85, 0.2, 0.15]])
    x = t * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return stops[i] * (1 - f) + stops[i + 1] * f


class _FrameSignals(QObject):
    frame = Signal(QImage)
    failed = Signal(str)


class Open3DRenderer:
    """Owns one off-screen ``open3d.visualization.Visualizer`` on its own thread.

    Thread: all Open3D calls happen on the renderer thread (the GL context belongs to it). The GUI
    thread only queues commands; finished frames come back through the ``frame`` signal (queued).
    Pending commands are applied together before one render, so a burst of mouse moves costs one frame.
    """

    def __init__(self, width: int = 640, height: int = 480) -> None:
        self.signals = _FrameSignals()
        self._size = (width, height)
        self._ops: deque = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.frames = 0
        self.ok = True
        self.state = {"color": "height", "point_size": 3.0, "mesh": True, "dark": True}
        self._shape: Shape | None = None
        self._overlay: np.ndarray | None = None
        self._thread = threading.Thread(target=self._run, name="open3d-render", daemon=True)
        self._thread.start()

    # --- GUI-thread API ---------------------------------------------------------------------
    def submit(self, op, render: bool = True) -> None:
        with self._cond:
            self._ops.append((op, render))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5)

    # --- renderer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            import open3d as o3d

            o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
            self.o3d = o3d
            self.vis = o3d.visualization.Visualizer()
            if not self.vis.create_window(window_name="t3dnet", width=self._size[0], height=self._size[1],
                                          visible=False):
                raise RuntimeError("Open3D could not create an off-screen window (EGL)")
            self._geoms: list = []
            self._apply_options()
        except Exception as exc:  # noqa: BLE001 - shown in the widget instead of a 3D view
            self.ok = False
            self.signals.failed.emit(f"3D view unavailable: {exc}")
            return
        while True:
            with self._cond:
                while not self._ops and not self._stop:
                    self._cond.wait()
                if self._stop:
                    break
                ops = list(self._ops)
                self._ops.clear()
            render = False
            for op, r in ops:
                try:
                    op(self)
                except Exception as exc:  # noqa: BLE001
                    self.signals.failed.emit(f"3D view: {exc}")
                render |= r
            if render:
                self._render()
        self.vis.destroy_window()

    def _render(self) -> None:
        buf = np.asarray(self.vis.capture_screen_float_buffer(do_render=True))
        img8 = np.ascontiguousarray((np.clip(buf, 0, 1) * 255).astype(np.uint8))
        h, w = img8.shape[:2]
        img = QImage(img8.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.frames += 1
        self.signals.frame.emit(img)

    def _apply_options(self) -> None:
        opt = self.vis.get_render_option()
        opt.point_size = float(self.state["point_size"])
        opt.background_color = np.array([0.12, 0.13, 0.15]) if self.state["dark"] else np.array([1.0, 1.0, 1.0])
        opt.mesh_show_back_face = True
        opt.light_on = True

    def _colors(self, shape: Shape) -> np.ndarray:
        mode = self.state["color"]
        if mode == "rgb" and shape.colors is not None and len(shape.colors) == len(shape.xyz):
            return shape.colors.astype(np.float64)
        if mode == "normal":
            n = shape.normals
            if n is None or len(n) != len(shape.xyz):
                pc = self.o3d.geometry.PointCloud(self.o3d.utility.Vector3dVector(shape.xyz.astype(np.float64)))
                pc.estimate_normals(self.o3d.geometry.KDTreeSearchParamKNN(16))
                n = np.asarray(pc.normals, np.float32)
                shape.normals = n
            return np.abs(n).astype(np.float64)
        if mode == "solid":
            return np.tile(SOLID, (len(shape.xyz), 1))
        return _height_colors(shape.xyz)

    def rebuild(self, reset_view: bool) -> None:
        """Replace the geometries from the current shape, overlay and options (renderer thread)."""
        o3d, vis = self.o3d, self.vis
        params = None if reset_view else vis.get_view_control().convert_to_pinhole_camera_parameters()
        for g in self._geoms:
            vis.remove_geometry(g, reset_bounding_box=False)
        self._geoms = []
        shape = self._shape
        if shape is not None:
            if self.state["mesh"] and shape.mesh_vertices is not None and shape.mesh_faces is not None \
                    and len(shape.mesh_faces) > 0:
                m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(shape.mesh_vertices.astype(np.float64)),
                                              o3d.utility.Vector3iVector(shape.mesh_faces.astype(np.int32)))
                m.compute_vertex_normals()
                v = np.asarray(m.vertices)
                if self.state["color"] == "solid":
                    m.paint_uniform_color(SOLID)
                elif self.state["color"] == "normal":
                    m.vertex_colors = o3d.utility.Vector3dVector(np.abs(np.asarray(m.vertex_normals)))
                else:
                    m.vertex_colors = o3d.utility.Vector3dVector(_height_colors(v))
                geom = m
            else:
                geom = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(shape.xyz.astype(np.float64)))
                geom.colors = o3d.utility.Vector3dVector(self._colors(shape))
            self._geoms.append(geom)
        if self._overlay is not None:
            ov = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self._overlay.astype(np.float64)))
            ov.paint_uniform_color(OVERLAY)
            self._geoms.append(ov)
        for i, g in enumerate(self._geoms):
            vis.add_geometry(g, reset_bounding_box=(reset_view and i == 0))
        if params is not None:
            vis.get_view_control().convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        elif shape is not None:
            self._default_view()

    def _default_view(self) -> None:
        vc = self.vis.get_view_control()
        vc.set_up([0, 0, 1])
        vc.set_front([0.6, -1.0, 0.55])
        vc.set_zoom(0.7)

    def resize(self, w: int, h: int) -> None:
        """Recreate the off-screen window at a new size, keeping the camera's pose (renderer thread)."""
        if (w, h) == self._size:
            return
        for g in self._geoms:
            self.vis.remove_geometry(g, reset_bounding_box=False)
        self.vis.destroy_window()
        self.vis = self.o3d.visualization.Visualizer()
        self.vis.create_window(window_name="t3dnet", width=w, height=h, visible=False)
        self._size = (w, h)
        self._apply_options()
        for i, g in enumerate(self._geoms):
            self.vis.add_geometry(g, reset_bounding_box=(i == 0))
        if self._geoms:
            self._default_view()  # the camera is reset: a pose from another window size frames the shape badly


class PointCloudViewer(QWidget):
    """Shows the current shape; left drag orbits, right/middle (or Shift+left) drag pans, wheel zooms,
    double-click resets the view.

    Thread: GUI thread; rendering happens in :class:`Open3DRenderer`.
    """

    frame_shown = Signal()
    render_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(240, 180)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._image: QImage | None = None
        self._message = "Open a 3D file (File ▸ Open, drag and drop) or pick a sample from the gallery"
        self._caption = ""
        self._last = None
        self.shape: Shape | None = None
        self.overlay: np.ndarray | None = None
        self.renderer = Open3DRenderer(max(self.width(), 320), max(self.height(), 240))
        self.renderer.signals.frame.connect(self._on_frame)
        self.renderer.signals.failed.connect(self._on_failed)
        self._resize_timer = QTimer(self, singleShot=True, interval=150)
        self._resize_timer.timeout.connect(self._apply_resize)

    # --- public API -------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self.renderer.frames

    def set_shape(self, shape: Shape | None) -> None:
        self.shape, self.overlay = shape, None
        self._caption = "" if shape is None else self._describe(shape)

        def op(r, s=shape):
            r._shape, r._overlay = s, None
            r.rebuild(reset_view=True)

        self.renderer.submit(op)

    def set_overlay(self, points: np.ndarray | None) -> None:
        """Show (or hide with None) the exact points the models see, in red."""
        self.overlay = points

        def op(r, p=points):
            r._overlay = p
            r.rebuild(reset_view=False)

        self.renderer.submit(op)

    def set_color_mode(self, mode: str) -> None:
        self._set_state("color", mode, rebuild=True)

    def set_point_size(self, size: float) -> None:
        self._set_state("point_size", float(size))

    def set_show_mesh(self, on: bool) -> None:
        self._set_state("mesh", bool(on), rebuild=True)

    def set_dark(self, dark: bool) -> None:
        self._set_state("dark", bool(dark))

    def reset_view(self) -> None:
        self.renderer.submit(lambda r: (r.vis.reset_view_point(True), r._default_view()))

    def current_image(self) -> QImage | None:
        return self._image

    def shutdown(self) -> None:
        self.renderer.stop()

    # --- internals ----------------------------------------------------------------------------
    def _describe(self, s: Shape) -> str:
        n = f"{s.original_points:,} points" if s.kind == "points" else \
            f"mesh, {s.original_points:,} vertices, {s.original_faces:,} faces"
        return f"{s.name} — {n}"

    def _set_state(self, key, value, rebuild=False) -> None:
        def op(r):
            r.state[key] = value
            r._apply_options()
            if rebuild:
                r.rebuild(reset_view=False)

        self.renderer.submit(op)

    def _on_frame(self, img: QImage) -> None:
        self._image = img
        self.update()
        self.frame_shown.emit()

    def _on_failed(self, msg: str) -> None:
        self._message = msg
        self.update()
        self.render_failed.emit(msg)

    def _apply_resize(self) -> None:
        w, h = max(self.width(), 64), max(self.height(), 64)
        k = min(1.0, (MAX_RENDER_PIXELS / (w * h)) ** 0.5)
        self.renderer.submit(lambda r: r.resize(int(w * k), int(h * k)))

    def resizeEvent(self, ev) -> None:  # noqa: N802
        self._resize_timer.start()
        super().resizeEvent(ev)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(640, 480)

    def paintEvent(self, ev) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(31, 33, 38) if self.renderer.state["dark"] else QColor(255, 255, 255))
        if self._image is not None and self.shape is not None:
            img = self._image
            scaled = img.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x, y = (self.width() - scaled.width()) / 2, (self.height() - scaled.height()) / 2
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(QRectF(x, y, scaled.width(), scaled.height()), img)
            fg = QColor(230, 230, 230) if self.renderer.state["dark"] else QColor(30, 30, 30)
            p.setPen(fg)
            f = QFont(self.font())
            p.setFont(f)
            p.drawText(self.rect().adjusted(8, 6, -8, -6), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                       self._caption + ("\nred: the points the models see" if self.overlay is not None else ""))
        else:
            p.setPen(QColor(170, 170, 170))
            p.drawText(self.rect().adjusted(20, 20, -20, -20), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self._message)
        p.end()

    def mousePressEvent(self, ev) -> None:  # noqa: N802
        self._last = ev.position()
        self._button = ev.buttons()
        self._mods = ev.modifiers()

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        if self._last is None or self.shape is None:
            return
        pos: QPointF = ev.position()
        dx, dy = pos.x() - self._last.x(), pos.y() - self._last.y()
        self._last = pos
        pan = bool(ev.buttons() & (Qt.MouseButton.RightButton | Qt.MouseButton.MiddleButton)) or \
            bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if pan:
            self.renderer.submit(lambda r: r.vis.get_view_control().translate(dx, dy))
        else:
            self.renderer.submit(lambda r: r.vis.get_view_control().rotate(dx * 2.0, dy * 2.0))

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        self._last = None

    def mouseDoubleClickEvent(self, ev) -> None:  # noqa: N802
        self.reset_view()

    def wheelEvent(self, ev) -> None:  # noqa: N802
        steps = ev.angleDelta().y() / 120.0
        self.renderer.submit(lambda r: r.vis.get_view_control().scale(-steps))

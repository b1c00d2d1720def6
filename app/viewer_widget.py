"""Embedded 3D view: an Open3D render process draws off-screen, its frames are painted in a QWidget.

Open3D cannot be a Qt widget; its off-screen legacy Visualizer (EGL without a display) renders into
a buffer that becomes a QImage (RESEARCH.md §5). The renderer holds the GIL while it draws, so it runs
in a child process (app/render_process.py): the GUI thread only queues small messages and paints
the latest frame.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import threading
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QLinearGradient, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.render_process import HEADER, render_main
from app.shapes import Shape

COLOR_MODES = ("height", "normal", "rgb", "solid")
# Frames are rendered at most this large and scaled when painted: on a 2-core machine a larger
# off-screen frame costs the render process (and the training job beside it) CPU time.
MAX_RENDER_PIXELS = 330_000
MAX_RESTARTS = 3
CAMERA_OPS = ("rotate", "pan", "zoom")


@dataclass
class ViewBox:
    """An axis-aligned wireframe box drawn in the view, in the file's coordinates, with a label
    painted over the frame (empty: none). ``emphasis`` draws it thicker (the selected object)."""

    lo: np.ndarray
    hi: np.ndarray
    color: QColor
    label: str = ""
    emphasis: bool = False


class RenderClient(QObject):
    """The GUI side of one render process: a sender thread, a frame-reader thread, latest frame wins.

    Thread: ``send``/``stop`` are called from the GUI thread; the sender thread pickles and writes
    commands (a big geometry never blocks the GUI thread), the reader thread turns frames into
    QImages and signals the GUI (queued). Only the newest unread frame is kept.
    """

    frame_ready = Signal()
    failed = Signal(str)  # a message from the renderer; the view keeps working
    died = Signal(str)  # the process ended without being asked to

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._latest: tuple[QImage, dict] | None = None
        self._stopping = False
        self._queue: queue.Queue = queue.Queue()
        ctx = mp.get_context("spawn")
        cmd_r, self._cmd_w = ctx.Pipe(duplex=False)
        self._frame_r, frame_w = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=render_main, args=(cmd_r, frame_w, width, height), daemon=True,
                                   name="t3dnet-render")
        self.process.start()
        cmd_r.close()  # only the child holds these ends: its death then reads as EOF here
        frame_w.close()
        self._sender = threading.Thread(target=self._send_loop, name="render-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="render-read", daemon=True)
        self._sender.start()
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, msg: tuple) -> None:
        if not self._stopping:
            self._queue.put(msg)

    def take_frame(self) -> tuple[QImage, dict] | None:
        """The newest unread frame and its trailer (the boxes' label anchors), or None."""
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the process to end, then terminate it if it does not; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._queue.put(("stop",))
        self._sender.join(timeout=1.0)
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=2)
        for c in (self._cmd_w, self._frame_r):
            try:
                c.close()
            except OSError:
                pass

    def _send_loop(self) -> None:
        while True:
            msgs = [self._queue.get()]
            while True:
                try:
                    msgs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            merged: list[tuple] = []
            for m in msgs:  # consecutive drags of one kind add up: one message, one frame
                if merged and m[0] in CAMERA_OPS and merged[-1][0] == m[0]:
                    prev = merged.pop()
                    m = (m[0], *(a + b for a, b in zip(prev[1:], m[1:])))
                merged.append(m)
            for m in merged:
                try:
                    self._cmd_w.send(m)
                except (OSError, ValueError):
                    return  # the process is gone: the reader reports it
                if m[0] == "stop":
                    return

    def _read_loop(self) -> None:
        while True:
            try:
                data = self._frame_r.recv_bytes()
            except (EOFError, OSError):
                break
            seq, w, h = HEADER.unpack_from(data)
            if w == 0:
                self.failed.emit(data[HEADER.size:].decode("utf-8", "replace"))
                continue
            end = HEADER.size + 3 * w * h
            img = QImage(data[HEADER.size:end], w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            try:
                meta = json.loads(data[end:].decode("utf-8")) if len(data) > end else {}
            except ValueError:
                meta = {}
            with self._lock:
                fresh = self._latest is None
                self._latest = (img, meta)
            if fresh:
                self.frame_ready.emit()
        if not self._stopping:
            self.process.join(timeout=2)
            self.died.emit(f"the render process ended (exit code {self.process.exitcode})")


class PointCloudViewer(QWidget):
    """Shows the current shape; left drag orbits, right/middle (or Shift+left) drag pans, wheel zooms,
    double-click resets the view.

    Thread: GUI thread; rendering happens in a child process (:class:`RenderClient`). If that
    process dies, the view says so and starts a new one (up to ``MAX_RESTARTS`` times), resending
    the shape, the overlay, the options and the size.
    """

    frame_shown = Signal()
    render_failed = Signal(str)
    render_restarted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(240, 180)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._image: QImage | None = None
        self._message = "Open a 3D file (File ▸ Open, drag and drop) or pick a sample from the gallery"
        self._caption = ""
        self._note = ""
        self._last = None
        self.frames = 0
        self.restarts = 0
        self.shape: Shape | None = None
        self.overlay: np.ndarray | None = None
        self.overlay_dense = False
        self.overlay_colors: np.ndarray | None = None  # per-point RGB 0..1 (importance), None: red
        self.overlay_legend = ""  # what the colours mean (painted over the colour bar)
        self.boxes: list[ViewBox] = []
        self._boxes_version = 0
        self._anchors: list = []  # label positions (frame pixels) of the last frame, per box
        self.state = {"color": "height", "point_size": 3.0, "mesh": True, "dark": True, "up": "z"}
        self._render_size = (640, 480)
        self._resize_timer = QTimer(self, singleShot=True, interval=150)
        self._resize_timer.timeout.connect(self._apply_resize)
        self.renderer: RenderClient | None = None
        self._start_renderer()

    # --- public API -------------------------------------------------------------------------
    def set_shape(self, shape: Shape | None) -> None:
        """Send the shape once; the view frames it whole."""
        self.shape, self.overlay, self.overlay_colors, self._note = shape, None, None, ""
        self._caption = "" if shape is None else self._describe(shape)
        self._send(("scene", self._scene_message(shape)))
        if self.boxes:
            self.set_boxes([])

    def set_boxes(self, boxes: list[ViewBox]) -> None:
        """Draw these wireframe boxes (replacing the previous ones); their labels follow the camera."""
        self.boxes = list(boxes)
        self._boxes_version += 1
        self._anchors = []
        self._send(self._boxes_message())
        self.update()

    def set_overlay(self, points: np.ndarray | None, dense: bool = False, note: str = "",
                    colors: np.ndarray | None = None, legend: str = "") -> None:
        """Show (or hide with None) the exact points the models see, in red; ``dense``: as small crosses,
        for shapes with no more points than the models take (red dots would cover the whole shape).
        ``note``: a line for the caption instead. ``colors`` (N, 3, 0..1): one colour per point instead
        of red (a model's importance, core.attribution's ramp; the shape is drawn grey under it) with
        a colour bar titled ``legend``."""
        self.overlay, self.overlay_dense = points, bool(dense and points is not None)
        self.overlay_colors = None if points is None or colors is None else np.asarray(colors, np.float64)
        self.overlay_legend = legend if self.overlay_colors is not None else ""
        self._note = note
        self._send(self._overlay_message())
        self.update()

    def _overlay_message(self) -> tuple:
        return ("overlay", self.overlay, self.overlay_dense, self.overlay_colors)

    def set_color_mode(self, mode: str) -> None:
        self._set_state("color", mode)

    def set_point_size(self, size: float) -> None:
        self._set_state("point_size", float(size))

    def set_show_mesh(self, on: bool) -> None:
        self._set_state("mesh", bool(on))

    def set_dark(self, dark: bool) -> None:
        self._set_state("dark", bool(dark))
        self.update()

    def set_up_axis(self, axis: str) -> None:
        """Which signed file axis points up (z y x -z -y -x); the view is framed again."""
        self._set_state("up", axis)

    def reset_view(self) -> None:
        self._send(("reset",))

    def orbit(self, dx: float, dy: float) -> None:
        self._send(("rotate", dx, dy))

    def pan(self, dx: float, dy: float) -> None:
        self._send(("pan", dx, dy))

    def zoom(self, steps: float) -> None:
        self._send(("zoom", steps))

    def request_frame(self) -> None:
        self._send(("render",))

    def current_image(self) -> QImage | None:
        return self._image

    def shutdown(self) -> None:
        """End the render process (also done when the app quits; the process is a daemon)."""
        if self.renderer is not None:
            r, self.renderer = self.renderer, None
            r.stop()

    # --- render process -----------------------------------------------------------------------
    def _start_renderer(self) -> None:
        self.renderer = RenderClient(*self._render_size)
        self.renderer.frame_ready.connect(self._on_frame)
        self.renderer.failed.connect(self._on_failed)
        self.renderer.died.connect(self._on_died)
        self._send(("state", dict(self.state)))

    def _send(self, msg: tuple) -> None:
        if self.renderer is not None:
            self.renderer.send(msg)

    def _boxes_message(self) -> tuple:
        return ("boxes", self._boxes_version,
                [(np.asarray(b.lo, np.float64), np.asarray(b.hi, np.float64),
                  (b.color.redF(), b.color.greenF(), b.color.blueF()), bool(b.emphasis)) for b in self.boxes])

    def _scene_message(self, s: Shape | None) -> dict | None:
        if s is None:
            return None
        return {"xyz": s.xyz, "colors": s.colors, "normals": s.normals, "mesh_vertices": s.mesh_vertices,
                "mesh_faces": s.mesh_faces}

    def _on_died(self, why: str) -> None:
        if self.sender() is not self.renderer:
            return  # a process that was already replaced or stopped
        old, self.renderer = self.renderer, None
        old.stop(timeout=0.5)
        if self.restarts >= MAX_RESTARTS:
            self._image = None
            self._on_failed(f"3D view stopped: {why}; it was restarted {self.restarts} times already "
                            "(the predictions still work)")
            return
        self.restarts += 1
        self.render_failed.emit(f"3D view: {why}; restarting it")
        self._start_renderer()
        self._send(("resize", *self._render_size))
        if self.shape is not None:
            self._send(("scene", self._scene_message(self.shape)))
            if self.overlay is not None:
                self._send(self._overlay_message())
            if self.boxes:
                self._send(self._boxes_message())
        self.render_restarted.emit()

    # --- internals ----------------------------------------------------------------------------
    def _describe(self, s: Shape) -> str:
        n = f"{s.original_points:,} points" if s.kind == "points" else \
            f"mesh, {s.original_points:,} vertices, {s.original_faces:,} faces"
        return f"{s.name} — {n}"

    def _set_state(self, key, value) -> None:
        self.state[key] = value
        self._send(("state", {key: value}))

    def _on_frame(self) -> None:
        frame = self.renderer.take_frame() if self.renderer is not None and self.sender() is self.renderer else None
        if frame is None:
            return
        self._image, meta = frame
        if meta.get("boxes") == self._boxes_version:
            self._anchors = list(meta.get("anchors") or [])
        self.frames += 1
        self.update()
        self.frame_shown.emit()

    def _on_failed(self, msg: str) -> None:
        self._message = msg
        self.update()
        self.render_failed.emit(msg)

    def _apply_resize(self) -> None:
        w, h = max(self.width(), 64), max(self.height(), 64)
        k = min(1.0, (MAX_RENDER_PIXELS / (w * h)) ** 0.5)
        size = (int(w * k), int(h * k))
        if size != self._render_size:
            self._render_size = size
            self._send(("resize", *size))

    def resizeEvent(self, ev) -> None:
        self._resize_timer.start()
        super().resizeEvent(ev)

    def sizeHint(self) -> QSize:
        return QSize(640, 480)

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        dark = self.state["dark"]
        p.fillRect(self.rect(), QColor(31, 33, 38) if dark else QColor(255, 255, 255))
        if self._image is not None and self.shape is not None and self.renderer is not None:
            img = self._image
            scaled = img.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x, y = (self.width() - scaled.width()) / 2, (self.height() - scaled.height()) / 2
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(QRectF(x, y, scaled.width(), scaled.height()), img)
            self._paint_labels(p)
            p.setPen(QColor(230, 230, 230) if dark else QColor(30, 30, 30))
            p.setFont(QFont(self.font()))
            lines = [self._caption]
            if self.overlay is not None and self.overlay_colors is not None:
                self._paint_colorbar(p)
            elif self.overlay is not None:
                lines.append("red crosses: the points the models see (perturbed)"
                             if self.overlay_dense else "red: the points the models see")
            elif self._note:
                lines.append(self._note)
            p.drawText(self.rect().adjusted(8, 6, -8, -6), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                       "\n".join(lines))
        else:
            p.setPen(QColor(170, 170, 170))
            p.drawText(self.rect().adjusted(20, 20, -20, -20), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self._message)
        p.end()

    def colorbar_rect(self) -> QRectF:
        """Where the importance colour bar is painted (widget coordinates)."""
        w = min(260.0, self.width() * 0.45)
        return QRectF(10, self.height() - 30, w, 12)

    def _paint_colorbar(self, p: QPainter) -> None:
        from core.attribution import RAMP  # numpy only

        r = self.colorbar_rect()
        grad = QLinearGradient(r.topLeft(), r.topRight())
        for k, c in enumerate(RAMP):
            grad.setColorAt(k / (len(RAMP) - 1), QColor.fromRgbF(*c))
        p.fillRect(r, grad)
        p.setPen(QColor(230, 230, 230) if self.state["dark"] else QColor(30, 30, 30))
        fm = QFontMetrics(p.font())
        p.drawText(QPointF(r.left(), r.top() - 4), self.overlay_legend)
        p.drawText(QPointF(r.left(), r.bottom() + fm.ascent() + 2), "low")
        p.drawText(QPointF(r.right() - fm.horizontalAdvance("high"), r.bottom() + fm.ascent() + 2), "high")

    def label_rects(self) -> list[tuple[ViewBox, QRectF]]:
        """Where the boxes' labels are painted (widget coordinates) in the current frame."""
        if self._image is None or len(self._anchors) != len(self.boxes):
            return []
        img = self._image
        scaled = img.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x0, y0 = (self.width() - scaled.width()) / 2, (self.height() - scaled.height()) / 2
        k = scaled.width() / max(img.width(), 1)
        fm = QFontMetrics(self._label_font())
        out = []
        for box, anchor in zip(self.boxes, self._anchors):
            if not box.label or anchor is None:
                continue
            w, h = fm.horizontalAdvance(box.label) + 10, fm.height() + 4
            cx, top = x0 + anchor[0] * k, y0 + anchor[1] * k
            r = QRectF(cx - w / 2, top - h - 3, w, h)
            r.moveLeft(min(max(r.left(), 2), self.width() - w - 2))  # keep it on screen
            r.moveTop(min(max(r.top(), 2), self.height() - h - 2))
            out.append((box, r))
        return out

    def _label_font(self) -> QFont:
        f = QFont(self.font())
        f.setBold(True)
        return f

    def _paint_labels(self, p: QPainter) -> None:
        p.setFont(self._label_font())
        for box, r in self.label_rects():
            c = QColor(box.color)
            c.setAlpha(220)
            p.setPen(QColor(255, 255, 255) if box.emphasis else Qt.PenStyle.NoPen)
            p.setBrush(c)
            p.drawRoundedRect(r, 4, 4)
            p.setPen(QColor(255, 255, 255))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, box.label)

    def mousePressEvent(self, ev) -> None:
        self._last = ev.position()

    def mouseMoveEvent(self, ev) -> None:
        if self._last is None or self.shape is None:
            return
        pos: QPointF = ev.position()
        dx, dy = pos.x() - self._last.x(), pos.y() - self._last.y()
        self._last = pos
        pan = bool(ev.buttons() & (Qt.MouseButton.RightButton | Qt.MouseButton.MiddleButton)) or \
            bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if pan:
            self.pan(dx, dy)
        else:
            self.orbit(dx * 2.0, dy * 2.0)

    def mouseReleaseEvent(self, ev) -> None:
        self._last = None

    def mouseDoubleClickEvent(self, ev) -> None:
        self.reset_view()

    def wheelEvent(self, ev) -> None:
        self.zoom(ev.angleDelta().y() / 120.0)

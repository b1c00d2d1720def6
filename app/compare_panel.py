"""Teacher vs student: both models on the loaded shape, side by side, with robustness controls."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QScrollArea, QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)

from app.shapes import Perturbation, Shape, prepare_model_points
from app.workers import error_text, start_worker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = ROOT / "assets" / "models" / "teacher.pt"  # same paths as core.inference (kept torch-free here)
DEFAULT_STUDENT = ROOT / "assets" / "models" / "student.pt"
AGREE, DISAGREE = QColor(46, 160, 67), QColor(215, 58, 73)


def human(n: float, unit: str = "") -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suf}{unit}"
    return f"{n:.0f}{unit}"


class ConfidenceBars(QWidget):
    """Horizontal bars: one row per class with its probability; the first row is highlighted."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, float]] = []
        self.accent = QColor(66, 133, 244)
        self.row_h = 22
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

    def set_rows(self, rows: list[tuple[str, float]], accent: QColor | None = None) -> None:
        self.rows = rows
        if accent is not None:
            self.accent = accent
        self.row_h = max(18, int(self.fontMetrics().height() * 1.5))
        self.setMinimumHeight(self.row_h * max(len(rows), 1) + 4)
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(200, self.row_h * max(len(self.rows), 5) + 4)

    def paintEvent(self, ev) -> None:  # noqa: N802
        p = QPainter(self)
        bold = QFont(self.font())
        bold.setBold(True)
        fm = QFontMetrics(bold)
        label_w = min(max([fm.horizontalAdvance(n) for n, _ in self.rows] + [60]) + 8, self.width() // 2)
        pct_w = fm.horizontalAdvance("100.0%") + 8
        bar_w = max(self.width() - label_w - pct_w, 10)
        text = self.palette().windowText().color()
        for i, (name, prob) in enumerate(self.rows):
            y = 2 + i * self.row_h
            p.setPen(text)
            f = QFont(self.font())
            f.setBold(i == 0)
            p.setFont(f)
            p.drawText(QRectF(0, y, label_w - 6, self.row_h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       name)
            p.fillRect(QRectF(label_w, y + 3, bar_w, self.row_h - 6), QColor(128, 128, 128, 50))
            c = QColor(self.accent) if i == 0 else QColor(self.accent.red(), self.accent.green(), self.accent.blue(), 120)
            p.fillRect(QRectF(label_w, y + 3, bar_w * max(0.0, min(1.0, prob)), self.row_h - 6), c)
            p.drawText(QRectF(label_w + bar_w + 4, y, pct_w, self.row_h), Qt.AlignmentFlag.AlignVCenter,
                       f"{prob * 100:.1f}%")
        p.end()


class ModelColumn(QGroupBox):
    """One model: name, cost figures, latency and its confidence bars."""

    def __init__(self, role: str, parent=None) -> None:
        super().__init__(role.capitalize(), parent)
        self.role = role
        lay = QVBoxLayout(self)
        self.model_label = QLabel("not loaded")
        self.model_label.setWordWrap(True)
        self.setMinimumWidth(180)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cost = QLabel("")
        self.cost.setWordWrap(True)
        self.cost.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.top1 = QLabel("")
        f = self.top1.font()
        f.setPointSizeF(f.pointSizeF() * 1.6)
        f.setBold(True)
        self.top1.setFont(f)
        self.bars = ConfidenceBars()
        self.load_button = QPushButton(f"Load {role}…")
        self.load_button.setToolTip(f"Choose a {role} checkpoint (.pt) or a run directory")
        for w in (self.model_label, self.cost, self.top1, self.bars):
            lay.addWidget(w)
        lay.addStretch(1)
        lay.addWidget(self.load_button)

    def show_model(self, info: dict) -> None:
        self.model_label.setText(f"<b>{info['model']}</b><br><small>{info['checkpoint']}</small>")
        self.cost.setText(f"params {human(info['params'])} · MACs {human(info['macs'])} · "
                          f"size {human(info['size_bytes'], 'B')}")

    def show_prediction(self, pred: dict | None, class_names: list[str], all_classes: bool, accent: QColor) -> None:
        if pred is None:
            self.top1.setText("")
            self.bars.set_rows([])
            return
        if all_classes:
            probs = np.asarray(pred["probs"])
            order = np.argsort(-probs)
            rows = [(class_names[i], float(probs[i])) for i in order]
        else:
            rows = [(t["class"], t["prob"]) for t in pred["top"]]
        self.top1.setText(f"{rows[0][0]}  {rows[0][1] * 100:.0f}%")
        self.bars.set_rows(rows, accent)
        self.cost.setText(f"params {human(pred['params'])} · MACs {human(pred['macs'])} · "
                          f"size {human(pred['size_bytes'], 'B')} · latency {pred['latency_ms']:.1f} ms")


class ComparisonPanel(QWidget):
    """Loads a teacher and a student (off the GUI thread) and predicts on the current shape.

    Thread: GUI thread; checkpoint loading and inference run in pool workers, one prediction at a
    time; changes that arrive meanwhile are coalesced into one re-run (throttled by a timer).
    """

    predicted = Signal(dict)  # the full result, with "points": the model input
    model_points = Signal(object)  # (P, 3) model input in unit-sphere coordinates
    models_changed = Signal()
    message = Signal(str)
    up_axis_changed = Signal(str)  # 'z' or 'y': the file's up axis, for the view and the models

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.teacher = None  # core.inference.LoadedModel
        self.student = None
        self.comparison = None
        self.shape: Shape | None = None
        self.last_result: dict | None = None
        self.last_error = ""
        self._busy = False
        self._pending = False
        self._loading = 0
        # One thread for all model work: loads and predictions are serialized (torch and the
        # models are not shared between threads at the same time).
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)

        outer = QVBoxLayout(self)
        self.status = QLabel("Loading models…")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        outer.addWidget(self.status)
        self.banner = QLabel("")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setMinimumHeight(40)
        bf = self.banner.font()
        bf.setPointSizeF(bf.pointSizeF() * 1.3)
        bf.setBold(True)
        self.banner.setFont(bf)
        outer.addWidget(self.banner)

        cols = QHBoxLayout()
        self.columns = {r: ModelColumn(r) for r in ("teacher", "student")}
        for r, c in self.columns.items():
            cols.addWidget(c)
            c.load_button.clicked.connect(lambda _=False, role=r: self.choose_checkpoint(role))
        holder = QWidget()
        holder.setLayout(cols)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(holder)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer.addWidget(scroll, 1)

        options = QHBoxLayout()
        self.all_classes = QCheckBox("Show all classes")
        self.all_classes.toggled.connect(self._redraw)
        options.addWidget(self.all_classes)
        options.addStretch(1)
        self.up_axis_label = QLabel("Up axis")
        options.addWidget(self.up_axis_label)
        self.up_axis = QComboBox()
        self.up_axis.addItems(["z", "y"])
        self.up_axis.setToolTip("Which axis of the file points up (z: ModelNet, CAD; y: many scans, e.g. the "
                                "Stanford bunny). The view and the models' input are both converted.")
        self.up_axis.currentTextChanged.connect(self._up_axis_changed)
        options.addWidget(self.up_axis)
        outer.addLayout(options)

        box = QGroupBox("Robustness: perturb what the models see")
        form = QFormLayout(box)
        self.points = QSpinBox(minimum=64, maximum=8192, singleStep=128, value=1024)
        self.points.setToolTip("Number of points sampled (farthest-point) from the shape for the models")
        self.dropout = self._slider(0, 90, "Fraction of the sampled points removed (%)")
        self.noise = self._slider(0, 50, "Gaussian jitter, in thousandths of the unit-sphere radius")
        self.rotation = self._slider(0, 360, "Rotation about the up axis (degrees)")
        self.dropout_label, self.noise_label, self.rotation_label = QLabel("0%"), QLabel("0"), QLabel("0°")
        form.addRow("Points", self.points)
        for name, s, lab in (("Dropout", self.dropout, self.dropout_label), ("Noise σ", self.noise, self.noise_label),
                             ("Rotation", self.rotation, self.rotation_label)):
            row = QHBoxLayout()
            row.addWidget(s, 1)
            lab.setMinimumWidth(48)
            row.addWidget(lab)
            form.addRow(name, row)
        reset = QPushButton("Reset perturbation")
        reset.clicked.connect(self.reset_perturbation)
        form.addRow(reset)
        outer.addWidget(box)
        self.robustness_box = box

        self._throttle = QTimer(self, singleShot=True, interval=200)
        self._throttle.timeout.connect(self.run_prediction)
        self.points.valueChanged.connect(self._schedule)
        for s in (self.dropout, self.noise, self.rotation):
            s.valueChanged.connect(self._schedule)

    def _slider(self, lo, hi, tip) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal, minimum=lo, maximum=hi)
        s.setToolTip(tip)
        return s

    # --- models -----------------------------------------------------------------------------
    def perturbation(self) -> Perturbation:
        return Perturbation(self.points.value(), self.dropout.value() / 100, self.noise.value() / 1000,
                            float(self.rotation.value()), self.up_axis.currentText())

    def _up_axis_changed(self, axis: str) -> None:
        self.up_axis_changed.emit(axis)
        self.run_prediction()

    def reset_perturbation(self) -> None:
        for s in (self.dropout, self.noise, self.rotation):
            s.setValue(0)
        self.points.setValue(1024)

    def load_defaults(self, teacher: str | None = None, student: str | None = None) -> None:
        """Load the given checkpoints, else the bundled ones; missing files give a message, not a crash."""
        t = Path(teacher) if teacher else DEFAULT_TEACHER
        s = Path(student) if student else DEFAULT_STUDENT
        missing = [str(p) for p in (t, s) if not p.exists()]
        if missing:
            self._set_status(
                f"<span style='color:#d73a49'><b>No models yet:</b> {', '.join(missing)} not found"
                + (" (the bundled teacher is probably still training)" if not (teacher or student) else "")
                + ".</span> Load a checkpoint or run directory with <i>Load teacher…</i> / <i>Load student…</i>, "
                  "or load a run's student from the Runs tab.")
        for role, p in (("teacher", t), ("student", s)):
            if p.exists():
                self.load_checkpoint(role, str(p))

    def choose_checkpoint(self, role: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Load {role} checkpoint", str(ROOT),
                                              "Checkpoints (*.pt);;All files (*)")
        if path:
            self.load_checkpoint(role, path)

    def load_checkpoint(self, role: str, path: str) -> None:
        """Load a checkpoint file or run directory for one role, off the GUI thread."""
        def load(p):
            from core.inference import LoadedModel

            return LoadedModel.load(p)

        self._loading += 1
        self._set_status(f"Loading {role}: {path} …")
        start_worker(load, path, on_return=lambda m, r=role: self._model_loaded(r, m),
                     on_error=lambda e, r=role: self._model_failed(r, e),
                     on_finish=self._loading_done, pool=self.pool)

    def _loading_done(self) -> None:
        self._loading -= 1

    def _model_failed(self, role: str, exc) -> None:
        if not isinstance(exc, (ValueError, FileNotFoundError)):
            print(getattr(exc, "__traceback_text__", ""), file=sys.stderr)
        self.last_error = f"Could not load the {role}: {error_text(exc)}"
        self._set_status(f"<span style='color:#d73a49'>{self.last_error}</span>")
        self.message.emit(self.last_error)

    def _model_loaded(self, role: str, m) -> None:
        setattr(self, role, m)
        info = {"model": m.name, "checkpoint": m.checkpoint, "params": m.params, "macs": m.macs,
                "size_bytes": m.size_bytes}
        self.columns[role].show_model(info)
        self.comparison = None
        if self.teacher is not None and self.student is not None:
            from core.inference import Comparison

            try:
                self.comparison = Comparison(self.teacher, self.student)
            except Exception as exc:  # noqa: BLE001 - class-list mismatch: a CheckpointError
                self.last_error = error_text(exc)
                self._set_status(f"<span style='color:#d73a49'>{self.last_error}</span>")
                self.message.emit(self.last_error)
                return
            self._set_status(f"Teacher <b>{self.teacher.name}</b> vs student <b>{self.student.name}</b> · "
                             f"{len(self.comparison.class_names)} classes · the student has "
                             f"{self.teacher.params / max(self.student.params, 1):.0f}x fewer parameters")
            self.models_changed.emit()
            self.run_prediction()
        else:
            other = "student" if role == "teacher" else "teacher"
            self._set_status(f"{role.capitalize()} loaded; load a {other} to compare.")

    def _set_status(self, html: str) -> None:
        self.status.setText(html)

    # --- predictions -------------------------------------------------------------------------
    def set_shape(self, shape: Shape | None) -> None:
        self.shape = shape
        self.last_result = None
        self._redraw()
        self.run_prediction()

    def _schedule(self) -> None:
        self.dropout_label.setText(f"{self.dropout.value()}%")
        self.noise_label.setText(f"{self.noise.value() / 1000:.3f}")
        self.rotation_label.setText(f"{self.rotation.value()}°")
        self._throttle.start()

    def run_prediction(self) -> None:
        if self.shape is None:
            return
        if self.comparison is None:
            pts = prepare_model_points(self.shape.full_xyz, self.perturbation())
            self.model_points.emit(pts)
            return
        if self._busy:
            self._pending = True
            return
        self._busy = True
        comp, shape, pert = self.comparison, self.shape, self.perturbation()

        def work():
            pts = prepare_model_points(shape.full_xyz, pert)
            res = comp.predict_points(pts, top=5)
            res["points"] = pts
            res["shape_path"] = shape.path
            return res

        start_worker(work, on_return=self._predicted, on_error=self._predict_failed, on_finish=self._predict_done, pool=self.pool)

    def _predict_done(self) -> None:
        self._busy = False
        if self._pending:
            self._pending = False
            self.run_prediction()

    def _predict_failed(self, exc) -> None:
        self.last_error = f"Prediction failed: {error_text(exc)}"
        self.banner.setText(self.last_error)
        self.message.emit(self.last_error)

    def _predicted(self, res: dict) -> None:
        if self.shape is None or res.get("shape_path") != self.shape.path:
            return  # a result for a shape that is no longer shown
        self.last_result = res
        self._redraw()
        self.model_points.emit(res["points"])
        self.predicted.emit(res)

    def _redraw(self) -> None:
        res = self.last_result
        names = self.comparison.class_names if self.comparison else []
        if res is None:
            for c in self.columns.values():
                c.show_prediction(None, names, False, AGREE)
            self.banner.setText("")
            self.banner.setStyleSheet("")
            return
        t, s = res["teacher"]["top"][0]["class"], res["student"]["top"][0]["class"]
        color = AGREE if res["agree"] else DISAGREE
        for role, c in self.columns.items():
            c.show_prediction(res[role], names, self.all_classes.isChecked(), color)
        if res["agree"]:
            text = f"✔ Both say {t}"
        else:
            text = f"✘ Disagree: teacher {t}, student {s}"
        self.banner.setText(f"{text}   ·   JS divergence {res['divergence']:.3f}")
        self.banner.setStyleSheet(f"background:{color.name()}; color:white; border-radius:6px; padding:6px")

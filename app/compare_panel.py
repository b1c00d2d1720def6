"""Teacher vs student: both models on the loaded shape, side by side, with robustness controls.

For real files the panel also decides the up axis (``auto``, from ``Comparison.analyze``), says when
the input is a scene rather than one object, finds the objects of a scene and lets one of them, or
the points inside a crop box, be what the models see.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import (QBoxLayout, QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QLabel, QLayout, QProgressBar, QPushButton, QScrollArea, QSizePolicy, QSlider,
                               QSpinBox, QTabWidget, QVBoxLayout, QWidget)

from app.paths import display_path
from app.scene_widgets import (AGREE, CROP_COLOR, DISAGREE, NOT_RECOGNISED, ONE_RECOGNISES, CropBoxControls, FlowLayout,
                               ObjectsTable, verdict_color, verdict_sentence, vocabulary_words)
from app.shapes import Perturbation, Shape, analysis_input, points_in_box, prepare_model_points, to_display_frame
from app.viewer_widget import ViewBox
from app.workers import error_text, start_worker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = ROOT / "assets" / "models" / "teacher.pt"  # same paths as core.inference (kept torch-free here)
DEFAULT_STUDENT = ROOT / "assets" / "models" / "student.pt"
UP_AXIS_CHOICES = ("auto", "z", "y", "x", "-z", "-y", "-x")  # core.data.orient.UP_CHOICES (kept torch-free here)
MUTED = QColor(128, 128, 128)
__all__ = ["AGREE", "DISAGREE", "ComparisonPanel", "ModelColumn", "human"]


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

    def sizeHint(self) -> QSize:
        return QSize(200, self.row_h * max(len(self.rows), 5) + 4)

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        bold = QFont(self.font())
        bold.setBold(True)
        fm = QFontMetrics(bold)
        label_w = min(max([fm.horizontalAdvance(n) for n, _ in self.rows] + [60]) + 8, self.width() // 2)
        pct_w = fm.horizontalAdvance("100.0%") + 8
        bar_w = max(self.width() - label_w - pct_w, 10)
        text = self.palette().color(QPalette.ColorGroup.Active if self.isEnabled() else QPalette.ColorGroup.Disabled,
                                    QPalette.ColorRole.WindowText)
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
    """One model: name, cost figures, latency, whether it recognises the input and its confidence bars."""

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
        self.cost.setToolTip("model: this model's sampling, grouping and network on the prepared points; with "
                             "preprocessing: from the points in memory to the probabilities (sampling to the "
                             "model's points, up axis, unit sphere, then the model); the last word is the runtime "
                             "that runs it (torch or onnx, the faster one measured on this CPU)")
        self.cost.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.top1 = QLabel("")
        f = self.top1.font()
        f.setPointSizeF(f.pointSizeF() * 1.6)
        f.setBold(True)
        self.top1.setFont(f)
        self.vocabulary = QLabel("")
        self.vocabulary.setWordWrap(True)
        self.vocabulary.setToolTip("Whether this model knows this kind of object at all: a score of its logits "
                                   "against a threshold calibrated on training shapes (core.vocabulary)")
        self.bars = ConfidenceBars()
        self.muted = False
        self.load_button = QPushButton(f"Load {role}…")
        self.load_button.setToolTip(f"Choose a {role} checkpoint (.pt) or a run directory")
        for w in (self.model_label, self.cost, self.top1, self.vocabulary, self.bars):
            lay.addWidget(w)
        lay.addStretch(1)
        lay.addWidget(self.load_button)

    def show_model(self, info: dict) -> None:
        self.setTitle(f"{self.role.capitalize()} · {Path(info['checkpoint']).name}")
        self.model_label.setText(f"<b>{info['model']}</b>")
        self.model_label.setToolTip(display_path(info["checkpoint"]))
        self.cost.setText(self._cost(info))

    @staticmethod
    def _cost(info: dict) -> str:
        text = f"{human(info['params'])} params · {human(info['macs'])} MACs · {human(info['size_bytes'], 'B')}"
        if info.get("latency_ms") is not None:
            text += f" · model {info['latency_ms']:.1f} ms"
            if info.get("end_to_end_ms") is not None:
                text += f", with preprocessing {info['end_to_end_ms']:.1f} ms"
        return text + (f" · {info['runtime']}" if info.get("runtime") else "")

    def set_muted(self, muted: bool) -> None:
        """Grey the prediction out (the input is a whole scene: one class for it means little)."""
        self.muted = muted
        self.top1.setStyleSheet(f"color: {MUTED.name()}" if muted else "")
        self.bars.setEnabled(not muted)

    def show_prediction(self, pred: dict | None, class_names: list[str], all_classes: bool, accent: QColor) -> None:
        if pred is None:
            self.top1.setText("")
            self.vocabulary.setText("")
            self.bars.set_rows([])
            return
        if all_classes:
            probs = np.asarray(pred["probs"])
            order = np.argsort(-probs)
            rows = [(class_names[i], float(probs[i])) for i in order]
        else:
            rows = [(t["class"], t["prob"]) for t in pred["top"]]
        self.top1.setText(f"{rows[0][0]}  {rows[0][1] * 100:.0f}%")
        words, color = vocabulary_words(pred.get("in_vocabulary"))
        self.vocabulary.setText(words)
        self.vocabulary.setStyleSheet(f"color: {color.name()}; font-weight: bold")
        self.bars.set_rows(rows, MUTED if self.muted else accent)
        self.cost.setText(self._cost(pred))


class ModelCards(QWidget):
    """The teacher's and the student's cards side by side; stacked when the panel is too narrow for
    both (the scroll area around it then scrolls vertically)."""

    def __init__(self, columns: list[QWidget], parent=None) -> None:
        super().__init__(parent)
        self.columns = columns
        self.box = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        self.box.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
        for c in columns:
            self.box.addWidget(c)

    def side_by_side_width(self) -> int:
        m = self.box.contentsMargins()
        return sum(c.minimumWidth() for c in self.columns) + self.box.spacing() * (len(self.columns) - 1) + \
            m.left() + m.right()

    def minimumSizeHint(self) -> QSize:
        m = self.box.contentsMargins()
        return QSize(max(c.minimumWidth() for c in self.columns) + m.left() + m.right(), self.box.minimumSize().height())

    def resizeEvent(self, ev) -> None:
        side = ev.size().width() >= self.side_by_side_width()
        direction = QBoxLayout.Direction.LeftToRight if side else QBoxLayout.Direction.TopToBottom
        if self.box.direction() != direction:
            self.box.setDirection(direction)
            self.updateGeometry()
        super().resizeEvent(ev)


class ComparisonPanel(QWidget):
    """Loads a teacher and a student (off the GUI thread) and predicts on the current shape.

    What the models see is the shape's points, or one found object's, or those inside the crop
    box, turned by the decided (or overridden) up axis, then perturbed.

    Thread: GUI thread; checkpoint loading, the analysis of a new shape (up axis, scene check),
    finding objects and inference run in pool workers on one thread, one job at a time; changes
    that arrive meanwhile are coalesced into one re-run (throttled by a timer).
    """

    predicted = Signal(dict)  # the full result, with "points": the model input
    model_points = Signal(object)  # (P, 3) model input in unit-sphere coordinates
    models_changed = Signal()
    message = Signal(str)
    up_axis_changed = Signal(str)  # the signed axis used (decided or chosen), for the view
    analyzed = Signal(dict)  # Comparison.analyze's input block for the current shape
    objects_found = Signal(list)  # Comparison.predict_objects's objects (empty: none found)
    boxes_changed = Signal(list)  # list[ViewBox]: the objects' and the crop box, for the view
    attribution_changed = Signal(object)  # what the view colours by importance (see attribution_view), or None

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.teacher = None  # core.inference.LoadedModel
        self.student = None
        self.comparison = None
        self.shape: Shape | None = None
        self.last_result: dict | None = None
        self.last_error = ""
        self.analysis: dict | None = None  # the input block of the current shape (with _up, _support)
        self.objects: list[dict] = []
        self.chosen_object = -1  # index into objects whose points the models see; -1: none
        self.last_objects_seconds: float | None = None  # wall time of the last Find objects worker
        self._token = 0  # one per shape: results for an older shape are dropped
        self._crop_cache: tuple = (None, None)
        self._busy = False
        self._pending = False
        self._analysing = False
        self._finding = False
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
        outer.addWidget(self._input_row())
        self.input_info = QLabel("")
        self.input_info.setWordWrap(True)
        self.input_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.input_info)

        self.scene_banner = QLabel("")
        self.scene_banner.setWordWrap(True)
        self.scene_banner.setVisible(False)
        outer.addWidget(self.scene_banner)
        self.banner = QLabel("")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setWordWrap(True)
        self.banner.setMinimumHeight(40)
        bf = self.banner.font()
        bf.setPointSizeF(bf.pointSizeF() * 1.3)
        bf.setBold(True)
        self.banner.setFont(bf)
        outer.addWidget(self.banner)

        self.columns = {r: ModelColumn(r) for r in ("teacher", "student")}
        for r, c in self.columns.items():
            c.load_button.clicked.connect(lambda _=False, role=r: self.choose_checkpoint(role))
        self.cards = ModelCards(list(self.columns.values()))
        self.cards_scroll = QScrollArea()
        self.cards_scroll.setWidgetResizable(True)
        self.cards_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.cards_scroll.setWidget(self.cards)
        self.cards_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.cards_scroll.setMinimumHeight(150)
        outer.addWidget(self.cards_scroll, 1)

        self.tools = QTabWidget()
        self.tools.setDocumentMode(True)
        self.tools.addTab(self._objects_page(), "Objects")
        self.tools.addTab(self._crop_page(), "Crop box")
        self.tools.addTab(self._robustness_page(), "Robustness")
        self.tools.addTab(self._importance_page(), "Importance")
        self.tools.setCurrentWidget(self.robustness_page)
        self.tools.setMaximumHeight(210)  # the cards come first
        outer.addWidget(self.tools)

        self._throttle = QTimer(self, singleShot=True, interval=200)
        self._throttle.timeout.connect(self.run_prediction)
        self.points.valueChanged.connect(self._schedule)
        for s in (self.dropout, self.noise, self.rotation):
            s.valueChanged.connect(self._schedule)
        self._update_actions()

    # --- widgets -------------------------------------------------------------------------------
    def _input_row(self) -> QWidget:
        row = QWidget()
        flow = FlowLayout(row)
        self.up_axis_label = QLabel("Up axis")
        self.up_axis = QComboBox()
        for a in UP_AXIS_CHOICES:
            self.up_axis.addItem(a, a)
        self.up_axis.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.up_axis.setToolTip("Which axis of the file points up. auto: the file format's convention, else an "
                                "estimate (objects: the bundled up-axis estimator network; scenes: the "
                                "support plane), else z. Another axis overrides it. The view and the models' input "
                                "are both turned.")
        self.up_axis.currentIndexChanged.connect(self._up_axis_changed)
        self.find_button = QPushButton("Find objects")
        self.find_button.setToolTip("Find the separate objects of the cloud (support planes removed, the rest "
                                    "clustered) and run both models on each")
        self.find_button.clicked.connect(self.find_objects)
        self.find_busy = QProgressBar()
        self.find_busy.setRange(0, 0)
        self.find_busy.setMaximumWidth(70)
        self.find_busy.setMaximumHeight(14)
        self.find_busy.setTextVisible(False)
        self.find_busy.setVisible(False)
        self.crop_button = QPushButton("Crop box")
        self.crop_button.setCheckable(True)
        self.crop_button.setToolTip("Only the points inside a box go to the models; place and size it in the "
                                    "Crop box tab")
        self.crop_button.toggled.connect(self.set_crop_enabled)
        for w in (self.up_axis_label, self.up_axis, self.find_button, self.find_busy, self.crop_button):
            flow.addWidget(w)
        return row

    def _objects_page(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 4, 2, 2)
        top = QHBoxLayout()
        self.objects_hint = QLabel("Find objects looks for separate objects (on a table, a floor, a road).")
        self.objects_hint.setWordWrap(True)
        self.whole_button = QPushButton("Whole cloud")
        self.whole_button.setToolTip("The models see the whole cloud again")
        self.whole_button.clicked.connect(self.show_whole_cloud)
        top.addWidget(self.objects_hint, 1)
        top.addWidget(self.whole_button)
        lay.addLayout(top)
        self.objects_table = ObjectsTable()
        self.objects_table.object_chosen.connect(self.choose_object)
        self.objects_table.setMinimumHeight(90)
        lay.addWidget(self.objects_table, 1)
        self.objects_page = page
        return page

    def _crop_page(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 4, 2, 2)
        self.crop_hint = QLabel(self.CROP_OFF_HINT)
        self.crop_hint.setWordWrap(True)
        lay.addWidget(self.crop_hint)
        self.crop = CropBoxControls()
        self.crop.setEnabled(False)
        self.crop.changed.connect(self._crop_changed)
        lay.addWidget(self.crop)
        lay.addStretch(1)
        self.crop_page = page
        return page

    CROP_OFF_HINT = "Turn on <b>Crop box</b> (above) to send only the points inside the box to the models."
    CROP_ON_HINT = "Only the points inside the box (file coordinates) go to the models."

    def _robustness_page(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Robustness: perturb what the models see")
        box.setFlat(True)
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
        self.all_classes = QCheckBox("Show all classes")
        self.all_classes.setToolTip("The cards list every class, not only the top five")
        self.all_classes.toggled.connect(self._redraw)
        last = QHBoxLayout()
        last.addWidget(reset, 1)
        last.addWidget(self.all_classes)
        form.addRow(last)
        lay.addWidget(box)
        self.robustness_box = box
        self.robustness_page = page
        return page

    def _importance_page(self) -> QWidget:
        from core.attribution import METHOD, TOP_FRACTION  # numpy only: cheap on the GUI thread

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 4, 2, 2)
        row = QHBoxLayout()
        self.importance_role = QComboBox()
        self.importance_role.addItem("off", None)
        self.importance_role.addItem("teacher", "teacher")
        self.importance_role.addItem("student", "student")
        self.importance_role.setToolTip("Colour the points the models see by how much this model's prediction "
                                        "depends on each (computed in the background)")
        self.importance_role.currentIndexChanged.connect(self._importance_role_changed)
        row.addWidget(QLabel("Colour the model input by the importance for"))
        row.addWidget(self.importance_role)
        row.addStretch(1)
        lay.addLayout(row)
        self.importance_overlap = QLabel("")
        self.importance_overlap.setWordWrap(True)
        self.importance_overlap.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.importance_overlap)
        legend = QLabel(f"<small>Importance: {METHOD} (the predicted class's logit; 0 for points the model never "
                        f"uses), shown as a percentile rank. Overlap: IoU of the two models' top "
                        f"{TOP_FRACTION:.0%} points (two random sets: about 0.05).</small>")
        legend.setWordWrap(True)
        lay.addWidget(legend)
        lay.addStretch(1)
        self.attribution: dict | None = None  # core.attribution.compare_attributions of last_result's input
        self._attributing = False
        self._attribution_pending = False
        self.importance_page = page
        return page

    def importance_role_chosen(self) -> str | None:
        return self.importance_role.currentData()

    def set_importance_role(self, role: str | None) -> None:
        """Colour the model input by the teacher's or the student's importance (None: off)."""
        self.importance_role.setCurrentIndex(max(self.importance_role.findData(role), 0))

    def attribution_view(self) -> dict | None:
        """What the view shows for the chosen model, when it is computed for the current input:
        ``points`` (unit sphere), ``colors``, ``role``, ``iou``, ``fraction``, ``method``."""
        a, role = self.attribution, self.importance_role_chosen()
        if role is None or a is None or self.last_result is None or a["result"] is not self.last_result:
            return None
        return {"points": a["points"], "colors": a[role]["colors"], "role": role, "iou": a["iou"],
                "fraction": a["fraction"], "method": a["method"]}

    def _importance_role_changed(self, _=None) -> None:
        if self.importance_role_chosen() is None:
            self.importance_overlap.setText("")
            self.attribution_changed.emit(None)
        elif self.attribution_view() is not None:
            self.attribution_changed.emit(self.attribution_view())
        else:
            self.compute_attribution()

    def compute_attribution(self):
        """Both models' importance on the current input, in the model worker (one at a time; a newer
        input waits for the running one). Returns the worker, or None when there is nothing to do."""
        res = self.last_result
        if res is None or self.comparison is None or self.importance_role_chosen() is None:
            return None
        if self._attributing:
            self._attribution_pending = True
            return None
        self._attributing = True
        self.importance_overlap.setText("Computing the importance of each point…")
        comp, pts = self.comparison, res["points"]

        def work():
            from core.attribution import compare_attributions

            return compare_attributions(comp.teacher.model, comp.student.model, pts)

        def done(a, res=res):
            a["result"] = res
            self.attribution = a
            self._show_attribution_overlap()
            view = self.attribution_view()
            if view is not None:
                self.attribution_changed.emit(view)

        def failed(exc):
            self.importance_overlap.setText(f"<span style='color:#d73a49'>Importance failed: {error_text(exc)}</span>")

        def finished():
            self._attributing = False
            if self._attribution_pending or (self.last_result is not res and self.last_result is not None):
                self._attribution_pending = False
                self.compute_attribution()

        return start_worker(work, on_return=done, on_error=failed, on_finish=finished, pool=self.pool)

    def _show_attribution_overlap(self) -> None:
        a = self.attribution
        self.importance_overlap.setText(
            f"Teacher and student: <b>top-{a['fraction']:.0%} overlap (IoU) {a['iou']:.2f}</b> "
            f"({'the same' if a['iou'] >= 0.5 else 'partly different' if a['iou'] >= 0.15 else 'mostly different'} "
            "important points)")

    def _slider(self, lo, hi, tip) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal, minimum=lo, maximum=hi)
        s.setToolTip(tip)
        return s

    # --- what the models see ---------------------------------------------------------------------
    def decided_up(self):
        """The up axis ``auto`` stands for (core.data.orient.UpAxis): the analysis's, else the format's
        or z while no analysis is available (no models yet)."""
        if self.analysis is not None:
            return self.analysis["_up"]
        from core.data.orient import decide_up_axis  # pure numpy: cheap on the GUI thread

        return decide_up_axis("auto", self.shape.info.get("up_hint") if self.shape is not None else None, None)

    def current_up(self):
        """The up axis in use (UpAxis): the one chosen in the box (source ``user``), else the decided one."""
        choice = self.up_axis.currentData() or "auto"
        if choice == "auto":
            return self.decided_up()
        from core.data.orient import UpAxis

        return UpAxis(choice, "user")

    def crop_enabled(self) -> bool:
        return self.crop_button.isChecked()

    def input_indices(self) -> np.ndarray | None:
        """Indices into the shape's points of what the models see (None: all of them)."""
        if self.shape is None:
            return None
        if self.crop_enabled():
            return self._points_in_crop()
        if 0 <= self.chosen_object < len(self.objects):
            return np.asarray(self.objects[self.chosen_object]["indices"])
        return None

    def _points_in_crop(self) -> np.ndarray:
        """Indices of the shape's points inside the crop box (kept until the box or the shape changes)."""
        lo, hi = self.crop.box()
        key = (self._token, tuple(lo), tuple(hi))
        if self._crop_cache[0] != key:
            self._crop_cache = (key, points_in_box(self.shape.full_xyz, lo, hi))
        return self._crop_cache[1]

    def input_xyz(self) -> np.ndarray:
        idx = self.input_indices()
        return self.shape.full_xyz if idx is None else self.shape.full_xyz[idx]

    def input_rotation(self) -> np.ndarray | None:
        """The rotation (file -> z up) the chosen object was turned by in Comparison.predict_objects;
        None: no object chosen (the up axis's own rotation)."""
        if not (0 <= self.chosen_object < len(self.objects)) or self.crop_enabled():
            return None
        return np.asarray(self.objects[self.chosen_object]["rotation"])

    def is_whole_scene(self) -> bool:
        return bool(self.analysis and self.analysis.get("scene")) and self.input_indices() is None

    def perturbation(self) -> Perturbation:
        return Perturbation(self.points.value(), self.dropout.value() / 100, self.noise.value() / 1000,
                            float(self.rotation.value()), self.current_up().axis, self.input_rotation())

    def to_file_frame(self, model_pts: np.ndarray) -> np.ndarray:
        """The model input mapped back onto the displayed input (for the overlay in the view)."""
        xyz = self.input_xyz()
        bounds = np.stack([xyz.min(0), xyz.max(0)]) if len(xyz) else self.shape.bounds
        pert = self.perturbation()
        return to_display_frame(model_pts, bounds, pert.up_axis, pert.rotation_deg, pert.up_rotation)

    def input_count(self) -> int:
        return 0 if self.shape is None else len(self.input_xyz())

    # --- models -----------------------------------------------------------------------------
    def _up_axis_changed(self, _index: int = 0) -> None:
        self.up_axis_changed.emit(self.current_up().axis)
        self._show_input_info()
        if self.objects and not self._finding:
            self.find_objects()  # same objects (found in file coordinates), predictions with the new axis
        self.run_prediction()

    def reset_perturbation(self) -> None:
        for s in (self.dropout, self.noise, self.rotation):
            s.setValue(0)
        self.points.setValue(1024)

    def load_defaults(self, teacher: str | None = None, student: str | None = None) -> None:
        """Load the given checkpoints, else the bundled ones; missing files give a message, not a crash."""
        t = Path(teacher) if teacher else DEFAULT_TEACHER
        s = Path(student) if student else DEFAULT_STUDENT
        missing = [display_path(p) for p in (t, s) if not p.exists()]
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
        self._set_status(f"Loading {role}: {display_path(path)} …")
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
                "size_bytes": m.size_bytes, "runtime": m.runtime}
        self.columns[role].show_model(info)
        self.comparison = None
        self._update_actions()
        if self.teacher is not None and self.student is not None:
            from core.inference import Comparison

            try:
                self.comparison = Comparison(self.teacher, self.student)
            except Exception as exc:
                self.last_error = error_text(exc)
                self._set_status(f"<span style='color:#d73a49'>{self.last_error}</span>")
                self.message.emit(self.last_error)
                return
            self._set_status(f"Teacher <b>{self.teacher.name}</b> vs student <b>{self.student.name}</b> · "
                             f"{len(self.comparison.class_names)} classes · the student has "
                             f"{self.teacher.params / max(self.student.params, 1):.0f}x fewer parameters")
            self.models_changed.emit()
            self._update_actions()
            if self.shape is not None:
                self._analyze()
            else:
                self.run_prediction()
        else:
            other = "student" if role == "teacher" else "teacher"
            self._set_status(f"{role.capitalize()} loaded; load a {other} to compare.")

    def _set_status(self, html: str) -> None:
        self.status.setText(html)

    # --- a new shape: analysis ----------------------------------------------------------------
    def set_shape(self, shape: Shape | None) -> None:
        self._token += 1
        self.shape = shape
        self.last_result = None
        self.analysis = None
        self.objects = []
        self.chosen_object = -1
        self.objects_table.set_objects([])
        self.objects_hint.setText("Find objects looks for separate objects (on a table, a floor, a road).")
        self.crop_button.blockSignals(True)
        self.crop_button.setChecked(False)
        self.crop_button.blockSignals(False)
        self.crop.setEnabled(False)
        self.crop_hint.setText(self.CROP_OFF_HINT)
        if shape is not None:
            self.crop.blockSignals(True)
            self.crop.set_bounds(*shape.bounds)
            self.crop.blockSignals(False)
        self._emit_boxes()
        self._redraw()
        if shape is not None and self.comparison is not None:
            self._analyze()
        else:
            self._apply_analysis()

    def _analyze(self) -> None:
        """Up axis and scene check of the current shape (Comparison.analyze) in the model worker."""
        self._analysing = True
        self._update_actions()
        self._show_input_info()
        self._redraw()
        token, comp, cloud = self._token, self.comparison, analysis_input(self.shape)
        start_worker(comp.analyze, cloud, "auto", on_return=lambda info: self._analyzed(token, info),
                     on_error=lambda e: self._analysis_failed(token, e), pool=self.pool)

    def _analyzed(self, token: int, info: dict) -> None:
        if token != self._token:
            return
        self.analysis = info
        self._analysing = False
        self._apply_analysis()
        self.analyzed.emit({k: v for k, v in info.items() if not k.startswith("_")})

    def _analysis_failed(self, token: int, exc) -> None:
        if token != self._token:
            return
        self._analysing = False
        self.message.emit(f"Could not analyse the input ({error_text(exc)}); up axis from the format, else z")
        self._apply_analysis()

    def _apply_analysis(self) -> None:
        """Show what was decided (axis, scene) and run the models on the input."""
        self._analysing = False
        self._update_actions()
        self._show_input_info()
        if self.analysis and self.analysis.get("scene") and self.up_axis.currentData() == "auto":
            self.tools.setCurrentWidget(self.objects_page)
        self.up_axis_changed.emit(self.current_up().axis)
        self._pending = False
        self.run_prediction()

    def _show_input_info(self) -> None:
        """The auto entry of the axis box says what auto decided; a line below says what the file is."""
        up = self.decided_up() if self.shape is not None else None
        text = "auto" if up is None else ("auto: …" if self._analysing else f"auto: {up.describe()}")
        self.up_axis.setItemText(0, text)
        self._show_scene_banner()
        if self.shape is None:
            self.input_info.setText("")
            return
        a = self.analysis or {}
        fmt = str(a.get("format") or self.shape.info.get("format") or "").upper()
        n = a.get("points_in_file", self.shape.original_points)
        parts = [f"{fmt}, {n:,} points" if fmt else f"{n:,} points"]
        if self.shape.info.get("layout"):
            parts.append(f"{self.shape.info.get('channels')} floats per point: {self.shape.info['layout']}")
        if a and not a.get("scene"):
            parts.append(f"one object ({a.get('scene_reason', '')})")
        if up is not None and up.unsure and (self.up_axis.currentData() or "auto") == "auto":
            from core.data.orient import unsure_advice

            parts.append(f"<span style='color:{ONE_RECOGNISES.name()}'>{unsure_advice(up.likelier)} in the "
                         "Up axis box</span>")
        notes = list(a.get("notes", self.shape.info.get("notes", [])) or [])
        if notes:
            parts.append("<i>" + "; ".join(notes) + "</i>")
        self.input_info.setText(f"<small>{' · '.join(parts)}</small>")

    def _show_scene_banner(self) -> None:
        """A scene: say so, and what the models see instead; a crop or an object of a single shape: say so."""
        scene = bool(self.analysis and self.analysis.get("scene"))
        idx = self.input_indices()
        if scene and idx is None:
            reason = self.analysis.get("scene_reason", "")
            text = f"<b>This is a scene</b> ({reason}): <b>find its objects or crop one</b>"
            style = "background:#b07800; color:white; border-radius:6px; padding:6px"
        elif idx is not None:
            what = f"object {self.chosen_object + 1}" if not self.crop_enabled() else "the points inside the crop box"
            text = f"{'Scene · t' if scene else 'T'}he models see {what} ({len(idx):,} points)"
            style = "background:#2b5797; color:white; border-radius:6px; padding:6px"
        else:
            self.scene_banner.setVisible(False)
            return
        self.scene_banner.setText(text)
        self.scene_banner.setStyleSheet(style)
        self.scene_banner.setVisible(True)

    def _update_actions(self) -> None:
        ready = self.comparison is not None and self.shape is not None
        self.find_button.setEnabled(ready and not self._analysing and not self._finding)
        self.find_button.setText("Finding objects…" if self._finding else "Find objects")
        self.find_busy.setVisible(self._finding)

    # --- objects and the crop box ---------------------------------------------------------------
    def find_objects(self):
        """Find the objects of the current cloud and run both models on each, in the model worker.
        Returns the worker (None when there is nothing to do)."""
        if self.comparison is None or self.shape is None or self._finding:
            return None
        self._finding = True
        self._update_actions()
        token, comp, xyz = self._token, self.comparison, self.shape.full_xyz
        up, support = self.current_up(), (self.analysis or {}).get("_support")

        def work():
            t0 = time.perf_counter()
            objects = comp.predict_objects(xyz, up, support)
            return objects, time.perf_counter() - t0

        self.message.emit("Finding objects…")
        return start_worker(work, on_return=lambda r: self._objects_done(token, *r),
                            on_error=lambda e: self._objects_failed(token, e), on_finish=self._finding_done,
                            pool=self.pool)

    def _finding_done(self) -> None:
        self._finding = False
        self._update_actions()

    def _objects_failed(self, token: int, exc) -> None:
        if token != self._token:
            return
        self.last_error = f"Finding objects failed: {error_text(exc)}"
        self.message.emit(self.last_error)

    def _objects_done(self, token: int, objects: list, seconds: float) -> None:
        self._finding_done()
        if token != self._token:
            return
        self.last_objects_seconds = seconds
        keep = self.chosen_object if len(objects) == len(self.objects) else -1
        self.objects = list(objects)
        self.objects_table.set_objects(self.objects)
        n = len(objects)
        self.objects_hint.setText(f"{n} object{'s' if n != 1 else ''} found in {seconds:.1f} s · choose one to make "
                                  "it the models' input" if n else
                                  f"No separate objects found ({seconds:.1f} s): crop one with the Crop box")
        self.tools.setCurrentWidget(self.objects_page)
        self.chosen_object = -1
        if keep >= 0:
            self.choose_object(keep)
        self._emit_boxes()
        self.message.emit(f"{n} object{'s' if n != 1 else ''} found in {seconds:.1f} s")
        self.objects_found.emit(self.objects)

    def choose_object(self, index: int) -> None:
        """Make object ``index`` (-1: none, the whole cloud) what the models see."""
        index = index if 0 <= index < len(self.objects) else -1
        if self.objects_table.chosen() != index:
            self.objects_table.blockSignals(True)
            self.objects_table.choose(index)
            self.objects_table.blockSignals(False)
        if index == self.chosen_object and not (index >= 0 and self.crop_enabled()):
            return
        self.chosen_object = index
        if index >= 0 and self.crop_enabled():
            self.crop_button.blockSignals(True)  # an object replaces the crop box
            self.crop_button.setChecked(False)
            self.crop_button.blockSignals(False)
            self.crop.setEnabled(False)
            self.crop_hint.setText(self.CROP_OFF_HINT)
        self._input_changed(at_once=True)

    def show_whole_cloud(self) -> None:
        """The models see the whole cloud again (no object chosen, crop box off)."""
        self.set_crop_enabled(False)
        self.choose_object(-1)

    def set_crop_enabled(self, on: bool) -> None:
        """Crop box on: only the points inside it go to the models (the box starts around the cloud)."""
        if self.crop_button.isChecked() != on:
            self.crop_button.setChecked(on)  # comes back here through toggled
            return
        self.crop.setEnabled(on)
        self.crop_hint.setText(self.CROP_ON_HINT if on else self.CROP_OFF_HINT)
        if on:
            self.tools.setCurrentWidget(self.crop_page)
            if self.chosen_object >= 0:
                self.chosen_object = -1
                self.objects_table.blockSignals(True)
                self.objects_table.choose(-1)
                self.objects_table.blockSignals(False)
        self._input_changed(at_once=True)

    def _crop_changed(self) -> None:
        if self.crop_enabled():
            self._input_changed(at_once=False)

    def _input_changed(self, at_once: bool) -> None:
        self._emit_boxes()
        self._show_scene_banner()
        if self.shape is not None:
            self.crop.inside.setText(f"{len(self._points_in_crop()):,} points inside")
        if at_once:
            self.run_prediction()
        else:
            self._throttle.start()  # restarted by every edit: one run when the user pauses

    def _emit_boxes(self) -> None:
        boxes = []
        for i, o in enumerate(self.objects):
            t, s = o["teacher"], o["student"]
            name = lambda p: p["top"][0]["class"] + ("?" if p.get("in_vocabulary") is False else "")
            label = f"{i + 1} {name(t)}" if name(t) == name(s) else f"{i + 1} {name(t)} / {name(s)}"
            boxes.append(ViewBox(np.asarray(o["bbox_min"]), np.asarray(o["bbox_max"]), verdict_color(o["verdict"]),
                                 label, emphasis=i == self.chosen_object))
        if self.crop_enabled():
            lo, hi = self.crop.box()
            boxes.append(ViewBox(lo, hi, QColor(CROP_COLOR), "crop", emphasis=True))
        self.boxes_changed.emit(boxes)

    # --- predictions -------------------------------------------------------------------------
    def _schedule(self) -> None:
        self.dropout_label.setText(f"{self.dropout.value()}%")
        self.noise_label.setText(f"{self.noise.value() / 1000:.3f}")
        self.rotation_label.setText(f"{self.rotation.value()}°")
        self._throttle.start()

    def run_prediction(self) -> None:
        if self.shape is None:
            return
        if self._analysing:
            self._pending = True  # the analysis's end runs it
            return
        xyz = self.input_xyz()
        if len(xyz) == 0:
            self.last_result = None
            self._redraw()
            self.banner.setText("No points inside the crop box: the models have nothing to see")
            self.banner.setStyleSheet(f"background:{NOT_RECOGNISED.name()}; color:white; border-radius:6px; "
                                      "padding:6px")
            self.model_points.emit(None)
            return
        if self.comparison is None:
            pts = prepare_model_points(xyz, self.perturbation())
            self.model_points.emit(pts)
            return
        if self._busy:
            self._pending = True
            return
        self._busy = True
        comp, pert, token, path = self.comparison, self.perturbation(), self._token, self.shape.path

        def work():
            t0 = time.perf_counter()
            pts = prepare_model_points(xyz, pert)
            res = comp.predict_points(pts, top=5, prepare_ms=(time.perf_counter() - t0) * 1000)
            res["points"] = pts
            res["shape_path"] = path
            res["token"] = token
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
        if self.shape is None or res.get("token") != self._token:
            return  # a result for a shape that is no longer shown
        self.last_result = res
        self._redraw()
        self.model_points.emit(res["points"])
        self.predicted.emit(res)
        if self.importance_role_chosen() is not None:
            self.compute_attribution()

    def _redraw(self) -> None:
        res = self.last_result
        names = self.comparison.class_names if self.comparison else []
        whole_scene = self.is_whole_scene()
        for c in self.columns.values():
            c.set_muted(whole_scene)
        if res is None:
            for c in self.columns.values():
                c.show_prediction(None, names, False, AGREE)
            analysing = self._analysing and self.shape is not None
            self.banner.setText("Deciding the up axis and whether this is a scene…" if analysing else "")
            self.banner.setStyleSheet(f"background:{MUTED.name()}; color:white; border-radius:6px; padding:6px"
                                      if analysing else "")
            return
        t, s = res["teacher"]["top"][0]["class"], res["student"]["top"][0]["class"]
        verdict = res.get("verdict") or ("agree" if res["agree"] else "disagree")
        color = verdict_color(verdict)
        for role, c in self.columns.items():
            c.show_prediction(res[role], names, self.all_classes.isChecked(), color)
        text = verdict_sentence(verdict, t, s)
        if whole_scene:  # above the greyed cards: what they say, marked as the whole scene's
            text = f"Whole scene: {text}"
            color = QColor(MUTED)
        self.banner.setText(f"{text} <span style='font-size:small; font-weight:normal'>&nbsp;·&nbsp;"
                            f"JS&nbsp;divergence&nbsp;{res['divergence']:.3f}</span>")
        self.banner.setToolTip("Jensen-Shannon divergence between the two models' class probabilities (nats)")
        self.banner.setStyleSheet(f"background:{color.name()}; color:white; border-radius:6px; padding:6px")

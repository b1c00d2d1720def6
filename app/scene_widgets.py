"""Widgets of the Compare view for real files: a wrapping row layout, the verdict's words and colours,
the table of objects found in a scene and the crop box controls.

Thread: GUI thread (plain widgets; the work they trigger runs in the comparison panel's workers).
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QMargins, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QGridLayout, QHeaderView, QLabel, QLayout,
                               QPushButton, QSizePolicy, QTableWidget, QTableWidgetItem, QWidget)

AGREE, DISAGREE = QColor(46, 160, 67), QColor(215, 58, 73)
NOT_RECOGNISED = QColor(118, 124, 134)  # neither model knows the object: grey, not a verdict on the student
ONE_RECOGNISES = QColor(184, 122, 0)  # amber: one model knows it, the other does not
CROP_COLOR = QColor(0, 176, 230)

#: verdict (core.inference.verdict) -> (colour, short words for tables)
VERDICT_STYLE = {
    "agree": (AGREE, "agree"),
    "disagree": (DISAGREE, "disagree"),
    "neither_recognises": (NOT_RECOGNISED, "neither knows it"),
    "only_teacher_recognises": (ONE_RECOGNISES, "only the teacher knows it"),
    "only_student_recognises": (ONE_RECOGNISES, "only the student knows it"),
}


def verdict_color(verdict: str) -> QColor:
    return QColor(VERDICT_STYLE.get(verdict, (NOT_RECOGNISED, ""))[0])


def verdict_sentence(verdict: str, teacher_class: str, student_class: str) -> str:
    """What the two models say together, in one line (the banner of the Compare view)."""
    if verdict == "neither_recognises":
        return f"? Neither model recognises this object (best guesses: teacher {teacher_class}, student {student_class})"
    if verdict == "only_teacher_recognises":
        return f"The teacher recognises it ({teacher_class}), the student does not"
    if verdict == "only_student_recognises":
        return f"The student recognises it ({student_class}), the teacher does not"
    if verdict == "agree":
        return f"✔ Both say {teacher_class}"
    return f"✘ Disagree: teacher {teacher_class}, student {student_class}"


def vocabulary_words(in_vocabulary: bool | None) -> tuple[str, QColor]:
    """A model card's in-vocabulary line and its colour (None: the checkpoint has no calibration)."""
    if in_vocabulary is None:
        return "vocabulary: uncalibrated", NOT_RECOGNISED
    if in_vocabulary:
        return "recognises it", AGREE
    return "not sure: outside its vocabulary", ONE_RECOGNISES


class FlowLayout(QLayout):
    """Lays widgets out left to right and wraps them onto the next line when the row is too narrow
    (the Qt flow layout example): control rows never force the panel wider than it is."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items = []
        self._spacing = spacing
        self.setContentsMargins(QMargins(0, 0, 0, 0))

    def addItem(self, item) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, i: int):
        return self._items[i] if 0 <= i < len(self._items) else None

    def takeAt(self, i: int):
        return self._items.pop(i) if 0 <= i < len(self._items) else None

    def expandingDirections(self):
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        size = QSize()
        for it in self._items:
            size = size.expandedTo(it.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        r = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, line_h = r.x(), r.y(), 0
        row: list = []

        def place_row():
            for it, px in row:  # centre each item vertically in its line
                h = it.sizeHint().height()
                it.setGeometry(QRect(QPoint(px, y + (line_h - h) // 2), it.sizeHint()))

        for it in self._items:
            if it.widget() is not None and it.widget().isHidden():
                continue
            hint = it.sizeHint()
            if row and x + hint.width() > r.right() + 1:
                if move:
                    place_row()
                x, y, line_h, row = r.x(), y + line_h + self._spacing, 0, []
            row.append((it, x))
            x += hint.width() + self._spacing
            line_h = max(line_h, hint.height())
        if move:
            place_row()
        return y + line_h - rect.y() + m.bottom()


class ObjectsTable(QTableWidget):
    """The objects found in a scene, largest first: index, points, each model's class and the verdict,
    the index cell in the colour of the object's box in the view. Choosing a row emits its index."""

    object_chosen = Signal(int)  # -1: none chosen

    COLUMNS = ("#", "Points", "Teacher", "Student", "Verdict")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        head = self.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setStretchLastSection(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        self.itemSelectionChanged.connect(self._selection_changed)

    def set_objects(self, objects: list[dict]) -> None:
        self.blockSignals(True)
        self.clearSelection()
        self.setRowCount(len(objects))
        for i, o in enumerate(objects):
            color = verdict_color(o["verdict"])
            cells = [f"{i + 1}", f"{o['points']:,}", self._class_cell(o["teacher"]), self._class_cell(o["student"]),
                     VERDICT_STYLE.get(o["verdict"], (None, o["verdict"]))[1]]
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                if c == 0:
                    it.setBackground(color)
                    it.setForeground(QColor(255, 255, 255))
                    it.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                elif c == 1:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                elif c == 4:
                    it.setForeground(color)
                self.setItem(i, c, it)
        self.blockSignals(False)

    @staticmethod
    def _class_cell(pred: dict) -> str:
        top = pred["top"][0]
        mark = {True: "", False: " (?)", None: ""}[pred.get("in_vocabulary")]
        return f"{top['class']} {top['prob'] * 100:.0f}%{mark}"

    def chosen(self) -> int:
        rows = self.selectionModel().selectedRows()
        return rows[0].row() if rows else -1

    def choose(self, index: int) -> None:
        """Select row ``index`` (-1: none), as a click would."""
        if index < 0:
            self.clearSelection()
        else:
            self.selectRow(index)

    def _selection_changed(self) -> None:
        self.object_chosen.emit(self.chosen())


class CropBoxControls(QWidget):
    """Centre and size of an axis-aligned box per axis, in the file's coordinates; ``changed`` on every
    edit (the panel debounces the predictions). Set to the cloud's bounds by ``set_bounds``."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setVerticalSpacing(3)
        grid.addWidget(QLabel("centre"), 0, 1)
        grid.addWidget(QLabel("size"), 0, 2)
        self.centre: list[QDoubleSpinBox] = []
        self.size: list[QDoubleSpinBox] = []
        for d, name in enumerate("xyz"):
            c, s = QDoubleSpinBox(), QDoubleSpinBox()
            c.setToolTip(f"Centre of the box along {name} (file coordinates)")
            s.setToolTip(f"Size of the box along {name}")
            for w in (c, s):
                w.setKeyboardTracking(False)
                w.setMinimumWidth(70)
                w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
                w.valueChanged.connect(self.changed)
            grid.addWidget(QLabel(name), d + 1, 0)
            grid.addWidget(c, d + 1, 1)
            grid.addWidget(s, d + 1, 2)
            self.centre.append(c)
            self.size.append(s)
        self.reset_button = QPushButton("Reset to the cloud")
        self.reset_button.setToolTip("The box around the whole cloud")
        self.reset_button.clicked.connect(self.reset)
        self.inside = QLabel("")
        self.inside.setWordWrap(True)
        grid.addWidget(self.reset_button, 4, 0, 1, 2)
        grid.addWidget(self.inside, 4, 2)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)
        self._bounds = np.array([[-1.0] * 3, [1.0] * 3])

    def set_bounds(self, lo, hi) -> None:
        """The cloud's box: sets the ranges and steps, and the box itself to it (one ``changed``)."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        self._bounds = np.stack([lo, hi])
        ext = float(max((hi - lo).max(), 1e-6))
        decimals = int(min(6, max(2, 3 - math.floor(math.log10(ext)))))
        for d in range(3):
            for w, (a, b) in ((self.centre[d], (lo[d] - ext, hi[d] + ext)), (self.size[d], (0.0, 3 * ext))):
                w.blockSignals(True)
                w.setDecimals(decimals)
                w.setRange(a, b)
                w.setSingleStep(ext / 50)
                w.blockSignals(False)
        self.set_box(lo, hi)

    def reset(self) -> None:
        self.set_box(*self._bounds)

    def set_box(self, lo, hi) -> None:
        """Set the box (one ``changed``)."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        for d in range(3):
            for w, v in ((self.centre[d], (lo[d] + hi[d]) / 2), (self.size[d], hi[d] - lo[d])):
                w.blockSignals(True)
                w.setValue(float(v))
                w.blockSignals(False)
        self.changed.emit()

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of the box, in the file's coordinates. The spin boxes round to their decimals: one
        unit of the last decimal of slack keeps the extreme points of the cloud's own bounds inside."""
        c = np.array([w.value() for w in self.centre])
        s = np.array([w.value() for w in self.size])
        slack = np.array([10.0 ** -w.decimals() for w in self.size])
        return c - s / 2 - slack, c + s / 2 + slack

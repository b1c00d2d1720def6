"""Disagreement explorer: over a dataset's test split, the shapes where teacher and student disagree,
ranked by Jensen-Shannon divergence, and both confusion matrices with their difference."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from app.runs_panel import NumItem
from app.workers import error_text, start_worker


def scan_split(comparison, data_dir: str, limit: int, cancelled, progress, batch: int = 16) -> dict:
    """Both models over (up to ``limit`` evenly spaced) test shapes; runs in a worker thread."""
    import torch

    from core.data.datasets import load_split
    from core.inference import js_divergence

    progress("loading test split", 0, 1)
    ds = load_split(data_dir, "test", 1024, progress=False)
    if list(ds.class_names) != list(comparison.class_names):
        raise ValueError(f"{data_dir}: its {len(ds.class_names)} classes differ from the models' "
                         f"{len(comparison.class_names)}")
    n = len(ds.labels)
    idx = np.arange(n) if not limit or limit >= n else np.linspace(0, n - 1, limit).round().astype(int)
    pt, ps = [], []
    with torch.no_grad():
        for lo in range(0, len(idx), batch):
            if cancelled():
                break
            b = torch.from_numpy(ds.points[idx[lo:lo + batch]])
            pt.append(torch.softmax(comparison.teacher.model(b).float(), 1).numpy())
            ps.append(torch.softmax(comparison.student.model(b).float(), 1).numpy())
            progress("predicting", min(lo + batch, len(idx)), len(idx))
    if not pt:
        return {"cancelled": True}
    pt, ps = np.concatenate(pt), np.concatenate(ps)
    idx = idx[: len(pt)]
    labels = ds.labels[idx]
    k = len(ds.class_names)
    cm = lambda pred: np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)  # noqa: E731
    tp, sp = pt.argmax(1), ps.argmax(1)
    js = np.array([js_divergence(a, b) for a, b in zip(pt, ps)])
    return {"indices": idx, "labels": labels, "teacher_pred": tp, "student_pred": sp, "js": js,
            "teacher_conf": pt.max(1), "student_conf": ps.max(1), "cm_teacher": cm(tp), "cm_student": cm(sp),
            "class_names": list(ds.class_names), "points": ds.points[idx],
            "shape_ids": [ds.shape_ids[i] for i in idx] if len(ds.shape_ids) == n else [str(i) for i in idx],
            "cancelled": len(idx) < (limit or n) and cancelled()}


class DisagreementPanel(QWidget):
    """Thread: GUI thread; the scan runs on the comparison's model thread (one model user at a time)."""

    open_shape = Signal(object, str)  # (P, 3) points, a title
    scanned = Signal(dict)

    def __init__(self, settings, compare, parent=None) -> None:
        super().__init__(parent)
        self.settings, self.compare = settings, compare
        self.result: dict | None = None
        self._cancel = False
        self.worker = None
        top = QHBoxLayout()
        self.data = QLineEdit(settings.data_dir)
        self.data.setToolTip("Dataset folder whose test split is scanned")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.limit = QSpinBox(minimum=0, maximum=100000, value=200, singleStep=50)
        self.limit.setSpecialValueText("all")
        self.limit.setToolTip("Scan this many evenly spaced test shapes (0: all; the teacher is slow on CPU)")
        self.scan_button = QPushButton("Scan test split")
        self.scan_button.clicked.connect(self.scan)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        for w in (QLabel("Dataset"), self.data, browse, QLabel("Shapes"), self.limit, self.scan_button,
                  self.stop_button, self.progress):
            top.addWidget(w)
        self.summary = QLabel("Scan a test split to find the shapes where the student and the teacher disagree.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["shape", "true class", "teacher", "student", "JS divergence", "#"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnHidden(5, True)
        self.table.itemDoubleClicked.connect(lambda _: self._open_selected())
        self.open_button = QPushButton("View selected shape with both predictions")
        self.open_button.clicked.connect(self._open_selected)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.table, 1)
        ll.addWidget(self.open_button)
        self.cms = pg.GraphicsLayoutWidget()
        self.cm_plots, self.cm_images = [], []
        for i, title in enumerate(("teacher confusion", "student confusion", "student − teacher")):
            p = self.cms.addPlot(row=0, col=i, title=title)
            p.invertY(True)
            # Not aspect-locked: locked, a tall narrow panel pads the matrix with empty rows above
            # and below; the matrix fills its panel instead (cells may be rectangular).
            p.setLabel("left", "true")
            p.setLabel("bottom", "predicted")
            img = pg.ImageItem()
            p.addItem(img)
            self.cm_plots.append(p)
            self.cm_images.append(img)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.cms)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self.stop_button.setEnabled(False)

    def _browse(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Dataset folder", self.data.text())
        if p:
            self.data.setText(p)

    def cancel(self) -> None:
        self._cancel = True

    def scan(self) -> None:
        comp = self.compare.comparison
        if comp is None:
            self.summary.setText("Load a teacher and a student first (Compare tab).")
            return
        self._cancel = False
        self.scan_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.summary.setText("Scanning…")
        self.worker = start_worker(scan_split, comp, self.data.text().strip(), self.limit.value(),
                                   lambda: self._cancel, on_progress=self._progress, on_return=self._done,
                                   on_error=self._failed, on_finish=self._finished, pool=self.compare.pool)

    def _progress(self, what, done, total) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{what} %v/%m")

    def _finished(self) -> None:
        self.scan_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setFormat("done: %v/%m shapes" if not self._cancel else "stopped: %v/%m shapes")

    def _failed(self, exc) -> None:
        self.summary.setText(f"<span style='color:#d73a49'>Scan failed: {error_text(exc)}</span>")

    def _done(self, res: dict) -> None:
        if "indices" not in res:
            self.summary.setText("Scan stopped before any shape was predicted.")
            return
        self.result = res
        names = res["class_names"]
        dis = np.flatnonzero(res["teacher_pred"] != res["student_pred"])
        dis = dis[np.argsort(-res["js"][dis])]
        n = len(res["labels"])
        t_acc = (res["teacher_pred"] == res["labels"]).mean() * 100
        s_acc = (res["student_pred"] == res["labels"]).mean() * 100
        self.summary.setText(f"{n} shapes{' (stopped early)' if res.get('cancelled') else ''}: teacher OA "
                             f"{t_acc:.1f}%, student OA {s_acc:.1f}%, they disagree on {len(dis)} "
                             f"({len(dis) / max(n, 1) * 100:.1f}%), listed by JS divergence.")
        self.table.setRowCount(len(dis))
        for r, i in enumerate(dis):
            lab, tp, sp = res["labels"][i], res["teacher_pred"][i], res["student_pred"][i]
            cells = [QTableWidgetItem(res["shape_ids"][i]), QTableWidgetItem(names[lab]),
                     QTableWidgetItem(f"{names[tp]} {res['teacher_conf'][i] * 100:.0f}%" + (" ✔" if tp == lab else "")),
                     QTableWidgetItem(f"{names[sp]} {res['student_conf'][i] * 100:.0f}%" + (" ✔" if sp == lab else "")),
                     NumItem(float(res["js"][i]), f"{res['js'][i]:.3f}"), QTableWidgetItem(str(i))]
            for c, it in enumerate(cells):
                self.table.setItem(r, c, it)
        ct, cs = res["cm_teacher"].astype(float), res["cm_student"].astype(float)
        diff = cs - ct
        m = max(np.abs(diff).max(), 1)
        lut_heat = pg.colormap.get("viridis").getLookupTable(nPts=256)
        div = pg.ColorMap([0, 0.5, 1], [(200, 40, 40), (245, 245, 245), (40, 90, 200)]).getLookupTable(nPts=256)
        for img, a, lut, levels in ((self.cm_images[0], ct, lut_heat, (0, max(ct.max(), 1))),
                                    (self.cm_images[1], cs, lut_heat, (0, max(cs.max(), 1))),
                                    (self.cm_images[2], diff, div, (-m, m))):
            img.setImage(a.T, levels=levels, lut=lut)  # ImageItem is x-major: transpose so rows = true class
        n = len(names)
        for p in self.cm_plots:
            p.setLimits(xMin=0, xMax=n, yMin=0, yMax=n)
            p.setRange(xRange=(0, n), yRange=(0, n), padding=0)
        self.scanned.emit(res)

    def _open_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or self.result is None:
            return
        i = int(self.table.item(rows[0].row(), 5).text())
        res, names = self.result, self.result["class_names"]
        self.open_shape.emit(res["points"][i], f"{res['shape_ids'][i]} (true: {names[res['labels'][i]]})")

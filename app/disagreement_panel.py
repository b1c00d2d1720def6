"""Disagreement explorer: over a dataset's test split (its clean shapes or their partial views), the
shapes where teacher and student disagree, ranked by Jensen-Shannon divergence, both confusion
matrices with their difference, and both models' calibration (reliability diagram, ECE, and the
effect of a temperature fitted on a slice of the training split)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from app.paths import display_path, expand_path
from app.runs_panel import NumItem
from app.workers import error_text, start_worker


def scan_split(comparison, data_dir: str, limit: int, cancelled, progress, batch: int = 16,
               views: str = "clean", temperature_shapes: int = 0) -> dict:
    """Both models over (up to ``limit`` evenly spaced) test shapes, clean or as partial views
    (``views="partial"``: the benchmark at its default severity); with ``temperature_shapes`` > 0
    a temperature per model is fitted on that many training shapes (never the scanned split).
    Runs in a worker thread."""
    import torch

    from core.calibration import calibration_summary, fit_temperature, training_slice_logits
    from core.data.datasets import load_split
    from core.data.partial import partial_benchmark
    from core.inference import js_divergence

    progress("loading test split", 0, 1)
    ds = load_split(data_dir, "test", 1024, progress=False)
    if list(ds.class_names) != list(comparison.class_names):
        raise ValueError(f"{data_dir}: its {len(ds.class_names)} classes differ from the models' "
                         f"{len(comparison.class_names)}")
    n = len(ds.labels)
    idx = np.arange(n) if not limit or limit >= n else np.linspace(0, n - 1, limit).round().astype(int)
    points = ds.points[idx]
    if views == "partial":
        progress("making partial views", 0, 1)
        points = partial_benchmark(points, indices=idx)
    lt, ls = [], []
    with torch.no_grad():
        for lo in range(0, len(idx), batch):
            if cancelled():
                break
            b = torch.from_numpy(points[lo:lo + batch])
            lt.append(comparison.teacher.model(b).float().numpy())
            ls.append(comparison.student.model(b).float().numpy())
            progress("predicting", min(lo + batch, len(idx)), len(idx))
    if not lt:
        return {"cancelled": True}
    lt, ls = np.concatenate(lt), np.concatenate(ls)
    pt, ps = torch.softmax(torch.from_numpy(lt), 1).numpy(), torch.softmax(torch.from_numpy(ls), 1).numpy()
    idx = idx[: len(pt)]
    points = points[: len(pt)]
    labels = ds.labels[idx]
    k = len(ds.class_names)
    cm = lambda pred: np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp, sp = pt.argmax(1), ps.argmax(1)
    js = np.array([js_divergence(a, b) for a, b in zip(pt, ps)])
    calibration = {}
    for role, logits in (("teacher", lt), ("student", ls)):
        temperature, source = None, None
        if temperature_shapes and not cancelled():
            t = training_slice_logits(getattr(comparison, role).model, data_dir, temperature_shapes,
                                      class_names=ds.class_names,
                                      progress=lambda d, tot, r=role: progress(f"{r}: temperature slice", d, tot))
            temperature, source = fit_temperature(t["logits"], t["labels"]), t["source"]
        calibration[role] = calibration_summary(logits, labels, temperature) | {"temperature_fitted_on": source}
    return {"indices": idx, "labels": labels, "teacher_pred": tp, "student_pred": sp, "js": js, "views": views,
            "teacher_conf": pt.max(1), "student_conf": ps.max(1), "cm_teacher": cm(tp), "cm_student": cm(sp),
            "calibration": calibration, "class_names": list(ds.class_names), "points": points,
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
        self.data = QLineEdit(display_path(settings.data_dir))
        self.data.setToolTip("Dataset folder whose test split is scanned (~: your home folder; a relative path is "
                             "the app's folder's)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.limit = QSpinBox(minimum=0, maximum=100000, value=200, singleStep=50)
        self.limit.setSpecialValueText("all")
        self.limit.setToolTip("Scan this many evenly spaced test shapes (0: all; the teacher is slow on CPU)")
        self.views = QComboBox()
        self.views.addItems(["clean shapes", "partial views"])
        self.views.setToolTip("Scan the test shapes as they are, or the partial-view benchmark (each shape seen "
                              "from one side, sparser and noisier: severity 2, docs/PARTIAL_VIEWS.md)")
        self.temperature_shapes = QSpinBox(minimum=0, maximum=1000, value=200, singleStep=100)
        self.temperature_shapes.setSpecialValueText("off")
        self.temperature_shapes.setToolTip("Fit each model's temperature on this many training shapes (at most "
                                           "1,000, never the scanned split) to show what temperature scaling does")
        self.scan_button = QPushButton("Scan test split")
        self.scan_button.clicked.connect(self.scan)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        for w in (QLabel("Dataset"), self.data, browse, QLabel("Shapes"), self.limit, self.views,
                  QLabel("Temperature fit"), self.temperature_shapes, self.scan_button, self.stop_button, self.progress):
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
        self.reliability = self.cms.addPlot(row=0, col=3, title="reliability (ECE, 15 bins)")
        self.reliability.setLabel("bottom", "confidence")
        self.reliability.setLabel("left", "accuracy")
        self.reliability.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)
        self.reliability.addLegend(offset=(5, 5))
        self.calibration_text = QLabel("")
        self.calibration_text.setWordWrap(True)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.cms, 1)
        rl.addWidget(self.calibration_text)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self.stop_button.setEnabled(False)

    def _browse(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Dataset folder", expand_path(self.data.text()))
        if p:
            self.data.setText(display_path(p))

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
        self.worker = start_worker(scan_split, comp, expand_path(self.data.text()), self.limit.value(),
                                   lambda: self._cancel, on_progress=self._progress, on_return=self._done,
                                   on_error=self._failed, on_finish=self._finished, pool=self.compare.pool,
                                   views="partial" if self.views.currentIndex() == 1 else "clean",
                                   temperature_shapes=self.temperature_shapes.value())

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
        what = "partial views (severity 2) of " if res.get("views") == "partial" else ""
        self.summary.setText(f"{what}{n} shapes{' (stopped early)' if res.get('cancelled') else ''}: teacher OA "
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
        self._show_calibration(res.get("calibration") or {})
        # "done" counts the shapes scanned, not the last step's items (e.g. the temperature slice's)
        self.progress.setRange(0, max(len(res["labels"]), 1))
        self.progress.setValue(len(res["labels"]))
        self.scanned.emit(res)

    def _show_calibration(self, cal: dict) -> None:
        """Reliability diagram (accuracy against mean confidence per bin) and the ECE line."""
        p = self.reliability
        p.clear()
        if p.legend is not None:
            p.legend.clear()
        p.plot([0, 1], [0, 1], pen=pg.mkPen((150, 150, 150), style=Qt.PenStyle.DashLine))
        lines = []
        for role, color in (("teacher", (230, 120, 40)), ("student", (60, 140, 230))):
            c = cal.get(role)
            if not c:
                continue
            rel = c["reliability"]
            xs = [x for x, a in zip(rel["confidence"], rel["accuracy"]) if x is not None and a is not None]
            ys = [a for x, a in zip(rel["confidence"], rel["accuracy"]) if x is not None and a is not None]
            p.plot(xs, ys, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=6, symbolBrush=color, name=role)
            text = f"{role}: ECE {c['ece'] * 100:.1f}%"
            if c.get("temperature") is not None:
                text += (f" → {c['ece_temperature_scaled'] * 100:.1f}% with temperature {c['temperature']:.2f} "
                         f"(fitted on {c['temperature_fitted_on']})")
            lines.append(text)
        self.calibration_text.setText("ECE: expected calibration error over 15 equal-width confidence bins. "
                                      + "; ".join(lines))

    def _open_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or self.result is None:
            return
        i = int(self.table.item(rows[0].row(), 5).text())
        res, names = self.result, self.result["class_names"]
        self.open_shape.emit(res["points"][i], f"{res['shape_ids'][i]} (true: {names[res['labels'][i]]})")

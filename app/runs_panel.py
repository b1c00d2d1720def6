"""Runs view: run directories (report.json) in a table, their curves overlaid, every run as a point of
accuracy against cost (latency, parameters or file size) with the Pareto front drawn, and a button
that loads a run's student into the teacher/student comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.compare_panel import human
from app.paths import display_path, expand_path
from core.engine.checkpoint import run_checkpoint
from core.engine.events import EpochEvent, StartEvent, parse_event
from core.pareto import pareto_front

COLUMNS = ("run", "job", "model", "OA %", "mAcc %", "params", "MACs", "latency ms (CPU, b1)", "epochs", "path")
#: Trade-off plot: the cost on the x axis (label -> run key, unit).
COSTS = {"latency (CPU, batch 1)": ("latency", "ms"), "parameters": ("params", ""), "file size": ("size", "B")}


def find_runs(roots: list[Path], depth: int = 2) -> list[Path]:
    """Folders under ``roots`` (up to ``depth`` levels) that hold a report.json or events.jsonl."""
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        level = [root]
        for _ in range(depth + 1):
            nxt = []
            for d in level:
                if (d / "report.json").is_file() or (d / "events.jsonl").is_file():
                    found.append(d)
                else:
                    try:
                        nxt += [c for c in sorted(d.iterdir()) if c.is_dir()]
                    except OSError:
                        pass
            level = nxt
    return found


def stage_history(d: Path, stages) -> tuple[list[dict], int] | None:
    """A pipeline run's (``compress``) per-epoch history over all its stages, on one epoch axis as the
    Training tab draws it, and its epochs in all; None when a stage's report is missing.

    Its report.json holds only the last stage's history; each stage's report is in its subfolder
    (found by name, so a run folder that was moved or copied still reads).
    """
    if not isinstance(stages, list) or len(stages) < 2:
        return None
    history: list[dict] = []
    offset = 0
    for stage in stages:
        try:
            r = json.loads((d / Path(str(stage)).name / "report.json").read_text())
        except (OSError, ValueError):
            return None
        h = r.get("history") or []
        history += [dict(e, epoch=e.get("epoch", j) + offset) for j, e in enumerate(h)]
        offset += int(r.get("epochs") or len(h))
    return history, offset


def read_run(d: Path) -> dict:
    """Summary and per-epoch history of a run; unfinished runs are read from events.jsonl."""
    info = {"path": str(d), "run": d.name, "history": []}
    rep = d / "report.json"
    if rep.is_file():
        try:
            r = json.loads(rep.read_text())
            m = r.get("model")
            info.update(job=r.get("job", ""), oa=r.get("oa"), macc=r.get("macc"), params=r.get("params"),
                        macs=r.get("macs"), latency=r.get("latency_ms_cpu_b1"), epochs=r.get("epochs"),
                        model=(f"{m.get('name')} x{m.get('width', 1):g}" if isinstance(m, dict) else str(m or "")),
                        history=r.get("history") or [], finished=True)
            staged = stage_history(d, r.get("stages"))
            if staged:
                info["history"], info["epochs"] = staged
            ck = run_checkpoint(d) or (Path(r["checkpoint"]) if isinstance(r.get("checkpoint"), str) else None)
            if ck is not None and Path(ck).is_file():
                info["size"] = Path(ck).stat().st_size  # the file size axis of the trade-off plot
        except (OSError, ValueError):
            pass
    if not info["history"] and (d / "events.jsonl").is_file():
        try:
            for line in (d / "events.jsonl").read_text().splitlines():
                ev = parse_event(line)
                if isinstance(ev, EpochEvent):
                    info["history"].append(ev.payload())
                elif isinstance(ev, StartEvent):
                    info.setdefault("job", ev.job)
        except (OSError, ValueError):
            pass
        info.setdefault("finished", False)
    return info


class NumItem(QTableWidgetItem):
    """Sorts by the number, shows formatted text."""

    def __init__(self, value, text: str) -> None:
        super().__init__(text)
        self.value = value if isinstance(value, (int, float)) else float("-inf")

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", float("-inf"))


class RunsPanel(QWidget):
    """Thread: GUI thread (reading a few report.json files is fast)."""

    load_student = Signal(str)

    def __init__(self, settings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.runs: list[dict] = []
        top = QHBoxLayout()
        self.folder = QLineEdit(display_path(settings.runs_dir))
        self.folder.setToolTip("Folder searched (two levels deep) for run directories (~: your home folder; a "
                               "relative path is the app's folder's)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.curve_metric = QComboBox()
        self.curve_metric.addItems(["val_oa", "val_macc", "train_loss", "train_acc", "lr"])
        self.curve_metric.setToolTip("The per-epoch quantity overlaid for the selected runs")
        self.curve_metric.currentTextChanged.connect(self._plot_selected)
        self.load_button = QPushButton("Load student into comparison")
        self.load_button.setToolTip("Use the selected run's checkpoint as the student in the Compare tab")
        self.load_button.clicked.connect(self._load_selected)
        for w in (QLabel("Runs in"), self.folder, browse, refresh, QLabel("Curve"), self.curve_metric, self.load_button):
            top.addWidget(w)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._plot_selected)
        self.table.doubleClicked.connect(lambda _: self._load_selected())
        self.plot = pg.PlotWidget(title="selected runs")
        self.plot.addLegend(offset=(-10, -10))  # bottom right: below the accuracy curves, which rise
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setLabel("bottom", "epoch")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.plot)
        plots.addWidget(self._tradeoff_box())
        split.addWidget(plots)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self.refresh()

    # --- accuracy against cost ----------------------------------------------------------------
    def _tradeoff_box(self) -> QWidget:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.tradeoff_cost = QComboBox()
        self.tradeoff_cost.addItems(list(COSTS))
        self.tradeoff_cost.setToolTip("The cost on the x axis (log scale) of the accuracy/cost plot")
        self.tradeoff_cost.currentTextChanged.connect(self._plot_tradeoff)
        row.addWidget(QLabel("OA against"))
        row.addWidget(self.tradeoff_cost, 1)
        lay.addLayout(row)
        self.tradeoff = pg.PlotWidget(title="every run: OA against cost (click a point to select its run)")
        self.tradeoff.showGrid(x=True, y=True, alpha=0.3)
        self.tradeoff.setLogMode(x=True, y=False)
        self.tradeoff.setLabel("left", "OA %")
        self.tradeoff.addLegend(offset=(-10, -10))
        self.tradeoff_points = pg.PlotDataItem([], [], pen=None, symbol="o", symbolSize=9,
                                               symbolBrush=pg.mkBrush(66, 133, 244, 200), name="run")
        self.tradeoff_points.sigPointsClicked.connect(self._tradeoff_clicked)
        self.front_curve = pg.PlotDataItem([], [], pen=pg.mkPen((220, 60, 50), width=2), symbol="o", symbolSize=13,
                                           symbolPen=pg.mkPen((220, 60, 50), width=2), symbolBrush=None,
                                           name="Pareto front")
        self.selected_marks = pg.PlotDataItem([], [], pen=None, symbol="o", symbolSize=17, symbolBrush=None,
                                              symbolPen=pg.mkPen((250, 190, 0), width=3))
        for item in (self.front_curve, self.selected_marks, self.tradeoff_points):  # the clickable points on top
            self.tradeoff.addItem(item)
        self.front: list[int] = []  # indices into self.runs, by increasing cost
        self._plotted: list[int] = []  # the run index of each plotted point
        lay.addWidget(self.tradeoff, 1)
        return box

    def tradeoff_data(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The runs with both an OA and the chosen cost: their indices, costs and OA (%)."""
        key = COSTS[self.tradeoff_cost.currentText()][0]
        idx = [i for i, r in enumerate(self.runs)
               if isinstance(r.get("oa"), (int, float)) and isinstance(r.get(key), (int, float)) and r[key] > 0]
        return idx, np.array([self.runs[i][key] for i in idx], float), np.array([self.runs[i]["oa"] * 100 for i in idx])

    def _plot_tradeoff(self) -> None:
        idx, cost, acc = self.tradeoff_data()
        self._plotted = idx
        self.tradeoff_points.setData(cost, acc, data=idx)
        front = pareto_front(list(zip(cost, acc)))  # positions in idx, cheapest first
        self.front = [idx[k] for k in front]
        self.front_curve.setData(cost[front], acc[front])
        label = self.tradeoff_cost.currentText()
        unit = COSTS[label][1]
        self.tradeoff.setLabel("bottom", label + (f" ({unit})" if unit else ""))
        self._mark_selected()

    def _tradeoff_clicked(self, item, points, ev=None) -> None:
        if len(points):
            self.select_run(int(points[0].data()))

    def select_run(self, index: int) -> None:
        """Select the table row of run ``index`` (into ``self.runs``) and scroll to it."""
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == index:
                self.table.selectRow(r)
                self.table.scrollToItem(self.table.item(r, 0))
                return

    def _mark_selected(self) -> None:
        chosen = {self.table.item(r, 0).data(Qt.ItemDataRole.UserRole)
                  for r in sorted({i.row() for i in self.table.selectedItems()})}
        _, cost, acc = self.tradeoff_data()
        keep = [k for k, i in enumerate(self._plotted) if i in chosen]
        self.selected_marks.setData(cost[keep], acc[keep])

    def set_dark(self, dark: bool) -> None:
        self.plot.setBackground("#1f2126" if dark else "w")
        self.tradeoff.setBackground("#1f2126" if dark else "w")
        for plot in (self.plot, self.tradeoff):  # a legend over the points stays readable
            plot.plotItem.legend.setBrush(pg.mkBrush(31, 33, 38, 210) if dark else pg.mkBrush(255, 255, 255, 210))

    def _browse(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Runs folder", self.runs_dir())
        if p:
            self.folder.setText(display_path(p))
            self.settings.runs_dir = p
            self.refresh()

    def runs_dir(self) -> str:
        """The folder searched for runs, absolute (the field shows it shortened)."""
        return expand_path(self.folder.text())

    def refresh(self) -> None:
        roots = [Path(self.runs_dir())]
        self.runs = [read_run(d) for d in find_runs(roots)]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.runs))
        for r, run in enumerate(self.runs):
            pct = lambda v: NumItem(v, f"{v * 100:.1f}" if isinstance(v, (int, float)) else "—")
            cells = [QTableWidgetItem(run["run"]), QTableWidgetItem(str(run.get("job", ""))),
                     QTableWidgetItem(str(run.get("model", "") or ("(running)" if not run.get("finished") else ""))),
                     pct(run.get("oa")), pct(run.get("macc")),
                     NumItem(run.get("params"), human(run["params"]) if run.get("params") else "—"),
                     NumItem(run.get("macs"), human(run["macs"]) if run.get("macs") else "—"),
                     NumItem(run.get("latency"), f"{run['latency']:.1f}" if run.get("latency") else "—"),
                     NumItem(run.get("epochs"), str(run.get("epochs") or len(run["history"]))),
                     QTableWidgetItem(display_path(run["path"]))]
            cells[0].setData(Qt.ItemDataRole.UserRole, r)
            for c, item in enumerate(cells):
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self._plot_tradeoff()

    def selected_runs(self) -> list[dict]:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        return [self.runs[self.table.item(r, 0).data(Qt.ItemDataRole.UserRole)] for r in rows]

    def _plot_selected(self) -> None:
        self._mark_selected()
        self.plot.clear()
        if self.plot.plotItem.legend is not None:
            self.plot.plotItem.legend.clear()
        key = self.curve_metric.currentText()
        runs = self.selected_runs()
        for i, run in enumerate(runs):
            pts = [(h.get("epoch", j) + 1, h[key]) for j, h in enumerate(run["history"])
                   if isinstance(h.get(key), (int, float))]
            if pts:
                x, y = np.array(pts, float).T
                c = pg.intColor(i, hues=max(3, len(runs)))  # hues spread over the runs drawn: each tells apart
                self.plot.plot(x, y, name=run["run"], pen=pg.mkPen(c, width=2), symbol="o", symbolSize=5,
                               symbolBrush=c)
        self.plot.setLabel("left", key)
        if key.startswith(("val_oa", "val_macc")) or key.endswith("acc"):
            self.plot.setYRange(0, 1, padding=0.02)  # accuracies: a flat curve must not fill the plot with noise
        else:
            self.plot.enableAutoRange(axis="y")

    def _load_selected(self) -> None:
        runs = self.selected_runs()
        if runs:
            ck = run_checkpoint(runs[0]["path"])
            if ck:
                self.load_student.emit(str(ck))

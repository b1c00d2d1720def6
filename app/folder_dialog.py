"""File > Predict folder…: both models on every 3D file of a folder, shown as a sortable table.

The rows are the CLI's (``predict FOLDER --csv``): :mod:`core.folder_predict` walks the folder,
reads and analyses each file and runs the models in batches; "Export CSV…" writes the same table
with the same function.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QMessageBox, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout)

from app.paths import display_path
from app.workers import FunctionWorker, error_text, start_worker

__all__ = ["FolderPredictionDialog"]


class _SortableItem(QTableWidgetItem):
    """A cell shown as text and sorted by the key in its UserRole (a number for probabilities)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if a is None or b is None:
            return super().__lt__(other)
        return a < b


class _Relay(QObject):
    """Carries answers from the worker thread to the dialog (queued: the slot runs in the GUI thread)."""

    answers = Signal(list)
    files_found = Signal(int, int)  # files to predict, files skipped


class FolderPredictionDialog(QDialog):
    """The answers for every 3D file of a folder, filled in while the worker predicts them.

    Thread: GUI thread. The predictions run in a pool worker (:meth:`start`), which sends answers
    through a queued signal and stops between files when the dialog is closed. Double-clicking a
    row asks the main window to open that file (``open_requested``).
    """

    COLUMNS = ("File", "Teacher", "Teacher prob.", "Student", "Student prob.", "Agree", "Error")
    FILE_ROLE = Qt.ItemDataRole.UserRole + 1

    open_requested = Signal(str)
    run_finished = Signal(int, int)  # files predicted, files that could not be read
    csv_written = Signal(str)

    def __init__(self, comparison, folder: str, parent=None) -> None:
        super().__init__(parent)
        self.comparison = comparison
        self.folder = str(folder)
        self.answers: list[dict] = []  # in file order, as the CLI writes them
        self.failed = 0
        self.skipped = 0
        self.running = False
        self.worker: FunctionWorker | None = None
        self._cancel = threading.Event()
        self._started = 0.0
        self.setWindowTitle(f"Predict folder — {Path(self.folder).name or self.folder}")
        self.resize(920, 560)

        self.summary = QLabel(f"Looking for 3D files in {display_path(self.folder)} …")
        self.summary.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for c in range(len(self.COLUMNS) - 1):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)  # the error message; the whole of it is in the tooltip
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # file order until a header is clicked
        self.table.setSortingEnabled(True)
        self.table.setToolTip("Double-click a row to open that file in the main window")
        self.table.cellDoubleClicked.connect(self._row_activated)

        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("The same table as `predict FOLDER --csv FILE` writes")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addStretch(0)
        for b in (self.stop_button, self.export_button, close):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)

        self._relay = _Relay()
        self._relay.answers.connect(self._add_answers)
        self._relay.files_found.connect(self._files_found)

    # --- the run -------------------------------------------------------------------------------
    def start(self) -> FunctionWorker:
        """Predict every 3D file of the folder in a pool worker; returns the worker."""
        self.running = True
        self._started = time.perf_counter()
        self.worker = start_worker(self._predict, self.comparison, self.folder, self._relay, self._cancel,
                                   on_error=self._failed, on_progress=self._progress, on_finish=self._finished)
        return self.worker

    @staticmethod
    def _predict(comparison, folder: str, relay: _Relay, cancel: threading.Event, progress) -> None:
        """Thread: pool worker. Walks the folder and predicts its files, sending answers a few at a time."""
        from core.folder_predict import collect_files, predict_files

        found = collect_files([folder])
        relay.files_found.emit(len(found.files), len(found.skipped))
        progress("predicting", 0, len(found.files))
        chunk, last = [], time.perf_counter()
        for done, answer in enumerate(predict_files(comparison, found.files), 1):
            chunk.append(answer)
            if cancel.is_set():
                break
            if time.perf_counter() - last > 0.25 or done == len(found.files):  # a few table updates a second
                relay.answers.emit(chunk)
                progress("predicting", done, len(found.files))
                chunk, last = [], time.perf_counter()
        if chunk:
            relay.answers.emit(chunk)

    def cancel(self) -> None:
        """Stop the run after the file being predicted (the answers so far stay)."""
        self._cancel.set()
        self.stop_button.setEnabled(False)

    def _files_found(self, files: int, skipped: int) -> None:
        self.skipped = skipped
        self.progress.setRange(0, max(files, 1))
        self.summary.setText(f"Predicting {files:,} files of {display_path(self.folder)}"
                             + (f" ({skipped:,} skipped: no reader takes their extension)" if skipped else "")
                             + " …")

    def _progress(self, what: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat("%v of %m files")

    def _add_answers(self, answers: list) -> None:
        self.table.setSortingEnabled(False)  # rows would move while their cells are set
        for a in answers:
            self.answers.append(a)
            self.failed += "error" in a
            self._append_row(a)
        self.table.setSortingEnabled(True)

    def _append_row(self, a: dict) -> None:
        from core.folder_predict import csv_row

        row = self.table.rowCount()
        self.table.insertRow(row)
        r = csv_row(a)
        probs = {k: (float(r[k]) if r.get(k) else None) for k in ("teacher_prob", "student_prob")}
        shown = os.path.relpath(a["path"], self.folder) if a["path"].startswith(self.folder) else display_path(a["path"])
        cells = [
            (shown, a["path"]),
            (r.get("teacher_class", ""), r.get("teacher_class", "")),
            (_percent(probs["teacher_prob"]), -1.0 if probs["teacher_prob"] is None else probs["teacher_prob"]),
            (r.get("student_class", ""), r.get("student_class", "")),
            (_percent(probs["student_prob"]), -1.0 if probs["student_prob"] is None else probs["student_prob"]),
            ({"true": "yes", "false": "no"}.get(r.get("agree", ""), ""), r.get("agree", "")),
            (r.get("error", ""), r.get("error", "")),
        ]
        for col, (text, key) in enumerate(cells):
            item = _SortableItem(text)
            item.setData(Qt.ItemDataRole.UserRole, key)
            if col == 0:
                item.setData(self.FILE_ROLE, a["path"])
                item.setToolTip(display_path(a["path"]))
            elif col == len(cells) - 1 and text:
                item.setToolTip(text)
            self.table.setItem(row, col, item)

    def _failed(self, exc) -> None:
        msg = error_text(exc)
        self.summary.setText(f"Stopped: {msg}")
        if not getattr(self.parent(), "quiet_errors", False):
            QMessageBox.warning(self, "Predict folder", msg)

    def _finished(self) -> None:
        self.running = False
        self.stop_button.setEnabled(False)
        self.export_button.setEnabled(bool(self.answers))
        n, bad = len(self.answers), self.failed
        if not self.summary.text().startswith("Stopped:"):
            how = "stopped after" if self._cancel.is_set() else "done:"
            self.summary.setText(
                f"{display_path(self.folder)}: {how} {n:,} files, {n - bad:,} predicted, {bad:,} could not be read"
                + (f", {self.skipped:,} skipped (no reader takes their extension)" if self.skipped else "")
                + f" — {time.perf_counter() - self._started:.1f} s. Double-click a row to open the file.")
        self.run_finished.emit(n - bad, bad)

    # --- the table -----------------------------------------------------------------------------
    def _row_activated(self, row: int, _col: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.open_requested.emit(item.data(self.FILE_ROLE))

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the table (in file order, as the CLI's ``--csv``) to ``path``, asked for when None."""
        from core.folder_predict import write_csv

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the table as CSV",
                                                  str(Path(self.folder) / "predictions.csv"), "CSV (*.csv)")
            if not path:
                return None
        try:
            write_csv(self.answers, path)
        except OSError as exc:
            QMessageBox.warning(self, "Could not write the table", error_text(exc))
            return None
        self.csv_written.emit(path)
        return path

    def reject(self) -> None:
        """Closing the dialog (Close, Esc, the window's close button) stops the run."""
        self.cancel()
        super().reject()


def _percent(p: float | None) -> str:
    return "" if p is None else f"{p:.1%}"

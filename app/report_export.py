"""File > Export report…: the compression report (core.report) for the Compare view's models, built
in a worker behind a progress dialog, saved as HTML or, through Qt's printing, as PDF."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QPageSize, QPdfWriter, QTextDocument
from PySide6.QtWidgets import QProgressDialog, QWidget

from app.paths import display_path
from app.workers import error_text, start_worker

FILTERS = {"HTML report (*.html)": ".html", "PDF (*.pdf)": ".pdf"}
PDF_DPI = 96  # the page's pictures are drawn for about 96 dpi: one picture pixel, one PDF pixel


def html_to_pdf(page: str, path: str | Path) -> None:
    """Print an HTML page (its ``data:`` pictures included) to a PDF file, A4.

    Thread: GUI thread (QTextDocument layout and printing).
    """
    doc = QTextDocument()
    doc.setHtml(page)
    writer = QPdfWriter(str(path))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setResolution(PDF_DPI)
    writer.setTitle("T3DNet compression report")
    writer.setCreator("T3DNet Studio")
    doc.print_(writer)


class ReportExport(QObject):
    """One report being built: a worker measures and draws, a modal progress dialog shows where it
    is and can cancel it; the file is written when the worker returns.

    Thread: GUI thread; :func:`core.report.build_report` runs in a pool worker and checks the
    cancel flag between batches.
    """

    written = Signal(str)  # the file
    failed = Signal(str)  # a one-line reason
    cancelled = Signal()

    def __init__(self, parent: QWidget, teacher: str, student: str, data_dir: str, path: str, **options) -> None:
        super().__init__(parent)
        from core.report import ReportRequest  # torch-free import; the measuring happens in the worker

        self.path = str(path)
        self.pdf = self.path.lower().endswith(".pdf")
        self.request = ReportRequest(teacher=teacher, student=student, data=data_dir, **options)
        self._cancel = False
        self.worker = None
        self.dialog = QProgressDialog("Building the report…", "Cancel", 0, 100, parent)
        self.dialog.setWindowTitle("Export report")
        self.dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog.setMinimumDuration(0)
        self.dialog.setAutoClose(False)
        self.dialog.setAutoReset(False)
        self.dialog.canceled.connect(self.cancel)

    def start(self) -> "ReportExport":
        from core.report import build_report

        self.dialog.show()
        out = None if self.pdf else self.path  # a PDF is printed from the page here, in the GUI thread
        self.worker = start_worker(build_report, self.request, out, cancelled=lambda: self._cancel,
                                   on_progress=self._progress, on_return=self._done, on_error=self._failed)
        return self

    def cancel(self) -> None:
        self._cancel = True
        self.dialog.setLabelText("Stopping…")

    def _progress(self, what: str, done: int, total: int) -> None:
        if self._cancel:
            return
        self.dialog.setMaximum(max(total, 1))
        self.dialog.setValue(min(done, max(total, 1) - 1) if what != "written" else total)
        self.dialog.setLabelText(f"Building the report: {what}…")

    def _done(self, result: dict) -> None:
        try:
            if self._cancel:
                self.cancelled.emit()
                return
            if self.pdf:
                self.dialog.setLabelText("Printing the PDF…")
                html_to_pdf(result["html"], self.path)
            self.written.emit(self.path)
        except Exception as exc:  # a PDF that cannot be written is reported, not raised
            self.failed.emit(f"{display_path(self.path)}: {error_text(exc)}")
        finally:
            self.dialog.close()

    def _failed(self, exc) -> None:
        from core.report import ReportCancelled

        self.dialog.close()
        if isinstance(exc, ReportCancelled):
            self.cancelled.emit()
        else:
            self.failed.emit(error_text(exc))

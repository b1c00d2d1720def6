"""The main window of T3DNet Studio and ``run_app``, the desktop entry point.

Torch and Open3D are imported off the path that draws the first window: Open3D in the render
process, torch in the worker that loads the checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QFont, QIcon, QImage, QKeySequence, QPalette, QPixmap
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog,
                               QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from app.compare_panel import ComparisonPanel
from app.format_dialog import ChannelsDialog
from app.paths import display_path
from app.settings import Settings
from app.shapes import dialog_filters, list_samples, load_shape, thumbnail_pixels
from app.viewer_widget import COLOR_MODES, PointCloudViewer
from app.workers import error_text, start_worker

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT.parent / "shared" / "data" / "scans"


class SampleGallery(QListWidget):
    """Thumbnails of the bundled samples; activating one opens it. Thumbnails are drawn in a worker."""

    open_requested = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setIconSize(QSize(72, 72))
        self.setGridSize(QSize(96, 100))
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setMovement(QListWidget.Movement.Static)
        self.setWordWrap(True)
        self.itemClicked.connect(lambda it: self.open_requested.emit(it.data(Qt.ItemDataRole.UserRole)))
        self.paths = list_samples()
        if not self.paths:
            it = QListWidgetItem("No bundled samples (assets/samples)")
            it.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(it)
            return
        for p in self.paths:
            it = QListWidgetItem(p.stem.replace("_", " "))
            it.setData(Qt.ItemDataRole.UserRole, str(p))
            it.setToolTip(str(p))
            self.addItem(it)
        start_worker(self._thumbs, [str(p) for p in self.paths], on_return=self._set_thumbs)

    @staticmethod
    def _thumbs(paths):
        import numpy as np

        return [thumbnail_pixels(np.load(p)[:, :3]) for p in paths]

    def _set_thumbs(self, images) -> None:
        for i, a in enumerate(images):
            qi = QImage(a.data, a.shape[1], a.shape[0], a.shape[1], QImage.Format.Format_Grayscale8).copy()
            self.item(i).setIcon(QIcon(QPixmap.fromImage(qi)))


class MainWindow(QMainWindow):
    """Viewer + teacher/student comparison, training, runs and disagreement tabs.

    Thread: GUI thread. File loading, inference and dataset scans run in pool workers; training
    jobs run in separate processes (QProcess).
    """

    FIRST_START_SIZE = (1400, 860)  # without a saved geometry
    COMPARE_SHARE = 0.44  # of the splitter's width for the Compare panel at first show

    shape_loaded = Signal(object)
    load_failed = Signal(str)
    model_exported = Signal(str)  # the file written
    export_failed = Signal(str)  # a one-line reason
    teacher_imported = Signal(str)  # the checkpoint of ours written by "Import teacher…"
    import_failed = Signal(str)  # a one-line reason

    def __init__(self, settings: Settings | None = None, teacher: str | None = None, student: str | None = None,
                 data_dir: str | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        if data_dir:
            self.settings.data_dir = data_dir
        self.setWindowTitle("T3DNet Studio")
        self.setAcceptDrops(True)
        self.shape = None
        self._loading_path = None
        self._load_seq = 0
        self.demo_timer: QTimer | None = None
        self.channels_dialog: ChannelsDialog | None = None  # while it asks
        self.folder_dialog = None  # app.folder_dialog.FolderPredictionDialog, the latest one
        self._sized_splitter = False

        self.viewer = PointCloudViewer()
        self.compare = ComparisonPanel()
        self.compare.model_points.connect(self._show_model_points)
        self.compare.message.connect(lambda m: self.statusBar().showMessage(m, 10000))
        self.compare.up_axis_changed.connect(self.viewer.set_up_axis)
        self.compare.boxes_changed.connect(self.viewer.set_boxes)
        self.compare.attribution_changed.connect(lambda _: self._show_model_points(self._model_points))
        self.viewer.render_failed.connect(lambda m: self.statusBar().showMessage(m, 15000))

        view_box = QWidget()
        vlay = QVBoxLayout(view_box)
        vlay.setContentsMargins(0, 0, 0, 0)
        self.view_toolbar = self._view_toolbar()
        vlay.addWidget(self.view_toolbar)
        vlay.addWidget(self.viewer, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(view_box)
        self.splitter.addWidget(self.compare)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.splitter, "Compare")
        from app.training_panel import TrainingPanel
        from app.runs_panel import RunsPanel
        from app.disagreement_panel import DisagreementPanel

        self.training = TrainingPanel(self.settings)
        self.runs = RunsPanel(self.settings)
        self.disagreements = DisagreementPanel(self.settings, self.compare)
        self.tabs.addTab(self.training, "Training")
        self.tabs.addTab(self.runs, "Runs")
        self.tabs.addTab(self.disagreements, "Disagreements")
        self.training.job_finished.connect(lambda *_: self.runs.refresh())
        self.runs.load_student.connect(lambda p: (self.compare.load_checkpoint("student", p),
                                                  self.tabs.setCurrentIndex(0)))
        self.disagreements.open_shape.connect(self.show_points_array)
        self.setCentralWidget(self.tabs)

        self.gallery = SampleGallery()
        self.gallery.open_requested.connect(self.open_path)
        self.gallery_dock = QDockWidget("Samples", self)
        self.gallery_dock.setObjectName("samples_dock")
        self.gallery_dock.setWidget(self.gallery)
        self.gallery.setMinimumWidth(210)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.gallery_dock)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.statusBar().addPermanentWidget(self.progress)
        self._build_menus()
        self.apply_theme(self.settings.theme)
        geo, state = self.settings.window_state()
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(*self.FIRST_START_SIZE)
        if state is not None:
            self.restoreState(state)
        QTimer.singleShot(0, lambda: self.compare.load_defaults(teacher, student))

    # --- widgets ---------------------------------------------------------------------------
    def _view_toolbar(self) -> QWidget:
        bar = QWidget()
        lay = QHBoxLayout(bar)
        lay.setContentsMargins(4, 2, 4, 2)
        self.color_mode = QComboBox()
        self.color_mode.addItems([m.upper() if m == "rgb" else m.capitalize() for m in COLOR_MODES])
        self.color_mode.setToolTip("Colour points by height, normal direction, the file's RGB, or one colour")
        self.color_mode.currentIndexChanged.connect(lambda i: self.viewer.set_color_mode(COLOR_MODES[i]))
        self.point_size = QDoubleSpinBox(minimum=1, maximum=12, singleStep=0.5, value=3)
        self.point_size.setToolTip("Rendered point size (pixels)")
        self.point_size.valueChanged.connect(self.viewer.set_point_size)
        self.show_mesh = QCheckBox("Mesh")
        self.show_mesh.setChecked(True)
        self.show_mesh.setToolTip("Show meshes as surfaces (off: as sampled points)")
        self.show_mesh.toggled.connect(self.viewer.set_show_mesh)
        self.show_overlay = QCheckBox("Model input")
        self.show_overlay.setChecked(True)
        self.show_overlay.setToolTip("Overlay, in red, the exact points the models see (after perturbation)")
        self.show_overlay.toggled.connect(lambda _: self._show_model_points(self._model_points))
        reset = QPushButton("Reset view")
        reset.setToolTip("Reset the camera (also: double-click the view)")
        reset.clicked.connect(self.viewer.reset_view)
        for w in (QLabel("Colour"), self.color_mode, QLabel("Point size"), self.point_size, self.show_mesh,
                  self.show_overlay, reset):
            lay.addWidget(w)
        lay.addStretch(1)
        self._model_points = None
        return bar

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        a = f.addAction("&Open…", self.open_dialog)
        a.setShortcut(QKeySequence.StandardKey.Open)
        f.addAction("Open with &format…", self.open_with_format_dialog).setToolTip(
            "Open a headerless float32 point file (LiDAR .bin) saying how many values one point has")
        self.recent_menu = f.addMenu("Open &recent")
        self._fill_recent()
        f.addAction("&Predict folder…", lambda: self.predict_folder()).setToolTip(
            "Run both models on every 3D file of a folder (and its sub-folders): a sortable table, exportable as CSV")
        f.addSeparator()
        f.addAction("Export view as PNG…", lambda: self.export_png(view_only=True))
        f.addAction("Export window as PNG…", lambda: self.export_png(view_only=False))
        f.addAction("Export &report…", lambda: self.export_report()).setToolTip(
            "One HTML (or PDF) page comparing the loaded teacher and student on the dataset's test split: "
            "cost, accuracy per class, confusion difference, calibration, disagreements (docs/REPORT.md)")
        f.addSeparator()
        q = f.addAction("&Quit", self.close)
        q.setShortcut(QKeySequence.StandardKey.Quit)
        m = mb.addMenu("&Models")
        m.addAction("Load &teacher…", lambda: self.compare.choose_checkpoint("teacher"))
        m.addAction("&Import teacher (PointNet / PointNet++ / DGCNN)…", self.import_teacher).setToolTip(
            "Convert a checkpoint trained with the common PyTorch PointNet, PointNet++ or DGCNN code "
            "(docs/TEACHERS.md) and load it as the teacher")
        m.addAction("Load &student…", lambda: self.compare.choose_checkpoint("student"))
        m.addAction("Use bundled models", lambda: self.compare.load_defaults())
        m.addSeparator()
        m.addAction("&Export teacher (ONNX / TorchScript)…", lambda: self.export_model("teacher"))
        m.addAction("E&xport student (ONNX / TorchScript / int8)…", lambda: self.export_model("student"))
        v = mb.addMenu("&View")
        v.addAction("Reset view", self.viewer.reset_view)
        v.addAction(self.gallery_dock.toggleViewAction())
        self.dark_action = QAction("Dark theme", self, checkable=True)
        self.dark_action.setChecked(self.settings.theme == "dark")
        self.dark_action.toggled.connect(lambda on: self.apply_theme("dark" if on else "light"))
        v.addAction(self.dark_action)
        d = QAction("&Demo mode", self, checkable=True)
        d.setShortcut("F11")
        d.toggled.connect(self.set_demo)
        v.addAction(d)
        self.demo_action = d

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_files:
            self.recent_menu.addAction(display_path(p), lambda p=p: self.open_path(p))
        if not self.settings.recent_files:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear", lambda: (self.settings.clear_recent(), self._fill_recent()))

    def apply_theme(self, theme: str) -> None:
        self.settings.theme = theme
        app = QApplication.instance()
        app.setStyle("Fusion")
        if theme == "dark":
            pal = QPalette()
            for role, c in ((QPalette.ColorRole.Window, (45, 47, 52)), (QPalette.ColorRole.WindowText, (225, 225, 225)),
                            (QPalette.ColorRole.Base, (32, 34, 38)), (QPalette.ColorRole.AlternateBase, (45, 47, 52)),
                            (QPalette.ColorRole.Text, (225, 225, 225)), (QPalette.ColorRole.Button, (55, 58, 64)),
                            (QPalette.ColorRole.ButtonText, (225, 225, 225)),
                            (QPalette.ColorRole.Highlight, (66, 133, 244)),
                            (QPalette.ColorRole.HighlightedText, (255, 255, 255)),
                            (QPalette.ColorRole.ToolTipBase, (45, 47, 52)), (QPalette.ColorRole.ToolTipText, (225, 225, 225))):
                pal.setColor(role, QColor(*c))
            app.setPalette(pal)
        else:
            app.setPalette(app.style().standardPalette())
        self.viewer.set_dark(theme == "dark")
        if hasattr(self, "training"):
            self.training.set_dark(theme == "dark")
            self.runs.set_dark(theme == "dark")

    # --- opening files -------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a 3D file", self.settings.open_dir, ";;".join(dialog_filters()))
        if path:
            self.settings.open_dir = str(Path(path).parent)
            self.open_path(path)

    def open_with_format_dialog(self) -> None:
        """Choose a file, then how many float32 values one of its points has."""
        path, _ = QFileDialog.getOpenFileName(self, "Open a headerless float32 point file", self.settings.open_dir,
                                              "Float32 points (*.bin *.f32 *.raw);;All files (*)")
        if not path:
            return
        self.settings.open_dir = str(Path(path).parent)
        try:
            from core.data.io import float32_layout

            fit = float32_layout(path)
            candidates = list(fit.plausible or fit.dividing)
        except Exception:
            candidates = []
        n = self.ask_channels(path, candidates)
        if n:
            self.open_path(path, channels=n)

    def ask_channels(self, path: str, candidates: list[int], message: str = "") -> int | None:
        """Ask how many float32 values one point of ``path`` has (the counts that fit come first);
        None when the user cancels."""
        dlg = ChannelsDialog(path, candidates, message, self)
        self.channels_dialog = dlg
        try:
            return dlg.channels() if dlg.exec() == ChannelsDialog.DialogCode.Accepted else None
        finally:
            self.channels_dialog = None
            dlg.deleteLater()

    def open_path(self, path: str, channels: int | None = None) -> None:
        """Load a file in a worker; the window stays responsive and shows progress. ``channels``: the
        float32 values per point of a headerless file (asked for when the file does not settle it)."""
        self._load_seq += 1
        seq = self._load_seq
        self._loading_path = path
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.statusBar().showMessage(f"Loading {display_path(path)} …")
        start_worker(load_shape, path, channels=channels, on_return=lambda s: self._loaded(seq, s),
                     on_error=lambda e: self._load_error(seq, path, e),
                     on_progress=self._load_progress)

    def _load_progress(self, what: str, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(what)

    def _loaded(self, seq: int, shape) -> None:
        if seq != self._load_seq:
            return  # a newer file was asked for meanwhile
        self.progress.setVisible(False)
        self.set_shape(shape)
        if not shape.path.startswith(str(ROOT / "assets" / "samples")):
            self.settings.add_recent(shape.path)
            self._fill_recent()
        self.statusBar().showMessage(f"Loaded {display_path(shape.path)}", 5000)
        self.shape_loaded.emit(shape)

    def _load_error(self, seq: int, path: str, exc) -> None:
        if seq != self._load_seq:
            return
        self.progress.setVisible(False)
        from core.errors import ChannelsNeededError

        if isinstance(exc, ChannelsNeededError):
            n = self.ask_channels(path, exc.candidates, error_text(exc))
            if n:
                self.open_path(path, channels=n)
            else:  # the shape shown before stays
                self.statusBar().showMessage(f"Not opened: {Path(path).name} (floats per point not given)", 10000)
            return
        msg = f"Could not open {Path(path).name}: {error_text(exc)}"
        self.last_error = msg
        self.statusBar().showMessage(msg, 15000)
        self.load_failed.emit(msg)
        if not getattr(self, "quiet_errors", False):
            QMessageBox.warning(self, "Could not open file", msg)

    def predict_folder(self, folder: str | None = None):
        """Both models on every 3D file of ``folder`` (asked for when None) in a worker; the table
        fills in a dialog, which is returned (None when cancelled or the models are not loaded)."""
        comp = self.compare.comparison
        if comp is None:
            QMessageBox.information(self, "Predict folder", "Load a teacher and a student first "
                                    "(the bundled models load at start).")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Predict every 3D file of a folder", self.settings.open_dir)
            if not folder:
                return None
            self.settings.open_dir = folder
        from app.folder_dialog import FolderPredictionDialog

        if self.folder_dialog is not None:
            self.folder_dialog.cancel()
        dlg = FolderPredictionDialog(comp, folder, self)
        dlg.open_requested.connect(lambda p: (self.open_path(p), self.tabs.setCurrentIndex(0), self.activateWindow()))
        self.folder_dialog = dlg
        dlg.show()
        dlg.start()
        return dlg

    def set_shape(self, shape) -> None:
        self.shape = shape
        self._model_points = None
        self.viewer.set_shape(shape)
        self.compare.set_shape(shape)
        self.setWindowTitle(f"T3DNet Studio — {shape.name}")

    def show_points_array(self, points, title: str) -> None:
        """Show an in-memory (P, 3) cloud (a dataset shape from the disagreement explorer)."""
        import numpy as np

        from app.shapes import Shape

        xyz = np.asarray(points, np.float32)
        self.set_shape(Shape(path=title, kind="points", xyz=xyz, colors=None, normals=None, mesh_vertices=None,
                             mesh_faces=None, full_xyz=xyz, original_points=len(xyz),
                             info={"format": "dataset", "up_hint": "z"}))  # the datasets' shapes are z up
        self.tabs.setCurrentIndex(0)

    def _show_model_points(self, pts) -> None:
        self._model_points = pts
        attribution = self.compare.attribution_view() if pts is not None and self.shape is not None else None
        if attribution is not None:  # the model input coloured by a model's importance (Importance tab)
            self.viewer.set_overlay(self.compare.to_file_frame(attribution["points"]),
                                    dense=self.compare.input_count() <= len(attribution["points"]),
                                    colors=attribution["colors"],
                                    legend=f"{attribution['role']}: importance rank (gradient saliency) · top-"
                                           f"{attribution['fraction']:.0%} overlap with the other model, IoU "
                                           f"{attribution['iou']:.2f}")
        elif pts is None or self.shape is None or not self.show_overlay.isChecked():
            self.viewer.set_overlay(None)
        else:
            # A shape with no more points than the models take would be all red: unperturbed, the
            # models see exactly its points (said in the caption); perturbed, small crosses mark them.
            # A part of the shape (an object, a crop) in red is what shows which part it is.
            n = self.compare.input_count()
            dense = n <= len(pts) and self.compare.input_indices() is None
            if dense and self.compare.perturbation().is_identity():
                self.viewer.set_overlay(None, note=f"the models see every point of this shape ({n:,} ≤ {len(pts):,})")
            else:
                self.viewer.set_overlay(self.compare.to_file_frame(pts), dense=dense)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        if not self._sized_splitter:  # the Compare panel gets its share once, not what its size hint says
            self._sized_splitter = True
            QTimer.singleShot(0, self._size_splitter)

    def _size_splitter(self) -> None:
        w = self.splitter.width()
        if w > 100 and not (self.demo_timer and self.demo_timer.isActive()):
            panel = max(int(w * self.COMPARE_SHARE), self.compare.minimumSizeHint().width())
            self.splitter.setSizes([w - panel, panel])

    def dragEnterEvent(self, ev) -> None:
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(urls[0])
            ev.acceptProposedAction()

    # --- export, demo, closing ------------------------------------------------------------------
    def export_report(self, path: str | None = None, data_dir: str | None = None, **options):
        """The compression report of the Compare view's models (app.report_export) on ``data_dir``
        (default: the dataset folder of the settings), built in a worker behind a progress dialog;
        ``path`` ending in .pdf prints it to PDF. Returns the ReportExport (None when cancelled)."""
        from app.report_export import FILTERS, ReportExport

        comp = self.compare.comparison
        if comp is None:
            QMessageBox.information(self, "Export report", "Load a teacher and a student first.")
            return None
        data_dir = data_dir or self.settings.data_dir
        if not data_dir or not Path(data_dir).is_dir():
            data_dir = QFileDialog.getExistingDirectory(self, "Dataset whose test split the report measures",
                                                        str(Path.home()))
            if not data_dir:
                return None
            self.settings.data_dir = data_dir
        if path is None:
            path, choice = QFileDialog.getSaveFileName(self, "Export report", str(Path.home() / "t3dnet_report.html"),
                                                       ";;".join(FILTERS))
            if not path:
                return None
            if not Path(path).suffix:
                path += FILTERS.get(choice, ".html")
        job = ReportExport(self, comp.teacher.checkpoint, comp.student.checkpoint, data_dir, path, **options)
        job.written.connect(lambda p: self.statusBar().showMessage(f"Report written: {display_path(p)}", 15000))
        job.failed.connect(lambda m: (self.statusBar().showMessage(f"Report failed: {m}", 15000),
                                      None if getattr(self, "quiet_errors", False) else
                                      QMessageBox.warning(self, "Could not build the report", m)))
        job.cancelled.connect(lambda: self.statusBar().showMessage("Report cancelled", 5000))
        self.report_export = job
        return job.start()

    def export_png(self, view_only: bool, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export PNG", str(Path.home() / "t3dnet.png"), "PNG (*.png)")
            if not path:
                return None
        pix = self.viewer.grab() if view_only else self.grab()
        pix.save(path, "PNG")
        self.statusBar().showMessage(f"Saved {display_path(path)}", 5000)
        return path

    # File-dialog filter -> (core.export format, quantization, suffix)
    EXPORT_FORMATS = {
        "ONNX (*.onnx)": ("onnx", None, ".onnx"),
        "ONNX, int8 weights (*.onnx)": ("onnx", "int8", ".int8.onnx"),
        "TorchScript (*.pt)": ("torchscript", None, ".ts.pt"),
    }

    def export_model(self, role: str, path: str | None = None, choice: str | None = None):
        """Export the loaded teacher or student in the background (core.export); returns the worker."""
        loaded = getattr(self.compare, role)
        if loaded is None:
            QMessageBox.warning(self, "Nothing to export", f"No {role} model is loaded.")
            return None
        if path is None:
            stem = Path(loaded.checkpoint).stem
            path, choice = QFileDialog.getSaveFileName(self, f"Export {role}", str(Path.home() / (stem + ".onnx")),
                                                       ";;".join(self.EXPORT_FORMATS))
            if not path:
                return None
        fmt, quantize, suffix = self.EXPORT_FORMATS.get(choice or "", self.EXPORT_FORMATS["ONNX (*.onnx)"])
        if not Path(path).suffix:
            path += suffix
        self.statusBar().showMessage(f"Exporting the {role} to {display_path(path)} …")

        def run(ckpt=loaded.checkpoint, out=path):
            from core.export import export

            return export(ckpt, out, fmt, quantize)

        def done(meta, out=path):
            size = Path(out).stat().st_size / 1024
            self.statusBar().showMessage(f"Exported the {role} to {display_path(out)} ({size:.0f} KiB, "
                                         f"{meta.get('runtime', fmt)})", 10000)
            self.model_exported.emit(out)

        def failed(exc):
            msg = error_text(exc)
            self.statusBar().showMessage(f"Export failed: {msg}", 15000)
            self.export_failed.emit(msg)

        return start_worker(run, on_return=done, on_error=failed)

    def import_teacher(self, source: str | None = None, out: str | None = None):
        """Convert a teacher trained with the common PyTorch code into a checkpoint of ours
        (core.models.importers) in a worker, then load it as the Compare view's teacher; returns
        the worker (None when a dialog is cancelled)."""
        if source is None:
            source, _ = QFileDialog.getOpenFileName(self, "Import a teacher trained elsewhere", str(Path.home()),
                                                    "PyTorch checkpoints (*.pth *.pt *.t7 *.tar);;All files (*)")
            if not source:
                return None
        if out is None:
            suggested = Path(source).with_name(Path(source).stem + "_teacher.pt")
            out, _ = QFileDialog.getSaveFileName(self, "Save the imported teacher as", str(suggested),
                                                 "Checkpoints (*.pt)")
            if not out:
                return None
        self.statusBar().showMessage(f"Importing {Path(source).name} …")

        def run(src=source, dst=out):
            from core.models.importers import import_teacher, write_teacher

            result = import_teacher(src)
            write_teacher(result, dst, source=src)
            return result.summary()

        def done(summary, dst=out):
            self.statusBar().showMessage(f"Imported {summary}; saved as {display_path(dst)}", 15000)
            self.teacher_imported.emit(dst)
            self.compare.load_checkpoint("teacher", dst)

        def failed(exc):
            msg = error_text(exc)
            self.statusBar().showMessage(f"Import failed: {msg}", 15000)
            self.import_failed.emit(msg)
            if not getattr(self, "quiet_errors", False):
                QMessageBox.warning(self, "Could not import the teacher", msg)

        return start_worker(run, on_return=done, on_error=failed)

    def demo_paths(self) -> list[str]:
        paths = [str(p) for p in list_samples()]
        if not paths and SCANS.is_dir():
            paths = [str(p) for p in sorted(SCANS.iterdir()) if p.suffix.lower() in (".ply", ".obj", ".pcd", ".off")]
        return paths

    def set_demo(self, on: bool, interval_ms: int = 6000) -> None:
        """Demo mode: full screen, large type, cycles through the samples showing both predictions."""
        app = QApplication.instance()
        if on:
            self._normal_font = app.font()
            f = QFont(app.font())
            f.setPointSizeF(max(f.pointSizeF(), 9) * 1.6)
            app.setFont(f)
            self.gallery_dock.hide()
            self.tabs.setCurrentIndex(0)
            self.tabs.tabBar().hide()
            self.menuBar().hide()
            self.compare.reset_perturbation()
            self._demo_up_choice = self.compare.up_axis.currentIndex()
            self.compare.up_axis.setCurrentText("z")  # the bundled samples are ModelNet shapes: z up
            self._demo_hidden = [w for w in (self.compare.robustness_box, self.compare.tools, self.compare.all_classes,
                                             self.view_toolbar, self.compare.up_axis, self.compare.up_axis_label,
                                             self.compare.find_button, self.compare.crop_button,
                                             self.compare.input_info,
                                             *(c.load_button for c in self.compare.columns.values()))
                                 if not w.isHidden()]
            for w in self._demo_hidden:
                w.hide()
            self.showFullScreen()
            w = max(self.splitter.width(), 2)
            self.splitter.setSizes([w * 11 // 20, w * 9 // 20])  # the view is the star of the show
            self._demo_paths = self.demo_paths()
            self._demo_index = -1
            self.demo_timer = QTimer(self, interval=interval_ms)
            self.demo_timer.timeout.connect(self._demo_next)
            self.demo_timer.start()
            self._demo_next()
        else:
            if self.demo_timer:
                self.demo_timer.stop()
            if hasattr(self, "_normal_font"):
                app.setFont(self._normal_font)
            for w in getattr(self, "_demo_hidden", []):
                w.show()
            if hasattr(self, "_demo_up_choice"):
                self.compare.up_axis.setCurrentIndex(self._demo_up_choice)
            self.tabs.tabBar().show()
            self.menuBar().show()
            self.gallery_dock.show()
            self.showNormal()

    def _demo_next(self) -> None:
        if not self._demo_paths:
            return
        self._demo_index = (self._demo_index + 1) % len(self._demo_paths)
        self.open_path(self._demo_paths[self._demo_index])

    def keyPressEvent(self, ev) -> None:
        if ev.key() == Qt.Key.Key_Escape and self.demo_timer and self.demo_timer.isActive():
            self.demo_action.setChecked(False)
        else:
            super().keyPressEvent(ev)

    def closeEvent(self, ev) -> None:
        if self.training.has_running_job() and not getattr(self, "quiet_errors", False):
            r = QMessageBox.question(self, "Quit", "A training job is running. Stop it (it stays resumable) and quit?")
            if r != QMessageBox.StandardButton.Yes:
                ev.ignore()
                return
        if not (self.demo_timer and self.demo_timer.isActive()):
            self.settings.save_window_state(self.saveGeometry(), self.saveState())
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self) -> None:
        """Stop jobs, the render process and wait briefly for workers (idempotent)."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        self.training.stop_all()
        self.disagreements.cancel()
        if self.folder_dialog is not None:
            self.folder_dialog.cancel()
        if getattr(self, "report_export", None) is not None:
            self.report_export.cancel()
        self.viewer.shutdown()
        self.compare.pool.waitForDone(15000)
        QThreadPool.globalInstance().waitForDone(15000)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="main.py", description="T3DNet Studio desktop app")
    p.add_argument("path", nargs="?", help="a 3D file to open")
    p.add_argument("--open", dest="open_path", help="a 3D file to open (same as the positional path)")
    p.add_argument("--demo", action="store_true", help="full screen, large type, cycles through the samples")
    p.add_argument("--quit-after", type=float, default=None, metavar="SECONDS", help="quit by itself (smoke tests)")
    p.add_argument("--teacher", help="teacher checkpoint or run directory (default assets/models/teacher.pt)")
    p.add_argument("--student", help="student checkpoint or run directory (default assets/models/student.pt)")
    p.add_argument("--data", help="dataset folder for training and the disagreement explorer")
    p.add_argument("--light", action="store_true", help="light theme")
    return p.parse_args(argv)


def run_app(argv: list[str] | None = None) -> int:
    """Start the desktop app; returns the exit code."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("T3DNet Studio")
    app.setOrganizationName("T3DNet")
    win = MainWindow(teacher=args.teacher, student=args.student, data_dir=args.data)
    if args.light:
        win.dark_action.setChecked(False)
    win.show()
    app.processEvents()
    win.startup_ms = (time.perf_counter() - t0) * 1000
    path = args.path or args.open_path
    if path:
        win.open_path(path)
    if args.demo:
        win.demo_action.setChecked(True)
    if args.quit_after is not None:
        win.quiet_errors = True
        QTimer.singleShot(int(args.quit_after * 1000), win.close)
    app.aboutToQuit.connect(win.shutdown)
    code = app.exec()
    win.shutdown()
    return code

"""Training panel: engine jobs as child processes (QProcess) streaming JSON events, live curves.

The form builds and validates a :class:`~core.engine.config.JobConfig` in process (an invalid one
is reported in the panel and never started), writes it as the run folder's ``job.yaml`` and runs
``python main.py run RUN_DIR/job.yaml --events json``; the job's stdout carries one JSON event per
line (read with :func:`~core.engine.events.parse_event`), its stderr a log. A crash in a job cannot
take the GUI down.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton,
                               QSizePolicy, QSpinBox, QSplitter, QToolButton, QVBoxLayout, QWidget)

from app.paths import display_path, display_paths_in, expand_path
from core.cli.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR
from core.engine.config import ConfigError, JobConfig, load_config
from core.engine.events import (CancelledEvent, EndEvent, EpochEvent, ErrorEvent, Event, ProgressEvent, StageEvent,
                                StartEvent, StepEvent, parse_event)
from core.engine.jobs import METHODS, Method, by_command

ROOT = Path(__file__).resolve().parents[1]


PROGRESS_BAR = re.compile(r"\d+%\|")  # a progress bar's line: "caching x:  42%|████      | 4130/9843 [...]"


def is_progress_redraw(line: str) -> bool:
    """Whether a line of the job's log is a progress bar being redrawn: the steps' bars (the progress bar
    and the plots show them), and any other bar until it is complete (its last line is kept)."""
    if "it/s" in line or "step/s" in line or "s/step" in line:
        return True
    return bool(PROGRESS_BAR.search(line)) and "100%|" not in line


def plot_group(name: str) -> str:
    """Which plot a scalar belongs to, from its name."""
    n = name.lower()
    if n == "lr" or n.endswith("_lr"):
        return "learning rate"
    if "loss" in n:
        return "loss"
    if "acc" in n or n.endswith("oa") or "macc" in n:
        return "accuracy"
    return "other"


class CurveBuffer:
    """Growing arrays of (x, y) per scalar name; the GUI redraws them on a timer.

    Thread: GUI thread (events arrive through QProcess signals).
    """

    def __init__(self) -> None:
        self.xs: dict[str, list[float]] = {}
        self.ys: dict[str, list[float]] = {}
        self.dirty = False

    def add(self, name: str, x: float, y: float) -> None:
        self.xs.setdefault(name, []).append(float(x))
        self.ys.setdefault(name, []).append(float(y))
        self.dirty = True

    def clear(self) -> None:
        self.xs.clear()
        self.ys.clear()
        self.dirty = True

    def count(self, name: str) -> int:
        return len(self.xs.get(name, []))


class JobProcess(QObject):
    """One engine job in a child process; parses its JSON-line events.

    Thread: GUI thread (QProcess delivers its signals there).
    """

    event = Signal(object)  # an Event
    log = Signal(str)
    done = Signal(int, str)  # exit code, a plain-words outcome

    def __init__(self, args: list[str], run_dir: str, parent=None) -> None:
        super().__init__(parent)
        self.args, self.run_dir = args, run_dir
        self.proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        self.proc.setProcessEnvironment(env)
        self.proc.setWorkingDirectory(str(ROOT))
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._error)
        self._out = b""
        self._err = b""
        self.last_error = ""
        self.stderr_tail: list[str] = []
        self.cancel_requested = False
        self.finished_flag = False
        self.ended: EndEvent | CancelledEvent | None = None

    @property
    def command_line(self) -> str:
        return " ".join([Path(sys.executable).name, "main.py", *self.args])

    def start(self) -> None:
        self.log.emit(f"$ {self.command_line}")
        # A lower CPU priority keeps the GUI (and its 3D view) responsive on a machine with few cores;
        # `nice` execs the job, so the QProcess pid is the job itself and SIGTERM reaches it.
        nice = shutil.which("nice")
        if nice:
            self.proc.start(nice, ["-n", "10", sys.executable, "main.py", *self.args])
        else:
            self.proc.start(sys.executable, ["main.py", *self.args])

    def cancel(self) -> None:
        """SIGTERM: the job saves a resumable checkpoint and exits with code 130."""
        if self.proc.state() != QProcess.ProcessState.NotRunning:
            self.cancel_requested = True
            self.log.emit("Cancelling: the job saves a resumable checkpoint…")
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc.state() != QProcess.ProcessState.NotRunning:
            self.proc.kill()
            self.proc.waitForFinished(3000)

    def running(self) -> bool:
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def _read_stdout(self) -> None:
        self._out += bytes(self.proc.readAllStandardOutput())
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                ev = parse_event(line)
            except ValueError:  # not an event: a line of text
                self.log.emit(line.decode("utf-8", "replace"))
                continue
            if isinstance(ev, ErrorEvent):
                self.last_error = ev.message
            if isinstance(ev, (EndEvent, CancelledEvent)):
                self.ended = ev
            self.event.emit(ev)

    def _read_stderr(self) -> None:
        self._err += bytes(self.proc.readAllStandardError())
        parts = self._err.replace(b"\r", b"\n").split(b"\n")
        *lines, self._err = parts
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.stderr_tail = (self.stderr_tail + [text])[-20:]
                if not is_progress_redraw(text):
                    self.log.emit(text)

    def _error(self, err) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self.finished_flag = True
            self.done.emit(-1, f"Could not start the job: {self.proc.errorString()}")

    def _finished(self, code: int, status) -> None:
        if self.finished_flag:
            return
        self.finished_flag = True
        self._read_stdout()
        if code == 0 and status == QProcess.ExitStatus.NormalExit:
            ended = self.ended
            outcome = "Finished" + (f": OA {ended.oa * 100:.1f}%" if isinstance(ended, EndEvent) and
                                    isinstance(ended.oa, (int, float)) else "")
        elif code == EXIT_INTERRUPTED or (self.cancel_requested and status == QProcess.ExitStatus.NormalExit):
            outcome = f"Cancelled; a resumable checkpoint is in {display_path(self.run_dir)} (use Resume)"
        elif code == EXIT_USER_ERROR:
            outcome = "The job refused its input: " + (self.last_error or (self.stderr_tail[-1] if self.stderr_tail else "?"))
        elif status == QProcess.ExitStatus.CrashExit:
            outcome = "The job crashed" + (f": {self.stderr_tail[-1]}" if self.stderr_tail else "")
        else:
            outcome = f"The job failed (exit code {code})" + (
                f": {self.last_error}" if self.last_error else (f": {self.stderr_tail[-1]}" if self.stderr_tail else ""))
        self.done.emit(code, display_paths_in(outcome))


class TrainingPanel(QWidget):
    """Job form, queue, live curves, progress with ETA and the job's log.

    Thread: GUI thread. Curves are redrawn by one QTimer (at most ~30 times per second) from the
    buffered arrays, never per event.
    """

    job_started = Signal(str)
    job_finished = Signal(str, int, str)  # run dir, exit code, outcome
    event_received = Signal(object)  # every Event of the running job

    def __init__(self, settings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.queue: list[tuple[str, list[str], str]] = []  # (what, main.py arguments, run dir)
        self.job: JobProcess | None = None
        self.curves = CurveBuffer()
        self.items: dict[str, pg.PlotDataItem] = {}
        self.plots: dict[str, pg.PlotItem] = {}
        self.outcome = ""
        self.redraws = 0
        self._epoch_offset = 0.0  # epochs of the job's earlier stages: one continuous x axis
        self._steps_per_epoch = 0

        form_box = QGroupBox("New job")
        form = QFormLayout(form_box)
        self.job_kind = QComboBox()
        for m in METHODS.values():
            self.job_kind.addItem(m.command)
            self.job_kind.setItemData(self.job_kind.count() - 1, m.help[0].upper() + m.help[1:],
                                      Qt.ItemDataRole.ToolTipRole)
        self.job_kind.setToolTip("Which engine job to run (hover an entry for what it does)")
        self.job_kind.currentTextChanged.connect(self._job_changed)
        self.model = QComboBox()  # filled from the model registry when the panel is first shown
        self.model.setToolTip("Registered model architecture (for compress: the student's)")
        self.width_spin = QDoubleSpinBox(minimum=0, maximum=2, singleStep=0.125, decimals=3, value=0)
        self.width_spin.setSpecialValueText("default")
        self.width_spin.setToolTip("Width multiplier of the model (default: 1 for train, 0.125 for students)")
        self.data = self._path_row(settings.data_dir, "Dataset folder (class/split/*.npy), e.g. ModelNet40", folder=True)
        self.teacher = self._path_row(str(ROOT / "assets" / "models" / "teacher.pt"),
                                      "Teacher checkpoint for distillation jobs", folder=False)
        self.preset = QComboBox()
        self.preset.addItems(["smoke", "cpu", "paper"])
        self.preset.setCurrentText("cpu")
        self.preset.setToolTip("smoke: seconds, to check the pipeline · cpu: a budget for this machine · paper: the paper's schedule")
        self.epochs = self._spin(0, 1000, "Epochs (0: the preset's)")
        self.batch = self._spin(0, 1024, "Batch size (0: the preset's)")
        self.lr = QDoubleSpinBox(minimum=0, maximum=1, decimals=5, singleStep=0.0005, value=0)
        self.lr.setSpecialValueText("preset")
        self.lr.setToolTip("Peak learning rate (0: the preset's)")
        self.temperature = QDoubleSpinBox(minimum=0, maximum=20, decimals=1, singleStep=0.5, value=0)
        self.temperature.setSpecialValueText("preset")
        self.temperature.setToolTip("Distillation temperature T (0: the preset's; the cpu preset uses 1 for "
                                    "teachers trained with label smoothing, docs/RESULTS.md)")
        self.limit_train = self._spin(0, 100000, "Use only this many training shapes (0: all)")
        self.limit_test = self._spin(0, 100000, "Use only this many test shapes (0: all)")
        self.tensorboard = QCheckBox("also for TensorBoard")
        self.tensorboard.setToolTip("Also write the curves into <run dir>/tensorboard, to open with "
                                    "tensorboard --logdir <run dir>")
        self.out = QLineEdit()
        self.out.setToolTip("Run directory (created; a cancelled job can be resumed from it). ~ is your home "
                            "folder; a relative path is the app's folder's")
        form.addRow("Job", self.job_kind)
        form.addRow("Model", self.model)
        form.addRow("Width", self.width_spin)
        form.addRow("Dataset", self.data[0])
        form.addRow("Teacher", self.teacher[0])
        form.addRow("Preset", self.preset)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("KD temperature", self.temperature)
        form.addRow("Limit train", self.limit_train)
        form.addRow("Limit test", self.limit_test)
        form.addRow("Curves", self.tensorboard)
        form.addRow("Run dir", self.out)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start / queue")
        self.start_button.setToolTip("Start now, or queue behind the running job")
        self.start_button.clicked.connect(self.submit_from_form)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job; it saves a resumable checkpoint")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume…")
        self.resume_button.setToolTip("Continue a run directory where it stopped")
        self.resume_button.clicked.connect(self._choose_resume)
        for b in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(b)
        form.addRow(buttons)
        self.form_error = QLabel()
        self.form_error.setWordWrap(True)
        self.form_error.setStyleSheet("color: #d04040")
        self.form_error.setToolTip("Why the job was not started: correct the form and start again")
        self.form_error.hide()
        form.addRow(self.form_error)
        self.queue_list = QListWidget()
        self.queue_list.setMaximumHeight(90)
        self.queue_list.setToolTip("Jobs waiting to run, in order")
        form.addRow("Queue", self.queue_list)

        self.status = QLabel("No job running.")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        pg.setConfigOptions(antialias=False)
        self.graphs = pg.GraphicsLayoutWidget()
        for i, name in enumerate(("loss", "accuracy", "learning rate", "other")):
            p = self.graphs.addPlot(row=i // 2, col=i % 2, title=name)
            p.showGrid(x=True, y=True, alpha=0.3)
            p.addLegend(offset=(-5, 5))
            p.setLabel("bottom", "epoch")
            p.setClipToView(True)
            p.setDownsampling(auto=True, mode="peak")
            # Fixed axis sizes: a new range then never re-lays out the plots (a redraw stays one paint).
            for side in ("left", "bottom"):
                p.getAxis(side).enableAutoSIPrefix(False)
            p.getAxis("left").setWidth(52)
            self.plots[name] = p
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(3000)
        right = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.status)
        tl.addWidget(self.progress)
        tl.addWidget(self.graphs, 1)
        right.addWidget(top)
        right.addWidget(self.log_view)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        lay = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        form_box.setMaximumWidth(420)
        split.addWidget(form_box)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        lay.addWidget(split)
        self.timer = QTimer(self, interval=33)  # one redraw timer: <= ~30 redraws/s from buffered arrays
        self.timer.timeout.connect(self._redraw)
        self.timer.start()
        self._job_changed(self.job_kind.currentText())
        self._update_buttons()

    # --- form helpers ---------------------------------------------------------------------------
    def _spin(self, lo, hi, tip) -> QSpinBox:
        s = QSpinBox(minimum=lo, maximum=hi)
        s.setSpecialValueText("default" if lo == 0 else "")
        s.setToolTip(tip)
        return s

    def _path_row(self, value: str, tip: str, folder: bool):
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        e = QLineEdit(display_path(value))
        e.setToolTip(f"{tip} (~: your home folder; a relative path is the app's folder's)")
        b = QToolButton(text="…")

        def browse():
            if folder:
                p = QFileDialog.getExistingDirectory(self, tip, expand_path(e.text()))
            else:
                p, _ = QFileDialog.getOpenFileName(self, tip, expand_path(e.text()), "Checkpoints (*.pt);;All files (*)")
            if p:
                e.setText(display_path(p))

        b.clicked.connect(browse)
        h.addWidget(e, 1)
        h.addWidget(b)
        return w, e

    def _method(self) -> Method:
        return by_command(self.job_kind.currentText())

    def _job_changed(self, kind: str) -> None:
        m = by_command(kind)
        self.teacher[0].setEnabled(m.needs_teacher)
        self.temperature.setEnabled(m.uses_temperature)

    def _fill_models(self) -> None:
        """The model list, from the registry (imported on first use: it loads torch)."""
        if self.model.count():
            return
        from core.models import list_models

        self.model.addItems(list_models())
        self.model.setCurrentText(self._method().model_default or self.model.itemText(0))

    def showEvent(self, event) -> None:
        self._fill_models()
        self.out.setPlaceholderText(f"automatic: {display_path(self.settings.runs_dir)}{os.sep}<job>_<date-time>")
        super().showEvent(event)

    def set_dark(self, dark: bool) -> None:
        self.graphs.setBackground("#1f2126" if dark else "w")
        for p in self.plots.values():  # a legend over the curves stays readable
            p.legend.setBrush(pg.mkBrush(31, 33, 38, 210) if dark else pg.mkBrush(255, 255, 255, 210))

    def form_job(self) -> tuple[JobConfig, str]:
        """The job the form describes, validated, and its run directory.

        Raises:
            ConfigError: the form's job cannot run; the message names the field's key.
        """
        self._fill_models()
        m = self._method()
        # The fields show paths shortened (~, relative to the checkout, where the job runs): the job gets them absolute.
        out = expand_path(self.out.text().strip() or str(Path(self.settings.runs_dir) /
                                                         f"{m.command}_{time.strftime('%Y%m%d-%H%M%S')}"))
        distill = {}
        if m.needs_teacher:
            distill["teacher"] = expand_path(self.teacher[1].text())
        if m.uses_temperature and self.temperature.value() > 0:
            distill["temperature"] = self.temperature.value()
        overrides = {"job": m.name, "model": self.model.currentText(), "data": expand_path(self.data[1].text()),
                     "distill": distill, "tensorboard": self.tensorboard.isChecked()}
        numbers = {"width": self.width_spin, "epochs": self.epochs, "batch_size": self.batch, "lr": self.lr,
                   "limit_train": self.limit_train, "limit_test": self.limit_test}
        overrides |= {k: w.value() for k, w in numbers.items() if w.value() > 0}  # 0: the preset's value
        cfg = load_config(self.preset.currentText(), overrides=overrides, defaults=m.defaults)
        if not cfg.data or not Path(cfg.data).exists():
            raise ConfigError(f"data: dataset {display_path(cfg.data)!r} not found" if cfg.data
                              else "data: choose a dataset folder")
        if m.needs_teacher and not (cfg.distill.teacher and Path(cfg.distill.teacher).is_file()):
            raise ConfigError(f"distill.teacher: teacher checkpoint {display_path(cfg.distill.teacher)!r} not found"
                              if cfg.distill.teacher else "distill.teacher: choose a teacher checkpoint")
        return cfg, out

    # --- queue --------------------------------------------------------------------------------
    def submit_from_form(self) -> bool:
        """Validate the form's job; if it can run, write its ``job.yaml`` and start or queue it.
        Otherwise show why in the panel and start nothing. Returns whether it was submitted."""
        try:
            cfg, out = self.form_job()
        except ConfigError as exc:
            self.form_error.setText(f"Not started: {exc}")
            self.form_error.show()
            return False
        self.form_error.hide()
        self.out.clear()
        self.submit_job(cfg, out, what=self._method().command)
        return True

    def submit_job(self, cfg: JobConfig, run_dir: str, what: str | None = None) -> None:
        """Write ``cfg`` as ``run_dir/job.yaml`` and run it (``main.py run``), now or after the queue."""
        job_file = Path(run_dir) / "job.yaml"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text(cfg.to_yaml())
        self.submit(["run", str(job_file), "--events", "json"], run_dir, what=what or cfg.job)

    def submit(self, args: list[str], run_dir: str, what: str | None = None) -> None:
        """Start ``main.py ARGS`` now, or queue it behind the running job."""
        self.queue.append((what or args[0], args, run_dir))
        self._refresh_queue()
        if self.job is None:
            self._start_next()

    def resume(self, run_dir: str) -> None:
        self.submit(["resume", run_dir, "--events", "json"], run_dir)

    def _choose_resume(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Resume a run directory", self.settings.runs_dir)
        if p:
            self.resume(p)

    def _refresh_queue(self) -> None:
        self.queue_list.clear()
        for what, _, out in self.queue:
            self.queue_list.addItem(QListWidgetItem(f"{what} → {display_path(out)}"))

    def _start_next(self) -> None:
        if not self.queue:
            self._update_buttons()
            return
        what, args, out = self.queue.pop(0)
        self._refresh_queue()
        self.curves.clear()
        for p in self.plots.values():
            p.clear()
            if p.legend is not None:
                p.legend.clear()
        self.items.clear()
        self._epoch_offset = 0.0  # epochs of the job's earlier stages: one continuous x axis
        self._steps_per_epoch = 0
        self._t0 = time.monotonic()
        self.progress.setRange(0, 0)
        self.job = JobProcess(args, out, self)
        self.job.event.connect(self._on_event)
        self.job.log.connect(lambda text: self.log_view.appendPlainText(display_paths_in(text)))
        self.job.done.connect(self._on_done)
        self.status.setText(f"Running {what} → {display_path(out)}")
        self.job.start()
        self.job_started.emit(out)
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.cancel_button.setEnabled(self.job is not None)

    def has_running_job(self) -> bool:
        return self.job is not None and self.job.running()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def stop_all(self) -> None:
        """Closing the app: drop the queue, ask the running job to stop (resumable), then wait briefly."""
        self.queue.clear()
        if self.job is not None and self.job.running():
            self.job.cancel()
            if not self.job.proc.waitForFinished(15000):
                self.job.kill()

    # --- events ---------------------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, StartEvent):
            self._steps_per_epoch = ev.steps_per_epoch
        elif isinstance(ev, StepEvent):
            total, done = ev.total_steps, ev.global_step
            x = self._epoch_offset + done / max(1, self._steps_per_epoch or total or 1)
            terms = [k for k in ev.losses if k.endswith("_loss")]
            # A one-term job (train) reports its only term as both loss and task_loss: draw it once.
            duplicate = terms[0] if len(terms) == 1 and ev.losses[terms[0]] == ev.losses.get("loss") else None
            for k, v in ev.scalars.items():
                if k != duplicate and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.curves.add(k, x, v)
            if total:
                self.progress.setRange(0, total)
                self.progress.setValue(done)
                eta = ""
                if done > 0 and done < total:
                    rem = ev.elapsed / done * (total - done)
                    eta = f" · ETA {int(rem // 60)}:{int(rem % 60):02d}"
                self.progress.setFormat(f"{ev.stage} %v/%m steps (%p%){eta}")
        elif isinstance(ev, EpochEvent):
            x = self._epoch_offset + ev.epoch + 1
            for k in ("val_oa", "val_macc", "train_loss"):
                v = getattr(ev, k)
                if isinstance(v, (int, float)):
                    self.curves.add(k, x, v)
            self.log_view.appendPlainText(f"epoch {ev.epoch + 1}/{ev.epochs}" +
                                          (f": val OA {ev.val_oa * 100:.1f}%" if ev.val_oa is not None else ""))
        elif isinstance(ev, StageEvent):
            self.status.setText(f"Stage {ev.index}/{ev.of}: {ev.stage}")
            self.log_view.appendPlainText(f"stage {ev.index}/{ev.of}: {ev.stage}")
            self._epoch_offset = float(ev.epoch_offset or 0)
            if self._epoch_offset:  # the boundary between stages, on every plot
                for p in self.plots.values():
                    p.addItem(pg.InfiniteLine(self._epoch_offset, angle=90, label=ev.stage,
                                              pen=pg.mkPen((150, 150, 150), style=Qt.PenStyle.DashLine),
                                              labelOpts={"position": 0.95}))
        elif isinstance(ev, ProgressEvent):
            self.status.setText(f"{ev.what or 'working'}: {ev.done}/{ev.total}")
        elif isinstance(ev, ErrorEvent):
            self.log_view.appendPlainText(f"ERROR: {display_paths_in(ev.message)}")
        self.event_received.emit(ev)

    def _on_done(self, code: int, outcome: str) -> None:
        job = self.job
        self.outcome = outcome
        self.status.setText(outcome)
        self.log_view.appendPlainText(outcome)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if code == 0 else 0)
        self.progress.setFormat("done" if code == 0 else "stopped")
        self.job = None
        self._update_buttons()
        self._redraw()
        self.job_finished.emit(job.run_dir if job else "", code, outcome)
        QTimer.singleShot(0, self._start_next)

    def _redraw(self) -> None:
        if not self.curves.dirty:
            return
        self.curves.dirty = False
        self.redraws += 1
        for name in self.curves.xs:
            item = self.items.get(name)
            if item is None:
                plot = self.plots[plot_group(name)]
                color = pg.intColor(len(self.items), hues=9)
                sym = "o" if name.startswith("val_") else None
                item = plot.plot(name=name, pen=pg.mkPen(color, width=2), symbol=sym, symbolSize=6,
                                 symbolBrush=color)
                self.items[name] = item
            item.setData(np.asarray(self.curves.xs[name]), np.asarray(self.curves.ys[name]))

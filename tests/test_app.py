"""pytest-qt tests of the desktop app (offscreen): what a user relies on, each with a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT.parent / "shared" / "data" / "scans"
SCAN_FILES = sorted(p for p in SCANS.glob("*") if p.suffix.lower() in (".ply", ".pcd", ".obj", ".off", ".stl", ".xyz"))


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path):
    """Each test writes QSettings into its own folder, never the user's profile."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture
def window(make_window, checkpoints):
    return make_window(*checkpoints)


def test_tests_never_touch_the_users_settings(tmp_path):
    from app.settings import Settings

    s = Settings()
    s.add_recent(str(tmp_path / "x.ply"))
    assert Path(s.q.fileName()).resolve().is_relative_to(tmp_path.resolve()), s.q.fileName()
    s.add_recent("relative/y.ply")  # stored absolute
    assert s.recent_files[0] == os.path.abspath("relative/y.ply") and Path(s.recent_files[0]).is_absolute()


def _open_and_predict(qtbot, w, path: Path) -> dict:
    with qtbot.waitSignal(w.compare.predicted, timeout=60000) as blocker:
        w.open_path(str(path))
    return blocker.args[0]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_every_sample_and_scan_gets_both_predictions(qtbot, window):
    from app.shapes import list_samples

    files = list_samples() + SCAN_FILES
    if not files:
        pytest.skip("no samples and no scans")
    for path in files:
        res = _open_and_predict(qtbot, window, path)
        assert res["shape_path"] == window.shape.path
        for role in ("teacher", "student"):
            top = res[role]["top"]
            assert len(top) == 5 and 0 <= top[0]["prob"] <= 1 and top[0]["class"] in window.compare.comparison.class_names
            assert res[role]["latency_ms"] > 0
        # what the user sees: both columns show the top class, the banner says agree/disagree
        assert window.compare.columns["teacher"].top1.text().startswith(res["teacher"]["top"][0]["class"])
        assert window.compare.columns["student"].top1.text().startswith(res["student"]["top"][0]["class"])
        assert ("Both say" in window.compare.banner.text()) == res["agree"]
    # the 3D view rendered frames and the exact model input is overlaid
    qtbot.waitUntil(lambda: window.viewer.current_image() is not None, timeout=20000)
    assert window.viewer.overlay is not None and len(window.viewer.overlay) == 1024


@pytest.mark.timeout(60)
def test_corrupt_file_shows_error_and_app_keeps_working(qtbot, window, tmp_path):
    bad = tmp_path / "broken.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99999\n\x00\x01garbage")
    with qtbot.waitSignal(window.load_failed, timeout=30000) as blocker:
        window.open_path(str(bad))
    msg = blocker.args[0]
    assert "broken.ply" in msg and "\n" not in msg
    assert "broken.ply" in window.statusBar().currentMessage()
    ok = tmp_path / "ok.npy"
    np.save(ok, np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32))
    res = _open_and_predict(qtbot, window, ok)
    assert res["teacher"]["top"] and res["student"]["top"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_robustness_controls_rerun_both_models(qtbot, window):
    from app.shapes import list_samples

    samples = list_samples() or SCAN_FILES
    first = _open_and_predict(qtbot, window, samples[0])
    with qtbot.waitSignal(window.compare.predicted, timeout=30000) as blocker:
        window.compare.rotation.setValue(90)
        window.compare.noise.setValue(20)
        window.compare.points.setValue(512)
    res = blocker.args[0]
    assert res["points"].shape == (512, 3)
    assert not np.allclose(res["teacher"]["probs"], first["teacher"]["probs"])


@pytest.mark.timeout(60)
def test_missing_or_bad_checkpoints_give_a_clear_message(qtbot, tmp_path):
    from app.main_window import MainWindow

    w = MainWindow(teacher=str(tmp_path / "nope.pt"), student=str(tmp_path / "nope2.pt"))
    w.quiet_errors = True
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: "not found" in w.compare.status.text(), timeout=10000)
    assert w.compare.comparison is None
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with qtbot.waitSignal(w.compare.message, timeout=30000) as blocker:
        w.compare.load_checkpoint("student", str(corrupt))
    assert "corrupt.pt" in blocker.args[0] and "\n" not in blocker.args[0]
    w.shutdown()


def _smoke_job(modelnet40, epochs=1):
    from core.engine.config import load_config

    return load_config("smoke", overrides={"job": "train", "model": "pointnet", "width": 0.125, "data": str(modelnet40),
                                           "limit_train": 16, "limit_test": 8, "epochs": epochs, "batch_size": 8})


@pytest.fixture
def training(qtbot, tmp_path):
    from app.settings import Settings
    from app.training_panel import TrainingPanel

    s = Settings()
    s.runs_dir = str(tmp_path)
    p = TrainingPanel(s)
    qtbot.addWidget(p)
    p.show()
    yield p
    p.stop_all()


def test_the_form_builds_a_validated_job_that_follows_the_job_kind(training, tmp_path):
    from core.engine.jobs import METHODS
    from core.models import list_models

    # jobs and models come from their registries
    assert [training.job_kind.itemText(i) for i in range(training.job_kind.count())] == \
        [m.command for m in METHODS.values()]
    assert [training.model.itemText(i) for i in range(training.model.count())] == list_models()
    data = tmp_path / "data"
    data.mkdir()
    training.data[1].setText(str(data))
    training.job_kind.setCurrentText("compress")
    training.temperature.setValue(2)
    training.epochs.setValue(3)
    cfg, out = training.form_job()
    assert cfg.job == "t3dnet" and cfg.distill.temperature == 2 and cfg.epochs == 3
    assert cfg.distill.teacher.endswith("teacher.pt") and cfg.width == 0.125  # the student's default width
    assert Path(out).parent == tmp_path and Path(out).name.startswith("compress_")
    training.job_kind.setCurrentText("train")  # no teacher: neither teacher nor temperature, whatever the fields say
    cfg, _ = training.form_job()
    assert cfg.distill.teacher == "" and cfg.distill.temperature == 1.0 and cfg.width == 1.0  # the cpu preset's T
    training.job_kind.setCurrentText("kd")
    training.temperature.setValue(0)  # "preset": the preset's value
    assert training.form_job()[0].distill.temperature == 1.0
    assert training.form_job()[0].tensorboard is False  # TensorBoard only when asked
    training.tensorboard.setChecked(True)
    assert training.form_job()[0].tensorboard is True


def test_an_invalid_form_shows_why_and_starts_nothing(training, tmp_path):
    started = []
    training.job_started.connect(started.append)
    data = tmp_path / "data"
    data.mkdir()
    teacher = training.teacher[1].text()
    training.job_kind.setCurrentText("kd")
    cases = [(str(tmp_path / "nowhere"), teacher, "data:"), (str(data), "", "distill.teacher:"),
             (str(data), str(tmp_path / "missing.pt"), "distill.teacher:")]
    for data_text, teacher_text, says in cases:
        training.data[1].setText(data_text)
        training.teacher[1].setText(teacher_text)
        assert training.submit_from_form() is False
        assert training.form_error.isVisible() and says in training.form_error.text()
    training.teacher[1].setText(teacher)
    training.batch.setValue(1)  # BatchNorm needs two shapes a batch
    assert training.submit_from_form() is False and "batch_size" in training.form_error.text()
    assert not started and training.job is None and not training.queue
    assert not list(tmp_path.glob("kd_*"))  # no run folder, no job.yaml


def test_two_stage_curves_run_on_one_axis_with_the_boundary_marked(training):
    """A continuous T3DNet run: stage 2 restarts its step count; the curves must not draw back."""
    import pyqtgraph as pg

    from core.engine.events import StageEvent, StartEvent, StepEvent

    def stage(name, index, offset, epochs, steps):
        training._on_event(StageEvent(stage=name, index=index, of=2, epoch_offset=offset))
        training._on_event(StartEvent(stage=name, steps_per_epoch=steps, epochs=epochs))
        for g in range(1, epochs * steps + 1):
            training._on_event(StepEvent(stage=name, global_step=g, total_steps=epochs * steps,
                                         lr=0.1 * (1 - g / (epochs * steps)), losses={"loss": 1.0 / g}))

    stage("netaug", 1, 0, 2, 4)
    assert training.status.text() == "Stage 1/2: netaug"
    stage("distill", 2, 2, 2, 4)
    assert training.status.text() == "Stage 2/2: distill"
    xs = training.curves.xs["loss"]
    assert xs == sorted(xs) and xs[-1] == pytest.approx(4.0) and xs[0] == pytest.approx(0.25)
    training._redraw()
    lines = [i for p in training.plots.values() for i in p.items if isinstance(i, pg.InfiniteLine)]
    assert lines and all(line.value() == pytest.approx(2.0) for line in lines)


def test_the_jobs_log_keeps_a_progress_bar_once_it_is_complete():
    from app.training_panel import is_progress_redraw

    bar = "caching modelnet40_npy1024: {:>3}%|{:<10}| {}/2468 [00:01<00:00, 1606.16shape/s]"
    assert is_progress_redraw(bar.format(26, "██▋", 653)) and not is_progress_redraw(bar.format(100, "█" * 10, 2468))
    assert is_progress_redraw("netaug  50%|█████     | 3/6 [00:01<00:01, 2.10it/s]")
    assert not is_progress_redraw("epoch 1/3: val OA 9.4%")


@pytest.mark.timeout(30)
def test_paths_under_home_are_shown_with_a_tilde_and_read_back(training, tmp_path, monkeypatch):
    """A dataset or teacher under the home folder shows as ~/...; a ~ typed in a field reaches the job absolute."""
    monkeypatch.setenv("HOME", str(tmp_path))
    data, teacher = tmp_path / "data" / "modelnet40", tmp_path / "models" / "teacher.pt"
    data.mkdir(parents=True)
    teacher.parent.mkdir()
    teacher.write_bytes(b"")
    from app.paths import display_path

    assert display_path(data) == os.path.join("~", "data", "modelnet40")
    assert not Path(training.teacher[1].text()).is_absolute()  # the bundled teacher: relative to the app's folder
    training.job_kind.setCurrentText("compress")
    training.data[1].setText(display_path(data))
    training.teacher[1].setText("~/models/teacher.pt")
    cfg, out = training.form_job()
    assert cfg.data == str(data) and cfg.distill.teacher == str(teacher) and Path(out).parent == tmp_path


@pytest.mark.timeout(30)
def test_runs_tab_shows_a_runs_folder_under_home_as_tilde(qtbot, tmp_path, monkeypatch):
    """The Runs tab never shows the machine's path of a runs folder in the home folder: ~/runs, ~/runs/<run>."""
    import json

    from app.runs_panel import COLUMNS, RunsPanel
    from app.settings import Settings

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("kd_seed0", "other/t3dnet_seed0"):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "report.json").write_text(json.dumps({"job": "kd", "oa": 0.86, "history": []}))
    s = Settings()
    s.runs_dir = str(tmp_path / "runs")
    panel = RunsPanel(s)
    qtbot.addWidget(panel)
    assert panel.folder.text() == os.path.join("~", "runs")
    shown = sorted(panel.table.item(r, COLUMNS.index("path")).text() for r in range(panel.table.rowCount()))
    assert shown == [os.path.join("~", "runs", "kd_seed0"), os.path.join("~", "runs", "other", "t3dnet_seed0")]
    assert sorted(r["path"] for r in panel.runs) == [str(tmp_path / "runs" / "kd_seed0"),
                                                     str(tmp_path / "runs" / "other" / "t3dnet_seed0")]
    panel.folder.setText("~/runs/other")  # typed by the user
    panel.refresh()
    assert [r["path"] for r in panel.runs] == [str(tmp_path / "runs" / "other" / "t3dnet_seed0")]


@pytest.mark.timeout(30)
def test_runs_tab_draws_a_compress_run_over_both_stages(qtbot, tmp_path):
    """A compress run's report holds its last stage's history: the Runs tab reads both stages' (from the
    stage subfolders, wherever the run folder now lies) on one epoch axis."""
    import json

    from app.runs_panel import RunsPanel
    from app.settings import Settings

    run = tmp_path / "runs" / "t3dnet_seed0"

    def report(d, job, oa, epochs, **extra):
        d.mkdir(parents=True, exist_ok=True)
        history = [{"epoch": e, "val_oa": oa[e]} for e in range(epochs)]
        (d / "report.json").write_text(json.dumps({"job": job, "oa": oa[-1], "epochs": epochs, "history": history,
                                                   **extra}))

    report(run / "stage1_netaug", "netaug", [0.5, 0.6], 2)
    report(run / "stage2_distill", "distill", [0.7, 0.8, 0.9], 3)
    report(run, "t3dnet", [0.7, 0.8, 0.9], 3, stages=["/elsewhere/stage1_netaug", "/elsewhere/stage2_distill"])
    s = Settings()
    s.runs_dir = str(tmp_path / "runs")
    panel = RunsPanel(s)
    qtbot.addWidget(panel)
    (info,) = panel.runs
    assert info["epochs"] == 5 and [h["val_oa"] for h in info["history"]] == [0.5, 0.6, 0.7, 0.8, 0.9]
    panel.table.selectRow(0)
    (curve,) = panel.plot.listDataItems()
    x, y = curve.getData()
    assert list(x) == [1, 2, 3, 4, 5] and list(y) == [0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_smoke_job_runs_from_the_panel_and_curves_fill(qtbot, training, modelnet40, tmp_path):
    out = tmp_path / "run1"
    with qtbot.waitSignal(training.job_finished, timeout=140000) as blocker:
        training.submit_job(_smoke_job(modelnet40), str(out))
    run_dir, code, outcome = blocker.args
    assert code == 0, outcome
    assert outcome.startswith("Finished")
    assert training.curves.count("loss") >= 1 and training.curves.count("val_oa") >= 1
    assert training.redraws >= 1 and "loss" in training.items
    assert len(training.items["loss"].getData()[0]) == training.curves.count("loss")
    # a one-term job's task_loss is its loss: drawn once, not as two overlapping curves
    assert training.curves.count("task_loss") == 0 and "task_loss" not in training.items
    assert (out / "report.json").is_file()
    # the Runs view lists it and offers its checkpoint to the comparison
    from app.runs_panel import RunsPanel

    runs = RunsPanel(training.settings)
    qtbot.addWidget(runs)
    assert any(r["path"] == str(out) and r.get("oa") is not None for r in runs.runs)
    runs.table.selectRow(0)
    with qtbot.waitSignal(runs.load_student, timeout=1000) as b2:
        runs._load_selected()
    assert Path(b2.args[0]).parent == out


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_cancel_leaves_a_resumable_run_and_resume_finishes_it(qtbot, training, modelnet40, tmp_path):
    out = tmp_path / "run2"
    with qtbot.waitSignal(training.event_received, timeout=120000,
                          check_params_cb=lambda ev: ev.type == "step"):
        training.submit_job(_smoke_job(modelnet40, epochs=4), str(out))
    with qtbot.waitSignal(training.job_finished, timeout=60000) as blocker:
        training.cancel()
    _, code, outcome = blocker.args
    assert code == 130 and "Cancelled" in outcome and "resum" in outcome.lower()
    assert (out / "last.pt").is_file() and not (out / "report.json").exists()
    # Resume continues the same run directory to the end (not from step 0)
    steps = []
    training.event_received.connect(lambda ev: steps.append(ev.global_step) if ev.type == "step" else None)
    with qtbot.waitSignal(training.job_finished, timeout=150000) as blocker:
        training.resume(str(out))
    run_dir, code, outcome = blocker.args
    assert run_dir == str(out) and code == 0 and outcome.startswith("Finished"), outcome
    assert training.status.text().startswith("Finished")
    assert (out / "report.json").is_file()
    assert steps and min(steps) > 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_disagreement_scan_ranks_shapes(qtbot, window, modelnet40):
    panel = window.disagreements
    panel.data.setText(str(modelnet40))
    panel.limit.setValue(48)
    panel.temperature_shapes.setValue(40)
    with qtbot.waitSignal(panel.scanned, timeout=100000) as blocker:
        panel.scan()
    res = blocker.args[0]
    k = len(res["class_names"])
    # calibration of both models, the temperature fitted on training shapes, shown with its ECE
    from core.calibration import expected_calibration_error

    for role in ("teacher", "student"):
        cal = res["calibration"][role]
        probs = np.zeros((48, k))
        probs[np.arange(48), res[f"{role}_pred"]] = res[f"{role}_conf"]
        assert cal["ece"] == pytest.approx(expected_calibration_error(probs, res["labels"]), abs=1e-9)
        assert cal["temperature"] > 0 and "train split, 40 of" in cal["temperature_fitted_on"]
        assert f"{role}: ECE {cal['ece'] * 100:.1f}%" in panel.calibration_text.text()
    assert len(panel.reliability.listDataItems()) == 3  # the diagonal and one curve per model
    assert res["cm_teacher"].shape == (k, k) and res["cm_teacher"].sum() == 48
    n_dis = int((res["teacher_pred"] != res["student_pred"]).sum())
    assert panel.table.rowCount() == n_dis
    for p in panel.cm_plots:  # each matrix fills its panel: no empty margins around it
        (x0, x1), (y0, y1) = p.viewRange()
        assert (x0, x1) == pytest.approx((0, k), abs=0.5) and (y0, y1) == pytest.approx((0, k), abs=0.5)
    if n_dis:
        js = [float(panel.table.item(r, 4).text()) for r in range(n_dis)]
        assert js == sorted(js, reverse=True)
        panel.table.selectRow(0)
        with qtbot.waitSignal(window.compare.predicted, timeout=30000):
            panel._open_selected()
    # the same scan over the partial-view benchmark: the shapes the models saw are the partial views
    from core.data.datasets import load_split
    from core.data.partial import partial_benchmark

    panel.views.setCurrentIndex(1)
    panel.limit.setValue(8)
    panel.temperature_shapes.setValue(0)
    with qtbot.waitSignal(panel.scanned, timeout=100000) as blocker:
        panel.scan()
    res = blocker.args[0]
    test = load_split(modelnet40, "test", 1024, progress=False)
    np.testing.assert_array_equal(res["points"], partial_benchmark(test.points[res["indices"]], indices=res["indices"]))
    assert res["views"] == "partial" and panel.summary.text().startswith("partial views (severity 2) of 8 shapes")
    assert "temperature" not in res["calibration"]["teacher"]  # no fit asked for


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_app_starts_and_quits_by_itself(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path), HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "main.py", "--quit-after", "3"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=80)
    assert r.returncode == 0, r.stderr[-2000:]


# --- drag and drop, demo mode, up axis, render process -----------------------------------------------


@pytest.mark.timeout(60)
def test_dropping_a_file_on_the_window_opens_it(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    path = tmp_path / "dropped.npy"
    np.save(path, np.random.default_rng(1).normal(size=(3000, 3)).astype(np.float32))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = window.rect().center()
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.compare.predicted, timeout=30000) as blocker:
        QApplication.sendEvent(window, drop)
    assert blocker.args[0]["shape_path"] == str(path)
    assert "dropped.npy" in window.windowTitle()
    qtbot.waitUntil(lambda: window.viewer.current_image() is not None, timeout=20000)
    assert window.viewer._caption.startswith("dropped.npy")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_demo_mode_cycles_to_the_next_sample(qtbot, window):
    paths = window.demo_paths()
    if len(paths) < 2:
        pytest.skip("demo mode needs two samples")
    with qtbot.waitSignal(window.shape_loaded, timeout=30000) as first:
        window.set_demo(True, interval_ms=1500)
    assert window.menuBar().isHidden() and window.compare.robustness_box.isHidden()
    with qtbot.waitSignal(window.shape_loaded, timeout=30000) as second:
        pass
    assert first.args[0].path == paths[0] and second.args[0].path == paths[1]
    qtbot.waitUntil(lambda: window.compare.last_result is not None
                    and window.compare.last_result["shape_path"] == paths[1], timeout=30000)
    assert window.compare.banner.text()  # both predictions are shown for the new sample
    window.set_demo(False)
    assert not window.menuBar().isHidden() and not window.compare.robustness_box.isHidden()


def _object_box(img) -> tuple[int, int, int, int]:
    """Pixel bounding box (x0, y0, x1, y1) of what differs from the frame's background (its corner)."""
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    a = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, -1)[:, :3 * w]
    a = a.reshape(h, w, 3).astype(int)
    fg = np.abs(a - a[0, 0]).sum(2) > 30
    ys, xs = np.nonzero(fg)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_up_axis_control_changes_the_models_input_and_frames_the_shape(qtbot, window):
    from core.data.preprocess import prepare_points

    bunny = SCANS / "bun_zipper.ply"
    if not bunny.is_file():
        pytest.skip("no Stanford bunny in the shared scans")
    _open_and_predict(qtbot, window, bunny)
    with qtbot.waitSignal(window.compare.predicted, timeout=30000) as blocker:
        window.compare.up_axis.setCurrentText("z")  # auto may have estimated y: start from an override
    z_res = blocker.args[0]
    with qtbot.waitSignal(window.compare.predicted, timeout=30000) as blocker:
        window.compare.up_axis.setCurrentText("y")
    y_res = blocker.args[0]
    frames = window.viewer.frames  # the overlay for this result is drawn in a later frame
    expected = prepare_points(window.shape.full_xyz, num_points=1024, up_axis="y")
    assert np.allclose(y_res["points"], expected, atol=1e-5)
    assert not np.allclose(y_res["points"], z_res["points"])
    assert window.viewer.state["up"] == "y"
    # the overlay is mapped back into the file's (y-up) frame: it covers the shape's box
    lo, hi = window.shape.full_xyz.min(0), window.shape.full_xyz.max(0)
    ov = window.viewer.overlay
    assert np.all(np.abs(ov.min(0) - lo) < 0.1 * (hi - lo).max()) and np.all(np.abs(ov.max(0) - hi) < 0.1 * (hi - lo).max())
    # the view is framed again: the whole bunny is inside the frame and fills a fair part of it
    qtbot.waitUntil(lambda: window.viewer.frames > frames, timeout=20000)
    qtbot.wait(500)
    img = window.viewer.current_image()
    x0, y0, x1, y1 = _object_box(img)
    assert x0 > 2 and y0 > 2 and x1 < img.width() - 3 and y1 < img.height() - 3
    assert (y1 - y0) > 0.35 * img.height()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_resizing_the_view_keeps_the_camera(qtbot, window):
    from app.shapes import list_samples

    samples = list_samples() or SCAN_FILES
    _open_and_predict(qtbot, window, samples[0])
    qtbot.waitUntil(lambda: window.viewer.current_image() is not None, timeout=20000)
    window.viewer.orbit(300.0, 0.0)  # a quarter turn or so: far from the framed default
    frames = window.viewer.frames
    qtbot.waitUntil(lambda: window.viewer.frames > frames, timeout=20000)
    qtbot.wait(300)
    before = window.viewer.current_image()
    bx = _object_box(before)
    size = window.viewer._render_size
    a, b = window.splitter.sizes()
    window.splitter.setSizes([a - 250, b + 250])  # the user drags the splitter: the view gets narrower
    qtbot.waitUntil(lambda: window.viewer._render_size != size, timeout=5000)
    qtbot.waitUntil(lambda: window.viewer.current_image().size() != before.size(), timeout=20000)
    after = window.viewer.current_image()
    ax = _object_box(after)
    # same pose and vertical field of view: the object's height relative to the frame's is unchanged
    rel = lambda b, img: (b[3] - b[1]) / img.height()
    assert abs(rel(ax, after) - rel(bx, before)) < 0.05


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_render_process_crash_is_reported_and_the_view_restarts(qtbot, window):
    import signal

    from app.shapes import list_samples

    samples = list_samples() or SCAN_FILES
    _open_and_predict(qtbot, window, samples[0])
    qtbot.waitUntil(lambda: window.viewer.current_image() is not None, timeout=20000)
    old_pid = window.viewer.renderer.pid
    with qtbot.waitSignal(window.viewer.render_restarted, timeout=20000):
        os.kill(old_pid, signal.SIGKILL)
    assert "restarting" in window.statusBar().currentMessage()
    assert window.viewer.renderer.pid != old_pid and window.viewer.restarts == 1
    frames = window.viewer.frames
    qtbot.waitUntil(lambda: window.viewer.frames > frames, timeout=30000)  # the shape is drawn again
    # after too many crashes the view gives up with a message; the app and the models keep working
    from app.viewer_widget import MAX_RESTARTS

    window.viewer.restarts = MAX_RESTARTS
    with qtbot.waitSignal(window.viewer.render_failed, timeout=20000,
                          check_params_cb=lambda m: "3D view stopped" in m):
        os.kill(window.viewer.renderer.pid, signal.SIGKILL)
    assert window.viewer.renderer is None and window.viewer.current_image() is None
    assert "3D view stopped" in window.statusBar().currentMessage()
    res = _open_and_predict(qtbot, window, samples[-1])
    assert res["teacher"]["top"]


@pytest.mark.timeout(30)
def test_render_process_ends_with_the_window(qtbot, tmp_path):
    from app.main_window import MainWindow

    w = MainWindow(teacher=str(tmp_path / "none.pt"), student=str(tmp_path / "none.pt"))
    w.quiet_errors = True
    qtbot.addWidget(w)
    proc = w.viewer.renderer.process
    assert proc.daemon and proc.is_alive()
    w.close()
    assert not proc.is_alive()


# --- the job queue and resume ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_queue_runs_two_jobs_one_after_the_other(qtbot, training, modelnet40, tmp_path):
    a, b = tmp_path / "qa", tmp_path / "qb"
    finished = []
    training.job_finished.connect(lambda *args: finished.append(args))
    started = []
    training.job_started.connect(started.append)
    training.submit_job(_smoke_job(modelnet40), str(a))
    training.submit_job(_smoke_job(modelnet40), str(b))
    # the second waits in the queue the user sees while the first runs
    assert training.has_running_job() and training.queue_list.count() == 1
    from app.paths import display_path

    assert display_path(b) in training.queue_list.item(0).text()
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=160000)
    assert [f[0] for f in finished] == [str(a), str(b)] and started == [str(a), str(b)]
    assert all(f[1] == 0 for f in finished), finished
    assert (a / "report.json").is_file() and (b / "report.json").is_file()
    assert training.queue_list.count() == 0 and not training.has_running_job()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_models_menu_exports_the_loaded_student(qtbot, window, tmp_path):
    from core.export import onnx_session, read_export_metadata

    out = tmp_path / "student_export"  # no suffix: the chosen format's is added
    with qtbot.waitSignal(window.model_exported, timeout=60000) as blocker:
        window.export_model("student", str(out), "ONNX, int8 weights (*.onnx)")
    written = Path(blocker.args[0])
    assert written.name == "student_export.int8.onnx" and written.is_file()
    assert "int8" in read_export_metadata(written)["quantization"]
    sess = onnx_session(written, threads=1)
    x = np.zeros((2, 1024, 3), np.float32)
    x[:, :, 0] = np.linspace(-0.5, 0.5, 1024)
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert logits.shape == (2, len(window.compare.student.class_names)) and np.isfinite(logits).all()
    assert "Exported the student" in window.statusBar().currentMessage()
    # an impossible destination (its folder is a file) is a one-line message, and the app keeps working
    (tmp_path / "a_file").write_text("x")
    with qtbot.waitSignal(window.export_failed, timeout=60000) as blocker:
        window.export_model("teacher", str(tmp_path / "a_file" / "t.onnx"), "ONNX (*.onnx)")
    assert blocker.args[0] and "\n" not in blocker.args[0]
    assert window.compare.teacher is not None


# --- real files: up axis, channels, scenes and their objects, crop box, "not sure", layout ---------


def _composed_scene(path: Path, seed: int = 0) -> Path:
    """A table-top scene: a flat plane with three bundled samples (sofa, cone, bottle) standing apart on it."""
    from app.shapes import SAMPLES

    rng = np.random.default_rng(seed)
    plane = np.c_[rng.uniform(-1.5, 1.5, 1500), rng.uniform(-0.7, 0.7, 1500), rng.normal(0, 0.002, 1500)]
    parts = [plane]
    for name, cx in (("sofa", -0.9), ("cone", 0.0), ("bottle", 0.9)):
        s = np.load(SAMPLES / f"{name}.npy")[:, :3].astype(np.float64)
        s = (s - s.mean(0)) / np.abs(s - s.mean(0)).max() * 0.3
        s[:, 2] -= s[:, 2].min() - 0.01
        s[:, 0] += cx
        parts.append(s)
    np.save(path, np.concatenate(parts).astype(np.float32))
    return path


SCENE_CENTRES = (-0.9, 0.0, 0.9)  # x of the three shapes of _composed_scene


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_find_objects_lists_the_objects_of_a_scene_and_one_becomes_the_input(qtbot, window, tmp_path):
    from PySide6.QtCore import Qt, QTimer

    from core.data.preprocess import prepare_points
    from core.data.scene import rotation_between

    scene = _composed_scene(tmp_path / "table_top.npy")
    _open_and_predict(qtbot, window, scene)
    panel = window.compare
    assert len(window.shape.full_xyz) >= 3000
    # a scene: said above the cards, which are greyed; one class for it is not presented as an object's
    assert panel.analysis["scene"] and panel.scene_banner.isVisible()
    assert "This is a scene" in panel.scene_banner.text() and "find its objects" in panel.scene_banner.text()
    assert all(c.muted for c in panel.columns.values()) and panel.banner.text().startswith("Whole scene")

    ticks = []
    timer = QTimer(interval=20)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    with qtbot.waitSignal(panel.objects_found, timeout=60000) as blocker:
        qtbot.mouseClick(panel.find_button, Qt.MouseButton.LeftButton)
        assert not panel.find_button.isEnabled() and not panel.find_busy.isHidden()  # busy while it runs
    timer.stop()
    assert ticks, "the event loop ran while the objects were found"
    assert panel.find_button.isEnabled() and panel.find_busy.isHidden()
    objects = blocker.args[0]
    assert len(objects) >= 3
    # each placed shape is inside one found object's box, and the list shows every object
    for cx in SCENE_CENTRES:
        assert any(o["bbox_min"][0] <= cx <= o["bbox_max"][0] for o in objects), cx
    table = panel.objects_table
    assert table.rowCount() == len(objects)
    for i, o in enumerate(objects):
        assert table.item(i, 1).text() == f"{o['points']:,}"
        assert table.item(i, 2).text().startswith(o["teacher"]["top"][0]["class"])
        assert table.item(i, 3).text().startswith(o["student"]["top"][0]["class"])
    # the view draws one box per object, coloured by verdict, labelled with the class
    from app.scene_widgets import verdict_color

    assert len(window.viewer.boxes) == len(objects)
    for b, o in zip(window.viewer.boxes, objects):
        assert np.allclose(b.lo, o["bbox_min"]) and b.color == verdict_color(o["verdict"])
        assert o["teacher"]["top"][0]["class"] in b.label
    # the render process draws them and says where each label goes: painted over the frame, inside the view
    qtbot.waitUntil(lambda: len(window.viewer.label_rects()) == len(objects), timeout=20000)
    view = window.viewer.rect()
    assert all(view.contains(r.toRect()) for _, r in window.viewer.label_rects())

    # choosing one in the list: its points are what the models see, turned upright as predict_objects did
    with qtbot.waitSignal(panel.predicted, timeout=30000) as blocker:
        table.selectRow(1)
    res = blocker.args[0]
    obj = objects[1]
    rot = rotation_between(panel.analysis["_support"])
    expected = prepare_points(window.shape.full_xyz[obj["indices"]] @ rot.T, num_points=1024)
    assert np.allclose(res["points"], expected, atol=1e-5)
    assert res["teacher"]["top"][0]["class"] == obj["teacher"]["top"][0]["class"]
    assert res["student"]["top"][0]["class"] == obj["student"]["top"][0]["class"]
    assert panel.columns["teacher"].top1.text().startswith(obj["teacher"]["top"][0]["class"])
    assert not any(c.muted for c in panel.columns.values()) and not panel.banner.text().startswith("Whole scene")
    assert "object 2" in panel.scene_banner.text()
    assert [b.emphasis for b in window.viewer.boxes] == [i == 1 for i in range(len(objects))]
    # the overlay lies on the chosen object
    lo, hi = np.asarray(obj["bbox_min"]), np.asarray(obj["bbox_max"])
    ov = window.viewer.overlay
    assert ov is not None and np.all(ov.min(0) >= lo - 0.05 * (hi - lo).max()) and np.all(ov.max(0) <= hi + 0.05 * (hi - lo).max())
    # back to the whole cloud
    with qtbot.waitSignal(panel.predicted, timeout=30000) as blocker:
        panel.whole_button.click()
    assert len(blocker.args[0]["points"]) == 1024 and panel.input_indices() is None
    assert all(c.muted for c in panel.columns.values())


@pytest.mark.timeout(90)
def test_crop_box_sends_only_the_points_inside_to_the_models(qtbot, window, tmp_path):
    from app.shapes import points_in_box
    from core.data.preprocess import prepare_points

    scene = _composed_scene(tmp_path / "crop_me.npy")
    _open_and_predict(qtbot, window, scene)
    panel = window.compare
    with qtbot.waitSignal(panel.predicted, timeout=30000) as blocker:
        panel.crop_button.click()
    # it starts around the whole cloud: every point is inside
    assert panel.input_count() == len(window.shape.full_xyz)
    assert [b.label for b in window.viewer.boxes] == ["crop"]
    # a box around the bottle (x ~ 0.9): the models see those points only; the edits are debounced
    with qtbot.waitSignal(panel.predicted, timeout=30000) as blocker:
        for d, (c, size) in enumerate(((0.9, 0.5), (0.0, 0.5), (0.3, 0.58))):
            panel.crop.centre[d].setValue(c)
            panel.crop.size[d].setValue(size)
    res = blocker.args[0]
    lo, hi = panel.crop.box()
    inside = points_in_box(window.shape.full_xyz, lo, hi)
    assert 0 < len(inside) < len(window.shape.full_xyz) // 3
    expected = prepare_points(window.shape.full_xyz[inside], num_points=1024, up_axis=panel.current_up().axis)
    assert np.allclose(res["points"], expected, atol=1e-5)
    box = window.viewer.boxes[-1]
    assert np.allclose(box.lo, lo) and np.allclose(box.hi, hi)  # the box in the view follows the controls
    assert "crop box" in panel.scene_banner.text() and f"{len(inside):,}" in panel.crop.inside.text()
    assert not any(c.muted for c in panel.columns.values())
    # an empty box: nothing goes to the models, and the panel says so
    panel.crop.set_box(np.array([5.0, 5, 5]), np.array([5.1, 5.1, 5.1]))
    qtbot.waitUntil(lambda: "No points inside the crop box" in panel.banner.text(), timeout=5000)


def _drive_channels_dialog(qtbot, window, answer: int | None, seen: dict) -> None:
    """When the channels dialog shows, note what it offers and answer it (None: cancel)."""
    from PySide6.QtCore import QTimer

    def poll():
        dlg = window.channels_dialog
        if dlg is None or not dlg.isVisible():
            QTimer.singleShot(50, poll)
            return
        seen["candidates"], seen["preselected"] = list(dlg.candidates), dlg.channels()
        if answer is None:
            dlg.reject()
        else:
            dlg.choose(answer)
            dlg.accept()

    QTimer.singleShot(50, poll)


@pytest.mark.timeout(60)
def test_ambiguous_float32_file_asks_for_the_values_per_point(qtbot, window, tmp_path):
    from app.shapes import list_samples

    bin_path = tmp_path / "sweep.bin"
    np.random.default_rng(0).normal(size=2000).astype(np.float32).tofile(bin_path)  # 8000 B: 4 or 5 per point
    seen: dict = {}
    _drive_channels_dialog(qtbot, window, 5, seen)
    with qtbot.waitSignal(window.shape_loaded, timeout=30000) as blocker:
        window.open_path(str(bin_path))
    assert seen["candidates"] == [4, 5] and seen["preselected"] == 4  # the layouts that fit, the first chosen
    shape = blocker.args[0]
    assert shape.path == str(bin_path) and len(shape.full_xyz) == 400 and shape.info["channels"] == 5
    qtbot.waitUntil(lambda: window.compare.last_result is not None
                    and window.compare.last_result["shape_path"] == str(bin_path), timeout=30000)
    assert "sweep.bin" in window.windowTitle()
    # cancelling leaves the shape shown before
    sample = (list_samples() or SCAN_FILES)[0]
    _open_and_predict(qtbot, window, sample)
    seen.clear()
    _drive_channels_dialog(qtbot, window, None, seen)
    window.open_path(str(bin_path))
    qtbot.waitUntil(lambda: "Not opened" in window.statusBar().currentMessage(), timeout=30000)
    assert seen["candidates"] == [4, 5]
    assert window.shape.path == str(sample) and window.channels_dialog is None


@pytest.mark.timeout(90)
def test_up_axis_auto_says_what_it_decided_and_an_override_turns_the_input(qtbot, window, tmp_path):
    from app.shapes import SAMPLES
    from core.data.orient import convert_up_axis
    from core.data.preprocess import prepare_points

    # the PointNet++ text format (x,y,z,nx,ny,nz in the unit sphere) is y up: auto takes the format's axis
    xyz = np.load(SAMPLES / "chair.npy")[:, :3].astype(np.float64)
    xyz = convert_up_axis((xyz - xyz.mean(0)) / np.linalg.norm(xyz - xyz.mean(0), axis=1).max() * 0.9, "z", "y")
    normals = np.random.default_rng(0).normal(size=xyz.shape)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    txt = tmp_path / "chair_0001.txt"
    np.savetxt(txt, np.c_[xyz, normals], fmt="%.6f", delimiter=",")
    res = _open_and_predict(qtbot, window, txt)
    panel = window.compare
    assert panel.up_axis.currentIndex() == 0 and panel.up_axis.currentText() == "auto: y (format)"
    full = window.shape.full_xyz
    assert np.allclose(res["points"], prepare_points(full, num_points=1024, up_axis="y"), atol=1e-5)
    assert window.viewer.state["up"] == "y"
    # one click on another axis overrides it: the models see the input turned with that axis
    assert [panel.up_axis.itemText(i) for i in range(1, 7)] == ["z", "y", "x", "-z", "-y", "-x"]
    with qtbot.waitSignal(panel.predicted, timeout=30000) as blocker:
        panel.up_axis.setCurrentText("-x")
    assert panel.current_up().source == "user"
    assert np.allclose(blocker.args[0]["points"], prepare_points(full, num_points=1024, up_axis="-x"), atol=1e-5)
    assert window.viewer.state["up"] == "-x"
    # a file without a convention: auto estimates (or defaults) and says so
    plain = tmp_path / "plain.npy"
    np.save(plain, np.random.default_rng(2).normal(size=(3000, 3)).astype(np.float32))
    with qtbot.waitSignal(panel.predicted, timeout=30000):
        panel.up_axis.setCurrentIndex(0)
    _open_and_predict(qtbot, window, plain)
    import re

    assert re.fullmatch(r"auto: -?[xyz] \((estimated|default)(, unsure: \d+%)?\)", panel.up_axis.currentText())
    assert ("up-axis estimate is unsure" in panel.input_info.text()) is panel.decided_up().unsure


@pytest.mark.timeout(60)
def test_an_unsure_axis_estimate_asks_the_user_to_check_it(qtbot, window):
    from app.shapes import list_samples
    from core.data.orient import UP_AXES, UpAxis

    _open_and_predict(qtbot, window, (list_samples() or SCAN_FILES)[0])
    panel = window.compare
    probs = [0.35, 0.55, 0.025, 0.025, 0.025, 0.025]  # z kept by the margin, y likelier
    panel.analysis["_up"] = UpAxis("z", "estimated", {a: float(np.log(p)) for a, p in zip(UP_AXES, probs)})
    panel._show_input_info()
    assert panel.up_axis.itemText(0) == "auto: z (estimated, unsure: 35%)"
    assert "up-axis estimate is unsure (y looks likelier)" in panel.input_info.text()
    with qtbot.waitSignal(panel.predicted, timeout=30000):
        panel.up_axis.setCurrentText("y")  # the user decides: no more doubt shown
    assert "unsure" not in panel.input_info.text()


@pytest.mark.timeout(60)
def test_a_single_sample_is_not_called_a_scene(qtbot, window):
    from app.shapes import list_samples

    samples = list_samples()
    if not samples:
        pytest.skip("no bundled samples")
    _open_and_predict(qtbot, window, samples[0])
    panel = window.compare
    assert panel.analysis is not None and not panel.analysis["scene"]
    assert panel.scene_banner.isHidden() and not any(c.muted for c in panel.columns.values())
    assert panel.up_axis.currentText() == "auto: z (format)"  # the bundled samples keep z


@pytest.mark.timeout(90)
def test_not_sure_is_said_apart_from_agreement(qtbot, window):
    from app.scene_widgets import AGREE, DISAGREE, NOT_RECOGNISED, ONE_RECOGNISES
    from app.shapes import list_samples
    from core.vocabulary import VocabularyCalibration

    sample = (list_samples() or SCAN_FILES)[0]
    panel = window.compare
    never = VocabularyCalibration("energy", 1e9, 0.05, 1, "test: above any score")
    always = VocabularyCalibration("energy", -1e9, 0.05, 1, "test: below any score")
    # uncalibrated checkpoints: the cards say so, and no "not sure" verdict is guessed
    res = _open_and_predict(qtbot, window, sample)
    assert res["verdict"] in ("agree", "disagree")
    assert all("uncalibrated" in c.vocabulary.text() for c in panel.columns.values())
    panel.teacher.vocabulary, panel.student.vocabulary = never, never
    res = _open_and_predict(qtbot, window, sample)
    assert res["verdict"] == "neither_recognises"
    assert "Neither model recognises this object" in panel.banner.text() and "Both say" not in panel.banner.text()
    assert NOT_RECOGNISED.name() in panel.banner.styleSheet()
    assert AGREE.name() not in panel.banner.styleSheet() and DISAGREE.name() not in panel.banner.styleSheet()
    assert all("not sure" in c.vocabulary.text() for c in panel.columns.values())
    panel.teacher.vocabulary = always
    res = _open_and_predict(qtbot, window, sample)
    assert res["verdict"] == "only_teacher_recognises"
    assert "The teacher recognises it" in panel.banner.text() and "the student does not" in panel.banner.text()
    assert ONE_RECOGNISES.name() in panel.banner.styleSheet()
    assert panel.columns["teacher"].vocabulary.text() == "recognises it"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_both_model_cards_fit_at_first_start_size_and_1280x800(qtbot, window):
    from app.main_window import MainWindow
    from app.shapes import list_samples

    from core.vocabulary import VocabularyCalibration

    samples = list_samples() or SCAN_FILES
    # the longest verdict: a banner that did not wrap once made the window wider than the screen
    never = VocabularyCalibration("energy", 1e9, 0.05, 1, "test: above any score")
    window.compare.teacher.vocabulary = window.compare.student.vocabulary = never
    _open_and_predict(qtbot, window, samples[0])
    assert "Neither model recognises" in window.compare.banner.text()
    for size in (MainWindow.FIRST_START_SIZE, (1280, 800)):
        window.resize(*size)
        # the window can take the size: its minimum width is not forced up by the panel's contents
        qtbot.waitUntil(lambda size=size: (window.width(), window.height()) == size, timeout=5000)
        qtbot.wait(300)
        panel = window.compare
        panel_rect = panel.rect().translated(panel.mapTo(window, panel.rect().topLeft()))
        assert window.rect().contains(panel_rect), (size, panel_rect)
        teacher, student = panel.columns["teacher"], panel.columns["student"]
        for card in (teacher, student):
            # nothing of the card is clipped: not by the scroll area, the panel, the splitter or the window
            assert card.visibleRegion().boundingRect() == card.rect(), (size, card.role, card.visibleRegion())
            top_left = card.mapTo(window, card.rect().topLeft())
            assert panel_rect.contains(card.rect().translated(top_left)), (size, card.role)
            assert card.width() >= card.minimumWidth() and card.top1.text()
        # side by side at these sizes, the teacher on the left
        assert teacher.mapTo(window, teacher.rect().topLeft()).y() == student.mapTo(window, student.rect().topLeft()).y()
        assert teacher.mapTo(window, teacher.rect().topRight()).x() < student.mapTo(window, student.rect().topLeft()).x()
    # the user drags the splitter to make the panel narrow: the cards stack, none is cut at the right
    total = sum(window.splitter.sizes())
    window.splitter.setSizes([total - 10, 10])
    qtbot.wait(300)
    panel = window.compare
    assert panel.width() < panel.cards.side_by_side_width()
    assert student.mapTo(panel, student.rect().topLeft()).y() > teacher.mapTo(panel, teacher.rect().bottomLeft()).y()
    viewport = panel.cards_scroll.viewport()
    for card in (teacher, student):
        assert card.mapTo(viewport, card.rect().topRight()).x() < viewport.width()

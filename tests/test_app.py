"""pytest-qt tests of the desktop app (offscreen): what a user relies on, each with a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT.parent / "shared" / "data" / "scans"
SCAN_FILES = sorted(p for p in SCANS.glob("*") if p.suffix.lower() in (".ply", ".pcd", ".obj", ".off", ".stl", ".xyz"))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, modelnet40):
    """A small untrained teacher and student over the ModelNet40 classes (PointNet: fast on CPU)."""
    import torch

    from core.engine.checkpoint import save_model
    from core.models import create_model

    names = sorted(p.name for p in modelnet40.iterdir() if p.is_dir())
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_model(d / "teacher.pt", create_model("pointnet", num_classes=len(names), width=0.25), names)
    torch.manual_seed(1)
    save_model(d / "student.pt", create_model("pointnet", num_classes=len(names), width=0.125), names)
    return d / "teacher.pt", d / "student.pt"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path):
    """Each test writes QSettings into its own folder, never the user's profile."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture
def window(qtbot, checkpoints, tmp_path):
    from app.main_window import MainWindow
    from app.settings import Settings

    s = Settings()
    s.runs_dir = str(tmp_path / "runs")
    w = MainWindow(settings=s, teacher=str(checkpoints[0]), student=str(checkpoints[1]))
    w.quiet_errors = True
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.compare.comparison is not None, timeout=60000)
    yield w
    w.shutdown()


def _open_and_predict(qtbot, w, path: Path) -> dict:
    with qtbot.waitSignal(w.compare.predicted, timeout=60000) as blocker:
        w.open_path(str(path))
    return blocker.args[0]


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


def _smoke_args(modelnet40, out, epochs=1):
    return ["train", "--model", "pointnet", "--width", "0.125", "--data", str(modelnet40), "--preset", "smoke",
            "--out", str(out), "--limit-train", "16", "--limit-test", "8", "--epochs", str(epochs),
            "--batch-size", "8", "--events", "json"]


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


def test_form_arguments_follow_the_job_kind(training, tmp_path):
    training.job_kind.setCurrentText("compress")
    training.temperature.setValue(2)
    training.epochs.setValue(3)
    args, out = training.form_args()
    assert args[0] == "compress" and args[args.index("--temperature") + 1] == "2"
    assert args[args.index("--epochs") + 1] == "3" and "--teacher" in args
    assert Path(out).parent == tmp_path
    training.job_kind.setCurrentText("train")  # no teacher: no temperature, whatever the field says
    args, _ = training.form_args()
    assert "--temperature" not in args and "--teacher" not in args
    training.job_kind.setCurrentText("kd")
    training.temperature.setValue(0)  # "preset": the flag is left out
    assert "--temperature" not in training.form_args()[0]


@pytest.mark.timeout(150)
def test_smoke_job_runs_from_the_panel_and_curves_fill(qtbot, training, modelnet40, tmp_path):
    out = tmp_path / "run1"
    with qtbot.waitSignal(training.job_finished, timeout=140000) as blocker:
        training.submit(_smoke_args(modelnet40, out), str(out))
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


@pytest.mark.timeout(170)
def test_cancel_leaves_a_resumable_run_and_resume_finishes_it(qtbot, training, modelnet40, tmp_path):
    out = tmp_path / "run2"
    with qtbot.waitSignal(training.event_received, timeout=120000,
                          check_params_cb=lambda ev: ev.get("type") == "step"):
        training.submit(_smoke_args(modelnet40, out, epochs=4), str(out))
    with qtbot.waitSignal(training.job_finished, timeout=60000) as blocker:
        training.cancel()
    _, code, outcome = blocker.args
    assert code == 130 and "Cancelled" in outcome and "resum" in outcome.lower()
    assert (out / "last.pt").is_file() and not (out / "report.json").exists()
    # Resume continues the same run directory to the end (not from step 0)
    steps = []
    training.event_received.connect(lambda ev: steps.append(ev.get("global_step")) if ev.get("type") == "step" else None)
    with qtbot.waitSignal(training.job_finished, timeout=150000) as blocker:
        training.resume(str(out))
    run_dir, code, outcome = blocker.args
    assert run_dir == str(out) and code == 0 and outcome.startswith("Finished"), outcome
    assert training.status.text().startswith("Finished")
    assert (out / "report.json").is_file()
    assert steps and min(s for s in steps if s is not None) > 1


@pytest.mark.timeout(120)
def test_disagreement_scan_ranks_shapes(qtbot, window, modelnet40):
    panel = window.disagreements
    panel.data.setText(str(modelnet40))
    panel.limit.setValue(48)
    with qtbot.waitSignal(panel.scanned, timeout=100000) as blocker:
        panel.scan()
    res = blocker.args[0]
    k = len(res["class_names"])
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


@pytest.mark.timeout(90)
def test_up_axis_control_changes_the_models_input_and_frames_the_shape(qtbot, window):
    from core.data.preprocess import prepare_points

    bunny = SCANS / "bun_zipper.ply"
    if not bunny.is_file():
        pytest.skip("no Stanford bunny in the shared scans")
    z_res = _open_and_predict(qtbot, window, bunny)
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
    rel = lambda b, img: (b[3] - b[1]) / img.height()  # noqa: E731
    assert abs(rel(ax, after) - rel(bx, before)) < 0.05


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


@pytest.mark.timeout(170)
def test_queue_runs_two_jobs_one_after_the_other(qtbot, training, modelnet40, tmp_path):
    a, b = tmp_path / "qa", tmp_path / "qb"
    finished = []
    training.job_finished.connect(lambda *args: finished.append(args))
    started = []
    training.job_started.connect(started.append)
    training.submit(_smoke_args(modelnet40, a), str(a))
    training.submit(_smoke_args(modelnet40, b), str(b))
    # the second waits in the queue the user sees while the first runs
    assert training.has_running_job() and training.queue_list.count() == 1
    assert str(b) in training.queue_list.item(0).text()
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=160000)
    assert [f[0] for f in finished] == [str(a), str(b)] and started == [str(a), str(b)]
    assert all(f[1] == 0 for f in finished), finished
    assert (a / "report.json").is_file() and (b / "report.json").is_file()
    assert training.queue_list.count() == 0 and not training.has_running_job()


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

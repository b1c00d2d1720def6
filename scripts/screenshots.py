"""Save PNG screenshots of the main views of the app into docs/screenshots/.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py --bundle assets/models/pointnet

With ``--bundle DIR`` only the compare view of DIR's teacher and student on the airplane sample is
saved, as ``compare_<DIR name>.png``.

Uses the bundled checkpoints when present, else small untrained stand-ins (predictions then mean nothing).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
DATA = ROOT.parent / "shared" / "data" / "modelnet40_npy1024"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="a folder with teacher.pt and student.pt")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    tmp = Path(tempfile.mkdtemp(prefix="t3dnet_shots_"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app = QApplication([sys.argv[0]])
    sys.path.insert(0, str(ROOT / "bench"))
    from gui_latency import make_checkpoints

    from app.main_window import MainWindow
    from app.settings import Settings

    s = Settings()
    s.runs_dir = str(tmp / "runs")
    teacher, student = make_checkpoints(tmp)
    if args.bundle:
        teacher, student = str(args.bundle / "teacher.pt"), str(args.bundle / "student.pt")
    win = MainWindow(settings=s, teacher=teacher, student=student)
    win.quiet_errors = True
    win.resize(1440, 900)
    win.show()

    def wait(pred, timeout):
        end = time.perf_counter() + timeout
        while not pred() and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    def settle(seconds=1.0):
        wait(lambda: False, seconds)

    OUT.mkdir(parents=True, exist_ok=True)
    wait(lambda: win.compare.comparison is not None, 120)
    got = []
    win.compare.predicted.connect(got.append)
    from app.shapes import list_samples

    samples = list_samples()
    first = next((p for p in samples if p.stem == "airplane"), samples[0] if samples else None)
    scans = ROOT.parent / "shared" / "data" / "scans"
    for name, path in (("compare_sample", first), ("compare_scan_mesh", scans / "bun_zipper.ply"),
                       ("compare_scan_rgb", scans / "table_scene_mug_stereo_textured.pcd")):
        if path is None or not Path(path).exists():
            continue
        got.clear()
        # the Stanford bunny's up axis is y: the view and the models' input are converted
        win.compare.up_axis.setCurrentText("y" if name == "compare_scan_mesh" else "z")
        wait(lambda: bool(got) or win.compare.shape is None, 60)
        got.clear()
        win.open_path(str(path))
        wait(lambda: bool(got) and got[-1]["shape_path"] == str(path), 120)
        if name == "compare_scan_rgb":
            win.color_mode.setCurrentIndex(2)
        settle(2.0)
        if args.bundle:
            win.grab().save(str(OUT / f"compare_{args.bundle.name}.png"))
            win.shutdown()
            return 0
        win.grab().save(str(OUT / f"{name}.png"))
        win.viewer.grab().save(str(OUT / f"{name}_view.png"))
    win.color_mode.setCurrentIndex(0)
    if first is not None:  # a 1,024-point sample: the perturbed model input is drawn as small crosses
        got.clear()
        win.open_path(str(first))
        wait(lambda: bool(got) and got[-1]["shape_path"] == str(first), 120)
    got.clear()
    win.compare.rotation.setValue(120)
    win.compare.dropout.setValue(40)
    win.compare.all_classes.setChecked(True)
    wait(lambda: bool(got), 60)
    settle(2.0)
    win.grab().save(str(OUT / "compare_robustness.png"))
    win.compare.reset_perturbation()
    win.compare.all_classes.setChecked(False)

    # training: a short smoke job from the panel
    win.tabs.setCurrentWidget(win.training)
    out = tmp / "runs" / "smoke_train"
    done = []
    win.training.job_finished.connect(lambda *a: done.append(a))
    win.training.submit(["train", "--model", "pointnet", "--width", "0.125", "--data", str(DATA), "--preset", "smoke",
                         "--out", str(out), "--limit-train", "48", "--limit-test", "16", "--epochs", "3",
                         "--events", "json"], str(out))
    wait(lambda: bool(done), 300)
    settle(1.0)
    win.grab().save(str(OUT / "training.png"))

    win.tabs.setCurrentWidget(win.runs)
    win.runs.refresh()
    win.runs.table.selectAll()
    settle(1.0)
    win.grab().save(str(OUT / "runs.png"))

    win.tabs.setCurrentWidget(win.disagreements)
    win.disagreements.data.setText(str(DATA))
    win.disagreements.limit.setValue(120)
    scanned = []
    win.disagreements.scanned.connect(scanned.append)
    win.disagreements.scan()
    wait(lambda: bool(scanned), 300)
    settle(1.0)
    win.grab().save(str(OUT / "disagreements.png"))

    win.demo_action.setChecked(True)
    # The offscreen platform's "full screen" is a small default screen: show the demo layout at the
    # size of the other screenshots instead.
    win.showNormal()
    win.resize(1440, 900)
    win.splitter.setSizes([792, 648])
    got.clear()
    wait(lambda: bool(got), 60)
    settle(2.0)
    win.grab().save(str(OUT / "demo.png"))
    win.demo_action.setChecked(False)
    win.shutdown()
    print("saved:", *sorted(p.name for p in OUT.glob("*.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

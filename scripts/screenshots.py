"""Save PNG screenshots of the main views of the app into docs/screenshots/.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py --bundle assets/models/pointnet

With ``--bundle DIR`` only the compare view of DIR's teacher and student on the airplane sample is
saved, as ``compare_<DIR name>.png``. With ``--only scene`` (or any of the names below) only those
screenshots are taken: ``scene`` is ``scene_objects.png``, a room scan (fragment.pcd) with its objects'
boxes in the view and their list.

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
SCANS = ROOT.parent / "shared" / "data" / "scans"
SHOTS = ("compare", "robustness", "scene", "training", "runs", "disagreements", "demo")


def scene_objects(win, wait, settle, out: Path) -> Path | None:
    """A room scan (the table-top scan when it is absent): its objects found (boxes in the view, the
    list), the largest of them the models' input."""
    path = next((p for p in (SCANS / "fragment.pcd", SCANS / "table_scene_mug_stereo_textured.pcd") if p.exists()), None)
    if path is None:
        return None
    got, found = [], []
    on_pred, on_found = got.append, found.append
    win.compare.predicted.connect(on_pred)
    win.compare.objects_found.connect(on_found)
    win.compare.up_axis.setCurrentIndex(0)  # auto
    win.color_mode.setCurrentIndex(2)  # the scan's own colours: the boxes stand out
    win.open_path(str(path))
    wait(lambda path=path: bool(got) and got[-1]["shape_path"] == str(path), 120)
    win.compare.find_objects()
    wait(lambda: bool(found), 120)
    if found and found[0]:
        got.clear()
        win.compare.objects_table.choose(0)  # the largest object becomes what the models see
        wait(lambda: bool(got), 60)
    settle(2.5)
    target = out / "scene_objects.png"
    win.grab().save(str(target))
    win.compare.predicted.disconnect(on_pred)
    win.compare.objects_found.disconnect(on_found)
    win.color_mode.setCurrentIndex(0)
    return target


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="a folder with teacher.pt and student.pt")
    p.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS), help="take only these screenshots")
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
    scans = SCANS
    for name, path in (("compare_sample", first), ("compare_scan_mesh", scans / "bun_zipper.ply"),
                       ("compare_scan_rgb", scans / "table_scene_mug_stereo_textured.pcd")):
        if path is None or not Path(path).exists() or ("compare" not in args.only and not args.bundle):
            continue
        got.clear()
        win.compare.up_axis.setCurrentIndex(0)  # auto: the format's axis, else an estimate (the bunny: y)
        got.clear()
        win.open_path(str(path))
        wait(lambda path=path: bool(got) and got[-1]["shape_path"] == str(path), 120)
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
    if "scene" in args.only:
        shot = scene_objects(win, wait, settle, OUT)
        print("saved:", shot if shot else "no scene scan found: scene_objects.png not written")
    if args.only == ["scene"]:
        win.shutdown()
        return 0
    if first is not None and "robustness" in args.only:  # a 1,024-point sample: the perturbed input as small crosses
        got.clear()
        win.open_path(str(first))
        wait(lambda: bool(got) and got[-1]["shape_path"] == str(first), 120)
        got.clear()
        win.compare.tools.setCurrentWidget(win.compare.robustness_page)
        win.compare.rotation.setValue(120)
        win.compare.dropout.setValue(40)
        win.compare.all_classes.setChecked(True)
        wait(lambda: bool(got), 60)
        settle(2.0)
        win.grab().save(str(OUT / "compare_robustness.png"))
        win.compare.reset_perturbation()
        win.compare.all_classes.setChecked(False)

    if "training" in args.only:
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

    if "runs" in args.only:
        win.tabs.setCurrentWidget(win.runs)
        win.runs.refresh()
        win.runs.table.selectAll()
        settle(1.0)
        win.grab().save(str(OUT / "runs.png"))

    if "disagreements" in args.only:
        win.tabs.setCurrentWidget(win.disagreements)
        win.disagreements.data.setText(str(DATA))
        win.disagreements.limit.setValue(120)
        scanned = []
        win.disagreements.scanned.connect(scanned.append)
        win.disagreements.scan()
        wait(lambda: bool(scanned), 300)
        settle(1.0)
        win.grab().save(str(OUT / "disagreements.png"))

    if "demo" in args.only:
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

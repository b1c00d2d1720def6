"""Save PNG screenshots of the main views of the app into docs/screenshots/.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py --bundle assets/models/pointnet

With ``--bundle DIR`` only the compare view of DIR's teacher and student on the airplane sample is
saved, as ``compare_<DIR name>.png``. With ``--only scene`` (or any of the names below) only those
screenshots are taken: ``scene`` is ``scene_objects.png``, a room scan (fragment.pcd) with its objects'
boxes in the view and their list.

The app runs with a temporary home folder (``HOME``) holding the datasets (links to the shared ones) under
``~/data`` and archived runs of docs/runs under ``~/runs``, so every path it shows reads as a user's
(``~/...``, or relative to the app's folder) and never names this machine. ``training.png`` is a two-stage
``compress`` smoke job started from the Training form (well under a minute on a CPU); ``runs.png`` the
archived runs.

Uses the bundled checkpoints when present, else small untrained stand-ins (predictions then mean nothing).
"""

from __future__ import annotations

import json
import os
import shutil
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
RUNS = ROOT / "docs" / "runs"
#: Archived runs shown in the Runs tab (folder under docs/runs -> its name under ~/runs): the 20-epoch
#: comparison of the PointNet++ students and the PointNet family (teacher, scratch, T3DNet student).
ARCHIVED_RUNS = {**{f"comparison20/{m}/seed0": f"{m}_seed0"
                    for m in ("scratch", "kd", "fitnet", "dml", "netaug", "e2e", "t3dnet")},
                 "teacher_pointnet": "pointnet_teacher", "comparison_pointnet20/scratch/seed0": "pointnet_scratch_seed0",
                 "comparison_pointnet20/t3dnet/seed0": "pointnet_t3dnet_seed0"}
#: The runs whose curves the Runs screenshot overlays.
CURVES = ("scratch_seed0", "kd_seed0", "netaug_seed0", "t3dnet_seed0")


def make_home(home: Path) -> Path:
    """A home folder as a user's might be: the datasets under ~/data (links), the archived runs under
    ~/runs (their reports only: the checkpoints are not archived, so the copies name none)."""
    (home / "data").mkdir(parents=True)
    for src in (DATA, SCANS):
        if src.exists():
            (home / "data" / src.name).symlink_to(src, target_is_directory=True)
    for src, name in ARCHIVED_RUNS.items():
        if (RUNS / src / "report.json").is_file():
            dst = home / "runs" / name
            shutil.copytree(RUNS / src, dst)
            report = json.loads((dst / "report.json").read_text())
            report.pop("checkpoint", None)
            (dst / "report.json").write_text(json.dumps(report))
    return home


def scene_objects(win, wait, settle, out: Path, scans: Path) -> Path | None:
    """A room scan (the table-top scan when it is absent): its objects found (boxes in the view, the
    list), the largest of them the models' input."""
    path = next((p for p in (scans / "fragment.pcd", scans / "table_scene_mug_stereo_textured.pcd") if p.exists()), None)
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


def training_job(win, wait, settle, data: Path, out: Path) -> bool:
    """A two-stage compress smoke job filled in and started from the Training form, as a user would:
    its curves on one epoch axis with the stage boundary marked. Returns whether it finished."""
    from app.paths import display_path

    t = win.training
    win.tabs.setCurrentWidget(t)
    settle(0.5)
    t.job_kind.setCurrentText("compress")
    t.data[1].setText(display_path(data))
    t.preset.setCurrentText("smoke")
    t.epochs.setValue(3)  # per stage
    t.limit_train.setValue(48)
    t.limit_test.setValue(32)
    t.out.setText(display_path(out))
    done = []
    t.job_finished.connect(lambda *a: done.append(a))
    if not t.submit_from_form():
        print("training job not started:", t.form_error.text(), file=sys.stderr)
        return False
    wait(lambda: bool(done), 300)
    settle(1.0)
    return bool(done) and done[0][1] == 0


def select_runs(panel, names) -> None:
    """Select the Runs table's rows of the runs called ``names`` (their curves are drawn), the table tall
    enough for every row."""
    from PySide6.QtCore import QItemSelectionModel

    table = panel.table
    rows = table.verticalHeader().length() + table.horizontalHeader().height() + 2 * table.frameWidth() + 2
    split = table.parentWidget()
    split.setSizes([rows, max(split.height() - rows, 1)])
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    panel.table.clearSelection()
    for r in range(panel.table.rowCount()):
        if panel.table.item(r, 0).text() in names:
            panel.table.selectionModel().select(panel.table.model().index(r, 0), flags)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="a folder with teacher.pt and student.pt")
    p.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS), help="take only these screenshots")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="t3dnet_shots_"))
    try:
        return take(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def take(args, tmp: Path) -> int:
    """Take the screenshots ``args`` asks for, with ``tmp`` as the scratch folder (the home, settings)."""
    bundle = args.bundle.resolve() if args.bundle else None
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = make_home(tmp / "home")
    os.environ["HOME"] = str(home)  # before Qt starts: the app and its jobs see this home
    data, scans = home / "data" / DATA.name, home / "data" / SCANS.name
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app = QApplication([sys.argv[0]])
    sys.path.insert(0, str(ROOT / "bench"))
    from gui_latency import make_checkpoints

    from app.main_window import MainWindow
    from app.settings import Settings

    s = Settings()
    s.runs_dir = str(home / "runs")
    s.data_dir = str(data)
    teacher, student = make_checkpoints(tmp)
    if bundle:
        teacher, student = str(bundle / "teacher.pt"), str(bundle / "student.pt")
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
    for name, path in (("compare_sample", first), ("compare_scan_mesh", scans / "bun_zipper.ply")):
        if path is None or not Path(path).exists() or ("compare" not in args.only and not bundle):
            continue
        win.compare.up_axis.setCurrentIndex(0)  # auto: the format's axis, else an estimate (the bunny: y)
        got.clear()
        win.open_path(str(path))
        wait(lambda path=path: bool(got) and got[-1]["shape_path"] == str(path), 120)
        settle(2.0)
        if bundle:
            win.grab().save(str(OUT / f"compare_{bundle.name}.png"))
            win.shutdown()
            return 0
        win.grab().save(str(OUT / f"{name}.png"))
    if "scene" in args.only:
        shot = scene_objects(win, wait, settle, OUT, scans)
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
        # Outside ~/runs: the Runs screenshot shows the archived runs, not this smoke run.
        if training_job(win, wait, settle, data, home / "smoke" / "compress_smoke"):
            win.grab().save(str(OUT / "training.png"))
        else:
            print("training job failed: training.png not written", file=sys.stderr)

    if "runs" in args.only:
        win.tabs.setCurrentWidget(win.runs)
        win.runs.refresh()
        win.runs.table.sortItems(0)
        select_runs(win.runs, CURVES)
        settle(1.0)
        win.grab().save(str(OUT / "runs.png"))

    if "disagreements" in args.only:
        from app.paths import display_path

        win.tabs.setCurrentWidget(win.disagreements)
        win.disagreements.data.setText(display_path(data))
        win.disagreements.limit.setValue(120)
        scanned = []
        win.disagreements.scanned.connect(scanned.append)
        win.disagreements.scan()
        wait(lambda: bool(scanned), 300)
        win.gallery_dock.hide()  # the room for the list's every column beside the four plots
        settle(0.5)
        table = win.disagreements.table
        wide = (table.verticalHeader().width() + table.horizontalHeader().length() + 2 * table.frameWidth()
                + table.verticalScrollBar().sizeHint().width())
        split = table.parentWidget().parentWidget()
        split.setSizes([wide, max(split.width() - wide, 1)])
        settle(1.0)
        win.grab().save(str(OUT / "disagreements.png"))
        win.gallery_dock.show()

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

"""``predict`` over folders and several files (--jsonl, --csv, exit statuses) and File > Predict folder.

The bundled models (assets/models) answer, as the CLI uses them by default. Timings are never asserted.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.cli import main as cli_main
from core.cli.errors import EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"
pytestmark = pytest.mark.timeout(300)

# The folder of the tests, in the order the walk must give (sorted by relative path, the sub-folder's
# file after the top-level ones); README.md is skipped (no reader takes .md).
GOOD = ["a_chair.npy", "c_airplane.xyz", "d_box.off", "sub/e_toilet.pcd"]
BAD = "b_corrupt.ply"
ORDER = ["a_chair.npy", BAD, "c_airplane.xyz", "d_box.off", "sub/e_toilet.pcd"]


# ---------------------------------------------------------------------------------------------
# writers (by hand, so that the tests do not trust the readers under test)


def sample(name: str) -> np.ndarray:
    return np.load(SAMPLES / f"{name}.npy")[:, :3].astype(np.float32)


def write_xyz(path: Path, pts: np.ndarray) -> None:
    path.write_text("".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in pts))


def write_pcd_ascii(path: Path, pts: np.ndarray) -> None:
    head = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
            f"COUNT 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\nDATA ascii\n")
    path.write_text(head + "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in pts))


def write_box_off(path: Path) -> None:
    """A closed box 2 x 1 x 0.5 as an OFF mesh (8 vertices, 12 triangles)."""
    v = [(x, y, z) for x in (0, 2) for y in (0, 1) for z in (0, 0.5)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    path.write_text("OFF\n8 12 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in v)
                    + "".join(f"3 {a} {b} {c}\n" for a, b, c in tris))


def make_folder(root: Path, bad: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    np.save(root / "a_chair.npy", sample("chair"))
    if bad:
        (root / BAD).write_bytes(b"\x00\x01garbage, not a mesh" * 10)
    write_xyz(root / "c_airplane.xyz", sample("airplane"))
    write_box_off(root / "d_box.off")
    write_pcd_ascii(root / "sub" / "e_toilet.pcd", sample("toilet"))
    (root / "README.md").write_text("notes, not a 3D file\n")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "shapes")


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=280, cwd=ROOT, env=env, check=False)


def predict(capsys, *args) -> tuple[int, str, str]:
    """``main.py predict ARGS`` in this process: (exit status, stdout, stderr)."""
    code = cli_main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# ---------------------------------------------------------------------------------------------
# the CLI


@pytest.mark.slow
def test_folder_jsonl_one_object_per_file_sorted_bad_file_reported_exit_3(folder, tmp_path):
    table = tmp_path / "predictions.csv"
    r = run_cli(folder, "--jsonl", "--csv", table)
    assert r.returncode == EXIT_SOME_FAILED == 3, r.stderr
    answers = jsonl(r.stdout)  # every stdout line is a JSON object: the progress and summary go to stderr
    assert [a["path"] for a in answers] == [os.path.join(str(folder), rel) for rel in ORDER]
    bad = answers[1]
    assert set(bad) == {"path", "error"} and BAD in bad["error"] and "\n" not in bad["error"]
    for a in answers[:1] + answers[2:]:
        assert a["file"] == a["path"] == a["input"]["path"]
        assert {"format", "up_axis", "up_axis_source", "scene"} <= set(a["input"])
        for role in ("teacher", "student"):
            top = a[role]["top"]
            assert len(top) == 5 and top[0]["prob"] >= top[1]["prob"] and 0 < top[0]["prob"] <= 1
            assert isinstance(a[role]["in_vocabulary"], bool)  # the bundled models are calibrated
        assert a["verdict"] in ("agree", "disagree", "neither_recognises", "only_teacher_recognises",
                                "only_student_recognises")
    by_name = {Path(a["path"]).name: a for a in answers}
    assert [by_name[n]["input"]["format"] for n in ("a_chair.npy", "c_airplane.xyz", "d_box.off", "e_toilet.pcd")] == \
        ["npy", "xyz", "off", "pcd"]
    for name, cls in (("a_chair.npy", "chair"), ("c_airplane.xyz", "airplane"), ("e_toilet.pcd", "toilet")):
        assert by_name[name]["student"]["top"][0]["class"] == cls
        assert by_name[name]["teacher"]["top"][0]["class"] == cls
    assert "skipped 1 file" in r.stderr and ".md" in r.stderr
    assert "4 of 5 files predicted, 1 could not be read" in r.stderr

    rows = read_csv(table)
    assert list(rows[0]) == ["file", "teacher_class", "teacher_prob", "student_class", "student_prob", "agree", "error"]
    assert [row["file"] for row in rows] == [a["path"] for a in answers]
    assert rows[1]["error"] == bad["error"] and rows[1]["teacher_class"] == ""
    chair = rows[0]
    assert (chair["teacher_class"], chair["student_class"], chair["agree"], chair["error"]) == ("chair", "chair", "true", "")
    assert float(chair["student_prob"]) == pytest.approx(answers[0]["student"]["top"][0]["prob"], abs=1e-4)


@pytest.mark.slow
def test_all_good_exit_0_and_all_bad_exit_2(tmp_path, capsys):
    good = make_folder(tmp_path / "good", bad=False)
    code, out, err = predict(capsys, good, "--jsonl")
    assert code == EXIT_OK == 0, err
    assert [Path(a["path"]).name for a in jsonl(out)] == [Path(g).name for g in GOOD]
    assert all("error" not in a for a in jsonl(out))

    bad = tmp_path / "bad"
    (bad / "deeper").mkdir(parents=True)
    (bad / "x.ply").write_text("not a ply\n")
    (bad / "deeper" / "y.npy").write_bytes(b"\x93NUMPY truncated")
    code, out, err = predict(capsys, bad, "--jsonl")
    assert code == EXIT_USER_ERROR == 2
    assert [set(a) for a in jsonl(out)] == [{"path", "error"}] * 2


def test_several_file_and_folder_arguments_in_the_order_given(folder, tmp_path, capsys):
    table = tmp_path / "t.csv"
    args = [folder / "sub" / "e_toilet.pcd", folder / "a_chair.npy", folder / "sub", tmp_path / "missing.ply"]
    code, out, _ = predict(capsys, *args, "--jsonl", "--csv", table)
    answers = jsonl(out)
    assert [a["path"] for a in answers] == [str(args[0]), str(args[1]), os.path.join(str(folder / "sub"), "e_toilet.pcd"),
                                            str(args[3])]
    assert code == EXIT_SOME_FAILED and set(answers[3]) == {"path", "error"}
    assert [row["file"] for row in read_csv(table)] == [a["path"] for a in answers]


def test_folder_without_jsonl_prints_one_line_per_file(folder, capsys):
    code, out, _ = predict(capsys, folder)
    lines = out.splitlines()
    assert code == EXIT_SOME_FAILED and len(lines) == len(ORDER)
    assert lines[0].startswith(os.path.join(str(folder), "a_chair.npy") + ": teacher chair ")
    assert "student chair" in lines[0]
    assert lines[1].startswith("error: ") and BAD in lines[1]


@pytest.mark.slow
def test_single_file_jsonl_is_the_json_answer_with_its_path(capsys):
    chair = SAMPLES / "chair.npy"
    code, out, _ = predict(capsys, chair, "--json")
    single = json.loads(out)
    assert code == 0 and "path" not in single  # one file without --jsonl: today's output
    code, out, _ = predict(capsys, chair, "--jsonl")
    (line,) = jsonl(out)
    assert code == 0 and line.pop("path") == str(chair)

    def comparable(a: dict) -> dict:  # timings (and so auto's runtime) differ run to run; a batch of one
        a = json.loads(json.dumps(a))  # may differ in the last bits
        a["input"].pop("analysis_ms")
        for role in ("teacher", "student"):
            for key in ("latency_ms", "end_to_end_ms", "runtime"):
                a[role].pop(key)
            a[role]["top"] = [(t["class"], round(t["prob"], 4)) for t in a[role]["top"]]
        a["divergence"] = round(a["divergence"], 5)
        a["input"]["up_axis_scores"] = {k: round(v, 3) for k, v in a["input"]["up_axis_scores"].items()}
        return a

    assert comparable(line) == comparable(single)


def test_json_is_for_one_file_and_an_empty_folder_is_an_error(folder, tmp_path, capsys):
    code, out, err = predict(capsys, folder, "--json")
    assert code == EXIT_USER_ERROR and out == "" and "--jsonl" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    code, out, err = predict(capsys, tmp_path / "empty", "--jsonl")
    assert code == EXIT_USER_ERROR and out == "" and "no 3D files" in err and "skipped 1 file" in err


def test_csv_replaces_an_existing_table_only_once_it_is_complete(tmp_path):
    from core.folder_predict import write_csv

    table = tmp_path / "t.csv"
    table.write_text("the previous table\n")

    def answers():
        yield {"path": "a.npy", "error": "a.npy: broken"}
        raise KeyboardInterrupt  # the run stops half-way

    with pytest.raises(KeyboardInterrupt):
        write_csv(answers(), table)
    assert table.read_text() == "the previous table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left behind
    write_csv([{"path": "a.npy", "error": "a.npy: broken"}], table)
    assert table.read_text().splitlines() == ["file,teacher_class,teacher_prob,student_class,student_prob,agree,error",
                                              "a.npy,,,,,,a.npy: broken"]


def test_collect_files_walks_sorted_and_skips_unknown_extensions(folder):
    from core.folder_predict import collect_files

    found = collect_files([folder])
    assert found.files == [os.path.join(str(folder), rel) for rel in ORDER]
    assert found.skipped == [os.path.join(str(folder), "README.md")]
    named = collect_files([folder / "README.md"])  # a file named directly is tried whatever its extension
    assert named.files == [str(folder / "README.md")] and named.skipped == []


# ---------------------------------------------------------------------------------------------
# the app: File > Predict folder…


@pytest.fixture
def isolated_settings(tmp_path):
    """QSettings of the test go to its own folder, never the user's profile."""
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.mark.slow
def test_predict_folder_dialog_table_sort_export_and_open(qtbot, isolated_settings, folder, tmp_path):
    from app.main_window import MainWindow
    from app.settings import Settings
    from core.folder_predict import write_csv

    s = Settings()
    s.runs_dir = str(tmp_path / "runs")
    w = MainWindow(settings=s)  # the bundled models, as the CLI
    w.quiet_errors = True
    qtbot.addWidget(w)
    w.show()
    try:
        assert any(a.text() == "&Predict folder…" for a in w.menuBar().actions()[0].menu().actions())
        qtbot.waitUntil(lambda: w.compare.comparison is not None, timeout=60000)
        dlg = w.predict_folder(str(folder))
        with qtbot.waitSignal(dlg.run_finished, timeout=200000) as blocker:
            pass
        assert blocker.args == [4, 1]
        table = dlg.table
        assert table.rowCount() == len(ORDER)
        header = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
        assert header == ["File", "Teacher", "Teacher prob.", "Student", "Student prob.", "Agree", "Error"]
        # in file order until a header is clicked, each file shown relative to the folder
        assert [table.item(r, 0).text() for r in range(table.rowCount())] == [os.path.normpath(r) for r in ORDER]
        cells = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(table.columnCount())]
                 for r in range(table.rowCount())}
        chair = cells["a_chair.npy"]
        assert chair[1] == chair[3] == "chair" and chair[2].endswith("%") and chair[5] == "yes" and chair[6] == ""
        assert BAD in cells[BAD][6] and cells[BAD][1:6] == [""] * 5

        table.sortItems(4)  # the student's probability, numerically: the unreadable file (no probability) first
        probs = [table.item(r, 4).text() for r in range(table.rowCount())]
        assert probs[0] == "" and [float(p[:-1]) for p in probs[1:]] == sorted(float(p[:-1]) for p in probs[1:])

        out = tmp_path / "exported.csv"
        assert dlg.export_csv(str(out)) == str(out)
        expected = tmp_path / "expected.csv"
        write_csv(dlg.answers, expected)
        assert out.read_text() == expected.read_text()  # the CLI's table, in file order whatever the sort
        assert [row["file"] for row in read_csv(out)] == [os.path.join(str(folder), rel) for rel in ORDER]

        row = next(r for r in range(table.rowCount()) if table.item(r, 0).text().endswith("e_toilet.pcd"))
        loaded = []
        w.shape_loaded.connect(loaded.append)
        # waiting for the Compare view's prediction too: closing the window while it is still being
        # analysed aborts the test process at exit (a pool thread ends during interpreter shutdown)
        with qtbot.waitSignal(w.compare.predicted, timeout=60000):
            table.cellDoubleClicked.emit(row, 2)
        assert [shape.path for shape in loaded] == [os.path.join(str(folder), "sub", "e_toilet.pcd")]
        dlg.close()
    finally:
        w.shutdown()


def test_objects_failure_on_one_file_keeps_its_answer_and_the_run_goes_on(folder, monkeypatch):
    from core.folder_predict import predict_files
    from core.inference import Comparison

    comp = Comparison.from_paths(None, None)
    real = comp.predict_objects
    calls = []

    def flaky(xyz, *args, **kw):
        calls.append(len(xyz))
        if len(calls) == 2:
            raise RuntimeError("DBSCAN ran out of memory")
        return real(xyz, *args, **kw)

    monkeypatch.setattr(comp, "predict_objects", flaky)
    files = [str(folder / f) for f in GOOD]
    answers = list(predict_files(comp, files, objects=True))
    assert [a["path"] for a in answers] == files and len(calls) == len(GOOD)
    assert all("teacher" in a and "error" not in a for a in answers)
    assert answers[1]["objects_error"] == "RuntimeError: DBSCAN ran out of memory" and "objects" not in answers[1]
    assert all("objects" in a and "objects_error" not in a for i, a in enumerate(answers) if i != 1)


def test_a_folders_axis_says_how_many_of_its_agreeing_estimates_were_unsure(tmp_path):
    from core.folder_predict import FOLDER_AXIS_SAMPLE, FolderUpAxis

    kept = {"z": float(np.log(0.3)), "y": float(np.log(0.6))}  # z kept by the margin, y likelier: unsure
    sure = {"z": float(np.log(0.95))}
    answers = iter([("z", kept)] * 3 + [("z", sure)] * (FOLDER_AXIS_SAMPLE - 3))
    axes = FolderUpAxis(lambda xyz: next(answers))
    path, notes = str(tmp_path / "f" / "a.npy"), []
    for _ in range(FOLDER_AXIS_SAMPLE):
        axes.estimator(path, notes)(None)
    assert axes.estimator(path, notes)(None) == ("z", {})
    assert notes == [f"up axis z: its folder's, estimated on its first {FOLDER_AXIS_SAMPLE} files "
                     f"({FOLDER_AXIS_SAMPLE} agree, 3 of them unsure: check it)"]
    # one unsure of eight: the seven sure ones agree on their own, nothing to check
    answers = iter([("z", kept)] + [("z", sure)] * (FOLDER_AXIS_SAMPLE - 1))
    axes, notes = FolderUpAxis(lambda xyz: next(answers)), []
    for _ in range(FOLDER_AXIS_SAMPLE + 1):
        axes.estimator(path, notes)(None)
    assert notes == [f"up axis z: its folder's, estimated on its first {FOLDER_AXIS_SAMPLE} files "
                     f"({FOLDER_AXIS_SAMPLE} agree)"]


def test_a_folder_whose_first_files_agree_gives_its_axis_to_the_rest(tmp_path, monkeypatch):
    from core.folder_predict import FOLDER_AXIS_AGREE, FOLDER_AXIS_SAMPLE, FolderUpAxis, predict_files
    from core.inference import Comparison

    same, mixed = tmp_path / "same", tmp_path / "mixed"
    for d, n in ((same, FOLDER_AXIS_SAMPLE + 3), (mixed, FOLDER_AXIS_SAMPLE + 10)):
        d.mkdir()
        for i in range(n):
            np.save(d / f"{i:02d}.npy", sample("chair"))
    comp = Comparison.from_paths(None, None)
    calls = []

    def fake_estimate(xyz):
        # 'same': always y. 'mixed': 5 y and 3 x on its first files (no agreement), then y every time,
        # which must not count: only the first files vote.
        calls.append(len(calls))
        k = len(calls) - FOLDER_AXIS_SAMPLE  # the call's place in 'mixed' (after 'same's sample)
        return ("x" if k in (2, 4, 6) else "y"), {"y": -0.1, "x": -2.0}

    monkeypatch.setattr(comp, "estimate_up_axis", fake_estimate)
    files = sorted(map(str, same.glob("*.npy"))) + sorted(map(str, mixed.glob("*.npy")))
    answers = list(predict_files(comp, files))
    first, later = answers[:FOLDER_AXIS_SAMPLE], answers[FOLDER_AXIS_SAMPLE:FOLDER_AXIS_SAMPLE + 3]
    assert all(a["input"]["up_axis"] == "y" and a["input"]["up_axis_scores"] for a in first)
    assert all(a["input"]["up_axis"] == "y" and a["input"]["up_axis_source"] == "estimated" for a in later)
    assert all(a["input"]["up_axis_scores"] == {} and "its folder's" in a["input"]["notes"][-1] for a in later)
    assert all(a["input"]["up_axis_confidence"] is None and a["input"]["up_axis_unsure"] is False for a in later)
    assert all("unsure" not in a["input"]["notes"][-1] for a in later)  # its sample was sure (y at 90%)
    # 'mixed' agrees less than FOLDER_AXIS_AGREE times in its sample: each of its files is estimated
    in_mixed = answers[FOLDER_AXIS_SAMPLE + 3:]
    assert len(calls) == FOLDER_AXIS_SAMPLE + len(in_mixed)
    assert all(a["input"]["up_axis_scores"] and not a["input"]["notes"] for a in in_mixed)
    assert [a["input"]["up_axis"] for a in in_mixed[:FOLDER_AXIS_SAMPLE]].count("x") == 3

    axes = FolderUpAxis(lambda xyz: ("y", {}))
    notes: list[str] = []
    for _ in range(FOLDER_AXIS_AGREE):
        axes.estimator(str(tmp_path / "f" / "a.npy"), notes)(None)
    assert axes.folder_axis(os.path.abspath(tmp_path / "f")) is None  # not decided before the sample is full
    assert axes.folder_axis(os.path.abspath(tmp_path / "g")) is None and notes == []

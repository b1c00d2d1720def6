"""The compression report (core.report, ``main.py report``): every section, the same numbers as
``evaluate`` on the same shapes, one self-contained file; and the Pareto front of runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.pareto import pareto_front

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "models" / "teacher.pt"
STUDENT = ROOT / "assets" / "models" / "student.pt"
SECTIONS = ("id='models'", "id='per-class'", "id='confusion'", "id='calibration'", "id='disagreements'",
            "id='partial'", "id='reproduce'")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "T3DNET_CACHE": os.environ["T3DNET_CACHE"]}


def assert_self_contained(page: str, images: int = 4) -> None:
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)) >= images
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert not re.search(r"""<(img|script|iframe)\b[^>]*\bsrc\s*=\s*["'](?!data:)""", page, re.I)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_report_of_the_bundled_models_has_evaluates_numbers(modelnet40, tmp_path):
    """``main.py report`` on the bundled models: every section, and each number equal to the one
    ``evaluate --limit N --fit-temperature M`` gives on the same shapes."""
    from core.inference import evaluate_checkpoint

    out = tmp_path / "report.html"
    cmd = [sys.executable, str(ROOT / "main.py"), "report", "--data", str(modelnet40), "--limit", "24",
           "--temperature-shapes", "16", "--out", str(out), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=280)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    page = out.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert section in page, section
    assert_self_contained(page)
    assert "ECE" in page and "machine" not in summary["teacher"]
    assert summary["machine"] in page  # the machine latency was measured on is named
    for role, ck in (("teacher", TEACHER), ("student", STUDENT)):
        ev = evaluate_checkpoint(ck, modelnet40, limit=24, temperature_shapes=16)
        got = summary[role]
        assert got["n"] == ev["n"] == 24
        for key in ("oa", "macc"):
            assert got[key] == ev[key], (role, key)
        # ECE and temperature come from logits that two loads of a model may compute on different runtimes
        # (``auto`` measures both at each load): equal to far below the page's two decimals, not bit for bit.
        for key in ("ece", "ece_temperature_scaled", "temperature"):
            assert got[key] == pytest.approx(ev[key], abs=1e-5), (role, key)
        assert f"{ev['oa'] * 100:.2f}%" in page and f"{ev['ece'] * 100:.2f}%" in page
        assert f"{got['params']:,}" in page and got["latency_ms"] > 0
    # The commands that reproduce the numbers are in the page.
    assert "main.py evaluate --checkpoint" in page and "--limit 24 --fit-temperature 16 --json" in page
    assert "Not measured for these checkpoints" in page  # partial views: only on request


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_report_measures_partial_views_per_class_and_confusion_like_evaluate(checkpoints, modelnet40, tmp_path):
    from core.inference import evaluate_checkpoint
    from core.report import ReportRequest, build_report

    teacher, student = checkpoints
    seen = []
    req = ReportRequest(teacher, student, str(modelnet40), limit=30, temperature_shapes=20, partial=True,
                        latency_runs=3, disagreements=3)
    out = tmp_path / "r.html"
    r = build_report(req, out, progress=lambda what, done, total: seen.append((what, done, total)))
    page = out.read_text(encoding="utf-8")
    assert r["html"] == page
    assert_self_contained(page, images=6)  # with partial views: overview, classes, confusion, calibration, shapes, partial
    for role, ck in (("teacher", teacher), ("student", student)):
        ev = evaluate_checkpoint(ck, modelnet40, limit=30)
        pv = evaluate_checkpoint(ck, modelnet40, limit=30, views="partial", severity=2)
        m = r["models"][role]
        assert m["per_class_acc"] == ev["per_class_acc"] and m["confusion"] == ev["confusion"]
        assert m["partial"]["oa"] == pytest.approx(pv["oa"]) and m["partial"]["macc"] == pytest.approx(pv["macc"])
        assert f"{pv['oa'] * 100:.2f}%" in page
    diff = np.asarray(r["models"]["student"]["confusion"]) - np.asarray(r["models"]["teacher"]["confusion"])
    for c in r["confusion_changes"]:
        i, j = r["class_names"].index(c["true"]), r["class_names"].index(c["predicted"])
        assert c["student"] - c["teacher"] == diff[i, j] > 0
    assert len(r["disagreements"]) == 3 and all(d["teacher"] != d["student"] for d in r["disagreements"])
    assert [d["js"] for d in r["disagreements"]] == sorted((d["js"] for d in r["disagreements"]), reverse=True)
    # Progress: one stream that only goes forward and ends complete.
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones) and seen[-1][1] == seen[-1][2] and seen[-1][0] == "written"
    assert "--partial --severity 2" in page


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cancelled_report_writes_nothing(checkpoints, modelnet40, tmp_path):
    from core.report import ReportCancelled, ReportRequest, build_report

    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    out = tmp_path / "r.html"
    with pytest.raises(ReportCancelled):
        build_report(ReportRequest(*checkpoints, str(modelnet40), limit=200, temperature_shapes=20), out,
                     progress=lambda *a: None, cancelled=cancelled)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_report_refuses_bad_input_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "report", "--data", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "r.html")], capture_output=True, text=True, cwd=ROOT, env=_env(),
                       timeout=50)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "nowhere" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --- Pareto front ---------------------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_pareto_front_of_a_given_set_of_points():
    # (cost, accuracy): lower cost and higher accuracy are better.
    pts = [(10, 0.80),   # 0 front: cheapest
           (20, 0.85),   # 1 front
           (25, 0.84),   # 2 dominated by 1
           (30, 0.90),   # 3 front
           (30, 0.88),   # 4 dominated by 3 (same cost, less accurate)
           (40, 0.90),   # 5 dominated by 3 (same accuracy, dearer)
           (50, 0.93),   # 6 front: most accurate
           (5, float("nan")),  # 7 no accuracy: never on it
           (20, 0.85)]   # 8 duplicate of 1: the first is kept
    assert pareto_front(pts) == [0, 1, 3, 6]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5)]) == [0]
    assert pareto_front([(None, 0.9), (2.0, 0.1)]) == [1]


# --- the app: File > Export report… ----------------------------------------------------------------
@pytest.fixture
def window(make_window, checkpoints, modelnet40):
    pytest.importorskip("pytestqt")
    return make_window(*checkpoints, data_dir=modelnet40)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("suffix", [".html", ".pdf"])
def test_app_exports_the_report_of_the_loaded_models(qtbot, window, tmp_path, suffix):
    labels = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert "Export &report…" in labels
    out = tmp_path / f"report{suffix}"
    job = window.export_report(str(out), limit=20, temperature_shapes=10, latency_runs=2, disagreements=2)
    assert job.dialog.isVisible()
    with qtbot.waitSignal(job.written, timeout=200000) as blocker:
        pass
    assert blocker.args == [str(out)] and not job.dialog.isVisible()
    data = out.read_bytes()
    if suffix == ".pdf":
        assert data.startswith(b"%PDF") and data.count(b"/Subtype /Image") >= 4  # the pictures are in it
    else:
        assert_self_contained(data.decode("utf-8"))
        assert Path(window.compare.teacher.checkpoint).name in data.decode("utf-8")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_app_report_can_be_cancelled(qtbot, window, tmp_path):
    out = tmp_path / "report.html"
    job = window.export_report(str(out), limit=400, temperature_shapes=10, latency_runs=2)
    from PySide6.QtWidgets import QPushButton

    cancel = job.dialog.findChild(QPushButton)
    assert cancel.text() == "Cancel"
    with qtbot.waitSignal(job.cancelled, timeout=100000):
        cancel.click()  # as the user does
    assert not out.exists()


# --- a browser shows it ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_headless_chromium_renders_the_report_with_its_pictures(checkpoints, modelnet40, tmp_path):
    """The page as a browser shows it, network refused: its pictures are drawn (the text and tables are
    grey, the pictures coloured: the screenshot has far more coloured pixels than the page without them)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from report_screenshot import find_browser, screenshot

    browser = find_browser()
    if browser is None:
        pytest.skip("no headless Chromium on PATH (Debian: apt-get install chromium-headless-shell)")
    from matplotlib.image import imread

    from core.report import ReportRequest, build_report

    page = build_report(ReportRequest(*checkpoints, str(modelnet40), limit=20, temperature_shapes=10,
                                      latency_runs=2, disagreements=2), tmp_path / "r.html")["html"]
    (tmp_path / "bare.html").write_text(re.sub(r'<img src="data:[^"]+"', '<img src=""', page), encoding="utf-8")
    shots = {name: imread(screenshot(tmp_path / f"{name}.html", tmp_path / f"{name}.png", browser, 900, 6000))
             for name in ("r", "bare")}
    assert shots["r"].shape[:2] == (6000, 900)
    colour = {name: float((img[..., :3].max(-1) - img[..., :3].min(-1) > 0.2).mean()) for name, img in shots.items()}
    assert colour["r"] - colour["bare"] > 0.002, colour  # the links are coloured in both

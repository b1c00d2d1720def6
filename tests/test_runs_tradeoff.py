"""Runs view: every run as a point of OA against a chosen cost, the Pareto front drawn, a click on a
point selects that run in the table (pytest-qt, offscreen)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")

# (run, OA, params, latency ms, checkpoint bytes)
RUNS = [("tiny", 0.80, 10_000, 5.0, 100), ("small", 0.85, 20_000, 9.0, 400), ("dominated", 0.84, 30_000, 12.0, 300),
        ("big", 0.90, 1_000_000, 60.0, 5000), ("running", None, None, None, None)]


@pytest.fixture
def panel(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)  # never the user's settings
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from app.runs_panel import RunsPanel
    from app.settings import Settings

    runs = tmp_path / "runs"
    for name, oa, params, latency, size in RUNS:
        d = runs / name
        d.mkdir(parents=True)
        if oa is None:  # an unfinished run: events only
            (d / "events.jsonl").write_text(json.dumps({"type": "start", "job": "netaug"}) + "\n")
            continue
        (d / "report.json").write_text(json.dumps({"job": "t3dnet", "oa": oa, "macc": oa - 0.02, "params": params,
                                                   "macs": params * 100, "latency_ms_cpu_b1": latency, "epochs": 3,
                                                   "model": {"name": "pointnet2_ssg", "width": 0.125}}))
        (d / "student.pt").write_bytes(b"\0" * size)
    s = Settings()
    s.runs_dir = str(runs)
    p = RunsPanel(s)
    qtbot.addWidget(p)
    p.resize(1200, 800)
    p.show()
    qtbot.waitExposed(p)
    return p


def _index(panel, name: str) -> int:
    return next(i for i, r in enumerate(panel.runs) if r["run"] == name)


@pytest.mark.timeout(60)
def test_tradeoff_plots_every_finished_run_and_the_pareto_front(panel):
    x, y = panel.tradeoff_points.getData()
    assert len(x) == 4  # the unfinished run has no OA: not plotted
    assert panel.tradeoff_cost.currentText().startswith("latency")
    assert [panel.runs[i]["run"] for i in panel.front] == ["tiny", "small", "big"]
    fx, fy = panel.front_curve.getData()
    assert np.allclose(10 ** np.asarray(fx), [5.0, 9.0, 60.0]) and np.allclose(fy, [80, 85, 90])  # log x axis

    panel.tradeoff_cost.setCurrentText("file size")  # the run's checkpoint file
    fx, _ = panel.front_curve.getData()
    # by file size "dominated" (300 B, 84%) is cheaper than "small" (400 B, 85%): both on the front
    assert [panel.runs[i]["run"] for i in panel.front] == ["tiny", "dominated", "small", "big"]
    assert np.allclose(10 ** np.asarray(fx), [100, 300, 400, 5000])
    assert "file size" in panel.tradeoff.getPlotItem().getAxis("bottom").labelText

    panel.tradeoff_cost.setCurrentText("parameters")
    assert [panel.runs[i]["run"] for i in panel.front] == ["tiny", "small", "big"]


@pytest.mark.timeout(60)
def test_clicking_a_point_selects_its_run_in_the_table(qtbot, panel):
    from PySide6.QtCore import QPointF, Qt

    panel.table.sortItems(3, Qt.SortOrder.DescendingOrder)  # rows no longer in run order
    target = _index(panel, "dominated")
    vb = panel.tradeoff.getPlotItem().getViewBox()
    panel.tradeoff.getPlotItem().enableAutoRange()
    qtbot.wait(50)
    scene_pos = vb.mapViewToScene(QPointF(np.log10(12.0), 84.0))
    pos = panel.tradeoff.mapFromScene(scene_pos)
    qtbot.mouseClick(panel.tradeoff.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: [r["run"] for r in panel.selected_runs()] == ["dominated"], timeout=5000)
    row = panel.table.selectedItems()[0].row()
    assert panel.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == target
    mx, my = panel.selected_marks.getData()
    assert np.allclose(10 ** np.asarray(mx), [12.0]) and np.allclose(my, [84.0])  # the chosen run is ringed

"""Shared fixtures: paths to ../shared/data (tests skip with a reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("T3DNET_DATA", ROOT.parent / "shared" / "data"))
MODELNET40 = DATA / "modelnet40_npy1024"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def modelnet40() -> Path:
    if not MODELNET40.is_dir():
        pytest.skip(f"ModelNet40 not found at {MODELNET40} (shared data absent)")
    return MODELNET40


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder not found at {DATA}")
    return DATA


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Dataset caches of the tests go to a temporary folder, never the user's."""
    if "T3DNET_CACHE" not in os.environ:
        os.environ["T3DNET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    """A small untrained teacher and student over the ModelNet40 classes (PointNet: fast on CPU);
    no dataset needed."""
    import torch

    from core.data.datasets import MODELNET40_CLASSES
    from core.engine.checkpoint import save_model
    from core.models import create_model

    names = list(MODELNET40_CLASSES)
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_model(d / "teacher.pt", create_model("pointnet", num_classes=len(names), width=0.25), names)
    torch.manual_seed(1)
    save_model(d / "student.pt", create_model("pointnet", num_classes=len(names), width=0.125), names)
    return str(d / "teacher.pt"), str(d / "student.pt")


@pytest.fixture
def make_window(qtbot, tmp_path):
    """Opens the main window on a teacher and a student (``make_window(teacher, student, data_dir=None)``),
    with its settings in ``tmp_path`` (never the user's), and shuts it down after the test."""
    from PySide6.QtCore import QSettings

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    opened = []

    def make(teacher, student, data_dir=None):
        from app.main_window import MainWindow
        from app.settings import Settings

        s = Settings()
        s.runs_dir = str(tmp_path / "runs")
        if data_dir is not None:
            s.data_dir = str(data_dir)
        w = MainWindow(settings=s, teacher=str(teacher), student=str(student))
        w.quiet_errors = True
        qtbot.addWidget(w)
        w.show()
        qtbot.waitUntil(lambda: w.compare.comparison is not None, timeout=60000)
        opened.append(w)
        return w

    yield make
    for w in opened:
        w.shutdown()


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 5:  # no tests collected: never a silent pass
        print("\nerror: no tests were collected")
        session.exitstatus = 1

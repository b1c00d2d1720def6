"""Architecture: core/ never imports Qt, pyqtgraph, open3d.visualization or app/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, pkgutil, sys
BLOCKED = ("PySide6", "pyqtgraph", "open3d.visualization", "app", "superqt")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"core imported {name}")
        return None

sys.meta_path.insert(0, Blocker())
import core
count = 0
for mod in pkgutil.walk_packages(core.__path__, "core."):
    importlib.import_module(mod.name)
    count += 1
print(count)
"""


@pytest.mark.slow
def test_core_imports_without_qt():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert int(r.stdout.strip()) >= 15  # every module of core/ was imported

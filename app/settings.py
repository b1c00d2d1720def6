"""Typed access to the persisted user settings (QSettings): recent files, layout, paths, theme."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORG, APP = "T3DNet", "T3DNet Studio"
ROOT = Path(__file__).resolve().parents[1]
MAX_RECENT = 10


class Settings:
    """Thin typed wrapper; every value has a default so a fresh profile works.

    The file's format is ``QSettings.defaultFormat()``: native for the app (the user's profile),
    while tests, benchmarks and screenshot scripts set IniFormat with a path in a temporary folder
    (``QSettings(ORG, APP)`` would ignore that and always use the user's profile).
    """

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings(QSettings.defaultFormat(), QSettings.Scope.UserScope, ORG, APP)

    def _get(self, key, default, typ):
        v = self.q.value(key, default)
        try:
            return typ(v) if v is not None else default
        except (TypeError, ValueError):
            return default

    @property
    def recent_files(self) -> list[str]:
        v = self.q.value("recent_files", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def add_recent(self, path: str) -> list[str]:
        """Put ``path`` first in the recent files, stored absolute (a relative path would change
        meaning with the folder the app is started from)."""
        path = os.path.abspath(path)
        items = [path] + [p for p in self.recent_files if p != path]
        self.q.setValue("recent_files", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def clear_recent(self) -> None:
        self.q.setValue("recent_files", [])

    @property
    def theme(self) -> str:
        return self._get("theme", "dark", str)

    @theme.setter
    def theme(self, v: str) -> None:
        self.q.setValue("theme", v)

    @property
    def data_dir(self) -> str:
        return self._get("paths/data", str(ROOT.parent / "shared" / "data" / "modelnet40_npy1024"), str)

    @data_dir.setter
    def data_dir(self, v: str) -> None:
        self.q.setValue("paths/data", v)

    @property
    def runs_dir(self) -> str:
        return self._get("paths/runs", str(ROOT / "runs"), str)

    @runs_dir.setter
    def runs_dir(self, v: str) -> None:
        self.q.setValue("paths/runs", v)

    @property
    def open_dir(self) -> str:
        return self._get("paths/open", str(ROOT.parent / "shared" / "data" / "scans"), str)

    @open_dir.setter
    def open_dir(self, v: str) -> None:
        self.q.setValue("paths/open", v)

    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.q.value("window/geometry"), self.q.value("window/state")

    def save_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

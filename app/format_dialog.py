"""The dialog that asks how many float32 values one point of a headerless file holds.

A LiDAR ``.bin`` is just float32 numbers: its size and content do not always say whether a point
is 4 (KITTI), 5 (nuScenes, Waymo) or 6 values (x y z r g b). ``core.data.io`` then raises
``ChannelsNeededError`` with the counts that fit the file; the user picks one here.

Thread: GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QRadioButton,
                               QSpinBox, QVBoxLayout, QWidget)

#: floats per point -> the layouts people meet most often
COMMON_LAYOUTS = (
    (3, "x y z"),
    (4, "x y z intensity (KITTI, SemanticKITTI)"),
    (5, "x y z intensity ring (nuScenes) / x y z intensity elongation (Waymo)"),
    (6, "x y z r g b (S3DIS, ScanNet, SUN RGB-D exports)"),
)
MAX_CHANNELS = 64  # as core.data.io reads


class ChannelsDialog(QDialog):
    """Floats per point for a headerless float32 file: the common layouts (those that fit the file
    marked and the first of them chosen) or any other count."""

    def __init__(self, path: str, candidates: list[int] | None = None, message: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("How many values per point?")
        self.candidates = [int(c) for c in (candidates or [])]
        lay = QVBoxLayout(self)
        name = Path(path).name
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        intro = QLabel(f"<b>{name}</b> ({size:,} bytes) holds float32 values without a header. "
                       "How many values does one point have (x y z first)?")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        if message:
            why = QLabel(f"<small>{message}</small>")
            why.setWordWrap(True)
            why.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lay.addWidget(why)
        self.group = QButtonGroup(self)
        self.buttons: dict[int, QRadioButton] = {}
        fits = lambda n: size == 0 or size % (4 * n) == 0
        for n, words in COMMON_LAYOUTS:
            mark = "  — fits this file" if n in self.candidates else ("" if fits(n) else "  — does not fit the size")
            b = QRadioButton(f"{n}: {words}{mark}")
            b.setEnabled(fits(n))
            self.group.addButton(b, n)
            self.buttons[n] = b
            lay.addWidget(b)
        other = QHBoxLayout()
        self.other_button = QRadioButton("Other:")
        self.group.addButton(self.other_button, 0)
        self.other = QSpinBox(minimum=3, maximum=MAX_CHANNELS, value=7)
        self.other.valueChanged.connect(lambda _: self.other_button.setChecked(True))
        other.addWidget(self.other_button)
        other.addWidget(self.other)
        other.addWidget(QLabel("values per point"))
        other.addStretch(1)
        lay.addLayout(other)
        first = next((c for c in self.candidates), None)
        if first in self.buttons:
            self.buttons[first].setChecked(True)
        elif first is not None:
            self.other.setValue(first)
            self.other_button.setChecked(True)
        else:
            next((b for b in self.buttons.values() if b.isEnabled()), self.other_button).setChecked(True)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay.addWidget(box)

    def channels(self) -> int:
        """The chosen floats per point."""
        n = self.group.checkedId()
        return int(self.other.value()) if n <= 0 else int(n)

    def choose(self, n: int) -> None:
        """Choose ``n`` values per point (as clicking its button or typing it would)."""
        if n in self.buttons and self.buttons[n].isEnabled():
            self.buttons[n].setChecked(True)
        else:
            self.other.setValue(n)
            self.other_button.setChecked(True)

"""How the app shows a file path, and reads one typed back.

The app keeps absolute paths; it shows them shorter and without the machine's layout: inside the app's
own folder (the bundled models and samples, ``runs/``) relative to that folder, since jobs run there
and the forms read relative paths from there; under the home folder as ``~/...``; else as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bases() -> list[tuple[str, str]]:
    """(folder, how it is shown) pairs, the app's folder first (it may lie in the home folder)."""
    bases = [(str(ROOT), "")]
    home = os.path.normpath(os.path.expanduser("~"))
    if home != os.sep:
        bases.append((home, "~"))
    return bases


def display_path(path: str | os.PathLike) -> str:
    """``path`` as the app shows it: ``assets/models/teacher.pt``, ``~/data/scans/room.ply``.

    A relative path, or one that is already shown this way, comes back unchanged.
    """
    text = str(path)
    full = os.path.expanduser(text)
    if not text or not os.path.isabs(full):
        return text
    full = os.path.normpath(full)
    for base, shown in _bases():
        if full == base:
            return shown or "."
        if full.startswith(base.rstrip(os.sep) + os.sep):
            rest = full[len(base.rstrip(os.sep)) + 1:]
            return f"{shown}{os.sep}{rest}" if shown else rest
    return full


def display_paths_in(text: str) -> str:
    """Free text (a job's log line, an error message) with the paths in it shown as :func:`display_path`
    shows them."""
    for base, shown in _bases():
        text = text.replace(base.rstrip(os.sep) + os.sep, f"{shown}{os.sep}" if shown else "")
    return text


def expand_path(text: str) -> str:
    """What a path typed in a field (or shown by :func:`display_path`) names: ``~`` expanded, a relative
    path taken from the app's folder, absolute. An empty field stays empty."""
    text = text.strip()
    if not text:
        return ""
    return os.path.normpath(ROOT / os.path.expanduser(text))

"""Typed errors for bad user input (files, point clouds, datasets).

Every message is one line that names the file or folder and says what is wrong with it; the CLI
prints it as ``error: <message>`` with exit status 2 and the GUI shows it in a dialog.
"""

from __future__ import annotations


class T3DError(Exception):
    """Base of every project error caused by the user's input (not by a bug)."""

    def __init__(self, message: str):
        # One line, whatever the underlying library put into its message.
        super().__init__(" ".join(str(message).split()))


class FileReadError(T3DError):
    """The file is missing, a directory, unreadable, truncated, corrupt or too large for memory."""


class UnsupportedFormatError(T3DError):
    """The file's format is not one we read, even after looking at its content."""


class EmptyCloudError(T3DError):
    """The file or array holds no usable points (none at all, or only NaN/Inf)."""


class MeshError(T3DError):
    """A mesh that cannot be sampled (no faces, out-of-range indices, zero area)."""


class DatasetError(T3DError):
    """A dataset folder whose layout is unknown, empty or inconsistent."""


class ChannelsNeededError(UnsupportedFormatError):
    """A headerless float32 point file whose floats per point neither its size nor its content settle.

    ``candidates`` lists the floats-per-point counts that fit; the message tells the user to say
    which one with ``--channels N``.
    """

    def __init__(self, message: str, candidates: list[int]):
        super().__init__(message)
        self.candidates = list(candidates)

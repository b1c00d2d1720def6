"""Options that several commands share, defined once."""

from __future__ import annotations

import argparse


def add_channels_option(p: argparse.ArgumentParser, what: str = "a headerless float32 point file") -> None:
    """``--channels N``: floats per point (x y z first) of headerless float32 files such as LiDAR ``.bin``."""
    p.add_argument("--channels", type=int, default=None, metavar="N",
                   help=f"floats per point of {what} (x y z first); default: detected from its size and content")

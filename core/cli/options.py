"""Options that several commands share, defined once."""

from __future__ import annotations

import argparse


def add_channels_option(p: argparse.ArgumentParser, what: str = "a headerless float32 point file") -> None:
    """``--channels N``: floats per point (x y z first) of headerless float32 files such as LiDAR ``.bin``."""
    p.add_argument("--channels", type=int, default=None, metavar="N",
                   help=f"floats per point of {what} (x y z first); default: detected from its size and content")


#: ``--runtime`` values (core.runtime.RUNTIME_CHOICES, listed here so that building the parser
#: imports neither torch nor onnxruntime).
RUNTIME_CHOICES = ("auto", "torch", "onnx")


def add_runtime_option(p: argparse.ArgumentParser) -> None:
    """``--runtime auto|torch|onnx``: where the models run (core.runtime)."""
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                   help="where the models run: torch (eager PyTorch), onnx (ONNX Runtime; the graph is exported "
                        "on first use and cached), or auto (the faster of the two, measured on this CPU the first "
                        "time the model loads, then remembered; default). Sampling and grouping run outside the graph either way")

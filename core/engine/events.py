"""Typed job events and the sinks that consume them (JSON lines file, stdout, progress bar).

A job emits plain dicts with a ``type`` (``start``, ``step``, ``epoch``, ``stage``, ``end``,
``error``, ``cancelled``) and named scalar metrics; the GUI plots whatever scalars arrive.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Protocol


class EventSink(Protocol):
    def __call__(self, event: dict) -> None: ...


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def encode(event: dict) -> str:
    return json.dumps({k: _clean(v) for k, v in event.items()}, separators=(",", ":"))


class JsonlWriter:
    """Appends every event to ``events.jsonl`` in the run directory (flushed per line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", buffering=1)

    def __call__(self, event: dict) -> None:
        self._f.write(encode(event) + "\n")

    def close(self) -> None:
        self._f.close()


class StdoutJson:
    """Streams events as JSON lines on stdout: what the GUI reads from a job process."""

    def __call__(self, event: dict) -> None:
        sys.stdout.write(encode(event) + "\n")
        sys.stdout.flush()


class ProgressBar:
    """A tqdm progress bar with ETA on stderr, updated from ``step`` events."""

    def __init__(self) -> None:
        self._bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event.get("type")
        if kind == "step":
            total = event.get("total_steps")
            if self._bar is None or self._bar.total != total:
                if self._bar is not None:
                    self._bar.close()
                self._bar = tqdm(total=total, desc=event.get("stage", "train"), unit="step",
                                 dynamic_ncols=True, file=sys.stderr)
            self._bar.n = event.get("global_step", 0)
            shown = {k: f"{event[k]:.3f}" for k in ("loss", "train_acc") if isinstance(event.get(k), float)}
            self._bar.set_postfix(shown, refresh=False)
            self._bar.refresh()
        elif kind == "epoch" and self._bar is not None:
            oa = event.get("val_oa")
            if oa is not None:
                self._bar.write(f"epoch {event['epoch'] + 1}: val OA {oa:.4f}  mAcc {event.get('val_macc', 0):.4f}")
        elif kind in ("end", "cancelled", "error") and self._bar is not None:
            self._bar.close()
            self._bar = None


class Broadcast:
    """Calls several sinks; adds a wall-clock timestamp."""

    def __init__(self, sinks: list[Callable[[dict], None]]) -> None:
        self.sinks = list(sinks)

    def __call__(self, event: dict) -> None:
        event.setdefault("time", time.time())
        for sink in self.sinks:
            sink(event)

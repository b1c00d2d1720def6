"""Typed job events and their JSON-lines form.

A job emits one dataclass per event (:class:`StartEvent`, :class:`StageEvent`, :class:`StepEvent`,
:class:`EpochEvent`, :class:`ProgressEvent`, :class:`EndEvent`, :class:`CancelledEvent`,
:class:`ErrorEvent`). :meth:`Event.to_json` writes one line of ``events.jsonl`` (and of
``--events json`` on stdout): a flat object with a ``type``, the event's fields, the ``stage``
that emitted it and a wall-clock ``time``; a step's named losses are keys of their own.
:func:`parse_event` reads such a line back; the app reads a job process's stdout with it. What
consumes the events during a run (the event log, the progress bar, TensorBoard) are the loop's
callbacks (:mod:`core.engine.callbacks`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass(kw_only=True)
class Event:
    """Fields every event has: the stage (job) that emitted it and when."""

    type: ClassVar[str] = ""
    stage: str = ""
    time: float = field(default_factory=time.time)

    def payload(self) -> dict:
        """The event's own fields (no ``type``, ``stage`` or ``time``), in their JSON order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stage", "time")}

    def to_dict(self) -> dict:
        return {"type": self.type, **self.payload(), "stage": self.stage, "time": self.time}

    def to_json(self) -> str:
        """One JSON line (non-finite numbers as null)."""
        return json.dumps({k: _clean(v) for k, v in self.to_dict().items()}, separators=(",", ":"))


@dataclass(kw_only=True)
class StartEvent(Event):
    """A stage starts (or resumes at ``start_epoch``)."""

    type: ClassVar[str] = "start"
    job: str = ""
    epochs: int = 0
    steps_per_epoch: int = 0
    start_epoch: int = 0
    params: int = 0
    run_dir: str = ""
    world_size: int = 1
    version: str = ""


@dataclass(kw_only=True)
class StageEvent(Event):
    """A pipeline enters stage ``index`` of ``of``; its epochs count from ``epoch_offset`` on the run's axis."""

    type: ClassVar[str] = "stage"
    index: int = 1
    of: int = 1
    epoch_offset: float = 0


@dataclass(kw_only=True)
class StepEvent(Event):
    """A training step (every ``log_every`` steps and the last of each epoch).

    ``losses`` holds the total ``loss`` and its named terms (``task_loss``, ``kd_loss``, ``aug_loss``,
    ``feat_loss``, ``mimic_loss``, ``peer_loss``, as the job has them); on the wire each is a key.
    """

    type: ClassVar[str] = "step"
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    total_steps: int = 0
    lr: float = 0.0
    samples_per_s: float = 0.0
    train_acc: float = 0.0
    elapsed: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)

    def payload(self) -> dict:
        own = super().payload()
        return own | own.pop("losses")

    @property
    def scalars(self) -> dict[str, float]:
        """The named numbers a curve plot draws: losses, learning rate, accuracy, speed."""
        return {"lr": self.lr, "samples_per_s": self.samples_per_s, "train_acc": self.train_acc, **self.losses}


@dataclass(kw_only=True)
class EpochEvent(Event):
    """An epoch ends; ``val_oa``/``val_macc`` are None when it was not evaluated."""

    type: ClassVar[str] = "epoch"
    epoch: int = 0
    epochs: int = 0
    lr: float = 0.0
    train_loss: float = 0.0
    train_acc: float = 0.0
    val_oa: float | None = None
    val_macc: float | None = None
    best_oa: float = -1.0
    epoch_time: float = 0.0
    samples_per_s: float = 0.0
    elapsed: float = 0.0


@dataclass(kw_only=True)
class ProgressEvent(Event):
    """Preparation work (partial views, teacher cache): ``done`` of ``total``; not written to events.jsonl."""

    type: ClassVar[str] = "progress"
    what: str = ""
    done: int = 0
    total: int = 0
    elapsed: float = 0.0


@dataclass(kw_only=True)
class EndEvent(Event):
    """A stage finished: the final model's accuracy, cost and checkpoint."""

    type: ClassVar[str] = "end"
    oa: float = 0.0
    macc: float = 0.0
    params: int = 0
    macs: int = 0
    checkpoint: str = ""
    run_dir: str = ""


@dataclass(kw_only=True)
class CancelledEvent(Event):
    """A cancel stopped the stage at ``epoch``, ``step``; ``run_dir`` resumes it."""

    type: ClassVar[str] = "cancelled"
    epoch: int = 0
    step: int = 0
    run_dir: str = ""


@dataclass(kw_only=True)
class ErrorEvent(Event):
    """The stage failed; ``message`` is one line."""

    type: ClassVar[str] = "error"
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (
    StartEvent, StageEvent, StepEvent, EpochEvent, ProgressEvent, EndEvent, CancelledEvent, ErrorEvent)}


def parse_event(line: str | bytes) -> Event:
    """The event a JSON line holds. Keys an event does not know are ignored, except a step's, which
    are its losses; missing keys take their defaults (lines written by older versions read).

    Raises:
        ValueError: not JSON, not an object, or an unknown ``type``.
    """
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError(f"not an event: {line!r}")
    cls = EVENT_TYPES.get(data.get("type"))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if cls is StepEvent:
        kwargs["losses"] = {k: v for k, v in data.items() if k not in names and k != "type"}
    return cls(**kwargs)

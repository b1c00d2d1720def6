"""Callbacks of the training loop: evaluation, checkpoints, the report, the event log, the progress
bar, JSON lines on stdout and TensorBoard.

The loop (:class:`core.engine.trainer.Trainer`) calls each hook on its callbacks in list order, on
rank 0 only. Every event the loop emits goes to the hook named after it (:data:`HOOKS`), whose
default passes it on to :meth:`Callback.on_event`; three hooks carry no event: :meth:`Callback.on_evaluate`
(an epoch's training is done, before its event), :meth:`Callback.on_fit_end` (the final model and its
report, before the end event) and :meth:`Callback.teardown` (always, last). A stage's own callbacks
come first (:func:`stage_callbacks`), so ``last.pt`` is on disk before any sink sees the epoch or
cancel event that announces it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .checkpoint import TEST_SELECTED, atomic_save, model_state
from .events import (CancelledEvent, EndEvent, EpochEvent, ErrorEvent, Event, ProgressEvent, StageEvent, StartEvent,
                     StepEvent)

if TYPE_CHECKING:
    from core.models import ClassifierBase

    from .trainer import Trainer

#: The hook each event type goes to.
HOOKS: dict[type[Event], str] = {StartEvent: "on_start", StageEvent: "on_stage", StepEvent: "on_step",
                                 EpochEvent: "on_epoch_end", ProgressEvent: "on_progress",
                                 CancelledEvent: "on_cancel", EndEvent: "on_end", ErrorEvent: "on_error"}


class Callback:
    """Base class: every hook does nothing, except that event hooks pass their event to :meth:`on_event`.

    ``loop`` is the :class:`~core.engine.trainer.Trainer` of the stage, None in :meth:`on_stage`
    (a pipeline announces a stage before the stage's loop exists).
    """

    def on_event(self, loop: Trainer | None, event: Event) -> None:
        """Any event whose own hook is not overridden."""

    def on_start(self, loop: Trainer, event: StartEvent) -> None:
        """The stage starts (or resumes); its data, model and optimizer are ready."""
        self.on_event(loop, event)

    def on_stage(self, loop: Trainer | None, event: StageEvent) -> None:
        """A pipeline enters a stage (before that stage's loop is built)."""
        self.on_event(loop, event)

    def on_progress(self, loop: Trainer, event: ProgressEvent) -> None:
        """Preparation work (partial views, the teacher cache) advances."""
        self.on_event(loop, event)

    def on_step(self, loop: Trainer, event: StepEvent) -> None:
        """A logged training step (every ``log_every`` steps and each epoch's last)."""
        self.on_event(loop, event)

    def on_evaluate(self, loop: Trainer, epoch: int) -> None:
        """Epoch ``epoch``'s training is done: evaluate, keep a best model (``loop.state``)."""

    def on_epoch_end(self, loop: Trainer, event: EpochEvent) -> None:
        """The epoch's summary; ``loop.state`` is where a resume would start (the next epoch) and its
        history holds this epoch."""
        self.on_event(loop, event)

    def on_cancel(self, loop: Trainer, event: CancelledEvent) -> None:
        """A cancel stopped the stage; ``loop.state`` is the step that did not run."""
        self.on_event(loop, event)

    def on_fit_end(self, loop: Trainer, final: ClassifierBase, report: dict) -> None:
        """Training is done: ``final`` is the model as exported, ``report`` its evaluation (callbacks may add keys)."""

    def on_end(self, loop: Trainer, event: EndEvent) -> None:
        """The stage finished."""
        self.on_event(loop, event)

    def on_error(self, loop: Trainer, event: ErrorEvent) -> None:
        """The stage failed."""
        self.on_event(loop, event)

    def teardown(self, loop: Trainer) -> None:
        """The stage's loop ends, whatever way (close files)."""


class CallbackList:
    """Calls a hook on several callbacks, in order."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def emit(self, loop: Trainer | None, event: Event) -> None:
        """Send ``event`` to its hook (:data:`HOOKS`)."""
        self.call(HOOKS[type(event)], loop, event)


# -- a stage's own callbacks ----------------------------------------------------------------------


class Evaluation(Callback):
    """Evaluates on the test split every ``eval_every`` epochs and after the last; keeps the best
    overall accuracy (``loop.state.best_oa``, ``new_best`` when this epoch improved it)."""

    def on_evaluate(self, loop: Trainer, epoch: int) -> None:
        cfg, state = loop.cfg, loop.state
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            state.metrics = loop.evaluate()
            if state.metrics["oa"] > state.best_oa:
                state.best_oa, state.new_best = state.metrics["oa"], True


class Checkpoints(Callback):
    """The run folder's checkpoints: ``last.pt`` (the exact training state) after every epoch and
    where a cancel stopped the stage; ``best.pt`` (labelled ``selected_on: test``) when an
    evaluation improved on the best; the final model (``student.pt``, or ``model.pt`` of a teacher)."""

    def on_evaluate(self, loop: Trainer, epoch: int) -> None:
        state = loop.state
        if state.new_best:
            atomic_save(model_state(loop.exportable(), loop.class_names,
                                    state.metrics | {"epoch": epoch + 1, "selected_on": "test"}, loop.cfg.to_dict()),
                        loop.run_dir / TEST_SELECTED)

    def on_epoch_end(self, loop: Trainer, event: EpochEvent) -> None:
        atomic_save(loop.training_state(), loop.run_dir / "last.pt")

    def on_cancel(self, loop: Trainer, event: CancelledEvent) -> None:
        atomic_save(loop.training_state(), loop.run_dir / "last.pt")

    def on_fit_end(self, loop: Trainer, final: ClassifierBase, report: dict) -> None:
        path = loop.run_dir / loop.method.final_checkpoint
        atomic_save(model_state(final, loop.class_names, {k: report[k] for k in ("oa", "macc", "params", "macs")},
                                loop.cfg.to_dict()), path)
        report["checkpoint"] = str(path)


class ReportWriter(Callback):
    """Writes the final report: ``report.json`` and ``report.md``."""

    def on_fit_end(self, loop: Trainer, final: ClassifierBase, report: dict) -> None:
        write_report(loop.run_dir, report)


def write_report(run_dir: Path, report: dict) -> None:
    """``report.json`` and its readable form ``report.md`` in ``run_dir``."""
    from .metrics import report_markdown

    (Path(run_dir) / "report.json").write_text(json.dumps(report, indent=1))
    (Path(run_dir) / "report.md").write_text(report_markdown(report))


class EventLog(Callback):
    """Appends every event but progress to ``events.jsonl`` (one JSON line each, flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", buffering=1)

    def on_event(self, loop, event: Event) -> None:
        self._f.write(event.to_json() + "\n")

    def on_progress(self, loop, event: ProgressEvent) -> None:
        pass

    def teardown(self, loop) -> None:
        self._f.close()


def stage_callbacks(run_dir: Path) -> list[Callback]:
    """What every stage does with its run folder, in this order."""
    return [Evaluation(), Checkpoints(), ReportWriter(), EventLog(Path(run_dir) / "events.jsonl")]


# -- a caller's callbacks -------------------------------------------------------------------------


class Sink(Callback):
    """Passes every event to a function (``sink=`` of :func:`~core.engine.trainer.run_job`)."""

    def __init__(self, fn: Callable[[Event], None]) -> None:
        self.fn = fn

    def on_event(self, loop, event: Event) -> None:
        self.fn(event)


class StdoutJson(Callback):
    """Streams events as JSON lines on stdout: what the app reads from a job process (``--events json``)."""

    def on_event(self, loop, event: Event) -> None:
        sys.stdout.write(event.to_json() + "\n")
        sys.stdout.flush()


class ProgressBar(Callback):
    """A tqdm progress bar with ETA on stderr, updated from step events (``--events bar``)."""

    def __init__(self) -> None:
        self._bar = None

    def on_step(self, loop, event: StepEvent) -> None:
        from tqdm import tqdm

        total = event.total_steps
        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=event.stage or "train", unit="step", dynamic_ncols=True, file=sys.stderr)
        self._bar.n = event.global_step
        shown = {"loss": event.losses.get("loss"), "train_acc": event.train_acc}
        self._bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items() if isinstance(v, float)}, refresh=False)
        self._bar.refresh()

    def on_epoch_end(self, loop, event: EpochEvent) -> None:
        if self._bar is not None and event.val_oa is not None:
            self._bar.write(f"epoch {event.epoch + 1}: val OA {event.val_oa:.4f}  mAcc {event.val_macc or 0:.4f}")

    def on_event(self, loop, event: Event) -> None:  # end, cancel, error
        if isinstance(event, (EndEvent, CancelledEvent, ErrorEvent)) and self._bar is not None:
            self._bar.close()
            self._bar = None


class TensorBoard(Callback):
    """Writes the run's curves as TensorBoard scalars into ``log_dir`` (``RUN_DIR/tensorboard``;
    view with ``tensorboard --logdir RUN_DIR``).

    Tags: ``loss/NAME`` for every named loss, ``train/lr``, ``train/acc`` (the epoch's running
    training accuracy) and ``train/samples_per_s`` at each logged step; ``epoch/train_loss``,
    ``epoch/train_acc``, ``val/oa`` and ``val/macc`` (when evaluated) per epoch, at the epoch's last
    step. The step axis is the run's: a pipeline's later stage continues from its ``epoch_offset``.
    A resumed run drops the points it logged past its checkpoint (``purge_step``) and logs them again.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None
        self._epoch_offset = 0.0
        self._steps_per_epoch = 0

    def on_stage(self, loop, event: StageEvent) -> None:
        self._epoch_offset = event.epoch_offset

    def on_start(self, loop, event: StartEvent) -> None:
        self._steps_per_epoch = event.steps_per_epoch

    def _run_step(self, stage_step: int) -> int:
        return round(self._epoch_offset * self._steps_per_epoch) + stage_step

    def _write(self, scalars: dict, step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step)
        for tag, value in scalars.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, value, step)

    def on_step(self, loop, event: StepEvent) -> None:
        scalars = {f"loss/{k}": v for k, v in event.losses.items()}
        scalars |= {"train/lr": event.lr, "train/acc": event.train_acc, "train/samples_per_s": event.samples_per_s}
        self._write(scalars, self._run_step(event.global_step))

    def on_epoch_end(self, loop, event: EpochEvent) -> None:
        self._write({"epoch/train_loss": event.train_loss, "epoch/train_acc": event.train_acc,
                     "val/oa": event.val_oa, "val/macc": event.val_macc},
                    self._run_step((event.epoch + 1) * self._steps_per_epoch))
        self._writer.flush()

    def teardown(self, loop) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

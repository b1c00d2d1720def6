"""Run a function off the GUI thread and get its result back as Qt signals.

Modelled on napari/superqt workers: ``started``, ``returned(object)``, ``errored(object)``,
``finished``. Signals are emitted from the pool thread and delivered (queued) to receivers in
the GUI thread, so slots may touch widgets.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from app.paths import display_paths_in


class WorkerSignals(QObject):
    started = Signal()
    progress = Signal(str, int, int)  # what, done, total
    returned = Signal(object)
    errored = Signal(object)  # the exception
    finished = Signal()


class FunctionWorker(QRunnable):
    """Calls ``fn(*args, progress=cb, **kwargs)`` (progress only when ``with_progress``) in a pool thread.

    Thread: ``run`` executes in a QThreadPool thread; it never touches widgets.
    """

    def __init__(self, fn: Callable[..., Any], *args, with_progress: bool = False, **kwargs) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.with_progress = with_progress
        self.signals = WorkerSignals()
        self.setAutoDelete(False)  # the Python object keeps the signals alive until it is dropped

    def run(self) -> None:
        s = self.signals
        s.started.emit()
        try:
            if self.with_progress:
                self.kwargs["progress"] = lambda what, done, total: s.progress.emit(str(what), int(done), int(total))
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            exc.__traceback_text__ = traceback.format_exc()
            s.errored.emit(exc)
        else:
            s.returned.emit(result)
        finally:
            s.finished.emit()


_LIVE: set[FunctionWorker] = set()


def start_worker(fn: Callable[..., Any], *args, on_return=None, on_error=None, on_progress=None,
                 on_finish=None, pool: QThreadPool | None = None, **kwargs) -> FunctionWorker:
    """Start ``fn`` in the global thread pool and connect the callbacks (run in the GUI thread)."""
    w = FunctionWorker(fn, *args, with_progress=on_progress is not None, **kwargs)
    if on_return:
        w.signals.returned.connect(on_return)
    if on_error:
        w.signals.errored.connect(on_error)
    if on_progress:
        w.signals.progress.connect(on_progress)
    if on_finish:
        w.signals.finished.connect(on_finish)
    _LIVE.add(w)
    w.signals.finished.connect(lambda: _LIVE.discard(w))
    (pool or QThreadPool.globalInstance()).start(w)
    return w


def error_text(exc: BaseException) -> str:
    """A one-line, plain message for a failure (T3DError/CheckpointError messages are already one line),
    its paths shown as the app shows paths (``app.paths``)."""
    msg = display_paths_in(str(exc).strip().splitlines()[0]) if str(exc).strip() else exc.__class__.__name__
    known = ("T3DError", "CheckpointError")
    if any(c.__name__ in known for c in type(exc).__mro__) or isinstance(exc, (FileNotFoundError, ValueError)):
        return msg
    return f"{exc.__class__.__name__}: {msg}"

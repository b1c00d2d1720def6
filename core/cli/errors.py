"""The CLI's exit statuses, and which exceptions are the user's input problems (one line on
stderr, exit status :data:`EXIT_USER_ERROR`). docs/CLI.md, "Exit status", lists the same."""

from __future__ import annotations

EXIT_OK = 0
#: Bad input (a file, an option, a checkpoint, a dataset); also ``predict`` over several files when
#: none of them could be read.
EXIT_USER_ERROR = 2
#: ``predict`` over several files: some could not be read (each has an ``error``), the others were predicted.
EXIT_SOME_FAILED = 3
#: Interrupted (Ctrl-C), or a job cancelled by SIGTERM.
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (e.g. ``predict DIR --jsonl | head``): 128 + SIGPIPE, as a shell reports it.
EXIT_BROKEN_PIPE = 141


def user_error_types() -> tuple[type[BaseException], ...]:
    from core.engine.checkpoint import CheckpointError
    from core.engine.config import ConfigError
    from core.engine.trainer import JobError
    from core.models import UnknownModelError

    from core.errors import T3DError

    return (CheckpointError, ConfigError, JobError, UnknownModelError, FileNotFoundError, T3DError)

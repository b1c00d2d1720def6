"""Which exceptions are the user's input problems (one line on stderr, exit status 2)."""

from __future__ import annotations


def user_error_types() -> tuple[type[BaseException], ...]:
    from core.engine.checkpoint import CheckpointError
    from core.engine.config import ConfigError
    from core.engine.trainer import JobError
    from core.models import UnknownModelError

    types: list[type[BaseException]] = [CheckpointError, ConfigError, JobError, UnknownModelError,
                                         FileNotFoundError]
    try:
        from core.errors import T3DError

        types.append(T3DError)
    except ImportError:
        pass
    return tuple(types)

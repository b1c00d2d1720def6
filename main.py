"""T3DNet Studio: ``python main.py`` opens the app, ``python main.py COMMAND`` runs headless."""

from __future__ import annotations

import os
import sys

_TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

# OpenMP threads that wait for work sleep instead of spinning (read when torch loads its OpenMP
# runtime, so set before any import of torch; an explicit OMP_WAIT_POLICY wins). On a CPU shared
# with another job, the GUI or the viewer, spinning threads steal each other's cores: a 2-thread
# training step beside two 1-thread jobs ran 12x faster passive than spinning; alone, passive
# ran at 0.91x (bench/thread_contention.py, docs/BENCHMARKS_THREADS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _maybe_reexec_with_tcmalloc() -> None:
    """Training allocates and frees tensors of hundreds of MB every step; glibc returns them to
    the OS and page-faults them back (3x slower training here). tcmalloc keeps them."""
    if os.environ.get("T3DNET_NO_TCMALLOC") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if sys.platform != "linux" or not os.path.exists(_TCMALLOC):
        return
    env = dict(os.environ, LD_PRELOAD=(_TCMALLOC + " " + os.environ.get("LD_PRELOAD", "")).strip())
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from core.cli import command_names
    from core.cli import main as cli_main

    if argv[:1] in (["-h"], ["--help"]) or (argv and argv[0] in command_names()):
        return cli_main(argv)
    from app.main_window import run_app  # no command: the app (a file path opens in it)

    return run_app(argv)


if __name__ == "__main__":
    _maybe_reexec_with_tcmalloc()
    sys.exit(main())

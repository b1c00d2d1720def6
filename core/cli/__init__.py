"""Headless command line: ``python main.py COMMAND ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import os
import sys

from . import export_cmd, import_cmd, inspect_cmd, jobs, models_cmd, report_cmd
from .errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USER_ERROR

# Each module adds its subcommands; the order here is the order of --help.
COMMAND_MODULES = [jobs, inspect_cmd, models_cmd, export_cmd, import_cmd, report_cmd]

EPILOG = """examples:
  python main.py models
  python main.py inspect ../shared/data/scans/bun_zipper.ply --points 1024
  python main.py train --model pointnet2_ssg --data ../shared/data/modelnet40_npy1024 --preset cpu --out runs/teacher
  python main.py compress --data ../shared/data/modelnet40_npy1024 --teacher assets/models/teacher.pt --preset cpu --out runs/t3dnet
  python main.py run my_job.yaml --out runs/my_job
  python main.py resume runs/t3dnet
  python main.py evaluate --checkpoint assets/models/student.pt --data ../shared/data/modelnet40_npy1024 --json
  python main.py predict assets/samples/airplane.npy --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="T3DNet Studio: compress point-cloud classifiers (NetAug + distillation). "
        "Without a command, the desktop app opens.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def command_names() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def join_negative_axes(argv: list[str]) -> list[str]:
    """``--up -y`` as ``--up=-y``: argparse would read ``-y`` as an option, not as the axis."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--up":
            nxt = next(it, None)
            if nxt is not None and nxt.lstrip("-") in ("x", "y", "z") and nxt.startswith("-"):
                out.append(f"--up={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_axes(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed by its reader: stop quietly (and keep Python from
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # complaining at exit)
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # every expected failure becomes one line, exit 2
        from .errors import user_error_types

        if isinstance(exc, user_error_types()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise

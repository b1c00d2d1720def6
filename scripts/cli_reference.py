"""Write docs/CLI_REFERENCE.md from the command-line parser itself (every command's ``--help``).

    .venv/bin/python scripts/cli_reference.py            # rewrite the file
    .venv/bin/python scripts/cli_reference.py --check    # exit 1 if the file is not current

A test runs the check, so the reference cannot drift from the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "CLI_REFERENCE.md"
WIDTH = "100"  # help text wrapped at a fixed width, whatever the terminal


def reference() -> str:
    from core.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = ["# Command-line reference", "",
                 "Generated from the parser by `scripts/cli_reference.py`; a test keeps it current. "
                 "For what the commands are for, with examples and the JSON they print, see [CLI.md](CLI.md).", "",
                 "```", parser.format_help().rstrip(), "```", ""]
        for name, p in sub.choices.items():
            parts += [f"## `{name}`", "", "```", p.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from the parser")
    args = ap.parse_args(argv)
    text = reference()
    if args.check:
        current = OUT.read_text() if OUT.is_file() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Copy the small, self-describing part of finished runs into the repository (``docs/runs/``).

Run directories live outside the work tree and a machine may not come back; their reports
(``report.json`` with every epoch's metrics, ``report.md``, ``job.yaml``, ``partial.json``) are a few KiB each and
are what ``scripts/results.py`` needs for its tables and curves. Checkpoints are not copied.

    python scripts/archive_runs.py ~/runs/comparison docs/runs/comparison20

Every run directory under SOURCE that holds a ``report.json`` is copied to the same relative
path under DEST; a T3DNet run's stage paths are rewritten relative to its run directory, and
every other absolute path (checkpoints, the teacher) as ``portable_path`` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

FILES = ("report.json", "report.md", "job.yaml", "partial.json")
ROOT = Path(__file__).resolve().parents[1]


def portable_path(path: str | Path) -> str:
    """A path as it reads on any machine: an absolute path becomes relative to the checkout
    (``assets/...``, ``../runs/...``), or ``~/...`` when it is under the home folder but not
    beside the checkout; a relative path is kept."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../"), (Path.home(), "~/")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return prefix + str(rel) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return os.path.relpath(p, ROOT)


def portable_paths_in(text: str) -> str:
    """Every absolute path in ``text`` (a command line, a YAML value) as ``portable_path`` writes it."""
    return re.sub(r"(?<![\w.~])/[^\s'\"`,;)]+", lambda m: portable_path(m.group(0)), text)


def _portable(value):
    if isinstance(value, str):
        return portable_path(value) if value.startswith("/") else value
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    return value


def archive(source: Path, dest: Path) -> list[Path]:
    """Copy every finished run's reports from ``source`` to ``dest``; returns the runs copied."""
    source, dest = source.expanduser().resolve(), dest.expanduser()
    if not source.is_dir():
        raise SystemExit(f"{source}: not a folder")
    copied = []
    for report in sorted(source.rglob("report.json")):
        run = report.parent
        target = dest / run.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
        data = json.loads(report.read_text())
        if data.get("stages"):
            data["stages"] = [_relative(Path(s), run) for s in data["stages"]]
        (target / "report.json").write_text(json.dumps(_portable(data), indent=1))
        if (target / "partial.json").is_file():
            partial = json.loads((target / "partial.json").read_text())
            (target / "partial.json").write_text(json.dumps(_portable(partial), indent=1))
        if (target / "job.yaml").is_file():
            (target / "job.yaml").write_text(portable_paths_in((target / "job.yaml").read_text()))
        copied.append(target)
    return copied


def _relative(stage: Path, run: Path) -> str:
    try:
        return str(stage.resolve().relative_to(run.resolve()))
    except ValueError:
        return stage.name  # stages live inside their run directory


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a folder of run directories (e.g. ~/runs/comparison)")
    p.add_argument("dest", type=Path, help="where to copy their reports (e.g. docs/runs/comparison20)")
    args = p.parse_args(argv)
    runs = archive(args.source, args.dest)
    for r in runs:
        print(r)
    print(f"{len(runs)} finished run(s) archived", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

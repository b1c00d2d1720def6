"""Copy the small, self-describing part of finished runs into the repository (``docs/runs/``).

Run directories live outside the work tree and a machine may not come back; their reports
(``report.json`` with every epoch's metrics, ``report.md``, ``job.yaml``) are a few KiB each and
are what ``scripts/results.py`` needs for its tables and curves. Checkpoints are not copied.

    python scripts/archive_runs.py /work/runs/comparison docs/runs/comparison20

Every run directory under SOURCE that holds a ``report.json`` is copied to the same relative
path under DEST; a T3DNet run's stage paths are rewritten relative to its run directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

FILES = ("report.json", "report.md", "job.yaml")


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
            (target / "report.json").write_text(json.dumps(data, indent=1))
        copied.append(target)
    return copied


def _relative(stage: Path, run: Path) -> str:
    try:
        return str(stage.resolve().relative_to(run.resolve()))
    except ValueError:
        return stage.name  # stages live inside their run directory


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a folder of run directories (e.g. /work/runs/comparison)")
    p.add_argument("dest", type=Path, help="where to copy their reports (e.g. docs/runs/comparison20)")
    args = p.parse_args(argv)
    runs = archive(args.source, args.dest)
    for r in runs:
        print(r)
    print(f"{len(runs)} finished run(s) archived", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``report``: one self-contained HTML page comparing the teacher and the student (core.report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.errors import EXIT_OK


def add_commands(sub) -> None:
    from core.report import DEFAULT_LIMIT, DEFAULT_TEMPERATURE_SHAPES

    p = sub.add_parser(
        "report", help="one HTML page on what the student kept of the teacher (accuracy, calibration, cost)",
        description="Measure the teacher and the student on the same test shapes and write one self-contained "
        "HTML file (pictures embedded): parameters, MACs, file size and latency on this machine, accuracy and "
        "mAcc, per-class accuracy changes, the confusion-matrix difference, calibration (ECE, reliability "
        "diagrams, temperature scaling fitted on training shapes), the most disagreeing shapes and the commands "
        "that reproduce every number. docs/REPORT.md explains how to read it.\n\n"
        "examples:\n  python main.py report --data ../shared/data/modelnet40_npy1024 --out report.html\n"
        "  python main.py report --teacher runs/teacher/model.pt --student runs/t3dnet/student.pt "
        "--data ../shared/data/modelnet40_npy1024 --limit 0 --partial --out full_report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: bundled)")
    p.add_argument("--student", default=None, help="student checkpoint (default: bundled)")
    p.add_argument("--data", required=True, help="dataset folder (its test split is measured, its train split "
                                                 "fits the temperature)")
    p.add_argument("--out", required=True, help="the HTML file to write (written atomically)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"test shapes measured, evenly spread as evaluate --limit (default {DEFAULT_LIMIT}; "
                        "0: the whole split, minutes for the teacher on a CPU)")
    p.add_argument("--temperature-shapes", type=int, default=DEFAULT_TEMPERATURE_SHAPES,
                   help=f"training shapes the temperature is fitted on (default {DEFAULT_TEMPERATURE_SHAPES}, "
                        "at most 1000)")
    p.add_argument("--partial", action="store_true",
                   help="also measure the partial-view benchmark on the same shapes (slow)")
    p.add_argument("--severity", type=int, choices=[1, 2, 3], default=2, help="partial views: severity (default 2)")
    p.add_argument("--json", action="store_true",
                   help="print the measured numbers as one JSON object on stdout (the HTML still goes to --out)")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from tqdm import tqdm

    from core.inference import DEFAULT_STUDENT, DEFAULT_TEACHER
    from core.report import ReportRequest, build_report

    req = ReportRequest(teacher=str(args.teacher or DEFAULT_TEACHER), student=str(args.student or DEFAULT_STUDENT),
                        data=args.data, limit=args.limit, temperature_shapes=args.temperature_shapes,
                        partial=args.partial, severity=args.severity)
    req.validate()
    bar = tqdm(total=1, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False, desc="report")

    def progress(what: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(what, refresh=False)
        bar.refresh()

    with bar:
        r = build_report(req, args.out, progress=progress)
    size = Path(args.out).stat().st_size
    if args.json:
        keep = ("oa", "macc", "ece", "ece_temperature_scaled", "temperature", "params", "macs", "size_bytes",
                "latency_ms", "checkpoint", "n")
        print(json.dumps({"out": str(args.out), "seconds": r["seconds"], "n": r["n"], "machine": r["machine_line"],
                          **{role: {k: r["models"][role][k] for k in keep} for role in ("teacher", "student")}}))
    else:
        t, s = r["models"]["teacher"], r["models"]["student"]
        print(f"{args.out}: {size / 1024:.0f} KiB, {r['n']} test shapes, {r['seconds']:.1f} s; "
              f"OA teacher {t['oa'] * 100:.2f}% student {s['oa'] * 100:.2f}%; "
              f"ECE teacher {t['ece'] * 100:.2f}% -> {t['ece_temperature_scaled'] * 100:.2f}%, "
              f"student {s['ece'] * 100:.2f}% -> {s['ece_temperature_scaled'] * 100:.2f}% (temperature scaled)")
    return EXIT_OK

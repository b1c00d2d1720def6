"""Write docs/MODEL_CARD.md from assets/models/models.json and the source run directories.

    python scripts/model_card.py [--note "text"]

Every number comes from a measurement file: models.json (scripts/bundle_models.py), the runs'
events.jsonl / report.json (training curves, time), and a latency measured here. Paths are written
relative to the checkout or under ``~`` (``scripts/archive_runs.portable_path``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.engine.jobs import METHODS


def _epochs(run_dir: Path) -> list[dict]:
    ev = run_dir / "events.jsonl"
    if not ev.is_file():
        return []
    rows = [json.loads(line) for line in ev.read_text().splitlines() if '"type":"epoch"' in line]
    seen: dict[int, dict] = {}
    for r in rows:  # a resumed run may repeat an epoch: keep the last
        seen[r["epoch"]] = r
    return [seen[k] for k in sorted(seen)]


def main(argv=None) -> int:
    from core.engine.checkpoint import load_model
    from core.engine.metrics import measure_latency
    from scripts.archive_runs import portable_path, portable_paths_in

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--note", default="", help="a paragraph placed at the top")
    p.add_argument("--out", default=str(ROOT / "docs" / "MODEL_CARD.md"))
    p.add_argument("--command-teacher", default="", help="the command that trains the teacher (shown as is)")
    p.add_argument("--command-student", default="", help="the command that trains the student (shown as is)")
    args = p.parse_args(argv)
    summary = json.loads((ROOT / "assets" / "models" / "models.json").read_text())
    lines = ["# Model card: bundled teacher and student", ""]
    if args.note:
        lines += [args.note, ""]
    lines += [f"Bundled {summary['date']} with `{portable_paths_in(summary['command'])}`; evaluated on the full ModelNet40 test split "
              f"({summary['teacher']['n']} shapes, 1024 points, xyz, z up, no voting).", ""]
    lines += ["| | teacher | student |", "| --- | --- | --- |"]
    t, s = summary["teacher"], summary["student"]
    lat = {}
    for role in ("teacher", "student"):
        model, _ = load_model(ROOT / "assets" / "models" / f"{role}.pt")
        lat[role] = measure_latency(model, 1024, batch=1, runs=30)
    rows = [
        ("architecture", f"{t['model']['name']} x{t['model']['width']:g}", f"{s['model']['name']} x{s['model']['width']:g}"),
        ("overall accuracy (bundled weights)", f"{(t['oa_fp16'] if t['dtype'] == 'float16' else t['oa_fp32']) * 100:.2f}%",
         f"{(s['oa_fp16'] if s['dtype'] == 'float16' else s['oa_fp32']) * 100:.2f}%"),
        ("mean class accuracy", f"{t['macc_fp32'] * 100:.2f}%", f"{s['macc_fp32'] * 100:.2f}%"),
        ("OA float32 / float16", f"{t['oa_fp32'] * 100:.2f}% / {t['oa_fp16'] * 100:.2f}%",
         f"{s['oa_fp32'] * 100:.2f}% / {s['oa_fp16'] * 100:.2f}%"),
        ("stored as", t["dtype"], s["dtype"]),
        ("parameters", f"{t['params']:,}", f"{s['params']:,}"),
        ("MACs per sample (linear layers)", f"{t['macs'] / 1e6:.1f} M", f"{s['macs'] / 1e6:.1f} M"),
        ("file size (with the in-vocabulary calibration)", f"{t['size_bytes'] / 1024:.0f} KiB", f"{s['size_bytes'] / 1024:.0f} KiB"),
        (f"CPU latency, batch 1, eager, median ({time.strftime('%Y-%m-%d')})", f"{lat['teacher']:.1f} ms", f"{lat['student']:.1f} ms"),
    ]
    if "partial" in t and "partial" in s:  # recorded by scripts/bundle_models.py
        rows.insert(3, (f"partial-view OA / mAcc, severity {t['partial']['severity']} (PARTIAL_VIEWS.md)",
                        *(f"{r['partial']['oa'] * 100:.2f}% / {r['partial']['macc'] * 100:.2f}%" for r in (t, s))))
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "Per-class accuracy on the test split (bundled weights):", "",
              "| class | shapes | teacher | student |", "| --- | ---: | ---: | ---: |"]
    from core.data.datasets import load_split

    test = load_split(summary["data"], "test", 1024)  # the cached split: only for the shapes per class
    support = np.bincount(test.labels, minlength=len(test.class_names))
    for i, name in enumerate(t["class_names"]):
        lines.append(f"| {name} | {support[i]} | {t['per_class_acc'][i] * 100:.1f}% | {s['per_class_acc'][i] * 100:.1f}% |")
    lines += ["", "Latency: `core.engine.metrics.measure_latency` (median of 30 runs after 3 warm-ups, sampling and "
              "grouping included, threads as torch's default here: 2 cores); measured while writing this card.", ""]
    for role in ("teacher", "student"):
        src = Path(summary[role]["source"]).parent
        lines += [f"## {role.capitalize()}: training", "", f"Source: `{portable_path(summary[role]['source'])}`", ""]
        command = getattr(args, f"command_{role}")
        if command:
            lines += ["Reproduce (the run's configuration follows):", "", "    " + command, ""]
        stage_dirs = [src]
        pipeline = METHODS["t3dnet"]
        folders = [pipeline.stage_dir(i + 1) for i in range(len(pipeline.stages))]
        if src.name == folders[-1] and all((src.parent / f).is_dir() for f in folders):  # its last stage
            stage_dirs = [src.parent / f for f in folders]
        elif all((src / f).is_dir() for f in folders):  # a t3dnet run directory
            stage_dirs = [src / f for f in folders]
        for d in stage_dirs:
            cfg = portable_paths_in((d / "job.yaml").read_text()) if (d / "job.yaml").is_file() else ""
            eps = _epochs(d)
            lines += [f"### {d.name}", ""]
            if cfg:
                lines += ["```yaml", cfg.strip(), "```", ""]
            if eps:
                total = eps[-1].get("elapsed", 0) / 3600
                lines += [f"{len(eps)} epochs, {total:.2f} h of training wall time on the 2-core CPU.", "",
                          "| epoch | test OA | test mAcc | train acc | lr |", "| --- | --- | --- | --- | --- |"]
                for e in eps:
                    oa = "-" if e.get("val_oa") is None else f"{e['val_oa'] * 100:.2f}%"
                    ma = "-" if e.get("val_macc") is None else f"{e['val_macc'] * 100:.2f}%"
                    lines.append(f"| {e['epoch'] + 1} | {oa} | {ma} | {e['train_acc'] * 100:.1f}% | {e['lr']:.2e} |")
                lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

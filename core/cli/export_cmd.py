"""``export``: a checkpoint to ONNX (fp32 or int8) or TorchScript, with its metadata."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """Export a checkpoint for deployment: ONNX (optionally int8-quantized) or TorchScript.

The exported model takes points (batch, POINTS, 3) float32, prepared as for training, and
returns logits (batch, classes); the batch dimension is dynamic and sampling starts at point 0
(deterministic). Model name, width and class names are embedded in the file and written to a
sidecar FILE.json.

examples:
  python main.py export --checkpoint assets/models/student.pt --format onnx --out student.onnx
  python main.py export --checkpoint assets/models/student.pt --format onnx --quantize int8 --out student.int8.onnx
  python main.py export --checkpoint assets/models/teacher.pt --format torchscript --out teacher.ts.pt
"""


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32/int8) or TorchScript",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="export format")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: dynamic int8 weights via ONNX Runtime (onnx only)")
    p.add_argument("--points", type=int, default=1024, help="points per cloud, fixed in the export (default 1024)")
    p.add_argument("--out", required=True, help="output file (e.g. student.onnx)")
    p.add_argument("--json", action="store_true", help="print the written metadata as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from core.cli.errors import EXIT_USER_ERROR
    from core.export import ExportError, export

    try:
        meta = export(args.checkpoint, args.out, args.format, args.quantize, args.points)
    except ExportError as exc:  # also CheckpointError: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    size = Path(args.out).stat().st_size
    if args.json:
        print(json.dumps({**meta, "file": str(args.out), "size_bytes": size}, indent=1))
    else:
        kind = args.format + (f" {args.quantize}" if args.quantize else "")
        print(f"{args.out}: {meta['model']} x{meta['width']:g}, {meta['num_classes']} classes, {kind}, "
              f"{size / 1024:.1f} KiB (metadata also in {Path(args.out).name}.json)")
    return 0

"""Copy a trained teacher and student into assets/models/, float16 where accuracy holds.

    python scripts/bundle_models.py --teacher RUN_OR_CKPT --student RUN_OR_CKPT \
        --data ../shared/data/modelnet40_npy1024

Each model is evaluated on the full test split in float32 and again after a float16 round trip;
float16 is kept when overall accuracy moves by at most ``--tolerance`` (default 0.1 points).
The bundled weights are also evaluated on the partial-view benchmark at its default severity
(``evaluate --views partial``; ``partial`` in models.json, as ``main.py report`` records it).
Each bundled model is then calibrated for its in-vocabulary decision (``main.py calibrate``: a fixed
slice of the training split, never the test split) and carries its threshold. The measured numbers
go to assets/models/models.json (read by docs/MODEL_CARD.md's author and the app's model info).

    python scripts/bundle_models.py --calibrate-only assets/models --data ../shared/data/modelnet40_npy1024

adds the calibration to an existing bundle (and its sizes in models.json) without re-evaluating it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from archive_runs import portable_path, portable_paths_in


def calibrate_bundled(path: Path, data: str) -> dict:
    """Add the in-vocabulary calibration to a bundled checkpoint in place; returns its record."""
    from core.cli import main as cli

    if cli(["calibrate", str(path), "--data", data]) != 0:
        raise SystemExit(f"calibrating {path} failed")
    from core.engine.checkpoint import read_checkpoint
    from core.vocabulary import CHECKPOINT_KEY, VocabularyCalibration

    return VocabularyCalibration.from_dict(read_checkpoint(path)[CHECKPOINT_KEY]).summary()


def main(argv=None) -> int:
    from core.engine.checkpoint import load_model, read_checkpoint, save_model
    from core.inference import evaluate_checkpoint
    from core.models.complexity import count_macs, count_parameters

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher")
    p.add_argument("--student")
    p.add_argument("--data", required=True)
    p.add_argument("--calibrate-only", metavar="BUNDLE", help="only add the calibration to this bundle folder")
    p.add_argument("--out", default=str(ROOT / "assets" / "models"))
    p.add_argument("--tolerance", type=float, default=0.001, help="largest OA change accepted for float16")
    args = p.parse_args(argv)
    if args.calibrate_only:
        bundle = Path(args.calibrate_only)
        summary = json.loads((bundle / "models.json").read_text())
        for role in ("teacher", "student"):
            summary[role]["vocabulary"] = calibrate_bundled(bundle / f"{role}.pt", args.data)
            summary[role]["size_bytes"] = (bundle / f"{role}.pt").stat().st_size
        (bundle / "models.json").write_text(json.dumps(summary, indent=1))
        return 0
    if not (args.teacher and args.student):
        p.error("--teacher and --student are required (unless --calibrate-only)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "data": args.data,
               "command": portable_paths_in("python scripts/bundle_models.py "
                                            + " ".join(sys.argv[1:] if argv is None else argv))}
    for role, src in (("teacher", args.teacher), ("student", args.student)):
        model, ck = load_model(src)
        full = evaluate_checkpoint(ck["path"], args.data)
        with tempfile.TemporaryDirectory() as tmp:
            half_path = Path(tmp) / "half.pt"
            save_model(half_path, model, ck["class_names"], ck.get("metrics"), ck.get("config"), half=True)
            half = evaluate_checkpoint(half_path, args.data)
        use_half = abs(half["oa"] - full["oa"]) <= args.tolerance
        dest = out / f"{role}.pt"
        metrics = {"oa": (half if use_half else full)["oa"], "macc": (half if use_half else full)["macc"],
                   "n": full["n"], "source": portable_path(ck["path"])}
        save_model(dest, model, ck["class_names"], metrics, ck.get("config"), half=use_half)
        partial = evaluate_checkpoint(dest, args.data, views="partial")
        vocabulary = calibrate_bundled(dest, args.data)
        summary[role] = {
            "source": portable_path(Path(ck["path"]).resolve()),
            "model": read_checkpoint(dest)["model"],
            "dtype": "float16" if use_half else "float32",
            "oa_fp32": full["oa"], "macc_fp32": full["macc"],
            "oa_fp16": half["oa"], "macc_fp16": half["macc"],
            "n": full["n"],
            "partial": {"oa": partial["oa"], "macc": partial["macc"], "severity": partial["severity"], "n": partial["n"]},
            "params": count_parameters(model), "macs": count_macs(model),
            "size_bytes": dest.stat().st_size,
            "vocabulary": vocabulary,
            "class_names": list(ck["class_names"]),
            "per_class_acc": (half if use_half else full)["per_class_acc"],
            "source_metrics": {k: v for k, v in ck.get("metrics", {}).items() if isinstance(v, (int, float))},
        }
        print(f"{role}: OA fp32 {full['oa'] * 100:.2f}%  fp16 {half['oa'] * 100:.2f}%  "
              f"partial views {partial['oa'] * 100:.2f}%  -> {dest} "
              f"({summary[role]['dtype']}, {dest.stat().st_size / 1024:.0f} KiB)")
    (out / "models.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

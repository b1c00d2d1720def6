"""Run the paper's comparison at an equal epoch budget for the width-1/8 student, resumably.

Every (method, seed) is one run directory under ``--root``; a finished run (report.json) is
skipped, an interrupted one is resumed, so the script can be run again after any interruption
until all runs are done. Jobs run one at a time as ``main.py`` subprocesses.

    python scripts/comparison.py --data ../shared/data/modelnet40_npy1024 \
        --teacher assets/models/teacher.pt --root ~/runs/comparison --epochs 20 --seeds 0 1

With ``--evaluate-partial`` every finished run is also evaluated on the partial-view benchmark
(``main.py evaluate --views partial``, its default severity) into ``partial.json`` beside its report.

Budget: every method trains the student for ``--epochs`` epochs in total; T3DNet splits them
into NetAug (half) then distillation (half), on one cosine schedule (``t3dnet``) or with the
schedule restarted at stage 2 (``t3dnet_restart``). NetAug, e2e and DML make two forward/backward
passes per step, so their compute per epoch is about twice the others' (stated in RESULTS.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The comparison's entries: name -> the registered job it runs (core/engine/jobs.py says which
#: command that is and whether it needs a teacher). ``t3dnet_restart`` restarts the schedule at stage 2.
VARIANTS = {
    "scratch": "train",
    "kd": "kd",
    "netaug": "netaug",
    "t3dnet": "t3dnet",  # one cosine schedule across both stages (the default)
    "t3dnet_restart": "t3dnet",
    "e2e": "e2e",
    "fitnet": "fitnet",
    "dml": "dml",
}


def command(method: str, args, seed: int, out: Path) -> list[str]:
    from core.engine.jobs import METHODS

    job = METHODS[VARIANTS[method]]
    cmd, needs_teacher = job.command, job.needs_teacher
    argv = [sys.executable, str(ROOT / "main.py"), cmd, "--model", args.model, "--width", str(args.width),
            "--data", args.data, "--preset", args.preset, "--out", str(out), "--seed", str(seed),
            "--events", "none"]
    if method.startswith("t3dnet"):
        half = args.epochs // 2
        argv += ["--epochs", str(half), "--kd-epochs", str(args.epochs - half),
                 "--stage-schedule", "restart" if method == "t3dnet_restart" else "continuous"]
    else:
        argv += ["--epochs", str(args.epochs)]
    if needs_teacher:
        argv += ["--teacher", args.teacher]
    if args.limit_train:
        argv += ["--limit-train", str(args.limit_train)]
    if needs_teacher and args.temperature is not None:
        argv += ["--temperature", str(args.temperature)]
    if needs_teacher and args.alpha is not None:
        argv += ["--alpha", str(args.alpha)]
    if args.dropout is not None:
        argv += ["--dropout", str(args.dropout)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.partial_prob:
        argv += ["--partial-prob", str(args.partial_prob)]
    if args.precision:
        argv += ["--precision", args.precision]
    return argv


def evaluate_partial(run: Path, data: str) -> int:
    """Write ``run/partial.json``: the run's final model on the partial-view benchmark (once); 1 on failure."""
    out = run / "partial.json"
    if out.is_file():
        return 0
    argv = [sys.executable, str(ROOT / "main.py"), "evaluate", "--checkpoint", str(run), "--data", data,
            "--views", "partial", "--json"]
    print(f"evaluate {run.parent.name} {run.name} on partial views", flush=True)
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAILED   partial-view evaluation of {run} (exit {r.returncode}): {r.stderr.strip()[-300:]}")
        return 1
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(r.stdout)
    tmp.replace(out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--root", required=True, help="folder of the run directories (outside the work tree)")
    p.add_argument("--model", default="pointnet2_ssg")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--epochs", type=int, default=20, help="student epochs per method (T3DNet: both stages)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--dropout", type=float, default=None, help="student head dropout (default: the architecture's)")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature of the teacher methods (default: the preset's)")
    p.add_argument("--alpha", type=float, default=None, help="KD weight of the teacher methods (default: the preset's)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per job (0: torch's default)")
    p.add_argument("--partial-prob", type=float, default=0.0,
                   help="share of training samples replaced by single-viewpoint partial views")
    p.add_argument("--precision", default=None, help="fp32 | bf16 | auto (default: the preset's)")
    p.add_argument("--evaluate-partial", action="store_true",
                   help="also evaluate each finished run on the partial-view benchmark (partial.json in its folder)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    root = Path(args.root).expanduser()
    failures = 0
    for seed in args.seeds:
        for method in args.methods:
            out = root / method / f"seed{seed}"
            if (out / "report.json").is_file():
                print(f"done     {method} seed {seed}")
            else:
                resumable = (out / "job.yaml").is_file()
                argv_ = ([sys.executable, str(ROOT / "main.py"), "resume", str(out), "--events", "none"]
                         if resumable else command(method, args, seed, out))
                print(("resume   " if resumable else "start    ") + f"{method} seed {seed}: {' '.join(argv_[1:])}",
                      flush=True)
                if args.dry_run:
                    continue
                r = subprocess.run(argv_, cwd=ROOT)
                if r.returncode == 130:
                    print("interrupted: run the script again to resume")
                    return 130
                if r.returncode != 0:
                    failures += 1
                    print(f"FAILED   {method} seed {seed} (exit {r.returncode})")
                    continue
            if args.evaluate_partial and not args.dry_run:
                failures += evaluate_partial(out, args.data)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

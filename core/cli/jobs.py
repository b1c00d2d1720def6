"""Job commands: ``train`` and the stage/baseline commands, ``compress``, ``resume``,
``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

STAGES = {
    "train": "train any registered model from scratch (teachers, the scratch baseline)",
    "netaug": "stage 1: the tiny model trained inside its augmentable supernet (NetAug)",
    "distill": "stage 2: a student (from --init or scratch) learns from a frozen teacher (KD)",
    "kd": "baseline: knowledge distillation alone, student from scratch",
    "e2e": "variant: NetAug and distillation in one stage",
    "fitnet": "baseline: feature-level distillation (FitNet hint on the embedding)",
    "dml": "baseline: deep mutual learning of two tiny models",
}


def _add_job_options(p: argparse.ArgumentParser, model_required: bool) -> None:
    p.add_argument("--model", default=None,
                   help="registered model name (see: models); " +
                   ("required unless --config sets model:" if model_required else "default pointnet2_ssg"))
    p.add_argument("--width", type=float, default=None,
                   help="width multiplier (default: --config's, else " + ("1" if model_required else "0.125") + ")")
    p.add_argument("--data", required=True, help="dataset folder (e.g. ../shared/data/modelnet40_npy1024)")
    p.add_argument("--preset", default="cpu", help="paper | cpu | smoke (default cpu)")
    p.add_argument("--config", default=None, help="YAML file of job keys (applied after the preset)")
    p.add_argument("--out", required=True, help="run directory (created; resumable)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--kd-epochs", type=int, default=None, help="compress: epochs of the distillation stage")
    p.add_argument("--stage-schedule", choices=["continuous", "restart"], default=None,
                   help="compress: one cosine across both stages (continuous, default) or one per stage")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--precision", default=None, help="fp32 | bf16")
    p.add_argument("--dropout", type=float, default=None,
                   help="classifier-head dropout (default: the architecture's; tiny students train better with less)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (distillation jobs)")
    p.add_argument("--init", default=None, help="student initialisation checkpoint (distill)")
    p.add_argument("--alpha", type=float, default=None, help="KD weight a in (1-a)*CE + a*T^2*KL")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature T")
    p.add_argument("--cache-views", type=int, default=None, help="cached teacher views per shape (0: live teacher)")
    p.add_argument("--limit-train", type=int, default=None, help="use only this many training shapes")
    p.add_argument("--limit-test", type=int, default=None, help="use only this many test shapes")
    p.add_argument("--events", choices=["bar", "json", "none"], default="bar",
                   help="bar: progress bar on stderr; json: events as JSON lines on stdout")


def add_commands(sub) -> None:
    for job, text in STAGES.items():
        p = sub.add_parser(job, help=text, description=text + ".\n\nexample:\n  python main.py " + job +
                           (" --model pointnet2_ssg" if job == "train" else " --model pointnet2_ssg --width 0.125") +
                           " --data ../shared/data/modelnet40_npy1024 --preset cpu --out runs/" + job +
                           ("" if job in ("train", "netaug", "dml") else " --teacher assets/models/teacher.pt"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_job_options(p, model_required=(job == "train"))
        p.set_defaults(func=run_stage, job=job)
    p = sub.add_parser("compress", help="the whole T3DNet pipeline: NetAug then distillation",
                       description="The T3DNet pipeline: stage 1 NetAug, stage 2 distillation from the teacher.\n\n"
                       "example:\n  python main.py compress --data ../shared/data/modelnet40_npy1024 "
                       "--teacher assets/models/teacher.pt --preset cpu --out runs/t3dnet",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_job_options(p, model_required=False)
    p.set_defaults(func=run_stage, job="t3dnet")

    p = sub.add_parser("resume", help="continue a run directory where it stopped",
                       description="Continue a run where it stopped (after a cancel, a crash or the end of a session).\n\n"
                       "example:\n  python main.py resume runs/t3dnet")
    p.add_argument("run_dir")
    p.add_argument("--events", choices=["bar", "json", "none"], default="bar")
    p.set_defaults(func=run_resume)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset's test split",
                       description="Overall and mean class accuracy on the test split.\n\n"
                       "example:\n  python main.py evaluate --checkpoint assets/models/student.pt "
                       "--data ../shared/data/modelnet40_npy1024 --json")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="evaluate only this many shapes (evenly spread)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("predict", help="teacher and student predictions for one 3D file",
                       description="Run the teacher and the student on one file (any format the app reads).\n\n"
                       "example:\n  python main.py predict ../shared/data/scans/bathtub_0154.ply --json")
    p.add_argument("path")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: bundled)")
    p.add_argument("--student", default=None, help="student checkpoint (default: bundled)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--up", default="z", choices=["z", "y"], help="up axis of the file (default z)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict)


def _sinks(mode: str):
    """Where the job's events go besides the run's own events.jsonl."""
    from core.engine.events import Broadcast, ProgressBar, StdoutJson

    sinks = []
    if mode == "json":
        sinks.append(StdoutJson())
    elif mode == "bar":
        sinks.append(ProgressBar())
    return Broadcast(sinks)


def _install_signal_handlers(cancel: threading.Event) -> None:
    def handler(signum, frame):
        cancel.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _run(fn, run_dir: Path, events: str) -> int:
    from core.engine.trainer import JobCancelled

    cancel = threading.Event()
    _install_signal_handlers(cancel)
    run_dir.mkdir(parents=True, exist_ok=True)
    sink = _sinks(events)
    from core.engine.distributed import shutdown

    try:
        report = fn(sink, cancel)
    except JobCancelled as exc:
        print(str(exc), file=sys.stderr)
        return 130
    finally:
        shutdown()
    if report and events != "json":
        print(f"done: OA {report['oa'] * 100:.2f}%  mAcc {report['macc'] * 100:.2f}%  "
              f"params {report['params']:,}  -> {report.get('checkpoint', run_dir)}")
    return 0


def run_stage(args) -> int:
    from core.engine.trainer import run_job

    cfg = stage_config(args)
    out = Path(args.out)
    return _run(lambda sink, cancel: run_job(cfg, out, sink, cancel), out, args.events)


def stage_config(args):
    """The job's typed config: defaults <- --preset <- --config <- explicit options."""
    from core.engine.config import ConfigError, load_config

    # A teacher (train) has no default model; students default to the width-1/8 SSG. --config's
    # model: and width: count unless the command line gives them.
    defaults = {"width": 1.0} if args.job == "train" else {"model": "pointnet2_ssg", "width": 0.125}
    if args.job == "train" and args.model is None and not _config_sets(args.config, "model"):
        raise ConfigError("train: give --model (see: python main.py models) or a --config that sets model:")
    overrides = {
        "job": args.job, "model": args.model, "width": args.width, "data": args.data, "epochs": args.epochs,
        "kd_epochs": args.kd_epochs, "stage_schedule": args.stage_schedule, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "threads": args.threads, "device": args.device, "precision": args.precision, "dropout": args.dropout,
        "limit_train": args.limit_train, "limit_test": args.limit_test,
        "distill": {k: v for k, v in {"teacher": args.teacher, "init": args.init, "alpha": args.alpha,
                                       "temperature": args.temperature, "cache_views": args.cache_views}.items()
                    if v is not None},
    }
    return load_config(args.preset, args.config, overrides, defaults=defaults)


def _config_sets(path: str | None, key: str) -> bool:
    """Whether the YAML file at ``path`` sets ``key`` (an unreadable file is reported later)."""
    if not path:
        return False
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return True  # load_config gives the precise error
    return isinstance(loaded, dict) and loaded.get(key) is not None


def run_resume(args) -> int:
    from core.engine.trainer import JobError, resume_run

    out = Path(args.run_dir)
    if not (out / "job.yaml").is_file():
        raise JobError(f"{out}: not a run directory (no job.yaml)")
    return _run(lambda sink, cancel: resume_run(out, sink, cancel), out, args.events)


def run_evaluate(args) -> int:
    from core.inference import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, limit=args.limit)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"}))
    else:
        print(f"{result['checkpoint']}: OA {result['oa'] * 100:.2f}%  mAcc {result['macc'] * 100:.2f}%  "
              f"on {result['n']} {args.split} shapes")
    return 0


def run_predict(args) -> int:
    from core.inference import Comparison

    comp = Comparison.from_paths(args.teacher, args.student)
    result = comp.predict_file(args.path, top=args.top, up_axis=args.up)
    if args.json:
        print(json.dumps(result))
        return 0
    for role in ("teacher", "student"):
        r = result[role]
        print(f"{role}: {Path(r['checkpoint']).name} ({r['params']:,} params, {r['latency_ms']:.1f} ms)")
        for t in r["top"]:
            print(f"  {t['class']:<14}{t['prob'] * 100:6.1f}%")
    return 0

"""Job commands: one per registered method (``compress``, ``train``, the stage and baseline
commands; :mod:`core.engine.jobs`), ``run``, ``resume``, ``evaluate``, ``calibrate``, ``predict``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from core.cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USER_ERROR
from core.cli.options import add_channels_option, add_runtime_option
from core.data.io import check_channels
from core.data.orient import UP_AXES, UP_CHOICES, likelier_axis, unsure_advice, up_axis_text
from core.engine.jobs import METHODS, Method
from core.errors import T3DError
from core.vocabulary import DEFAULT_SCORE, SCORES

DATA_EXAMPLE = "../shared/data/modelnet40_npy1024"
TEACHER_EXAMPLE = "assets/models/teacher.pt"


def _add_events_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", choices=["bar", "json", "none"], default="bar",
                   help="bar: progress bar on stderr; json: events as JSON lines on stdout")


def _add_tensorboard_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write the training curves for TensorBoard into RUN_DIR/tensorboard "
                        "(the job key tensorboard: true; view them with: tensorboard --logdir RUN_DIR)")


def _add_job_options(p: argparse.ArgumentParser, m: Method) -> None:
    p.add_argument("--model", default=None,
                   help="registered model name (see: models); " +
                   (f"default {m.model_default}" if m.model_default else "required unless --config sets model:"))
    p.add_argument("--width", type=float, default=None,
                   help=f"width multiplier (default: --config's, else {m.width_default:g})")
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
    p.add_argument("--precision", default=None, help="fp32 | bf16 | auto (bf16 where the hardware computes it natively)")
    p.add_argument("--dropout", type=float, default=None,
                   help="classifier-head dropout (default: the architecture's; tiny students train better with less)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (distillation jobs)")
    p.add_argument("--init", default=None,
                   help="initial weights: a checkpoint of the same model and width (distill; train: fine-tune it)")
    p.add_argument("--partial-prob", type=float, default=None,
                   help="share of training samples replaced by single-viewpoint partial views (default 0)")
    p.add_argument("--alpha", type=float, default=None, help="KD weight a in (1-a)*CE + a*T^2*KL")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature T")
    p.add_argument("--cache-views", type=int, default=None, help="cached teacher views per shape (0: live teacher)")
    p.add_argument("--limit-train", type=int, default=None, help="use only this many training shapes")
    p.add_argument("--limit-test", type=int, default=None, help="use only this many test shapes")
    _add_tensorboard_option(p)
    _add_events_option(p)


def _example(m: Method) -> str:
    model = f" --model {m.model_default or 'pointnet2_ssg'}" + (f" --width {m.width_default:g}" if m.model_default else "")
    teacher = f" --teacher {TEACHER_EXAMPLE}" if m.needs_teacher else ""
    return f"python main.py {m.command}{model} --data {DATA_EXAMPLE}{teacher} --preset cpu --out runs/{m.name}"


def add_commands(sub) -> None:
    for m in METHODS.values():
        stages = f" (stages: {', then '.join(m.stages)})" if m.is_pipeline else ""
        p = sub.add_parser(m.command, help=m.help,
                           description=f"{m.help[0].upper()}{m.help[1:]}{stages}.\nThe job: --preset, overridden by "
                           f"--config, overridden by the options.\n\nexample:\n  {_example(m)}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_job_options(p, m)
        p.set_defaults(func=run_stage, job=m.name)

    p = sub.add_parser("run", help="run a YAML job file (the keys of a run folder's job.yaml)",
                       description="Run the job a YAML job file describes. Its keys are those of a run folder's "
                       "job.yaml\n(job:, model:, width:, data:, epochs:, distill:, ...): a key left out takes its "
                       "default,\nan unknown key is an error. The run folder gets the full job.yaml; resume "
                       "continues it.\n\n"
                       "examples:\n  python main.py run my_job.yaml --out runs/my_job\n"
                       "  python main.py run runs/t3dnet/job.yaml       # run a prepared run folder (the app's way)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_file", metavar="JOB.yaml", help="YAML job file (keys as in a run folder's job.yaml)")
    p.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory (created; resumable); default: the folder of JOB.yaml when it is named job.yaml")
    _add_tensorboard_option(p)
    _add_events_option(p)
    p.set_defaults(func=run_file)

    p = sub.add_parser("resume", help="continue a run directory where it stopped",
                       description="Continue a run where it stopped (after a cancel, a crash or a stopped machine).\n\n"
                       "example:\n  python main.py resume runs/t3dnet")
    p.add_argument("run_dir")
    _add_events_option(p)
    p.set_defaults(func=run_resume)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset's test split",
                       description="Overall and mean class accuracy on the test split.\n\n"
                       "example:\n  python main.py evaluate --checkpoint assets/models/student.pt "
                       "--data ../shared/data/modelnet40_npy1024 --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="evaluate only this many shapes (evenly spread)")
    p.add_argument("--up", default=None, choices=UP_AXES,
                   help="up axis of the dataset's files (default: the layout's convention, e.g. z for ModelNet "
                        "OFF/npy, y for the PointNet++ text and HDF5 files)")
    add_channels_option(p, "the dataset's headerless float32 point files")
    p.add_argument("--views", choices=["clean", "partial"], default="clean",
                   help="clean: the shapes as they are; partial: each shape seen from one fixed random viewpoint "
                        "(hidden point removal), sparser and noisier, like a single scan")
    p.add_argument("--severity", type=int, choices=[1, 2, 3], default=2,
                   help="partial views only: 1 mild, 2 middle, 3 hard (fewer points kept, more noise, closer camera)")
    add_runtime_option(p)
    p.add_argument("--fit-temperature", type=int, nargs="?", const=1000, default=0, metavar="SHAPES",
                   help="also fit a temperature on SHAPES (default 1000, at most 1000) evenly spread shapes of the "
                        "TRAINING split and report the ECE after temperature scaling (costs their forward passes)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("calibrate", help="add an in-vocabulary threshold to a checkpoint",
                       description="Calibrate the checkpoint's \"not sure\": the threshold of its familiarity score "
                       "that flags at most --flag-rate of a fixed slice of the TRAINING split (never the test split), each "
                       "shape re-sampled (a random half of its points) so that it is new to the model. The exposure "
                       "score (default) first trains its small network on the model's logits of other training shapes "
                       "against generated objects of none of the classes. "
                       "The threshold is stored in the checkpoint (written atomically; everything else kept).\n\n"
                       "example:\n  python main.py calibrate runs/t3dnet/student.pt --data ../shared/data/modelnet40_npy1024",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="the dataset the model was trained on (its train split is used)")
    p.add_argument("--out", default=None, help="write the calibrated checkpoint here (default: update in place)")
    p.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE, help=f"familiarity score (default {DEFAULT_SCORE})")
    p.add_argument("--shapes", type=int, default=1000, help="training shapes used (default 1000, evenly spread)")
    p.add_argument("--flag-rate", type=float, default=0.05,
                   help="share of in-vocabulary training shapes allowed below the threshold (default 0.05)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_calibrate)

    p = sub.add_parser("predict", help="teacher and student predictions for 3D files or folders",
                       description="Run the teacher and the student on one file (any format the app reads), or on "
                       "every 3D file of folders (recursively, sorted; files whose extension no reader takes are "
                       "skipped) and several files, in batches. "
                       "The up axis comes from --up, else from the format, else from an estimate; a scene "
                       "(several objects on a floor, road or table) is reported as such, and --objects "
                       "finds its objects and predicts each. The JSON fields are described in docs/CLI.md. "
                       "Exit status with several files: 0 all predicted, 3 some could not be read, 2 none could.\n\n"
                       "examples:\n  python main.py predict ../shared/data/scans/bathtub_0154.ply --json\n"
                       "  python main.py predict scan.bin --channels 5 --objects --json\n"
                       "  python main.py predict ../shared/data/modelnet10_pcd1024_test --jsonl --csv predictions.csv",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="+", help="3D files and folders")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: bundled)")
    p.add_argument("--student", default=None, help="student checkpoint (default: bundled)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--up", default="auto", choices=UP_CHOICES,
                   help="up axis of the file: auto (the format's, else estimated) or a signed axis (default auto)")
    add_channels_option(p)
    p.add_argument("--objects", action="store_true", help="find the objects of a scene and predict each")
    add_runtime_option(p)
    p.add_argument("--json", action="store_true", help="one file: its answer as one JSON object")
    p.add_argument("--jsonl", action="store_true",
                   help="one JSON object per line and file: --json's object plus path, or path and error")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write a table (file, teacher/student class and probability, agree, error); "
                        "written atomically once every file is done")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clouds per forward pass of each model over several files (default 16)")
    p.set_defaults(func=run_predict)


def _callbacks(mode: str) -> list:
    """Where the job's events go besides the run's own events.jsonl (``--events``)."""
    from core.engine.callbacks import ProgressBar, StdoutJson

    return {"json": [StdoutJson()], "bar": [ProgressBar()]}.get(mode, [])


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
    callbacks = _callbacks(events)
    from core.engine.distributed import shutdown

    try:
        report = fn(callbacks, cancel)
    except JobCancelled as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INTERRUPTED
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
    return _run(lambda callbacks, cancel: run_job(cfg, out, cancel=cancel, callbacks=callbacks), out, args.events)


def stage_config(args):
    """The job's typed config: the method's defaults <- --preset <- --config <- explicit options."""
    from core.engine.config import ConfigError, load_config

    # A teacher (train) has no default model; students default to the width-1/8 SSG. --config's
    # model: and width: count unless the command line gives them.
    m = METHODS[args.job]
    if m.model_default is None and args.model is None and not _config_sets(args.config, "model"):
        raise ConfigError(f"{m.command}: give --model (see: python main.py models) or a --config that sets model:")
    overrides = {
        "job": args.job, "model": args.model, "width": args.width, "data": args.data, "epochs": args.epochs,
        "kd_epochs": args.kd_epochs, "stage_schedule": args.stage_schedule, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "threads": args.threads, "device": args.device, "precision": args.precision, "dropout": args.dropout,
        "limit_train": args.limit_train, "limit_test": args.limit_test, "init": args.init,
        "tensorboard": args.tensorboard,
        "augment": {} if args.partial_prob is None else {"partial_prob": args.partial_prob},
        "distill": {k: v for k, v in {"teacher": args.teacher, "alpha": args.alpha,
                                       "temperature": args.temperature, "cache_views": args.cache_views}.items()
                    if v is not None},
    }
    return load_config(args.preset, args.config, overrides, defaults=m.defaults)


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


def run_file(args) -> int:
    """``run JOB.yaml``: the job file, validated, run in ``--out`` (default: the job file's own run folder)."""
    from core.engine.config import ConfigError, load_config
    from core.engine.trainer import run_job

    path = Path(args.job_file)
    cfg = load_config(path=path, overrides={"tensorboard": args.tensorboard})
    if args.out is None and path.name != "job.yaml":
        raise ConfigError(f"{path}: give --out RUN_DIR (only a run folder's job.yaml runs in its own folder)")
    out = Path(args.out) if args.out else path.parent
    return _run(lambda callbacks, cancel: run_job(cfg, out, cancel=cancel, callbacks=callbacks), out, args.events)


def run_resume(args) -> int:
    from core.engine.trainer import JobError, resume_run

    out = Path(args.run_dir)
    if not (out / "job.yaml").is_file():
        raise JobError(f"{out}: not a run directory (no job.yaml)")
    return _run(lambda callbacks, cancel: resume_run(out, cancel=cancel, callbacks=callbacks), out, args.events)


def run_evaluate(args) -> int:
    from core.inference import evaluate_checkpoint

    check_channels(args.channels, "--channels")
    if not 0 <= args.fit_temperature <= 1000:
        raise T3DError(f"--fit-temperature takes 1 to 1000 training shapes (got {args.fit_temperature})")
    result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, limit=args.limit, up=args.up,
                                 channels=args.channels, views=args.views, severity=args.severity,
                                 temperature_shapes=args.fit_temperature, runtime=args.runtime)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"}))
    else:
        views = f" (partial views, severity {args.severity})" if args.views == "partial" else ""
        print(f"{result['checkpoint']}: OA {result['oa'] * 100:.2f}%  mAcc {result['macc'] * 100:.2f}%  "
              f"on {result['n']} {args.split} shapes{views}, {result['shapes_per_s']:.1f} shapes/s "
              f"(forward passes, batch {result['batch_size']}, {result['threads']} threads, {result['runtime']})")
        print(f"ECE {result['ece'] * 100:.2f}% ({result['ece_bins']} equal-width confidence bins)" +
              (f"; after temperature scaling (T = {result['temperature']:.3f}, fitted on the "
               f"{result['temperature_fitted_on']}): ECE {result['ece_temperature_scaled'] * 100:.2f}%"
               if "temperature" in result else ""))
    return EXIT_OK


def run_predict(args) -> int:
    from core.inference import Comparison

    check_channels(args.channels, "--channels")
    if args.batch_size is not None and args.batch_size < 1:
        raise T3DError(f"--batch-size must be at least 1 (got {args.batch_size})")
    several = len(args.path) > 1 or Path(args.path[0]).is_dir()
    if several and args.json:
        raise T3DError("--json prints one file's answer: for folders or several files use --jsonl")
    comp = Comparison.from_paths(args.teacher, args.student, runtime=args.runtime)
    if several or args.jsonl or args.csv:
        return _predict_files(comp, args)
    result = comp.predict_file(args.path[0], top=args.top, up=args.up, channels=args.channels, objects=args.objects)
    for obj in result.get("objects", []):  # arrays for callers in Python, not part of the JSON
        obj.pop("indices")
        obj.pop("rotation")
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    inp = result["input"]
    up = up_axis_text(inp["up_axis"], inp["up_axis_source"], inp["up_axis_confidence"])
    print(f"input: {inp['format']}, {inp['points_in_file']:,} points, up axis {up}"
          f"{', a scene: ' + inp['scene_reason'] if inp['scene'] else ''}")
    if inp["up_axis_unsure"]:
        print(f"note: {unsure_advice(likelier_axis(inp['up_axis'], inp['up_axis_scores']))} with --up")
    for role in ("teacher", "student"):
        r = result[role]
        known = {True: "", False: "  (not in its vocabulary: it does not know this kind of object)",
                 None: "  (uncalibrated: no in-vocabulary decision)"}[r["in_vocabulary"]]
        print(f"{role}: {Path(r['checkpoint']).name} ({r['params']:,} params, {r['latency_ms']:.1f} ms, "
              f"{r['end_to_end_ms']:.1f} ms with preprocessing, {r['runtime']}){known}")
        for t in r["top"]:
            print(f"  {t['class']:<14}{t['prob'] * 100:6.1f}%")
    print(f"verdict: {result['verdict'].replace('_', ' ')}")
    for i, obj in enumerate(result.get("objects", []), 1):
        t, s = obj["teacher"], obj["student"]
        print(f"object {i}: {obj['points']:,} points, teacher {t['top'][0]['class']} {t['top'][0]['prob']:.0%}, "
              f"student {s['top'][0]['class']} {s['top'][0]['prob']:.0%} ({obj['verdict'].replace('_', ' ')})")
    return EXIT_OK


def _predict_files(comp, args) -> int:
    """``predict`` over folders or several files (or one file with --jsonl/--csv): one answer per file
    on stdout (JSON lines, or one line of text each), a progress bar and the summary on stderr."""
    import time

    from tqdm import tqdm

    from core.folder_predict import BATCH_SIZE, Timings, collect_files, predict_files, write_csv

    if args.csv and not Path(args.csv).resolve().parent.is_dir():
        raise T3DError(f"--csv {args.csv}: its folder does not exist")
    found = collect_files(args.path)
    if found.skipped:
        exts = sorted({Path(f).suffix.lower() or "(none)" for f in found.skipped})
        print(f"skipped {len(found.skipped)} file{'s' * (len(found.skipped) != 1)} that no reader takes "
              f"(extensions: {', '.join(exts)})", file=sys.stderr)
    if not found.files:
        raise T3DError(f"{', '.join(args.path)}: no 3D files found")
    timings, answers, failed = Timings(), [], 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(found.files), unit="file", file=sys.stderr, dynamic_ncols=True, leave=False,
               disable=None)  # None: no bar when stderr is not a terminal
    with bar:
        for a in predict_files(comp, found.files, top=args.top, up=args.up, channels=args.channels,
                               objects=args.objects, batch_size=args.batch_size or BATCH_SIZE, timings=timings):
            failed += "error" in a
            if args.csv:
                answers.append(a)
            line = json.dumps(a) if args.jsonl else _answer_line(a)
            bar.clear()
            print(line, flush=True)
            bar.update(1)
    elapsed = time.perf_counter() - t0
    if args.csv:
        write_csv(answers, args.csv)
    n = len(found.files)
    print(f"{n - failed} of {n} files predicted, {failed} could not be read, in {elapsed:.1f} s "
          f"({timings.summary()})" + (f"; table: {args.csv}" if args.csv else ""), file=sys.stderr)
    return EXIT_OK if not failed else EXIT_USER_ERROR if failed == n else EXIT_SOME_FAILED


def _answer_line(a: dict) -> str:
    """One line of text for one file's answer."""
    if "error" in a:  # our messages start with the file's name already
        return f"error: {a['error']}" if a["error"].startswith(a["path"]) else f"{a['path']}: error: {a['error']}"
    t, s = a["teacher"]["top"][0], a["student"]["top"][0]
    return (f"{a['path']}: teacher {t['class']} {t['prob']:.0%}, student {s['class']} {s['prob']:.0%} "
            f"({a['verdict'].replace('_', ' ')})")


def run_calibrate(args) -> int:
    from core.data.datasets import load_split
    from core.engine.checkpoint import atomic_save, load_model
    from core.vocabulary import CHECKPOINT_KEY, calibrate_model, calibration_indices, exposure_indices

    if not 0 <= args.flag_rate < 1:
        raise T3DError(f"--flag-rate must be in [0, 1) (got {args.flag_rate})")
    if args.shapes < 20:
        raise T3DError(f"--shapes must be at least 20 (got {args.shapes})")
    model, ck = load_model(args.checkpoint)
    ds = load_split(args.data, "train", 1024)
    if list(ds.class_names) != list(ck["class_names"]):
        raise T3DError(f"{ck['path']}: its classes differ from {args.data}'s: calibrate on the data it was trained on")
    idx = calibration_indices(len(ds), args.shapes)
    source = f"{Path(args.data).name} train split, {len(idx)} of {len(ds)} shapes (evenly spread), each re-sampled"
    exposure = None
    if args.score == "exposure":
        exposure = ds.points[exposure_indices(len(ds), calibration=args.shapes)]
        if len(exposure) < 20:
            raise T3DError(f"{args.data}: {len(ds)} training shapes leave too few beside the {len(idx)} calibration "
                           "shapes for the exposure score to learn from: use fewer --shapes or --score msp")
    cal = calibrate_model(model, ds.points[idx], source, score=args.score, flag_rate=args.flag_rate,
                          exposure_points=exposure)
    ck[CHECKPOINT_KEY] = cal.to_dict()
    out = Path(args.out or ck["path"])
    ck.pop("path")
    atomic_save(ck, out)
    if args.json:
        print(json.dumps({"checkpoint": str(out), **cal.summary()}))
    else:
        print(f"{out}: {cal.score} threshold {cal.threshold:.4f} (flags {cal.flag_rate:.0%} of {cal.source})")
    return 0

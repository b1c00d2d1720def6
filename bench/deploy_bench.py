"""Deployment benchmark of the inference engine (core.runtime): the goals of issue #16, where the
time goes, and the engine's exactness; writes docs/BENCHMARKS_DEPLOY.md.

Goals, each model on its default runtime (``auto``), ``--threads`` CPU threads:

1. ``main.py predict SCAN --json`` on a real ~36k-point scan (the Stanford bunny's vertices as a
   point file), median of 5 separate runs (processes) of the JSON's ``end_to_end_ms``: the student
   at most 3 ms; the teacher's at least 5x the student's.
2. The student's throughput on prepared 1,024-point ModelNet40 test shapes, batched: at least
   1,000 shapes/s.

Then, in one process: the batch-1 time of each piece (preprocessing of the scan, each model's
sampling and grouping, its network on each runtime, eager PyTorch for reference), and the
exactness of every runtime against eager PyTorch on the whole ModelNet40 test split (top-1
disagreements, largest logit difference). Timed pieces are interleaved round by round, so load
from other processes hits all of them alike; the report states the load average.

    .venv/bin/python bench/deploy_bench.py --threads 2
    .venv/bin/python bench/deploy_bench.py --threads 2 --folder ../shared/data/modelnet10_pcd1024_test   # with goal 3
    .venv/bin/python bench/deploy_bench.py --threads 2 --agreement agreement.json   # with the table of
        bench/preprocess_agreement.py --json agreement.json
    .venv/bin/python bench/deploy_bench.py --quick --report /tmp/deploy.md         # a fast smoke run
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
ASSETS = ROOT / "assets" / "models"
GOAL_E2E_MS = 3.0
GOAL_RATIO = 5.0
GOAL_THROUGHPUT = 1000.0
GOAL_FOLDER_TOP1 = 0.85
GOAL_FOLDER_S = 60.0


def scan_file(folder: Path) -> tuple[Path, str]:
    """The ~36k-point scan as a point file: the Stanford bunny's vertices (a real range scan)."""
    import numpy as np
    import trimesh

    src = DATA / "scans" / "bun_zipper.ply"
    pts = np.asarray(trimesh.load(src, process=False).vertices, dtype=np.float32)
    out = folder / "bunny_points.npy"
    np.save(out, pts)
    return out, f"{src.name} vertices, {len(pts):,} points"


def folder_run(folder: Path, threads: int, log) -> dict:
    """One ``predict FOLDER --jsonl`` process: exit status, lines, each model's top-1 against the class
    folder (the first part of each file's path under FOLDER), wall time and the run's own summary."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "predict", str(folder), "--jsonl"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    ok = [a for a in answers if "error" not in a]
    truth = [Path(a["path"]).relative_to(folder).parts[0] for a in ok]
    acc = {role: sum(a[role]["top"][0]["class"] == t for a, t in zip(ok, truth)) / max(1, len(ok))
           for role in ("teacher", "student")}
    summary = next((line for line in reversed(r.stderr.splitlines()) if "reading" in line), "")
    out = {"folder": folder.name, "exit": r.returncode, "lines": len(answers), "errors": len(answers) - len(ok),
           "top1_is_folder": acc, "wall_s": wall, "summary": summary.strip()}
    log(f"folder {folder.name}: exit {r.returncode}, {len(answers)} lines, student {acc['student']:.1%}, "
        f"teacher {acc['teacher']:.1%}, {wall:.1f} s")
    return out


def cli_runs(path: Path, runs: int, threads: int, log) -> list[dict]:
    """``runs`` separate ``predict PATH --json`` processes (after one that fills the ONNX cache)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(ROOT / "main.py"), "predict", str(path), "--json"]
    out = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"predict failed: {r.stderr.strip()[-500:]}")
        if i == 0:
            log(f"priming run (fills the ONNX cache): {wall:.1f} s")
            continue
        ans = json.loads(r.stdout)
        ans["_wall_s"] = wall
        out.append(ans)
        log(f"run {i}: " + ", ".join(f"{role} {ans[role]['end_to_end_ms']:.2f} ms end to end ({ans[role]['runtime']})"
                                    for role in ("teacher", "student")) + f"; process {wall:.1f} s")
    return out


def interleaved(calls: dict, rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per call of each entry, interleaved round by round after warm-up."""
    import numpy as np

    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = collections.defaultdict(list)
    for _ in range(rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def machine() -> dict:
    import onnxruntime
    import torch

    from core.engine.machine import cpu_name

    try:
        import numba

        nb = numba.__version__
    except ImportError:
        nb = "absent"
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numba": nb, "python": platform.python_version(),
            "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
            "allocator": "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: .venv/bin/python bench/deploy_bench.py --threads 2")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of torch, ONNX Runtime and the kernels")
    p.add_argument("--runs", type=int, default=5, help="separate predict processes (goal 1)")
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds of the batch-1 pieces")
    p.add_argument("--batch", type=int, default=64, help="batch of the throughput goal")
    p.add_argument("--exactness-limit", type=int, default=0, help="test shapes for exactness (default all)")
    p.add_argument("--agreement", default=None, help="JSON of bench/preprocess_agreement.py to include")
    p.add_argument("--folder", default=None,
                   help="also time `predict FOLDER --jsonl` on a folder of CLASS/.../FILE shapes (goal 3), e.g. "
                        "../shared/data/modelnet10_pcd1024_test")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer runs, rounds and shapes")
    p.add_argument("--report", default=str(ROOT / "docs" / "BENCHMARKS_DEPLOY.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.rounds, args.exactness_limit = 2, 5, args.exactness_limit or 128

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from core.data.datasets import load_split
    from core.data.preprocess import prepare_points
    from core.engine.checkpoint import load_model
    from core.runtime import RUNTIMES, create_engine

    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)
        lines.append(msg)

    load_start = os.getloadavg()[0]
    info = machine()
    log(f"machine: {info['cpu']}, {info['cores']} cores; threads {args.threads}; load average {load_start:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="t3dnet-deploy-"))
    scan, scan_desc = scan_file(tmp)

    # Goal 1: separate predict processes.
    runs = cli_runs(scan, args.runs, args.threads, log)
    e2e = {r: float(np.median([a[r]["end_to_end_ms"] for a in runs])) for r in ("teacher", "student")}
    lat = {r: float(np.median([a[r]["latency_ms"] for a in runs])) for r in ("teacher", "student")}
    rt_used = {r: sorted({a[r]["runtime"] for a in runs}) for r in ("teacher", "student")}
    analysis = float(np.median([a["input"]["analysis_ms"] for a in runs]))
    wall = float(np.median([a["_wall_s"] for a in runs]))

    # In-process pieces, batch 1.
    ds = load_split(DATA / "modelnet40_npy1024", "test", 1024)
    test_pts = np.ascontiguousarray(ds.points[:, :, :3], dtype=np.float32)
    raw = np.load(scan)
    prepared = prepare_points(raw, 1024, up_axis="y")[None]
    models, engines = {}, {}
    for role in ("teacher", "student"):
        model, ck = load_model(ASSETS / f"{role}.pt")
        models[role] = model.eval()
        engines[role] = {rt: create_engine(model, rt, source=ck["path"], threads=args.threads) for rt in RUNTIMES}
        engines[role]["auto"] = create_engine(model, "auto", source=ck["path"], threads=args.threads)
        log(f"{role}: auto -> {engines[role]['auto'].describe()}")
    x = torch.from_numpy(prepared)
    calls = {"preprocessing (scan -> 1024 points)": lambda: prepare_points(raw, 1024, up_axis="y")}
    for role, m in models.items():
        e = engines[role]["torch"]
        grouping = m.compute_grouping(x, impl="native")
        inputs = e.module.grouping_inputs(grouping, x)
        calls[f"{role}: sampling + grouping (native)"] = lambda m=m: m.compute_grouping(x, impl="native")
        calls[f"{role}: the graph's inputs (first level's grouped rows)"] = (
            lambda e=e, grouping=grouping: e.module.grouping_inputs(grouping, x))
        calls[f"{role}: sampling + grouping (eager torch)"] = lambda m=m: m.compute_grouping(x)
        calls[f"{role}: network, torch"] = lambda e=e, inputs=inputs: e.module(x, *inputs)
        o = engines[role]["onnx"]
        feed = {o.module.input_names[0]: prepared}
        feed.update((n, t.numpy()) for n, t in zip(o.module.input_names[1:], inputs))
        calls[f"{role}: network, onnx"] = lambda o=o, feed=feed: o.session.run(None, feed)
        auto = engines[role]["auto"]
        if auto.single_session is not None:
            calls[f"{role}: network, onnx (1 thread)"] = lambda o=auto, feed=feed: o.single_session.run(None, feed)
        for rt in (*RUNTIMES, "auto"):
            calls[f"{role}: engine {rt} (all of the model)"] = lambda e=engines[role][rt]: e.logits(prepared)
        calls[f"{role}: eager PyTorch model(x), for reference"] = lambda m=m: m(x)
    log(f"timing {len(calls)} pieces x {args.rounds} rounds ...")
    with torch.inference_mode():
        pieces = interleaved(calls, args.rounds)

    # Goal 2: throughput, batched.
    tput = {}
    for role in ("teacher", "student"):
        e = engines[role]["auto"]
        n = args.batch * (4 if role == "student" else 1)
        batches = [test_pts[i:i + args.batch] for i in range(0, n, args.batch)]
        e.logits(batches[0])
        times = []
        for _ in range(3 if not args.quick else 1):
            t0 = time.perf_counter()
            for b in batches:
                e.logits(b)
            times.append(time.perf_counter() - t0)
        tput[role] = sum(len(b) for b in batches) / float(np.median(times))
        log(f"{role} throughput ({e.runtime}, batch {args.batch}): {tput[role]:.0f} shapes/s")

    # Exactness against eager PyTorch on the test split.
    n_ex = args.exactness_limit or len(test_pts)
    idx = np.linspace(0, len(test_pts) - 1, n_ex).round().astype(int)
    exact = {}
    log(f"exactness on {len(idx)} test shapes ...")
    for role, m in models.items():
        with torch.inference_mode():
            ref = np.concatenate([m(torch.from_numpy(test_pts[idx[i:i + 64]])).numpy() for i in range(0, len(idx), 64)])
        for rt in RUNTIMES:
            out = np.concatenate([engines[role][rt].logits(test_pts[idx[i:i + 64]]) for i in range(0, len(idx), 64)])
            exact[(role, rt)] = (int((out.argmax(1) != ref.argmax(1)).sum()), float(np.abs(out - ref).max()),
                                 float((out.argmax(1) == ds.labels[idx]).mean()))
        exact[(role, "eager")] = (0, 0.0, float((ref.argmax(1) == ds.labels[idx]).mean()))

    folder = folder_run(Path(args.folder), args.threads, log) if args.folder else None

    load_end = os.getloadavg()[0]
    agreement = json.loads(Path(args.agreement).read_text()) if args.agreement else None
    result = {"machine": info, "threads": args.threads, "scan": scan_desc, "runs": args.runs,
              "end_to_end_ms": e2e, "latency_ms": lat, "runtimes": rt_used, "analysis_ms": analysis,
              "process_wall_s": wall, "pieces_ms": pieces, "throughput": tput,
              "exactness": {f"{r}/{rt}": v for (r, rt), v in exact.items()}, "load": [load_start, load_end],
              "folder": folder}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    report = render(args, result, exact, len(idx), agreement, lines)
    Path(args.report).write_text(report)
    log(f"wrote {args.report}")
    return 0


def render(args, r: dict, exact: dict, n_exact: int, agreement: dict | None, lines: list[str]) -> str:
    info, e2e, pieces = r["machine"], r["end_to_end_ms"], r["pieces_ms"]
    ratio = e2e["teacher"] / e2e["student"]
    out = ["# Deployment benchmark: the inference engine (core.runtime)\n"]
    argv = [Path(a).name if prev == "--agreement" else a  # the JSON's own name, not where it lay
            for prev, a in zip([""] + sys.argv[1:], sys.argv[1:])]
    cmd = "python bench/deploy_bench.py " + " ".join(argv if argv else [f"--threads {args.threads}"])
    out.append(f"Command: `{cmd}`  \nDate: {info['date']}  \n"
               f"Machine: {info['cpu']}, {info['cores']} cores, no GPU used; torch {info['torch']}, onnxruntime "
               f"{info['onnxruntime']}, numba {info['numba']}, Python {info['python']}, allocator {info['allocator']}.  \n"
               f"Threads: {r['threads']} (torch intra-op, ONNX Runtime intra-op without spinning, the grouping "
               f"kernels' pool).  \nLoad average: {r['load'][0]:.1f} at start, {r['load'][1]:.1f} at end (2 cores: "
               "above about 0.5 other work shares the cores and every number here is pessimistic).\n")
    out.append(METHOD)
    out.append("## Goals\n")
    out.append("| goal | measured | met? |")
    out.append("| --- | --- | --- |")
    out.append(f"| student `end_to_end_ms` <= {GOAL_E2E_MS:g} ms (`predict SCAN --json`, median of {r['runs']} "
               f"processes) | {e2e['student']:.2f} ms ({', '.join(r['runtimes']['student'])}) | "
               f"{'yes' if e2e['student'] <= GOAL_E2E_MS else 'no'} |")
    out.append(f"| teacher / student `end_to_end_ms` >= {GOAL_RATIO:g}x | {e2e['teacher']:.2f} / {e2e['student']:.2f} ms "
               f"= {ratio:.1f}x (teacher on {', '.join(r['runtimes']['teacher'])}) | {'yes' if ratio >= GOAL_RATIO else 'no'} |")
    out.append(f"| student throughput on prepared 1,024-point inputs >= {GOAL_THROUGHPUT:,.0f} shapes/s (batch "
               f"{args.batch}) | {r['throughput']['student']:,.0f} shapes/s | "
               f"{'yes' if r['throughput']['student'] >= GOAL_THROUGHPUT else 'no'} |")
    out.append("")
    out.append(f"Scan: {r['scan']} (`predict` decides its up axis itself). Same runs: `latency_ms` (the model "
               f"alone) teacher {r['latency_ms']['teacher']:.2f} ms, student {r['latency_ms']['student']:.2f} ms; "
               f"`analysis_ms` (up axis and scene check, reported apart) {r['analysis_ms']:.0f} ms; a whole "
               f"`predict` process {r['process_wall_s']:.1f} s (Python, torch and ONNX Runtime imports, loading "
               f"and warming both models: start-up, not inference). Teacher throughput: "
               f"{r['throughput']['teacher']:,.0f} shapes/s.\n")
    out.append("## Where the time goes\n")
    out.append(f"One process, batch 1, the scan prepared once; median of {args.rounds} interleaved rounds after "
               "warm-up, in ms:\n")
    out.append("| piece | ms |")
    out.append("| --- | ---: |")
    for k, v in pieces.items():
        out.append(f"| {k} | {v:.3f} |")
    out.append("")
    if r.get("folder"):
        f = r["folder"]
        out.append("## Folder prediction\n")
        out.append(f"`predict` over the folder `{f['folder']}` (both models, one process, `--jsonl`):\n")
        out.append("| goal | measured | met? |")
        out.append("| --- | --- | --- |")
        out.append(f"| exit 0, one line per file | exit {f['exit']}, {f['lines']} lines ({f['errors']} errors) | "
                   f"{'yes' if f['exit'] == 0 and f['errors'] == 0 else 'no'} |")
        out.append(f"| student top-1 = class folder on >= {GOAL_FOLDER_TOP1:.0%} | {f['top1_is_folder']['student']:.1%} "
                   f"(teacher {f['top1_is_folder']['teacher']:.1%}) | "
                   f"{'yes' if f['top1_is_folder']['student'] >= GOAL_FOLDER_TOP1 else 'no'} |")
        out.append(f"| <= {GOAL_FOLDER_S:g} s for both models | {f['wall_s']:.1f} s wall (the run's own summary: "
                   f"{f['summary'] or 'none'}) | {'yes' if f['wall_s'] <= GOAL_FOLDER_S else 'no'} |")
        out.append("")
    out.append("## Exactness\n")
    out.append(f"Every runtime against eager PyTorch (`model(x)`) on {n_exact} ModelNet40 test shapes (batches of 64):\n")
    out.append("| model | runtime | top-1 disagreements | max abs logit difference | accuracy |")
    out.append("| --- | --- | ---: | ---: | ---: |")
    for (role, rt), (dis, diff, acc) in exact.items():
        out.append(f"| {role} | {rt} | {dis} | {diff:.1e} | {acc * 100:.2f}% |")
    out.append("")
    out.append(AGREEMENT_INTRO)
    if agreement:
        out.append(agreement_table(agreement))
    else:
        out.append("(not included in this run: add `--agreement FILE` with the JSON of "
                   "`bench/preprocess_agreement.py --json FILE`.)\n")
    out.append("## Log\n")
    out.append("```")
    out.extend(lines)
    out.append("```")
    return "\n".join(out) + "\n"


def agreement_table(a: dict) -> str:
    rows = [f"ModelNet40 test split, {a['shapes']} shapes densified to {a['dense_points']:,} points (each point and "
            f"jittered copies, sigma {a['sigma']}); agreement = the same top-1 as on exact-FPS input; "
            "ms per cloud measured inside that run (compare them with each other only: that run's threads and load "
            "are not this one's):\n",
            "| preprocessing | ms per cloud | teacher agreement | student agreement | teacher accuracy | student accuracy |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v in a["variants"]:
        rows.append(f"| {v['preprocessing']} | {v['ms_per_cloud']:.2f} | {v['teacher_agreement'] * 100:.2f}% | "
                    f"{v['student_agreement'] * 100:.2f}% | {v['teacher_accuracy'] * 100:.2f}% | "
                    f"{v['student_accuracy'] * 100:.2f}% |")
    seeds = len(a["scans"][0]["teacher"]["fps"]) if a["scans"] else 0
    rows += ["", f"Real scans (`../shared/data/scans`, {seeds} seeds each): runs whose top-1 with the default "
             "preprocessing is the one with exact FPS (same seed):\n",
             "| file | points | teacher | student |", "| --- | ---: | ---: | ---: |"]
    for s in a["scans"]:
        rows.append(f"| {s['file']} | {s['points']:,} | {s['teacher']['same_top1']}/{seeds} | "
                    f"{s['student']['same_top1']}/{seeds} |")
    return "\n".join(rows) + "\n"


METHOD = """## Method

* **The engine** (`core/runtime.py`, used by the app, `predict`, `evaluate` and this benchmark): sampling
  and grouping outside any graph, by the model's `compute_grouping(impl="native")`: farthest point
  sampling and the ball query compiled by numba (`core/native.py`), each distance rounded as the eager
  code rounds it (the matrix product's fused multiply-adds included), so the indices are the eager ones
  (tested, boundary distances included). The network runs as the model's inference module
  (`core/models/pointnet2.py` `PointNet2Inference`: BatchNorm folded into the linear layers, 2-D rows,
  gathers by flat indices) in eager PyTorch (`torch`) or exported to ONNX and run by ONNX Runtime
  (`onnx`; exported on first use, cached per checkpoint content). `auto` measures both the first time a
  model loads on a machine (with more than one thread, ONNX Runtime on one thread for single clouds as
  well: `core/runtime.py`), keeps the fastest and remembers the choice. The first level's grouped rows
  (its first layer, less the centre's term) are computed outside the graph by a compiled kernel.
* **Preprocessing** (`core/data/preprocess.py` `prepare_points`, default `grid`): finite check, a random
  cut to 4,096 candidates (clouds of more than 8,192 points), one point per occupied cell of a grid sized
  to leave just over 1,024 cells (compiled kernel), a random 1,024 of those, up axis, unit sphere.
* **`latency_ms`**: the model on the prepared points (sampling, grouping, network, softmax);
  **`end_to_end_ms`**: preprocessing + `latency_ms`, from the points in memory to the probabilities
  (file reading and the input analysis excluded; the analysis is `analysis_ms`). `predict` times each
  step (the preprocessing, the teacher, then the student) 3 times after a warm-up call on the same
  cloud and reports the median (`core.inference.TIMING_ROUNDS`): one call's time on this shared CPU is
  mostly its noise.
* MACs (13.8 M student, 837.5 M teacher) follow docs/BENCHMARKS_MODELS.md's convention; sampling and
  grouping cost about 1.2 M pairwise distances per cloud for both models, the same at every width.
"""

AGREEMENT_INTRO = """## Preprocessing: agreement with exact FPS

The default preprocessing (`grid`) keeps one point per grid cell of a random subset instead of running
farthest point sampling over every point. `bench/preprocess_agreement.py` measures what that changes:
both bundled models on each shape prepared by exact FPS over every point (the reference), by exact FPS
from another random start (the yardstick: what the sampling alone moves), by the default and by the
other methods.
"""


if __name__ == "__main__":
    from main import _maybe_reexec_with_tcmalloc

    _maybe_reexec_with_tcmalloc()  # the allocator the app and the CLI run with (main.py)
    sys.exit(main())

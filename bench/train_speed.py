"""Training and inference throughput of our models against the classic reference, side by side.

For every registered model at width 1 and 1/8, the same weights run through our implementation
(``core.models``) and the straightforward channels-first reference (``bench/reference.py``, its
outputs proven equal by ``tests/test_reference_parity.py``). Timed, interleaved round by round so
that load from other processes hits every column alike:

* training step = forward + cross-entropy + backward + Adam step, train mode, fp32:
  reference; ours with sampling/grouping computed in the step; ours with grouping computed once
  and reused (what our trainer does across epochs); ours reused + bf16 autocast (our CPU preset);
* inference = eval-mode forward under ``no_grad``, grouping computed inside: reference, ours fp32,
  ours bf16 autocast (grouping in fp32, forward in bf16).

Reported: samples/s = batch / median step time after warm-up. Usage::

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        .venv/bin/python bench/train_speed.py --models pointnet2_ssg pointnet2_msg --widths 1 \\
        --budget 30 --repeats 3 --out docs/BENCHMARKS_MODELS.md

(the script re-executes itself with tcmalloc preloaded when it is not, as ``main.py`` does).
Every run is one section of the report: ``--out FILE`` replaces the section of FILE with the same
key (between ``<!-- train_speed:KEY -->`` and ``<!-- /train_speed:KEY -->``; the key is made of the
models and widths, or given with ``--section``) and keeps the rest; a new key is appended, and a new
file starts with the description of the method.
"""

from __future__ import annotations

import argparse
import json
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def _reexec_with_tcmalloc() -> None:
    """Large tensors freed every step go back to the OS under glibc malloc; tcmalloc keeps them
    (about 3x faster training here), and our trainer runs with it, so the benchmark does too."""
    if "tcmalloc" in os.environ.get("LD_PRELOAD", "") or os.environ.get("T3DNET_NO_TCMALLOC"):
        return
    if sys.platform != "linux" or not os.path.exists(TCMALLOC):
        return
    env = dict(os.environ, LD_PRELOAD=f"{TCMALLOC} {os.environ.get('LD_PRELOAD', '')}".strip())
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _tcmalloc_loaded() -> bool:
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def _concurrent_training() -> str:
    """Command lines of other ``main.py`` jobs (train, kd, compress, ...) running now: they share
    our cores. A job paused with SIGSTOP (state ``T``: ``kill -STOP`` before a benchmark) uses
    no CPU and is left out."""
    try:
        out = subprocess.run(["pgrep", "-af", r"main\.py (train|netaug|kd|distill|compress|e2e|fitnet|dml|resume)"],
                             capture_output=True, text=True).stdout
    except OSError:
        return ""
    running = []
    for line in out.splitlines():
        pid = line.split(" ", 1)[0]
        if not line or pid == str(os.getpid()):
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # ended meanwhile
        if state not in ("T", "t"):
            running.append(line)
    return "\n".join(running)


# ---------------------------------------------------------------------------------------


def _make_steps(name: str, width: float, batch: int, points: int, torch, F):
    """Closures, one per timed column, each running one step and returning nothing."""
    from core.models import create_model

    sys.path.insert(0, str(ROOT))
    import bench.reference as reference
    from bench.reference import reference_from_ours

    torch.manual_seed(0)
    ours = create_model(name, width=width)
    ref = reference_from_ours(ours)
    x = torch.rand(batch, points, 3) * 2 - 1
    x = x / x.norm(dim=-1).max()
    y = torch.randint(0, 40, (batch,))
    cached = ours.compute_grouping(x)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-4)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-4)

    def train(model, opt, call, bf16=False):
        def step():
            model.train()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = call(model).float()
            F.cross_entropy(logits, y).backward()
            opt.step()
        return step

    def infer(model, bf16=False):
        def step():
            model.eval()
            with torch.no_grad():
                if bf16:
                    g = model.compute_grouping(x)  # indices in fp32, as our trainer computes them
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(x, g).float()
                else:
                    model(x)
        return step

    def port(step):
        """The same reference step with the common port's ball query (a full sort)."""
        def run():
            saved, reference.BALL_QUERY = reference.BALL_QUERY, "sort"
            try:
                step()
            finally:
                reference.BALL_QUERY = saved
        return run

    steps = {
        "ref_train": train(ref, opt_ref, lambda m: m(x)),
        "ours_train": train(ours, opt_ours, lambda m: m(x)),
    }
    if cached is not None:
        steps["ours_train_cached"] = train(ours, opt_ours, lambda m: m(x, cached))
        steps["ours_train_bf16"] = train(ours, opt_ours, lambda m: m(x, cached), bf16=True)
    else:
        steps["ours_train_bf16"] = train(ours, opt_ours, lambda m: m(x), bf16=True)
    steps["ref_infer"] = infer(ref)
    steps["ours_infer"] = infer(ours)
    steps["ours_infer_bf16"] = infer(ours, bf16=True)
    if name.startswith("pointnet2"):  # the only models with a ball query
        steps["port_train"] = port(train(ref, opt_ref, lambda m: m(x)))
        steps["port_infer"] = port(infer(ref))
    return steps


def measure(name, width, args, torch, F) -> dict:
    steps = _make_steps(name, width, args.batch, args.points, torch, F)
    times: dict[str, list[float]] = {k: [] for k in steps}
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        for fn in steps.values():
            fn()
    round_s = (time.perf_counter() - t0) / max(1, args.warmup)
    n = int(max(args.min_steps, min(args.max_steps, args.budget // max(round_s, 1e-6))))
    for r in range(n):
        order = list(steps.items())
        if r % 2:  # alternate the order so no column always runs right after the same neighbour
            order.reverse()
        for key, fn in order:
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    rate["steps"] = n
    rate["spread"] = max(max(v) / min(v) for v in times.values())
    print(f"  {name} w={width:g}: {n} timed rounds after {args.warmup} warm-up "
          f"({round_s:.1f} s/round, worst max/min {rate['spread']:.2f})", flush=True)
    return rate


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table(results: list[tuple[str, float, dict]]) -> str:
    head = (
        "| model | width | port ref train (sort) | ref train | ours train (grouping each step) | ours train (grouping reused) "
        "| ours train bf16 (reused) | speed-up train (each / reused / bf16) | ref infer | ours infer "
        "| ours infer bf16 | speed-up infer (fp32 / bf16) | speed-up over the port ref (train reused / bf16; infer fp32) "
        "| timed rounds | worst max/min step |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |\n"
    )
    rows = []
    for name, width, r in results:
        ref_t, ref_i = r["ref_train"], r["ref_infer"]
        cached = r.get("ours_train_cached")
        sp_t = f"{r['ours_train'] / ref_t:.2f}x / " + (f"{cached / ref_t:.2f}x" if cached else "—")
        sp_t += f" / {r['ours_train_bf16'] / ref_t:.2f}x"
        sp_i = f"{r['ours_infer'] / ref_i:.2f}x / {r['ours_infer_bf16'] / ref_i:.2f}x"
        w = "1" if width == 1 else "1/8" if width == 0.125 else f"{width:g}"
        port_t, port_i = r.get("port_train"), r.get("port_infer")
        sp_p = (f"{(cached or r['ours_train']) / port_t:.2f}x / {r['ours_train_bf16'] / port_t:.2f}x; "
                f"{r['ours_infer'] / port_i:.2f}x") if port_t else "—"
        rows.append(
            f"| {name} | {w} | {_fmt(port_t)} | {_fmt(ref_t)} | {_fmt(r['ours_train'])} | {_fmt(cached)} "
            f"| {_fmt(r['ours_train_bf16'])} | {sp_t} | {_fmt(ref_i)} | {_fmt(r['ours_infer'])} "
            f"| {_fmt(r['ours_infer_bf16'])} | {sp_i} | {sp_p} | {r['steps']} | {r['spread']:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def goals(results) -> list[str]:
    """The issue's targets: PointNet++ trains >= 2x faster than the reference at width 1 and
    >= 4x faster at width 1/8 (fp32, grouping reused as in our trainer; also given per step)."""
    lines = []
    for name, width, r in results:
        if not name.startswith("pointnet2"):
            continue
        target = 2.0 if width == 1 else 4.0 if width == 0.125 else None
        if target is None:
            continue
        reused = r["ours_train_cached"] / r["ref_train"]
        each = r["ours_train"] / r["ref_train"]
        bf16 = r["ours_train_bf16"] / r["ref_train"]
        verdict = "MET" if reused >= target else "NOT MET"
        lines.append(
            f"- {name} at width {'1' if width == 1 else '1/8'}: target >= {target:g}x against our topk reference "
            f"-> **{verdict}** (fp32 grouping reused {reused:.2f}x; fp32 grouping every step {each:.2f}x"
            f"{' (would meet it too)' if each >= target else ' (does not meet it)'}; bf16 reused {bf16:.2f}x)"
        )
        if r.get("port_train"):
            p_reused, p_bf16 = r["ours_train_cached"] / r["port_train"], r["ours_train_bf16"] / r["port_train"]
            lines.append(
                f"  - against the common port's formulation (the same reference with a full-sort ball query): "
                f"**{'MET' if p_reused >= target else 'NOT MET'}** (fp32 grouping reused {p_reused:.2f}x; "
                f"bf16 reused {p_bf16:.2f}x)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--widths", nargs="*", type=float, default=[1.0, 0.125])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds (every column once each)")
    p.add_argument("--min-steps", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=7)
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds of timed rounds per (model, width); slow rows get min-steps")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here (one section of it)")
    p.add_argument("--section", default=None,
                   help="the section of --out this run writes (default: from the models and widths)")
    p.add_argument("--title", default=None, help="the section's title (default: the models and widths)")
    p.add_argument("--note", default=None, help="a paragraph placed under the section's title")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the whole measurement this many times, each in a fresh process, and "
                        "report the median of every column and each run's speed-ups (the same code "
                        "measured twice in a row on these shared cores has differed by 1.4x)")
    p.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)  # one run's results
    args = p.parse_args(argv)
    if args.repeats > 1:
        return _main_repeated(args, sys.argv[1:] if argv is None else argv)

    import torch
    import torch.nn.functional as F

    from core.models import list_models

    torch.set_num_threads(args.threads)
    models = args.models or list_models()
    started = datetime.datetime.now().astimezone()
    busy_before = _concurrent_training()
    load_before = os.getloadavg()[0]
    results = []
    t0 = time.time()
    for name in models:
        for width in args.widths:
            results.append((name, width, measure(name, width, args, torch, F)))
    elapsed = time.time() - t0
    busy_after = _concurrent_training()
    args.load = (load_before, os.getloadavg()[0])

    if args.json:
        args.json.write_text(json.dumps({"results": results, "busy": [busy_before, busy_after],
                                         "load": args.load, "elapsed": elapsed}))
        return 0
    return _publish(args, argv, table(results), results, started, elapsed, busy_before, busy_after, torch)


def _publish(args, argv, md, results, started, elapsed, busy_before, busy_after, torch) -> int:
    """Print the table and the goals; write the report to ``--out``."""
    goal_lines = goals(results)
    print()
    print(md)
    print("\n".join(goal_lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        section = _report(args, argv, md, goal_lines, started, elapsed, busy_before, busy_after, torch)
        args.out.write_text(merge_section(args.out, _section_key(args), section))
        print(f"\nwritten to {args.out}")
    return 0


def _main_repeated(args, argv: list[str]) -> int:
    """``--repeats N``: N fresh processes of this script, each measuring everything once."""
    import tempfile

    import torch

    passthrough, skip = [], False
    for a in argv:  # drop --repeats / --out and their values
        if skip:
            skip = False
            continue
        if a in ("--repeats", "--out"):
            skip = True
            continue
        if a.startswith(("--repeats=", "--out=")):
            continue
        passthrough.append(a)
    started = datetime.datetime.now().astimezone()
    runs, busy, loads, t0 = [], ["", ""], [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}.json"
            print(f"run {i + 1} of {args.repeats}", flush=True)
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *passthrough, "--json", str(out)],
                           check=True)
            data = json.loads(out.read_text())
            runs.append(data["results"])
            busy = [busy[0] or data["busy"][0], busy[1] or data["busy"][1]]
            loads.append(data["load"])
    elapsed = time.time() - t0
    merged = []
    for j, (name, width, _) in enumerate(runs[0]):
        per_run = [run[j][2] for run in runs]
        r = {k: statistics.median(pr[k] for pr in per_run) for k in per_run[0] if k not in ("steps", "spread")}
        r["steps"] = sum(pr["steps"] for pr in per_run)
        r["spread"] = max(pr["spread"] for pr in per_run)
        r["runs"] = per_run
        merged.append((name, width, r))
    args.load = (loads[0][0], loads[-1][1])
    md = table(merged) + "\n" + per_run_table(merged)
    return _publish(args, argv, md, merged, started, elapsed, busy[0], busy[1], torch)


def per_run_table(results) -> str:
    """Each run's training speed-ups over the reference (fp32 grouping reused / bf16)."""
    lines = ["Speed-up of each run (training, grouping reused, over the topk reference; fp32 / bf16):", "",
             "| model | width | " + " | ".join(f"run {i + 1}" for i in range(len(results[0][2]["runs"]))) + " |",
             "| --- | --- |" + " ---: |" * len(results[0][2]["runs"])]
    for name, width, r in results:
        cells = []
        for pr in r["runs"]:
            fp32 = pr.get("ours_train_cached", pr["ours_train"]) / pr["ref_train"]
            cells.append(f"{fp32:.2f}x / {pr['ours_train_bf16'] / pr['ref_train']:.2f}x")
        w = "1" if width == 1 else "1/8" if width == 0.125 else f"{width:g}"
        lines.append(f"| {name} | {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


HEADER = """# Model zoo speed: ours against the classic reference

Training and inference throughput of every model, ours (`core.models`) against a straightforward
reference implementation, the same weights in both. Each section below is one run of
`bench/train_speed.py` (its command, date, machine and load are given there); the machines are shared,
so compare the columns of one row, not numbers across sections.

How it is measured:

- Random clouds in the unit ball, 40 classes; batch and points as given per section.
- Timing: samples/s = batch / median step time over the timed rounds, after untimed warm-up rounds.
  A round runs one step of every column, in alternating order, so load from other processes hits
  every column alike. *Timed rounds*: how many were timed (summed over the runs when a section has
  several).
- *Worst max/min step* (last column) is the largest ratio of slowest to fastest timed step of any
  column of the row: far above 1.2, the row's ratios are noise-limited.
- *Runs*: each run is a fresh process measuring every row; with more than one, every samples/s cell
  is the median over the runs, and each run's speed-ups follow the table.
- Training step: forward + cross-entropy + backward + Adam step (train mode, fp32 unless noted).
  *Grouping each step*: FPS + ball query (PointNet++) or the first kNN graph (DGCNN) recomputed in the
  step, as the reference always does. *Grouping reused*: indices computed once per shape and reused,
  as our trainer does across epochs (DGCNN's later kNN graphs are always recomputed: they depend on
  features). PointNet has no grouping. *bf16*: our `cpu` preset (autocast bfloat16, grouping reused).
- Inference: eval mode, `no_grad`, grouping computed inside (bf16: grouping in fp32, network in bf16).
- The reference (`bench/reference.py`) is the classic channels-first formulation (1x1 Conv1d/Conv2d +
  BatchNorm, grouping recomputed in every forward, ball query with `topk`, the faster variant). With
  our weights copied in, its outputs and gradients equal ours (`tests/test_reference_parity.py`).
  *Port ref* (PointNet++ only) is the same reference with the ball query of the common PyTorch port:
  a full `sort` of every centre's distance row (same indices, slower). The `topk` reference is the
  stronger baseline, so both are given.
- Targets: PointNet++ trains at least 2x faster than the reference at width 1 and 4x at width 1/8
  (fp32, grouping reused as in our trainer).
"""


def _width_label(widths) -> str:
    names = ["1" if w == 1 else "1/8" if w == 0.125 else f"{w:g}" for w in widths]
    return ("width " if len(names) == 1 else "widths ") + " and ".join(names)


def _report(args, argv, md, goal_lines, started, elapsed, busy_before, busy_after, torch) -> str:
    """One section of the report (``HEADER`` holds what every section shares)."""
    from core.engine.machine import machine_line

    tcmalloc = _tcmalloc_loaded()
    prefix = "LD_PRELOAD=" + TCMALLOC if tcmalloc else "T3DNET_NO_TCMALLOC=1"
    cmd = " ".join([prefix, ".venv/bin/python", "bench/train_speed.py", *(sys.argv[1:] if argv is None else argv)])
    cmd = cmd.replace(str(ROOT) + os.sep, "")  # paths inside the checkout as relative paths
    if busy_before or busy_after:
        noise = (
            "**Another training job ran on the same cores during this run** "
            f"(`main.py` jobs not paused, at start: {'yes' if busy_before else 'no'}, at end: "
            f"{'yes' if busy_after else 'no'}). Absolute samples/s are lower than on an idle machine; "
            "the speed-up *ratios* are the numbers to read."
        )
    else:
        noise = ("No other `main.py` job was running at start and end (jobs paused with SIGSTOP "
                 "count as not running); other short processes may still have shared the cores.")
    models = args.models or "every model"
    title = args.title or (f"{', '.join(models) if isinstance(models, list) else models} at "
                           f"{_width_label(args.widths)}" + ("" if tcmalloc else ", glibc malloc"))
    note = f"{args.note}\n\n" if args.note else ""
    return f"""## {title}

{note}    {cmd}

- {started:%Y-%m-%d %H:%M %Z}, {elapsed / 60:.1f} min. Machine: {machine_line()}; torch {torch.__version__}, {args.threads} threads, tcmalloc: {'yes' if tcmalloc else 'no'}.
- Batch {args.batch}, {args.points} points; {args.repeats} run(s); per row {args.min_steps} to {args.max_steps} timed rounds, as many as fit in {args.budget:g} s, after {args.warmup} warm-up round(s).
- Load average (1 min) at start / end: {args.load[0]:.1f} / {args.load[1]:.1f} on {os.cpu_count()} cores. {noise}

Samples per second (higher is better) and speed-ups (ours / reference):

{md}
{('Targets:' + chr(10) + chr(10) + chr(10).join(goal_lines) + chr(10)) if goal_lines else ''}"""


def merge_section(path: Path, key: str, section: str) -> str:
    """The report file with the section ``key`` replaced by ``section`` (appended when new; a new
    file starts with ``HEADER``)."""
    begin, end = f"<!-- train_speed:{key} -->", f"<!-- /train_speed:{key} -->"
    block = f"{begin}\n{section.strip()}\n{end}\n"
    text = path.read_text() if path.is_file() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        return head + block + ("\n" + after if after else "")
    return text.rstrip("\n") + "\n\n" + block


def _section_key(args) -> str:
    if args.section:
        return args.section
    models = "-".join(args.models) if args.models else "all"
    return f"{models}-w{'-'.join(f'{w:g}' for w in args.widths)}" + ("" if _tcmalloc_loaded() else "-glibc")


if __name__ == "__main__":
    _reexec_with_tcmalloc()
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

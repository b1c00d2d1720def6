"""Formulations of the tiny PointNet++ training step, measured side by side.

The width-1/8 PointNet++ training step is made of memory-bound passes over thin (8-32 channel)
grouped rows. This script measures formulations of its parts in one run, on the same cores,
interleaved (B and C are what the models run):

A. The first set abstraction's shared MLP as it runs in a tiny SSG step (16 clouds x 512 centres
   x 32 neighbours = 262,144 rows, 3 -> 8 -> 8 -> 16 channels), forward + backward:
   * ``rows``: our layout, rows x channels, Linear -> BatchNorm -> ReLU (what the models run);
   * ``folded``: BatchNorm's batch statistics derived from the input's first and second moments
     (one small Gram matmul), then folded into the Linear, so BN's own passes disappear;
   * ``channels_first``: channels x rows, the reference's 1x1-convolution layout.
B. The max over each centre's neighbours (rows ``(B, S, K, C)``): ``max(2).values`` against
   ``core.models.ops.max_rows`` (channels-last max-pooling, scatter backward), fp32 and bf16.
C. The tiny SSG and MSG training steps at several channels-first limits (the model config's
   ``FastPaths.channels_first_max``; 0 runs every layer as rows).
D. The whole tiny SSG training step (grouping reused, Adam): the reference; ours eager fp32 and
   bf16 with every grouped MLP as rows (``_all_rows``), with BN and ReLU before the max over
   neighbours (``_unfused_max``: ``FastPaths.fused_max`` off), with no fast path at all
   (``_plain``: ``core.models.fused.PLAIN``) and as the models run; ours under ``torch.compile``
   (inductor, C++ backend) fp32 and bf16.

    .venv/bin/python bench/tiny_step_variants.py --out docs/BENCHMARKS_TINY_VARIANTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.train_speed import _concurrent_training, _reexec_with_tcmalloc, _tcmalloc_loaded
from core.engine.machine import cpu_name

EPS = 1e-5
NEIGHBOURS = 32


class MLPChain:
    """Three Linear -> BN(train) -> ReLU layers on ``rows`` x ``dims[0]`` inputs, three formulations."""

    def __init__(self, dims=(3, 8, 8, 16), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weights = [torch.randn(o, i, generator=g).requires_grad_() for i, o in zip(dims[:-1], dims[1:])]
        self.gammas = [(1 + 0.1 * torch.randn(o, generator=g)).requires_grad_() for o in dims[1:]]
        self.betas = [(0.1 * torch.randn(o, generator=g)).requires_grad_() for o in dims[1:]]

    def params(self) -> list[torch.Tensor]:
        return self.weights + self.gammas + self.betas

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        for w, g, b in zip(self.weights, self.gammas, self.betas):
            x = F.batch_norm(x @ w.t(), None, None, g, b, True, 0.0, EPS).relu_()
        return x

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        for w, g, b in zip(self.weights, self.gammas, self.betas):
            mean_in = x.mean(0)
            cov_in = x.t() @ x / n - torch.outer(mean_in, mean_in)
            mean, var = w @ mean_in, ((w @ cov_in) * w).sum(1)  # of x @ w.t(), biased as BN's
            scale = g * torch.rsqrt(var + EPS)
            x = torch.addmm(b - mean * scale, x, (w * scale[:, None]).t()).relu_()
        return x

    def channels_first(self, x_cf: torch.Tensor) -> torch.Tensor:
        x = x_cf.unsqueeze(0)  # (1, C, rows): BN over dims 0 and 2
        for w, g, b in zip(self.weights, self.gammas, self.betas):
            x = F.batch_norm(torch.matmul(w, x), None, None, g, b, True, 0.0, EPS).relu_()
        return x[0]


def chain_steps(rows: int, seed: int = 0) -> tuple[dict, MLPChain]:
    chain = MLPChain(seed=seed)
    x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(seed + 1))
    x_cf = x.t().contiguous()

    def make(fn, inp, pool):
        def step():
            for p in chain.params():
                p.grad = None
            pool(fn(inp)).sum().backward()
        return step

    # Max over each centre's 32 neighbours, as the set abstraction ends.
    def pool_rows(y):
        return y.view(-1, NEIGHBOURS, y.shape[-1]).amax(1)

    def pool_cf(y):
        return y.view(y.shape[0], -1, NEIGHBOURS).amax(2)

    return {"rows": make(chain.rows, x, pool_rows), "folded": make(chain.folded, x, pool_rows),
            "channels_first": make(chain.channels_first, x_cf, pool_cf)}, chain


def model_steps(batch: int, points: int, compile_: bool) -> tuple[dict, float]:
    from bench.reference import reference_from_ours
    from core.models import create_model

    torch.manual_seed(0)
    ours = create_model("pointnet2_ssg", width=0.125)
    ref = reference_from_ours(ours)
    x = torch.rand(batch, points, 3) * 2 - 1
    x = x / x.norm(dim=-1).max()
    y = torch.randint(0, 40, (batch,))
    groups = ours.compute_grouping(x)

    def train(model, call, bf16=False):
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            model.train()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = call().float()
            F.cross_entropy(logits, y).backward()
            opt.step()
        return step

    from core.models import FastPaths
    from core.models.fused import PLAIN

    def setting(fast, step):
        """``step`` with ``ours`` running the fast paths ``fast`` (restored after)."""
        def run():
            default = ours.fast_paths
            ours.fast_paths = fast
            try:
                step()
            finally:
                ours.fast_paths = default
        return run

    all_rows, unfused = FastPaths(channels_first_max=0), FastPaths(fused_max=False)
    steps = {"reference": train(ref, lambda: ref(x)),
             "eager_fp32_plain": setting(PLAIN, train(ours, lambda: ours(x, groups))),
             "eager_bf16_plain": setting(PLAIN, train(ours, lambda: ours(x, groups), True)),
             "eager_fp32_all_rows": setting(all_rows, train(ours, lambda: ours(x, groups))),
             "eager_bf16_all_rows": setting(all_rows, train(ours, lambda: ours(x, groups), True)),
             "eager_fp32_unfused_max": setting(unfused, train(ours, lambda: ours(x, groups))),
             "eager_bf16_unfused_max": setting(unfused, train(ours, lambda: ours(x, groups), True)),
             "eager_fp32": train(ours, lambda: ours(x, groups)),
             "eager_bf16": train(ours, lambda: ours(x, groups), True)}
    check = None
    if compile_:
        compiled = torch.compile(ours)
        steps["compiled_fp32"] = train(ours, lambda: compiled(x, groups))
        steps["compiled_bf16"] = train(ours, lambda: compiled(x, groups), True)

        @torch.no_grad()
        def check() -> float:
            """Compiled vs eager forward in eval mode (train mode has dropout)."""
            ours.eval()
            return (compiled(x, groups) - ours(x, groups)).abs().max().item()
    return steps, check


# (B, S, K, C) of the max over neighbours: tiny SSG's two levels, the width-1 SSG's two levels.
MAX_SHAPES = ((16, 512, 32, 16), (16, 128, 64, 32), (16, 512, 32, 128), (16, 128, 64, 256))


def max_steps(dtype) -> tuple[dict, float]:
    """``max(2).values`` against :func:`core.models.ops.max_rows`, forward + backward and
    forward only (inference), at the shapes of MAX_SHAPES; also the largest difference."""
    from core.models.ops import max_rows

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(*shape, generator=g).to(dtype) for shape in MAX_SHAPES]
    grads = [torch.randn(b, s, c, generator=g).to(dtype) for b, s, _, c in MAX_SHAPES]

    def train(fn):
        def step():
            for x, gr in zip(xs, grads):
                fn(x.detach().requires_grad_()).backward(gr)
        return step

    def infer(fn):
        def step():
            with torch.no_grad():
                for x in xs:
                    fn(x)
        return step

    plain = lambda x: x.max(2).values
    diff = max((max_rows(x) - plain(x)).abs().max().item() for x in xs)
    return {"max(2) train": train(plain), "max_rows train": train(max_rows),
            "max(2) infer": infer(plain), "max_rows infer": infer(max_rows)}, diff


SWEEP_LIMITS = (0, 8, 12, 16)


def sweep_steps(name: str, batch: int, points: int) -> dict:
    """Training steps of a width-1/8 model (grouping reused) at every channels-first limit."""
    from core.models import create_model

    torch.manual_seed(0)
    model = create_model(name, width=0.125)
    x = torch.rand(batch, points, 3) * 2 - 1
    x = x / x.norm(dim=-1).max()
    y = torch.randint(0, 40, (batch,))
    groups = model.compute_grouping(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    default = model.fast_paths

    def make(limit, bf16):
        def step():
            model.fast_paths = replace(default, channels_first_max=limit)
            try:
                model.train()
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x, groups).float()
                F.cross_entropy(logits, y).backward()
                opt.step()
            finally:
                model.fast_paths = default
        return step

    return {(limit, bf16): make(limit, bf16) for limit in SWEEP_LIMITS for bf16 in (False, True)}


def measure(steps: dict, seconds: float, warmup: int = 3) -> dict[str, tuple[float, int]]:
    """Median seconds per step and the number of timed steps, columns interleaved round by round."""
    warm = {}
    for k, fn in steps.items():
        t = time.perf_counter()
        for _ in range(warmup):
            fn()
        warm[k] = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in steps}
    t0, r = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or r < 3:
        order = list(steps.items())[:: -1 if r % 2 else 1]
        for k, fn in order:
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        r += 1
    return {k: (statistics.median(v), len(v), warm[k]) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=40.0, help="timed seconds per part")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    p.add_argument("--no-sweep", action="store_true", help="skip the channels-first limit sweep (part C)")
    p.add_argument("--parts", default="ABCD", help="which parts to run (default ABCD)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now().astimezone()
    busy = _concurrent_training()
    load0 = os.getloadavg()[0]

    rows = args.batch * 512 * 32
    parts = args.parts.upper()
    a, diffs = {}, {}
    if "A" in parts:
        c_steps, chain = chain_steps(rows)
        x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            base = chain.rows(x)
            diffs = {"folded": (chain.folded(x) - base).abs().max().item(),
                     "channels_first": (chain.channels_first(x.t().contiguous()).t() - base).abs().max().item()}
        a = measure(c_steps, args.seconds)
    c = {}
    for dtype in (torch.float32, torch.bfloat16) if "B" in parts else ():
        steps, diff = max_steps(dtype)
        c[dtype] = (measure(steps, args.seconds / 4), diff)
    d = {name: measure(sweep_steps(name, args.batch, args.points), args.seconds)
         for name in ("pointnet2_ssg", "pointnet2_msg")} if not args.no_sweep and "C" in parts else {}
    b, compiled_diff = {}, float("nan")
    if "D" in parts:
        m_steps, check = model_steps(args.batch, args.points, not args.no_compile)
        b = measure(m_steps, args.seconds)
        compiled_diff = check() if check else float("nan")
    load1 = os.getloadavg()[0]

    lines = []
    if a:
        lines += [f"## A. First set abstraction's MLP ({rows:,} rows at batch {args.batch}), forward + backward", "",
                  "| formulation | ms per step | speed-up over `rows` | max abs difference from `rows` | timed steps |",
                  "| --- | ---: | ---: | ---: | ---: |"]
    for k, (t, n, _) in a.items():
        lines.append(f"| {k} | {t * 1e3:.1f} | {a['rows'][0] / t:.2f}x | {diffs.get(k, 0.0):.1e} | {n} |")
    if c:
        lines += ["", "## B. Max over each centre's neighbours, (B, S, K, C) rows: "
                  + ", ".join("x".join(map(str, sh)) for sh in MAX_SHAPES) + " (all four per step)", "",
                  "| dtype | training, `max(2).values` (ms) | training, `max_rows` (ms) | speed-up "
                  "| inference, `max(2).values` (ms) | inference, `max_rows` (ms) | speed-up | max abs difference |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for dtype, (r, diff) in c.items():
        tr, tm, ir, im = (r[k][0] * 1e3 for k in ("max(2) train", "max_rows train", "max(2) infer", "max_rows infer"))
        lines.append(f"| {str(dtype).replace('torch.', '')} | {tr:.1f} | {tm:.1f} | {tr / tm:.2f}x | {ir:.1f} | {im:.1f} "
                     f"| {ir / im:.2f}x | {diff:.0e} |")
    if d:
        from core.models import FastPaths

        lines += ["", f"## C. Channels-first limit (layers at most this wide run channels-first; the models use "
                  f"{FastPaths().channels_first_max}), width-1/8 training samples/s", "",
                  "| model | precision | " + " | ".join(f"limit {lim}" for lim in SWEEP_LIMITS) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in SWEEP_LIMITS) + " |"]
        for name, r in d.items():
            for bf16 in (False, True):
                lines.append(f"| {name} | {'bf16' if bf16 else 'fp32'} | "
                             + " | ".join(f"{args.batch / r[(lim, bf16)][0]:.1f}" for lim in SWEEP_LIMITS) + " |")
    if b:
        lines += ["", "## D. Whole tiny PointNet++ SSG training step (grouping reused, Adam)", "",
                  "| column | samples/s | over the reference | over ours eager (same precision) | first 3 steps (s) | timed steps |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k, (t, n, w) in b.items():
        same = "eager_bf16" if "bf16" in k else "eager_fp32"
        over = f"{b[same][0] / t:.2f}x" if k != "reference" else "-"
        lines.append(f"| {k} | {args.batch / t:.1f} | {b['reference'][0] / t:.2f}x | {over} | {w:.1f} | {n} |")
    if b and not args.no_compile:
        lines += ["", f"Compiled vs eager forward (eval mode, fp32), max abs difference: {compiled_diff:.1e}."]
    body = "\n".join(lines) + "\n"
    print(body)
    if args.out:
        cmd = " ".join([".venv/bin/python", "bench/tiny_step_variants.py", *(sys.argv[1:] if argv is None else argv)])
        noise = ("Another training job was running: the ratios (interleaved) are the numbers to read."
                 if busy else "No other `main.py` job was running (jobs paused with SIGSTOP for the run count as not running).")
        args.out.write_text(f"""# Tiny PointNet++ training step: formulations compared

Generated by `bench/tiny_step_variants.py` on {started:%Y-%m-%d %H:%M %Z}.

```
{cmd}
```

- Machine: {cpu_name()} ({os.cpu_count()} cores), no GPU; torch {torch.__version__}, {args.threads} threads,
  tcmalloc: {'yes' if _tcmalloc_loaded() else 'no'}; load average (1 min) at start / end {load0:.1f} / {load1:.1f}.
- Median step time over about {args.seconds:g} s per part, columns interleaved (order alternating),
  after 3 untimed steps each (their time is given: it includes `torch.compile`'s compilation).
- {noise}

{body}""")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    _reexec_with_tcmalloc()
    sys.exit(main())

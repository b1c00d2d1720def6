"""Benchmark of the data layer: dataset cache build / load, and preparing a 1M-point scan.

    python bench/data_cache_bench.py [--data ../shared/data/modelnet40_npy1024] [--workers 1 2] [--json]

The cache goes to a fresh temporary folder (the user's cache is not touched), so the build is a
real first build. Times are wall-clock seconds; the load time is the median of 5 cached loads
(layout scan + source fingerprint + reading the .npz); prepare_points is the median of 20 runs
after one warm-up, 1,000,000 random points -> 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_cache(data: Path, workers: int) -> dict:
    from core.data.datasets import load_split

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["T3DNET_CACHE"] = tmp
        t = time.perf_counter()
        sizes = {s: len(load_split(data, s, 1024, workers=workers, progress=False)) for s in ("train", "test")}
        build = time.perf_counter() - t
        loads = []
        for _ in range(5):
            t = time.perf_counter()
            for s in ("train", "test"):
                load_split(data, s, 1024, progress=False)
            loads.append(time.perf_counter() - t)
        cache_mb = sum(f.stat().st_size for f in Path(tmp).glob("*.npz")) / 2**20
    return {"workers": workers, "shapes": sizes, "build_s": round(build, 2),
            "load_s_median": round(statistics.median(loads), 3), "cache_mb": round(cache_mb, 1)}


def bench_prepare(n: int = 1_000_000, runs: int = 20) -> dict:
    import numpy as np

    from core.data.preprocess import prepare_points

    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    prepare_points(x)
    times = []
    for i in range(runs):
        t = time.perf_counter()
        prepare_points(x, 1024, seed=i)
        times.append(time.perf_counter() - t)
    return {"points": n, "to": 1024, "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "modelnet40_npy1024")
    ap.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"error: {args.data}: dataset folder not found", file=sys.stderr)
        return 2
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "cache": [bench_cache(args.data, w) for w in args.workers],
        "prepare_1M": bench_prepare(),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(result["machine"])
    for c in result["cache"]:
        print(f"cache build ({c['workers']} worker(s)): {c['build_s']:.2f} s for {sum(c['shapes'].values()):,} shapes "
              f"-> {c['cache_mb']} MB; cached load (train+test): {c['load_s_median']:.3f} s")
    p = result["prepare_1M"]
    print(f"prepare_points 1M -> 1024: median {p['median_s'] * 1000:.1f} ms, max {p['max_s'] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

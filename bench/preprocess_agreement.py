"""How much the fast preprocessing changes the models' predictions: ``prepare_points``'s default
(``grid``: a random cut to a few thousand candidates, then one point per grid cell) and the other
methods against exact FPS over every point.

Inputs: the ModelNet40 test split (2,468 shapes of 1,024 points) densified to ``--dense`` points
each (every point plus jittered copies, sigma ``--sigma`` in the unit sphere; seeded per shape),
and the real scans of ``../shared/data/scans`` (several seeds each). For every preprocessing, the
bundled teacher and student run on the result (``core.runtime``, default runtime); the table gives
each model's top-1 agreement with its own prediction on exact-FPS input, and its accuracy. Exact FPS
from another random start is the yardstick: how much the predictions move with the sampling alone.

    .venv/bin/python bench/preprocess_agreement.py                 # whole split, ~10 min on 2 cores
    .venv/bin/python bench/preprocess_agreement.py --limit 200 --json agreement.json
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

from core.data.preprocess import prepare_points

DATA = ROOT.parent / "shared" / "data"
#: (label, prepare_points keyword arguments); the first is the reference.
VARIANTS = (
    ("exact FPS (every point)", {"method": "fps_exact"}),
    ("exact FPS, another random start", {"method": "fps_exact", "seed_offset": 10_000}),
    ("grid, 4096 candidates (default)", {"method": "grid"}),
    ("grid, 8192 candidates", {"method": "grid", "candidates": 8192}),
    ("grid, every point", {"method": "grid", "candidates": 10 ** 9}),
    ("fps, 2048 candidates", {"method": "fps"}),
    ("fps, 4096 candidates", {"method": "fps", "candidates": 4096}),
    ("fps_dataset (8192 candidates, fpsample)", {"method": "fps_dataset"}),
    ("random subset", {"method": "random"}),
)


def densify(points: np.ndarray, dense: int, sigma: float, seed: int) -> np.ndarray:
    """``dense`` points: ``points`` and jittered copies of them (a denser scan of the same surface)."""
    rng = np.random.default_rng(seed)
    reps = int(np.ceil(dense / len(points)))
    out = np.repeat(points, reps, axis=0)[:dense].astype(np.float64)
    out[len(points):] += rng.normal(scale=sigma, size=(len(out) - len(points), 3))
    return rng.permutation(out).astype(np.float32)  # no order to exploit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA / "modelnet40_npy1024"))
    p.add_argument("--limit", type=int, default=0, help="test shapes (evenly spread; default all)")
    p.add_argument("--dense", type=int, default=40000, help="points per densified shape")
    p.add_argument("--sigma", type=float, default=0.01, help="jitter of the copies (unit-sphere units)")
    p.add_argument("--scan-seeds", type=int, default=5)
    p.add_argument("--runtime", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from core.data.datasets import load_split
    from core.inference import LoadedModel

    models = {r: LoadedModel.load(ROOT / "assets" / "models" / f"{r}.pt", runtime=args.runtime)
              for r in ("teacher", "student")}
    ds = load_split(args.data, "test", 1024)
    idx = np.arange(len(ds)) if not args.limit else np.linspace(0, len(ds) - 1, args.limit).round().astype(int)
    preds = {label: {r: [] for r in models} for label, _ in VARIANTS}
    seconds = {label: 0.0 for label, _ in VARIANTS}
    t_start = time.perf_counter()
    for lo in range(0, len(idx), 64):
        batch = idx[lo:lo + 64]
        prepared = {label: [] for label, _ in VARIANTS}
        for i in batch:
            dense = densify(ds.points[i, :, :3], args.dense, args.sigma, int(i))
            for label, kw in VARIANTS:
                kw = dict(kw)
                seed = int(i) + kw.pop("seed_offset", 0)
                t0 = time.perf_counter()
                prepared[label].append(prepare_points(dense, 1024, seed=seed, **kw))
                seconds[label] += time.perf_counter() - t0
        for label, _ in VARIANTS:
            x = np.stack(prepared[label])
            for r, m in models.items():
                preds[label][r].append(m.logits(x).argmax(1))
        print(f"{min(lo + 64, len(idx))}/{len(idx)} shapes, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    labels = ds.labels[idx]
    ref = VARIANTS[0][0]
    rows = []
    for label, _ in VARIANTS:
        row = {"preprocessing": label, "ms_per_cloud": seconds[label] / len(idx) * 1e3}
        for r in models:
            pr, rf = np.concatenate(preds[label][r]), np.concatenate(preds[ref][r])
            row[f"{r}_agreement"] = float((pr == rf).mean())
            row[f"{r}_accuracy"] = float((pr == labels).mean())
        rows.append(row)

    scans = []
    from core.data.io import load_point_cloud

    for f in sorted((DATA / "scans").glob("*")):
        if f.suffix.lower() in (".txt",):
            continue
        try:
            cloud = load_point_cloud(f)
        except Exception as exc:  # a reader problem is reported, not fatal
            print(f"{f.name}: skipped ({exc})", file=sys.stderr)
            continue
        up = getattr(cloud, "up_hint", None) or "z"
        entry = {"file": f.name, "points": int(len(cloud.xyz))}
        for r, m in models.items():
            exact = [int(m.logits(prepare_points(cloud.xyz, 1024, up, method="fps_exact", seed=s)[None]).argmax())
                     for s in range(args.scan_seeds)]
            fast = [int(m.logits(prepare_points(cloud.xyz, 1024, up, seed=s)[None]).argmax())
                    for s in range(args.scan_seeds)]
            entry[r] = {"exact_fps": [m.class_names[c] for c in exact], "fps": [m.class_names[c] for c in fast],
                        "same_top1": sum(a == b for a, b in zip(exact, fast))}
        scans.append(entry)

    out = {"shapes": int(len(idx)), "dense_points": args.dense, "sigma": args.sigma, "variants": rows, "scans": scans,
           "runtimes": {r: m.runtime for r, m in models.items()}}
    print(f"\nModelNet40 test split, {len(idx)} shapes densified to {args.dense:,} points (sigma {args.sigma}); "
          f"agreement = same top-1 as on exact-FPS input:\n")
    print("| preprocessing | ms per cloud | teacher agreement | student agreement | teacher accuracy | student accuracy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['preprocessing']} | {row['ms_per_cloud']:.2f} | {row['teacher_agreement'] * 100:.2f}% | "
              f"{row['student_agreement'] * 100:.2f}% | {row['teacher_accuracy'] * 100:.2f}% | "
              f"{row['student_accuracy'] * 100:.2f}% |")
    print(f"\nReal scans ({args.scan_seeds} seeds each; top-1 with exact FPS / with the default preprocessing):\n")
    print("| file | points | teacher same top-1 | student same top-1 |")
    print("| --- | ---: | ---: | ---: |")
    for e in scans:
        print(f"| {e['file']} | {e['points']:,} | {e['teacher']['same_top1']}/{args.scan_seeds} | "
              f"{e['student']['same_top1']}/{args.scan_seeds} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

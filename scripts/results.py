"""Aggregate comparison runs into a Markdown table and a learning-curve plot.

    python scripts/results.py --root docs/runs/comparison20 --plot docs/results_curves_20.png > table.md

Reads every ``<root>/<method>/seed<k>/report.json``; prints OA and mean class accuracy as
mean +- sample standard deviation over the seeds found (final epoch, no voting), parameters,
MACs and the epoch budget; where every run has a ``partial.json`` (``comparison.py --evaluate-partial``)
also its partial-view OA. The plot shows test OA per epoch of every method (the mean over its seeds; for
T3DNet both stages are concatenated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ORDER = ["scratch", "kd", "netaug", "t3dnet", "t3dnet_restart", "e2e", "fitnet", "dml"]
LABELS = {
    "scratch": "scratch", "kd": "KD alone", "netaug": "NetAug alone", "t3dnet": "T3DNet (NetAug then KD)",
    "t3dnet_restart": "T3DNet, each stage its own schedule",
    "e2e": "end-to-end (NetAug + KD in one stage)", "fitnet": "feature distillation (FitNet)",
    "dml": "deep mutual learning",
}


def _stage_dirs(run: Path, rep: dict) -> list[Path]:
    """A T3DNet run's stage folders: absolute in a live run, relative in an archived one
    (``scripts/archive_runs.py``)."""
    return [run / s if not Path(s).is_absolute() else Path(s) for s in rep.get("stages") or []]


def _curve(run: Path) -> list[float]:
    rep = json.loads((run / "report.json").read_text())
    if rep.get("stages"):
        oa = []
        for stage in _stage_dirs(run, rep):
            oa += [h["val_oa"] for h in json.loads((stage / "report.json").read_text())["history"]]
        return oa
    return [h["val_oa"] for h in rep["history"]]


def collect(root: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for method_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run in sorted(method_dir.glob("seed*")):
            if (run / "report.json").is_file():
                rep = json.loads((run / "report.json").read_text())
                rep["_run"] = run
                partial = run / "partial.json"  # comparison.py --evaluate-partial
                rep["_partial"] = json.loads(partial.read_text()) if partial.is_file() else None
                out.setdefault(method_dir.name, []).append(rep)
    return out


def fmt(values: list[float]) -> str:
    m = statistics.mean(values) * 100
    if len(values) > 1:
        return f"{m:.2f} ± {statistics.stdev(values) * 100:.2f}"
    return f"{m:.2f}"


def _per_seed(reps: list[dict], values: list[float]) -> str:
    return ", ".join(f"{r['_run'].name.replace('seed', 's')}: {v * 100:.2f}" for r, v in zip(reps, values))


def table(results: dict[str, list[dict]]) -> str:
    partial = all(r["_partial"] for reps in results.values() for r in reps)
    extra = " partial-view OA % | partial OA % per seed |" if partial else ""
    lines = ["| method | OA % | mAcc % | seeds | OA % per seed |" + extra + " student epochs | params | MACs |",
             "| --- | --- | --- | --- | --- |" + (" --- | --- |" if partial else "") + " --- | --- | --- |"]
    for method in [m for m in ORDER if m in results] + [m for m in results if m not in ORDER]:
        reps = results[method]
        epochs = sum(json.loads((s / "report.json").read_text())["epochs"] for s in _stage_dirs(reps[0]["_run"], reps[0])) \
            if reps[0].get("stages") else reps[0]["epochs"]
        per_seed = _per_seed(reps, [r["oa"] for r in reps])
        cells = ""
        if partial:
            p_oa = [r["_partial"]["oa"] for r in reps]
            cells = f" {fmt(p_oa)} | {_per_seed(reps, p_oa)} |"
        lines.append(f"| {LABELS.get(method, method)} | {fmt([r['oa'] for r in reps])} | {fmt([r['macc'] for r in reps])} "
                     f"| {len(reps)} | {per_seed} |{cells} {epochs} | {reps[0]['params']:,} | {reps[0]['macs'] / 1e6:.1f} M |")
    return "\n".join(lines)


def _extra_curve(spec: str) -> tuple[str, list[float]]:
    """``LABEL=DIR[:N],DIR[:N],...``: the test-OA histories of run directories, each cut to its
    first N epochs when given, concatenated (e.g. a stage 2 started from another run's epoch N)."""
    label, _, parts = spec.rpartition("=")  # the label may hold "=" (T=1), paths do not
    if not parts:
        raise SystemExit(f"--extra {spec!r}: expected LABEL=DIR[:N],DIR[:N],...")
    oa: list[float] = []
    for part in parts.split(","):
        d, _, n = part.partition(":")
        hist = [h["val_oa"] for h in json.loads((Path(d).expanduser() / "report.json").read_text())["history"]]
        oa += hist[: int(n)] if n else hist
    return label, oa


def plot(results: dict[str, list[dict]], path: Path, extras: list[str] = (), title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    series = []  # (label, curve, style)
    for method in [m for m in ORDER if m in results]:
        curves = [_curve(r["_run"]) for r in results[method]]
        n = min(len(c) for c in curves)
        curve = [statistics.mean(c[i] for c in curves) for i in range(n)]
        label = LABELS[method] + (f" (mean of {len(curves)} seeds)" if len(curves) > 1 else "")
        series.append((label, curve, {"lw": 2 if method == "t3dnet" else 1.2,
                                      "ls": "--" if method == "t3dnet_restart" else "-"}))
    for spec in extras:
        label, curve = _extra_curve(spec)
        series.append((label, curve, {"lw": 1.2, "ls": ":"}))
    last = max(len(c) for _, c, _ in series)
    first_zoomed = last // 2 + 1  # the second half of the budget, where the curves bunch up
    for label, curve, style in series:
        epochs = range(1, len(curve) + 1)
        ax.plot(epochs, [c * 100 for c in curve], label=label, **style)
        zoom.plot(list(epochs)[first_zoomed - 1:], [c * 100 for c in curve[first_zoomed - 1:]], **style)
    for a in (ax, zoom):
        a.set_xlabel("student epoch")
        a.grid(alpha=0.3)
    ax.set_ylabel("ModelNet40 test OA % (no voting)")
    ax.legend(fontsize=8)
    ax.set_title(title)
    zoom.set_title(f"epochs {first_zoomed}-{last}")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--plot", default=None, help="write the learning-curve PNG here")
    p.add_argument("--extra", action="append", default=[], metavar="LABEL=DIR[:N],DIR",
                   help="also plot an experiment: run histories concatenated (DIR:N keeps N epochs)")
    p.add_argument("--title", default="width-1/8 PointNet++ students, equal epoch budget")
    args = p.parse_args(argv)
    results = collect(Path(args.root).expanduser())
    if not results:
        print(f"no finished runs under {args.root}", file=sys.stderr)
        return 1
    print(table(results))
    if args.plot:
        plot(results, Path(args.plot), args.extra, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The compression report: one self-contained HTML file on what the student kept of the teacher.

:func:`collect_report` measures (both models on the same evenly spread test shapes, with the same
code as ``evaluate``: accuracy, per-class accuracy, confusion, ECE, temperature scaling, latency,
optionally partial views); :func:`render_html` writes the page, every picture a base64 PNG
``data:`` URI drawn with matplotlib's Agg canvas (no pyplot, no Qt); :func:`build_report` does
both and writes the file atomically. Long work reports ``progress(what, done, total)`` and stops
between batches when ``cancelled()`` turns true.

Thread: any (the GUI runs it in a worker). No Qt here.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import T3DError

#: Test shapes measured by default (evenly spread, as ``evaluate --limit``); 0 means the whole split.
#: Chosen so that the report of the bundled models takes about a minute on a 2-core CPU.
DEFAULT_LIMIT = 300
#: Training shapes the temperature is fitted on by default (``evaluate --fit-temperature``).
DEFAULT_TEMPERATURE_SHAPES = 200
#: The most disagreeing shapes shown with thumbnails.
DISAGREEMENTS = 8
#: Latency: median of this many eager forward passes at batch 1, after 3 warm-up passes.
LATENCY_RUNS = 20
ROLES = ("teacher", "student")
FIGURE_DPI = 90


class ReportCancelled(T3DError):
    """The user stopped the report before it was written."""


@dataclass
class ReportRequest:
    """What to report on: two checkpoints, a dataset and how much of it to measure."""

    teacher: str
    student: str
    data: str
    limit: int = DEFAULT_LIMIT
    temperature_shapes: int = DEFAULT_TEMPERATURE_SHAPES
    partial: bool = False
    severity: int = 2
    disagreements: int = DISAGREEMENTS
    latency_runs: int = LATENCY_RUNS
    batch_size: int = 64

    def validate(self) -> None:
        if self.limit < 0:
            raise T3DError(f"--limit must be 0 (the whole split) or more (got {self.limit})")
        if not 1 <= self.temperature_shapes <= 1000:
            raise T3DError(f"--temperature-shapes takes 1 to 1000 training shapes (got {self.temperature_shapes})")
        if self.severity not in (1, 2, 3):
            raise T3DError(f"--severity must be 1, 2 or 3 (got {self.severity})")
        if not Path(self.data).is_dir():
            raise T3DError(f"{self.data}: dataset folder not found")


class _Progress:
    """Turns the work of several stages into one ``progress(what, done, total)`` stream."""

    def __init__(self, progress, cancelled, total: int) -> None:
        self.progress, self.cancelled, self.total, self.done = progress, cancelled, max(int(total), 1), 0

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise ReportCancelled("report cancelled")

    def step(self, what: str, units: int = 1) -> None:
        self.check()
        self.done = min(self.done + units, self.total)
        if self.progress is not None:
            self.progress(what, self.done, self.total)

    def stage(self, what: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for one stage of ``total`` units."""
        start = self.done

        def cb(done: int, total: int) -> None:
            self.check()
            self.done = min(start + done, self.total)
            if self.progress is not None:
                self.progress(what, self.done, self.total)

        return cb


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (nats) of each row pair (as ``core.inference.js_divergence``)."""
    p, q = np.clip(p, 1e-12, 1), np.clip(q, 1e-12, 1)
    m = 0.5 * (p + q)
    return 0.5 * (p * np.log(p / m)).sum(1) + 0.5 * (q * np.log(q / m)).sum(1)


ROOT = Path(__file__).resolve().parents[1]


def repo_path(p) -> str:
    """``p`` as the report shows it and its commands use it: relative to the repository root (the
    commands are run from there) when it lies inside it or beside it, else absolute."""
    a = Path(p).resolve()
    rel = os.path.relpath(a, ROOT)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else str(a)


def _example_of(ds, c: int, shape: int) -> np.ndarray:
    """The first test shape of class ``c`` other than ``shape`` (a picture of what ``c`` looks like)."""
    idx = np.flatnonzero(ds.labels == c)
    return ds.points[next((int(k) for k in idx if k != shape), int(idx[0]))]


def _quote(p) -> str:
    return shlex.quote(repo_path(p))


def reproduce_commands(req: ReportRequest, n_split: int, out: str = "report.html") -> list[tuple[str, str]]:
    """(what it gives, command) for every number of the report."""
    limit = f" --limit {req.limit}" if req.limit and req.limit < n_split else ""
    cmds = []
    for role in ROLES:
        ck = getattr(req, role)
        cmds.append((f"{role}: OA, mAcc, per-class accuracy, ECE, temperature and ECE after temperature scaling",
                     f"python main.py evaluate --checkpoint {_quote(ck)} --data {_quote(req.data)}{limit} "
                     f"--fit-temperature {req.temperature_shapes} --json"))
    if req.partial:
        for role in ROLES:
            cmds.append((f"{role}: partial views, severity {req.severity}",
                         f"python main.py evaluate --checkpoint {_quote(getattr(req, role))} --data {_quote(req.data)}"
                         f"{limit} --views partial --severity {req.severity} --json"))
    cmds.append(("everything in this report, latency, confusion difference and disagreements included",
                 f"python main.py report --teacher {_quote(req.teacher)} --student {_quote(req.student)} "
                 f"--data {_quote(req.data)} --limit {req.limit} --temperature-shapes {req.temperature_shapes}"
                 + (f" --partial --severity {req.severity}" if req.partial else "") + f" --out {_quote(out)}"))
    return cmds


def collect_report(req: ReportRequest, progress=None, cancelled=None, out: str = "report.html") -> dict:
    """Measure everything the report shows (JSON-ready, plus arrays under ``_arrays``).

    Accuracy, per-class accuracy, confusion and ECE come from
    :func:`core.inference.evaluate_checkpoint` (the ``evaluate`` command's code) on the same
    shapes, the temperature from :func:`core.calibration.fit_checkpoint_temperature` (the
    ``--fit-temperature`` code), so the numbers equal those commands'.
    """
    import torch

    from core.calibration import calibration_summary, fit_checkpoint_temperature, softmax
    from core.data.datasets import load_split
    from core.engine.machine import describe_machine, format_machine
    from core.engine.metrics import measure_latency
    from core.inference import Comparison, LoadedModel, evaluate_checkpoint

    req.validate()
    t_start = time.perf_counter()
    models = {r: LoadedModel.load(getattr(req, r)) for r in ROLES}
    Comparison(models["teacher"], models["student"])  # the same classes, or a one-line error
    ds = load_split(req.data, "test", 1024)
    if list(ds.class_names) != list(models["teacher"].class_names):
        raise T3DError(f"{req.data}: its {len(ds.class_names)} classes differ from the models' "
                       f"{len(models['teacher'].class_names)}")
    n_split = len(ds)
    n = n_split if not req.limit or req.limit >= n_split else req.limit
    t_shapes = req.temperature_shapes
    total = 2 * n + 2 * t_shapes + (2 * n if req.partial else 0) + 2 + 1  # latency x2, then drawing
    tick = _Progress(progress, cancelled, total)
    tick.step("models loaded", 0)

    result: dict = {"models": {}}
    logits, labels, indices = {}, None, None
    for role in ROLES:
        lm = models[role]
        ev = evaluate_checkpoint(lm.checkpoint, req.data, limit=req.limit, batch_size=req.batch_size,
                                 keep_logits=True, progress=tick.stage(f"{role}: test shapes"))
        logits[role], labels, indices = ev.pop("logits"), ev.pop("labels"), ev.pop("indices")
        temp = fit_checkpoint_temperature(lm.model, req.data, t_shapes, batch_size=req.batch_size,
                                          class_names=lm.class_names,
                                          progress=tick.stage(f"{role}: temperature (training shapes)"))
        cal = calibration_summary(logits[role], labels, temp["temperature"])
        tick.check()
        latency = measure_latency(lm.logits, batch=1, runs=req.latency_runs)  # the engine predict and the app use
        tick.step(f"{role}: latency")
        partial = None
        if req.partial:
            pv = evaluate_checkpoint(lm.checkpoint, req.data, limit=req.limit, batch_size=req.batch_size,
                                     views="partial", severity=req.severity,
                                     progress=tick.stage(f"{role}: partial views"))
            partial = {"oa": pv["oa"], "macc": pv["macc"], "severity": req.severity, "n": pv["n"]}
        cfg = lm.model.model_config
        result["models"][role] = {
            "checkpoint": repo_path(lm.checkpoint), "sha256": _sha256(lm.checkpoint), "model": lm.name,
            "architecture": cfg.name, "width": cfg.width, "params": lm.params, "macs": lm.macs,
            "size_bytes": lm.size_bytes,
            "latency_ms": latency, "runtime": lm.runtime, "oa": ev["oa"], "macc": ev["macc"], "n": ev["n"],
            "per_class_acc": ev["per_class_acc"], "confusion": ev["confusion"],
            "ece": ev["ece"], "ece_bins": ev["ece_bins"], "temperature": temp["temperature"],
            "ece_temperature_scaled": cal["ece_temperature_scaled"], "nll": cal["nll"],
            "nll_temperature_scaled": cal["nll_temperature_scaled"], "reliability": cal["reliability"],
            "reliability_temperature_scaled": cal["reliability_temperature_scaled"], "partial": partial,
        }
        result["temperature_source"] = temp["source"]

    names = list(ds.class_names)
    t, s = result["models"]["teacher"], result["models"]["student"]
    support = np.bincount(labels, minlength=len(names))
    per_class = []
    for k, name in enumerate(names):
        if support[k]:
            per_class.append({"class": name, "support": int(support[k]), "teacher": t["per_class_acc"][k],
                              "student": s["per_class_acc"][k],
                              "change": s["per_class_acc"][k] - t["per_class_acc"][k]})
    diff = np.asarray(s["confusion"]) - np.asarray(t["confusion"])
    off = [(int(diff[i, j]), i, j) for i in range(len(names)) for j in range(len(names)) if i != j and diff[i, j] > 0]
    off.sort(key=lambda x: (-x[0], x[1], x[2]))
    changes = [{"true": names[i], "predicted": names[j], "teacher": int(np.asarray(t["confusion"])[i, j]),
                "student": int(np.asarray(s["confusion"])[i, j]), "more": d} for d, i, j in off[:10]]

    pt, ps = softmax(logits["teacher"]), softmax(logits["student"])
    tp, sp = pt.argmax(1), ps.argmax(1)
    js = _js_rows(pt, ps)
    dis = np.flatnonzero(tp != sp)
    dis = dis[np.argsort(-js[dis], kind="stable")][:req.disagreements]
    shape_ids = list(ds.shape_ids) if len(ds.shape_ids) == n_split else [str(i) for i in range(n_split)]
    disagreements = [{
        "index": int(indices[i]), "shape_id": str(shape_ids[indices[i]]), "label": names[labels[i]],
        "teacher": names[tp[i]], "teacher_conf": float(pt[i].max()), "student": names[sp[i]],
        "student_conf": float(ps[i].max()), "js": float(js[i])} for i in dis]

    machine = describe_machine()
    result.update({
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine, "machine_line": format_machine(machine), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "data": repo_path(req.data), "split": "test", "n": int(n), "n_split": int(n_split), "limit": req.limit,
        "temperature_shapes": t_shapes, "class_names": names, "per_class": per_class, "confusion_changes": changes,
        "agreement": float((tp == sp).mean()), "disagreeing": int((tp != sp).sum()),
        "disagreements": disagreements, "partial": req.partial, "severity": req.severity,
        "latency_runs": req.latency_runs, "commands": reproduce_commands(req, n_split, out),
        "measure_seconds": time.perf_counter() - t_start,
    })
    result["_arrays"] = {
        "confusion_diff": diff,
        "points": [ds.points[indices[i]] for i in dis],
        "teacher_examples": [_example_of(ds, int(tp[i]), int(indices[i])) for i in dis],
        "student_examples": [_example_of(ds, int(sp[i]), int(indices[i])) for i in dis],
        "progress": tick,
    }
    return result


# --- pictures -------------------------------------------------------------------------------------
TEACHER_COLOR, STUDENT_COLOR = "#4c72b0", "#dd8452"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_overview(r: dict) -> str:
    """The student as a share of the teacher: cost (parameters, MACs, size, latency) and accuracy."""
    t, s = r["models"]["teacher"], r["models"]["student"]
    rows = [("parameters", "params"), ("MACs", "macs"), ("file size", "size_bytes"), ("latency (b1)", "latency_ms"),
            ("OA", "oa"), ("mAcc", "macc")]
    share = [100 * s[k] / t[k] if t[k] else float("nan") for _, k in rows]
    fig = _figure(7, 3.2)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    colors = ["#8c8c8c"] * 4 + [STUDENT_COLOR] * 2
    shown = np.clip(np.nan_to_num(share, nan=0.1), 0.1, None)  # a log axis: 0% (an untrained model) shows as 0.1%
    ax.barh(y, shown, color=colors)
    ax.set_xscale("log")
    ax.axvline(100, color="k", lw=1)
    ax.set_yticks(y, [name for name, _ in rows])
    for yi, v, w in zip(y, share, shown):
        ax.text(w * 1.08, yi, f"{v:.1f}%", va="center", fontsize=9)
    ax.set_xlim(shown.min() / 2, max(400, shown.max() * 3))
    ax.set_xlabel("student as % of the teacher (log scale; the line is the teacher)")
    return _png_uri(fig)


def figure_per_class(r: dict) -> str:
    """Per-class accuracy change (student minus teacher), every class, sorted."""
    rows = sorted(r["per_class"], key=lambda c: c["change"])
    fig = _figure(7, max(3.0, 0.16 * len(rows) + 0.8))
    ax = fig.add_subplot()
    ch = np.array([c["change"] * 100 for c in rows])
    ax.barh(np.arange(len(rows)), ch, color=np.where(ch < 0, "#c44e52", "#55a868"))
    ax.set_yticks(np.arange(len(rows)), [f"{c['class']} ({c['support']})" for c in rows], fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("student − teacher accuracy (points); in brackets: test shapes of the class")
    ax.set_ylim(len(rows) - 0.4, -0.6)  # the largest losses on top
    return _png_uri(fig)


def figure_confusion_diff(r: dict) -> str:
    """Student confusion minus teacher confusion (counts; rows: true class, columns: predicted)."""
    d = r["_arrays"]["confusion_diff"]
    names = r["class_names"]
    fig = _figure(7.5, 6.6)
    ax = fig.add_subplot()
    m = max(int(np.abs(d).max()), 1)
    im = ax.imshow(d, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, shrink=0.7, label="student − teacher (shapes)")
    return _png_uri(fig)


def figure_reliability(r: dict) -> str:
    """Reliability diagrams: both models, before and after temperature scaling."""
    fig = _figure(8, 7)
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    for row, role in enumerate(ROLES):
        m = r["models"][role]
        for col, (key, ece_key, label) in enumerate((("reliability", "ece", "as trained"),
                                                     ("reliability_temperature_scaled", "ece_temperature_scaled",
                                                      f"temperature scaled (T = {m['temperature']:.3f})"))):
            ax = axes[row, col]
            rel = m[key]
            lo, hi = np.array(rel["lower"]), np.array(rel["upper"])
            acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
            conf = np.array([np.nan if c is None else c for c in rel["confidence"]])
            width = hi - lo
            color = TEACHER_COLOR if role == "teacher" else STUDENT_COLOR
            ax.bar(lo, np.nan_to_num(acc), width=width, align="edge", color=color, edgecolor="white",
                   label="accuracy")
            gap_lo, gap_hi = np.fmin(acc, conf), np.fmax(acc, conf)
            ax.bar(lo, np.nan_to_num(gap_hi - gap_lo), bottom=np.nan_to_num(gap_lo), width=width, align="edge",
                   color="none", edgecolor="#c44e52", hatch="///", lw=0, label="gap to confidence")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set_title(f"{role}, {label}\nECE {m[ece_key] * 100:.2f}%", fontsize=10)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            if row == 1:
                ax.set_xlabel("confidence (top-class probability)")
            if col == 0:
                ax.set_ylabel("accuracy")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    return _png_uri(fig)


def project_points(points: np.ndarray, azimuth: float = -50.0, elevation: float = 22.0):
    """A fixed oblique view of a z-up cloud: screen ``u``, ``v`` and ``depth`` (larger: farther)."""
    a, e = np.radians(azimuth), np.radians(elevation)
    x, y, z = np.asarray(points, np.float64).T
    xr, yr = x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)
    return xr, z * np.cos(e) + yr * np.sin(e), yr * np.cos(e) - z * np.sin(e)


def _thumbnail(ax, points: np.ndarray, title: str, color: str = "black") -> None:
    u, v, depth = project_points(points)
    order = np.argsort(-depth)  # far points first, near ones drawn over them
    z = np.asarray(points)[:, 2]
    ax.scatter(u[order], v[order], c=z[order], cmap="viridis", s=2.5, linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.set_title(title, fontsize=8, color=color)


def figure_disagreements(r: dict) -> str | None:
    """Each disagreeing shape, and a test shape of each model's predicted class beside it."""
    rows = r["disagreements"]
    if not rows:
        return None
    arr = r["_arrays"]
    fig = _figure(7.2, 2.3 * len(rows))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for i, d in enumerate(rows):
        _thumbnail(axes[i, 0], arr["points"][i], f"{d['shape_id']}\ntrue: {d['label']}")
        _thumbnail(axes[i, 1], arr["teacher_examples"][i],
                   f"teacher: {d['teacher']} {d['teacher_conf']:.0%}\n(a test {d['teacher']})",
                   "#2a7a2a" if d["teacher"] == d["label"] else "#b22222")
        _thumbnail(axes[i, 2], arr["student_examples"][i],
                   f"student: {d['student']} {d['student_conf']:.0%}\n(a test {d['student']})",
                   "#2a7a2a" if d["student"] == d["label"] else "#b22222")
    fig.subplots_adjust(hspace=0.45, wspace=0.05)
    return _png_uri(fig)


def figure_partial(r: dict) -> str | None:
    """Clean and partial-view accuracy of both models."""
    if not r["partial"]:
        return None
    fig = _figure(6, 3)
    ax = fig.add_subplot()
    x = np.arange(2)
    for k, role in enumerate(ROLES):
        m = r["models"][role]
        vals = [m["oa"] * 100, m["partial"]["oa"] * 100]
        ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=role, color=TEACHER_COLOR if role == "teacher" else STUDENT_COLOR)
        for xi, v in zip(x + (k - 0.5) * 0.38, vals):
            ax.text(xi, v + 1, f"{v:.1f}%", ha="center", fontsize=8)
    ax.set_xticks(x, ["clean", f"partial views, severity {r['severity']}"])
    ax.set_ylabel("overall accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend()
    return _png_uri(fig)


# --- the page -------------------------------------------------------------------------------------
CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f2f2f2; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } code, pre { background: #f5f5f5; font-size: .9em; }
pre { padding: .6em; white-space: pre-wrap; word-break: break-all; }
.note { color: #555; font-size: .92em; } .bad { color: #b22222; } .good { color: #2a7a2a; }
"""


SECTIONS = (("models", "models"), ("per-class", "accuracy per class"), ("confusion", "confusion difference"),
            ("calibration", "calibration"), ("disagreements", "disagreements"), ("partial", "partial views"),
            ("reproduce", "reproduce"))


def _human(n: float, unit: str = "") -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suf}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v * 100:.{digits}f}%"


def _img(uri: str, alt: str) -> str:
    return f'<p><img src="{uri}" alt="{html.escape(alt)}"></p>'


def render_html(r: dict) -> str:
    """The report page for :func:`collect_report`'s result (pictures drawn here)."""
    e = html.escape
    t, s = r["models"]["teacher"], r["models"]["student"]
    subset = (f"all {r['n']:,} shapes of the test split" if r["n"] == r["n_split"] else
              f"{r['n']:,} of the {r['n_split']:,} test shapes, evenly spread (as <code>evaluate --limit "
              f"{r['n']}</code>; <code>--limit 0</code> measures all of them)")
    threads = f"{r['threads']} thread{'s' * (r['threads'] != 1)}"
    load = f"; 1-minute load average {r['load_average']:.1f} while it was measured" if r.get("load_average") else ""
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>T3DNet compression report</title>"
           f"<style>{CSS}</style></head><body>",
           "<h1>What the compression kept: teacher vs student</h1>",
           f"<p>Dataset <code>{e(r['data'])}</code>, measured on {subset}. Built {e(r['created'])} on "
           f"<b>{e(r['machine_line'])}</b>, torch {e(r['machine']['torch'])}, {threads}{load}.</p>",
           "<p class='note'>Sections: " + " · ".join(
               f"<a href='#{anchor}'>{k} {title}</a>" for k, (anchor, title) in enumerate(SECTIONS, 1)) + ".</p>"]

    # 1 models
    out.append("<h2 id='models'>1. The two models</h2><table><tr><th></th><th>teacher</th><th>student</th>"
               "<th>student / teacher</th></tr>")
    rows = [("checkpoint", e(t["checkpoint"]), e(s["checkpoint"]), ""),
            ("SHA-256 (first 16)", t["sha256"][:16], s["sha256"][:16], ""),
            ("model", e(t["model"]), e(s["model"]), "")]
    for label, key, fmt in (("parameters", "params", lambda v: f"{v:,}"), ("MACs per shape", "macs", _human),
                            ("file size", "size_bytes", lambda v: _human(v, "B")),
                            ("latency, batch 1 (ms)", "latency_ms", lambda v: f"{v:.1f}")):
        rows.append((label, fmt(t[key]), fmt(s[key]), f"{s[key] / t[key]:.2%}" if t[key] else "—"))
    for label, key in (("overall accuracy (OA)", "oa"), ("mean class accuracy (mAcc)", "macc"), ("ECE", "ece"),
                       ("ECE after temperature scaling", "ece_temperature_scaled")):
        rows.append((label, _pct(t[key]), _pct(s[key]), f"{(s[key] - t[key]) * 100:+.2f} points"))
    for row in rows:
        out.append("<tr><th>" + row[0] + "</th>" + "".join(f"<td class='n'>{c}</td>" for c in row[1:]) + "</tr>")
    out.append("</table>")
    out.append(f"<p class='note'>Parameters: trainable weights. MACs: multiply-accumulates of the linear layers per "
               f"1,024-point shape (sampling and grouping not counted; <code>core.models.complexity</code>). File size: "
               f"the checkpoint on disk. Latency: median of {r['latency_runs']} calls of each model's inference engine "
               f"(the one <code>predict</code> and the app use: teacher on {e(t.get('runtime', '?'))}, student on "
               f"{e(s.get('runtime', '?'))}) at batch 1 after 3 warm-up calls, sampling and grouping included, "
               f"{threads}, on this machine. "
               f"The two models agree on {r['agreement']:.1%} of the shapes ({r['disagreeing']} disagreements).</p>")
    out.append(_img(figure_overview(r), "student as a share of the teacher"))

    # 2 per class
    out.append("<h2 id='per-class'>2. Accuracy per class</h2>")
    lost = sorted((c for c in r["per_class"] if c["change"] < 0), key=lambda c: (c["change"], c["class"]))
    gained = sum(c["change"] > 0 for c in r["per_class"])
    out.append(f"<p>OA {_pct(t['oa'])} → {_pct(s['oa'])}, mAcc {_pct(t['macc'])} → {_pct(s['macc'])}. "
               f"The student is less accurate than the teacher on {len(lost)} classes, more accurate on {gained}, "
               f"as accurate on the other {len(r['per_class']) - len(lost) - gained}. The classes that lost most "
               "(a class with few test shapes moves in large steps):</p>")
    if lost:
        out.append("<table><tr><th>class</th><th>test shapes</th><th>teacher</th><th>student</th>"
                   "<th>change (points)</th></tr>")
        for c in lost[:10]:
            out.append(f"<tr><td>{e(c['class'])}</td><td class='n'>{c['support']}</td><td class='n'>"
                       f"{_pct(c['teacher'], 1)}</td><td class='n'>{_pct(c['student'], 1)}</td>"
                       f"<td class='n bad'>{c['change'] * 100:+.1f}</td></tr>")
        out.append("</table>")
    out.append(_img(figure_per_class(r), "per-class accuracy change"))

    # 3 confusion difference
    out.append("<h2 id='confusion'>3. Confusion difference</h2><p>Student confusion matrix minus the teacher's: "
               "red cells off the diagonal are mistakes the student makes more often, blue ones it makes less "
               "often; a blue diagonal is correct answers lost.</p>")
    if r["confusion_changes"]:
        out.append("<p>The mistakes the student makes more often than the teacher, most first (shapes):</p>")
        out.append("<table><tr><th>true class</th><th>predicted as</th><th>teacher</th><th>student</th></tr>")
        for c in r["confusion_changes"]:
            out.append(f"<tr><td>{e(c['true'])}</td><td>{e(c['predicted'])}</td><td class='n'>{c['teacher']}</td>"
                       f"<td class='n'>{c['student']}</td></tr>")
        out.append("</table>")
    out.append(_img(figure_confusion_diff(r), "confusion matrix difference"))

    # 4 calibration
    out.append("<h2 id='calibration'>4. Calibration</h2>")
    out.append(f"<p><b>ECE</b> (expected calibration error) measures how far a model's confidence is from how often "
               f"it is right: the shapes are put in {t['ece_bins']} equal-width bins of confidence (the top class's "
               "probability), and ECE is the shape-weighted mean of |accuracy − mean confidence| over the bins "
               "(0 is perfect). <b>Temperature scaling</b> divides the logits by one number T fitted to minimise the "
               f"negative log-likelihood on the {e(r['temperature_source'])}, never on the test shapes; it changes no "
               "prediction, only the confidence (T &lt; 1: the model was under-confident).</p>")
    out.append("<table><tr><th></th><th>ECE</th><th>NLL</th><th>T</th><th>ECE, scaled</th><th>NLL, scaled</th></tr>")
    for role in ROLES:
        m = r["models"][role]
        out.append(f"<tr><th>{role}</th><td class='n'>{_pct(m['ece'])}</td><td class='n'>{m['nll']:.3f}</td>"
                   f"<td class='n'>{m['temperature']:.3f}</td><td class='n'>{_pct(m['ece_temperature_scaled'])}</td>"
                   f"<td class='n'>{m['nll_temperature_scaled']:.3f}</td></tr>")
    out.append("</table>")
    out.append(_img(figure_reliability(r), "reliability diagrams"))

    # 5 disagreements
    out.append("<h2 id='disagreements'>5. Where they disagree most</h2>")
    fig = figure_disagreements(r)
    if fig is None:
        out.append("<p>The two models agree on every measured shape.</p>")
    else:
        out.append(f"<p>The {len(r['disagreements'])} shapes (of {r['disagreeing']} on which the predicted classes "
                   "differ) with the largest Jensen-Shannon divergence between the two models' class probabilities. "
                   "Left: the shape (colour: height); middle and right: a test shape of the class each model "
                   "predicted, titled green when that prediction is right.</p>")
        out.append("<table><tr><th>shape</th><th>true</th><th>teacher</th><th>student</th><th>JS divergence</th></tr>")
        for d in r["disagreements"]:
            out.append(f"<tr><td>{e(d['shape_id'])}</td><td>{e(d['label'])}</td><td>{e(d['teacher'])} "
                       f"{d['teacher_conf']:.0%}</td><td>{e(d['student'])} {d['student_conf']:.0%}</td>"
                       f"<td class='n'>{d['js']:.3f}</td></tr>")
        out.append("</table>")
        out.append(_img(fig, "most disagreeing shapes"))

    # 6 partial views
    out.append("<h2 id='partial'>6. Partial views</h2>")
    if r["partial"]:
        out.append(f"<p>The same shapes seen from one fixed viewpoint each (hidden points removed, sparser and noisier, "
                   f"severity {r['severity']}; <code>evaluate --views partial</code>, docs/PARTIAL_VIEWS.md).</p>")
        out.append("<table><tr><th></th><th>clean OA</th><th>partial OA</th><th>partial mAcc</th></tr>")
        for role in ROLES:
            m = r["models"][role]
            out.append(f"<tr><th>{role}</th><td class='n'>{_pct(m['oa'])}</td><td class='n'>{_pct(m['partial']['oa'])}"
                       f"</td><td class='n'>{_pct(m['partial']['macc'])}</td></tr>")
        out.append("</table>")
        out.append(_img(figure_partial(r), "partial views"))
    else:
        out.append("<p>Not measured for these checkpoints in this report (making partial views is slow): build it with "
                   "<code>--partial</code> to add them.</p>")

    # 7 reproduce
    out.append("<h2 id='reproduce'>7. Reproduce every number</h2><p>From the repository root (the numbers are "
               "deterministic; latency depends on the machine and its load):</p>")
    for what, cmd in r["commands"]:
        out.append(f"<p>{e(what)}:</p><pre>{e(cmd)}</pre>")
    out.append(f"<p class='note'>Measured in {r['measure_seconds']:.0f} s.</p></body></html>")
    return "\n".join(out)


def write_atomically(text: str, out: str | Path) -> None:
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise T3DError(f"{out}: its folder does not exist")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def build_report(req: ReportRequest, out: str | Path | None = None, progress=None, cancelled=None) -> dict:
    """Measure, draw and (with ``out``) write the report; returns the measurements without
    arrays, plus ``html`` (the page) and ``seconds`` (all of it)."""
    t0 = time.perf_counter()
    r = collect_report(req, progress, cancelled, out=str(out or "report.html"))
    tick = r["_arrays"]["progress"]
    tick.step("drawing the pictures", 0)
    page = render_html(r)
    tick.check()
    if out is not None:
        write_atomically(page, out)
    tick.step("written")
    r.pop("_arrays")
    r["html"] = page
    r["seconds"] = time.perf_counter() - t0
    return r


__all__ = ["DEFAULT_LIMIT", "DEFAULT_TEMPERATURE_SHAPES", "ReportCancelled", "ReportRequest", "build_report",
           "collect_report", "render_html", "reproduce_commands", "project_points", "write_atomically"]

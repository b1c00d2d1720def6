"""Predict many 3D files at once: walk folders, read and analyse each file, run both models in batches.

The answer for a file is ``predict --json``'s object plus ``path``; a file that cannot be read gives
``{"path", "error"}`` and the run goes on (docs/CLI.md, "Folders and several files"). The CLI
(``predict FOLDER``) and the app (File > Predict folder…) share this module and its CSV table.

Thread: any; the app runs :func:`predict_files` in a worker thread.
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from core.data.orient import UpAxis
from core.errors import T3DError

#: Files read, analysed and prepared before both models run over them in one forward pass each.
#: The engine splits larger batches into chunks anyway (core.runtime.CHUNK); 16 keeps the files
#: read ahead of the models few, so an unreadable file is reported soon.
BATCH_SIZE = 16

#: A folder's up axis: the first files of a folder whose axis is estimated are estimated one by
#: one; when at least FOLDER_AXIS_AGREE of the first FOLDER_AXIS_SAMPLE agree, the folder's other
#: files take that axis without an estimate of their own (see :class:`FolderUpAxis`).
FOLDER_AXIS_SAMPLE = 8
FOLDER_AXIS_AGREE = 7

#: Columns of the CSV table (:func:`write_csv`); probabilities are fractions, ``agree`` is true/false.
CSV_COLUMNS = ("file", "teacher_class", "teacher_prob", "student_class", "student_prob", "agree", "error")


@dataclass
class FileList:
    """The files to predict, in order, and the files found in the folders that no reader takes."""

    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def collect_files(paths: Sequence[str | os.PathLike]) -> FileList:
    """The files named and the files found under the folders named, in the order given.

    A folder is walked recursively; its files are sorted by relative path and each is given as the
    folder (as written) joined with that relative path. A file there whose extension names no reader
    (:func:`core.data.io.readable_extensions`) is skipped and listed in ``skipped``. A file named
    directly is kept whatever its extension, and so is a path that does not exist: reading it says
    what is wrong.
    """
    from core.data.io import readable_extensions

    exts = set(readable_extensions())
    out = FileList()
    for arg in map(os.fspath, paths):
        if not os.path.isdir(arg):
            out.files.append(arg)
            continue
        found: list[str] = []
        for dirpath, _dirs, names in os.walk(arg):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), arg)
                (found if Path(name).suffix.lower() in exts else out.skipped).append(os.path.join(arg, rel))
        out.files += sorted(found, key=lambda f: PurePath(os.path.relpath(f, arg)).parts)
    return out


@dataclass
class Timings:
    """Seconds per step over a run of :func:`predict_files` (wall clock, summed over files)."""

    read_s: float = 0.0
    analysis_s: float = 0.0  # up-axis decision (the estimator's forward passes) and scene check
    prepare_s: float = 0.0  # sampling to the models' points, turning the up axis to z
    teacher_s: float = 0.0  # the teacher's forward passes over the batches
    student_s: float = 0.0
    objects_s: float = 0.0  # finding and predicting the objects of scenes (``objects`` only)

    def summary(self) -> str:
        steps = (("reading", self.read_s), ("input analysis", self.analysis_s), ("preparing", self.prepare_s),
                 ("teacher", self.teacher_s), ("student", self.student_s), ("objects", self.objects_s))
        return ", ".join(f"{name} {s:.1f} s" for name, s in steps if s or name != "objects")


class FolderUpAxis:
    """The up axis of the files of one folder, estimated once for the folder.

    Files that sit in one folder come from one source and share its convention, and one estimate
    per file costs six forward passes of the estimator's network. So the first
    :data:`FOLDER_AXIS_SAMPLE` files of a folder that need an estimate (no axis from the user or the
    format, not a scene) are estimated one by one; if at least :data:`FOLDER_AXIS_AGREE` of them agree,
    the folder's later files take that axis (source ``estimated``, no scores of their own, a note
    says so). Otherwise every file keeps its own estimate.
    """

    def __init__(self, estimate) -> None:
        self._estimate = estimate
        self._sampled: dict[str, list[tuple[str, bool]]] = {}  # per folder, (axis, unsure) of its first estimates

    def folder_axis(self, folder: str) -> str | None:
        """The axis decided for ``folder`` by its first :data:`FOLDER_AXIS_SAMPLE` estimates, or None
        (not yet, or they do not agree: then never)."""
        axes = [axis for axis, _ in self._sampled.get(folder, [])]
        if len(axes) < FOLDER_AXIS_SAMPLE:
            return None
        axis = max(set(axes), key=axes.count)
        return axis if axes.count(axis) >= FOLDER_AXIS_AGREE else None

    def estimator(self, path: str, notes: list[str]):
        """The ``xyz -> (axis, scores)`` estimate for the file ``path``; a note goes to ``notes``
        when the file takes its folder's axis."""
        folder = os.path.dirname(os.path.abspath(path))

        def estimate(xyz):
            axis = self.folder_axis(folder)
            if axis is not None:
                votes = self._sampled[folder]
                agree, unsure = sum(a == axis for a, _ in votes), votes.count((axis, True))
                doubt = agree - unsure < FOLDER_AXIS_AGREE  # the sure ones alone would not have agreed
                notes.append(f"up axis {axis}: its folder's, estimated on its first {FOLDER_AXIS_SAMPLE} files "
                             f"({agree} agree{f', {unsure} of them unsure: check it' if doubt else ''})")
                return axis, {}
            axis, scores = self._estimate(xyz)
            sample = self._sampled.setdefault(folder, [])
            if len(sample) < FOLDER_AXIS_SAMPLE:  # only the first files vote
                sample.append((axis, UpAxis(axis, "estimated", scores).unsure))
            return axis, scores

        return estimate


def error_line(exc: BaseException) -> str:
    """One line for a file that could not be read or analysed (ours already are; others get their type)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (T3DError, OSError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def predict_files(comp, files: Iterable[str], top: int = 5, up: str = "auto", channels: int | None = None,
                  objects: bool = False, num_points: int = 1024, batch_size: int = BATCH_SIZE,
                  timings: Timings | None = None) -> Iterator[dict]:
    """Both models on each file, one answer per file, in order.

    Each file is read, analysed (:meth:`Comparison.analyze`: up axis, with :class:`FolderUpAxis`,
    and scene check) and prepared on its own; the prepared clouds then go through each model ``batch_size`` at a time
    (:meth:`Comparison.predict_many`). An answer is ``{"path": file, **predict --json object}``, or
    ``{"path": file, "error": one line}`` when the file could not be read, analysed or prepared.
    With ``objects``, a file whose objects cannot be found keeps its answer, with ``objects_error``
    (one line) in place of ``objects``.

    Args:
        comp: a :class:`core.inference.Comparison`.
        files: paths (see :func:`collect_files`).
        top, up, channels, objects, num_points: as for :meth:`Comparison.predict_file`.
        timings: filled with the seconds each step took.
    """
    from core.data.io import load_point_cloud
    from core.data.preprocess import prepare_points

    from core.inference import warm_up_preprocessing

    warm_up_preprocessing(num_points)  # each file's preparation is timed (end_to_end_ms)
    t = timings if timings is not None else Timings()
    folder_axes = FolderUpAxis(comp.estimate_up_axis)
    pending: list[dict] = []  # in file order: an error answer, or what the batch needs for an answer
    prepared = 0
    for path in files:
        try:
            t0 = time.perf_counter()
            cloud = load_point_cloud(path, channels=channels)
            t1 = time.perf_counter()
            notes: list[str] = []
            info = comp.analyze(cloud, up, estimate=folder_axes.estimator(path, notes))
            info["notes"] += notes
            t2 = time.perf_counter()
            up_axis, support = info.pop("_up"), info.pop("_support")
            pts = prepare_points(cloud.xyz, num_points=num_points, up_axis=up_axis.axis)
            t3 = time.perf_counter()
        except Exception as exc:
            pending.append({"path": path, "error": error_line(exc)})
            continue
        t.read_s, t.analysis_s, t.prepare_s = t.read_s + t1 - t0, t.analysis_s + t2 - t1, t.prepare_s + t3 - t2
        pending.append({"path": path, "_info": info, "_points": pts, "_file": cloud.path, "_prepare_ms": (t3 - t2) * 1000,
                        "_objects_of": (cloud.xyz, up_axis, support) if objects else None})
        prepared += 1
        if prepared == batch_size:
            yield from _flush(comp, pending, top, num_points, t)
            pending, prepared = [], 0
    yield from _flush(comp, pending, top, num_points, t)


def _flush(comp, pending: list[dict], top: int, num_points: int, t: Timings) -> Iterator[dict]:
    """Run the batch of prepared clouds in ``pending`` and yield every answer of it in order."""
    from core.inference import file_answer

    ready = [p for p in pending if "_points" in p]
    preds = iter(comp.predict_many(np.stack([p["_points"] for p in ready]), top,
                                   prepare_ms=[p["_prepare_ms"] for p in ready]) if ready else [])
    for p in pending:
        if "error" in p:
            yield p
            continue
        pred = next(preds)
        t.teacher_s += pred["teacher"]["latency_ms"] / 1000
        t.student_s += pred["student"]["latency_ms"] / 1000
        result = {"path": p["path"], **file_answer(p["_info"], pred, p["_file"])}
        if p["_objects_of"] is not None:
            t0 = time.perf_counter()
            xyz, up_axis, support = p["_objects_of"]
            try:
                found = comp.predict_objects(xyz, up_axis, support, top=top, num_points=num_points)
            except Exception as exc:  # the file's own answer stands; the run goes on
                result["objects_error"] = error_line(exc)
            else:
                for obj in found:  # arrays for callers in Python, not part of the JSON
                    obj.pop("indices")
                    obj.pop("rotation")
                result["objects"] = found
            t.objects_s += time.perf_counter() - t0
        yield result


def csv_row(answer: dict) -> dict:
    """One row of the CSV table (:data:`CSV_COLUMNS`) for an answer of :func:`predict_files`."""
    if "error" in answer:
        return {"file": answer["path"], "error": answer["error"]}
    t, s = answer["teacher"]["top"][0], answer["student"]["top"][0]
    return {"file": answer["path"], "teacher_class": t["class"], "teacher_prob": f"{t['prob']:.4f}",
            "student_class": s["class"], "student_prob": f"{s['prob']:.4f}",
            "agree": "true" if answer["agree"] else "false", "error": ""}


def write_csv(answers: Iterable[dict], path: str | os.PathLike) -> None:
    """The table of ``answers`` (one row each, :data:`CSV_COLUMNS`) written atomically: an existing
    file is replaced only once the whole table is written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same folder: os.replace is atomic
    try:
        with open(tmp, "x", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
            w.writeheader()
            for a in answers:
                w.writerow(csv_row(a))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

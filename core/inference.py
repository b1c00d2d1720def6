"""Teacher vs student inference: load checkpoints, run both on one cloud, compare.

Each model runs on an engine of :mod:`core.runtime` (``auto``: the faster of torch and ONNX
Runtime on this CPU). Timings in the answers: ``latency_ms`` (the model on a prepared cloud: its
sampling, grouping and network), ``end_to_end_ms`` (from the points in memory to the
probabilities: preprocessing, then the model) and the input analysis apart (``analysis_ms``).
A single file's answer (:meth:`Comparison.predict_cloud`) times each step :data:`TIMING_ROUNDS`
times after a warm-up call on the same cloud and reports the median: one call's time on a shared
CPU is mostly the machine's noise (the student's, five processes on one scan: 2.7 to 9.2 ms).

Thread: any; the GUI calls it from a worker thread. Models are in eval mode, FPS starts at
point 0, so a prediction is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.orient import UP_AXES, UpAxis, decide_up_axis
from core.engine.checkpoint import CheckpointError, load_model
from core.models import ClassifierBase
from core.models.complexity import count_macs, count_parameters
from core.runtime import Engine
from core.vocabulary import CHECKPOINT_KEY, VocabularyCalibration

#: Clouds with fewer points are never called scenes: too sparse to tell parts from objects.
SCENE_MIN_POINTS = 2000
#: Without the up-axis estimator: how much more familiar (summed energy of both classifiers)
#: another axis must look than z before the fallback estimate turns a cloud. (The estimator
#: carries its own margin, chosen on held-out training shapes.)
UP_ESTIMATE_MARGIN = 1.0

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
DEFAULT_TEACHER = ASSETS / "models" / "teacher.pt"
DEFAULT_STUDENT = ASSETS / "models" / "student.pt"
DEFAULT_UP_ESTIMATOR = ASSETS / "models" / "up_estimator.pt"
#: A single file's timings: the median of this many calls of each step, after a warm-up call.
TIMING_ROUNDS = 3


@dataclass
class LoadedModel:
    """A checkpoint ready for inference, with its size and cost."""

    model: ClassifierBase
    checkpoint: str
    class_names: list[str]
    params: int
    macs: int
    size_bytes: int
    metrics: dict
    vocabulary: VocabularyCalibration | None = None  # None: uncalibrated, no in-vocabulary decision
    engine: Engine | None = None  # None: eager PyTorch (a model built here, not loaded)

    @classmethod
    def load(cls, path: str | Path, runtime: str = "auto", threads: int | None = None) -> "LoadedModel":
        """A checkpoint (file or run directory) on an engine of ``runtime`` (``auto``, ``torch``,
        ``onnx``; see :mod:`core.runtime`), warmed up."""
        from core.runtime import check_runtime, create_engine

        check_runtime(runtime)
        model, ck = load_model(path)
        model.eval()
        return cls(model, ck["path"], list(ck["class_names"]), count_parameters(model),
                   count_macs(model), Path(ck["path"]).stat().st_size, dict(ck.get("metrics", {})),
                   VocabularyCalibration.from_dict(ck.get(CHECKPOINT_KEY), num_classes=len(ck["class_names"])),
                   create_engine(model, runtime, source=ck["path"], threads=threads))

    @property
    def runtime(self) -> str:
        """The runtime that runs this model: ``torch`` or ``onnx`` (``eager``: no engine)."""
        return self.engine.runtime if self.engine is not None else "eager"

    @torch.no_grad()
    def logits(self, points: np.ndarray) -> np.ndarray:
        """Logits (B, C) for prepared clouds (B, P, 3)."""
        points = np.ascontiguousarray(points, dtype=np.float32)
        if self.engine is not None and points.shape[1] == self.engine.num_points:
            return self.engine.logits(points)
        return self.model(torch.from_numpy(points)).float().numpy()

    def in_vocabulary(self, logits: np.ndarray) -> list[bool | None]:
        """Per row of logits: whether this model knows the kind of object (None: uncalibrated)."""
        if self.vocabulary is None:
            return [None] * len(logits)
        return [bool(v) for v in self.vocabulary.in_vocabulary(logits)]

    @property
    def name(self) -> str:
        cfg = self.model.model_config
        return f"{cfg.name} x{cfg.width:g}"

    def probabilities(self, points: np.ndarray, rounds: int = 1) -> tuple[np.ndarray, float, np.ndarray]:
        """Class probabilities for one prepared cloud (P, 3), the latency in ms (the model's
        sampling, grouping and network, and the softmax) and the logits.

        ``rounds`` > 1: a warm-up call on these points, then the median time of ``rounds`` calls
        (each gives the same answer: the model is deterministic)."""
        x = np.ascontiguousarray(points, dtype=np.float32)[None]
        if rounds > 1:
            self.logits(x)
        times = []
        for _ in range(max(1, rounds)):
            t0 = time.perf_counter()
            logits = self.logits(x)[0]
            probs = _softmax(logits)
            times.append((time.perf_counter() - t0) * 1000)
        return probs, float(np.median(times)), logits

    def top_classes(self, probs: np.ndarray, top: int) -> list[dict]:
        order = np.argsort(-probs)[:top]
        return [{"class": self.class_names[i], "prob": float(probs[i])} for i in order]

    def describe(self, probs: np.ndarray, ms: float, top: int, in_vocabulary: bool | None = None,
                 end_to_end_ms: float | None = None) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "model": self.name,
            "params": self.params,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "latency_ms": ms,
            "end_to_end_ms": end_to_end_ms,
            "runtime": self.runtime,
            "top": self.top_classes(probs, top),
            "in_vocabulary": in_vocabulary,
            "vocabulary": None if self.vocabulary is None else self.vocabulary.summary(),
        }


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


_preprocessing_warm = False


def warm_up_preprocessing(num_points: int = 1024) -> None:
    """Run :func:`~core.data.preprocess.prepare_points` once on a synthetic cloud (first use in a
    process loads its compiled kernel), so that a timed preprocessing is never a cold one."""
    global _preprocessing_warm
    if not _preprocessing_warm:
        from core.data.preprocess import prepare_points

        prepare_points(np.random.default_rng(0).normal(size=(4 * num_points, 3)), num_points)
        _preprocessing_warm = True


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) between two probability vectors."""
    p = np.clip(p, 1e-12, 1)
    q = np.clip(q, 1e-12, 1)
    m = 0.5 * (p + q)
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


class Comparison:
    """A teacher and a student over the same classes."""

    def __init__(self, teacher: LoadedModel, student: LoadedModel) -> None:
        if teacher.class_names != student.class_names:
            raise CheckpointError(
                f"{student.checkpoint}: its {len(student.class_names)} classes differ from the teacher's "
                f"({len(teacher.class_names)} classes in {teacher.checkpoint})")
        self.teacher, self.student = teacher, student
        self._warm: set[str] = set()  # what warm_up_analysis has run

    @classmethod
    def from_paths(cls, teacher: str | Path | None = None, student: str | Path | None = None,
                   runtime: str = "auto") -> "Comparison":
        return cls(LoadedModel.load(teacher or DEFAULT_TEACHER, runtime),
                   LoadedModel.load(student or DEFAULT_STUDENT, runtime))

    @property
    def class_names(self) -> list[str]:
        return self.teacher.class_names

    def predict_points(self, points: np.ndarray, top: int = 5, prepare_ms: float | None = None,
                       rounds: int = 1) -> dict:
        """Both models on one prepared cloud (P, 3): top classes, full probabilities, agreement.

        ``prepare_ms``: how long preparing ``points`` took; each model's ``end_to_end_ms`` is that
        plus its ``latency_ms`` (None without it). ``rounds``: as for :meth:`LoadedModel.probabilities`."""
        pt, mt, lt = self.teacher.probabilities(points, rounds)
        ps, ms, ls = self.student.probabilities(points, rounds)
        t = self.teacher.describe(pt, mt, top, self.teacher.in_vocabulary(lt[None])[0],
                                  None if prepare_ms is None else prepare_ms + mt)
        s = self.student.describe(ps, ms, top, self.student.in_vocabulary(ls[None])[0],
                                  None if prepare_ms is None else prepare_ms + ms)
        t["probs"], s["probs"] = pt.tolist(), ps.tolist()
        agree = int(pt.argmax()) == int(ps.argmax())
        return {
            "teacher": t,
            "student": s,
            "agree": agree,
            "verdict": verdict(agree, t["in_vocabulary"], s["in_vocabulary"]),
            "divergence": js_divergence(pt, ps),
        }

    def predict_batch(self, batch: np.ndarray, top: int = 5) -> list[dict]:
        """Both models on prepared clouds (B, P, 3): per cloud ``teacher``/``student`` with ``top`` and
        ``in_vocabulary``, ``agree`` and ``verdict`` (the compact form of found objects)."""
        out = [dict() for _ in range(len(batch))]
        tops = {}
        for role, m in (("teacher", self.teacher), ("student", self.student)):
            logits = m.logits(batch)
            probs = _softmax(logits)
            vocab = m.in_vocabulary(logits)
            tops[role] = probs.argmax(1)
            for i, o in enumerate(out):
                o[role] = {"top": m.top_classes(probs[i], top), "in_vocabulary": vocab[i]}
        for i, o in enumerate(out):
            o["agree"] = bool(tops["teacher"][i] == tops["student"][i])
            o["verdict"] = verdict(o["agree"], o["teacher"]["in_vocabulary"], o["student"]["in_vocabulary"])
        return out

    def predict_many(self, batch: np.ndarray, top: int = 5, prepare_ms=None) -> list[dict]:
        """Both models on prepared clouds (B, P, 3), one forward pass of each model over the batch:
        per cloud the :meth:`predict_points` answer without ``probs``. Each ``latency_ms`` is the
        model's forward pass over the batch divided by B (the share of one cloud); with
        ``prepare_ms`` (B values: how long each cloud took to prepare) ``end_to_end_ms`` is a
        cloud's preparation plus that share."""
        probs, described = {}, {}
        for role, m in (("teacher", self.teacher), ("student", self.student)):
            t0 = time.perf_counter()
            logits = m.logits(batch)
            probs[role] = _softmax(logits)
            ms = (time.perf_counter() - t0) * 1000 / len(batch)
            vocab = m.in_vocabulary(logits)
            described[role] = [m.describe(probs[role][i], ms, top, vocab[i],
                                          None if prepare_ms is None else prepare_ms[i] + ms)
                               for i in range(len(batch))]
        out = []
        for i in range(len(batch)):
            pt, ps = probs["teacher"][i], probs["student"][i]
            t, s = described["teacher"][i], described["student"][i]
            agree = int(pt.argmax()) == int(ps.argmax())
            out.append({"teacher": t, "student": s, "agree": agree,
                        "verdict": verdict(agree, t["in_vocabulary"], s["in_vocabulary"]),
                        "divergence": js_divergence(pt, ps)})
        return out

    @property
    def up_estimator(self) -> "UpEstimator | None":
        """The bundled up-axis estimator, loaded on first use (None when it is not installed)."""
        if not hasattr(self, "_up_estimator"):
            self._up_estimator = UpEstimator.load() if DEFAULT_UP_ESTIMATOR.is_file() else None
        return self._up_estimator

    def estimate_up_axis(self, xyz: np.ndarray) -> tuple[str, dict[str, float]]:
        """The signed axis of ``xyz`` most likely up, and each axis's log-probability (see :class:`UpEstimator`).

        Without the estimator an axis scores the sum of both classifiers' energies with that axis
        turned up (the orientation they find most familiar: a weaker guess), as a softmax over the
        six; the margin applies to the energies' differences, which the softmax keeps.
        """
        if self.up_estimator is not None:
            return self.up_estimator.estimate(xyz)
        views = candidate_views(xyz)
        energy = sum(torch.logsumexp(torch.from_numpy(m.logits(views)), 1) for m in (self.teacher, self.student))
        logp = torch.log_softmax(energy.double(), 0).numpy()
        return _pick_axis({a: float(v) for a, v in zip(UP_AXES, logp)})

    def warm_up_analysis(self, estimate: bool = True) -> None:
        """Run the scene check, and with ``estimate`` the up-axis estimate, once on a synthetic cloud
        (their first use in a process imports Open3D and loads the estimator: about a second,
        start-up rather than analysis), so that a file's ``analysis_ms`` times its own analysis."""
        todo = {"scene", "estimate"} if estimate else {"scene"}
        if todo <= self._warm:
            return
        cloud = np.random.default_rng(0).normal(size=(SCENE_MIN_POINTS, 3)).astype(np.float32)
        if "scene" not in self._warm:
            from core.data.scene import check_scene

            check_scene(cloud)
        if "estimate" in todo - self._warm:
            self.estimate_up_axis(cloud)
        self._warm |= todo

    def analyze(self, cloud, up: str = "auto", scene_params=None, estimate=None) -> dict:
        """:func:`analyze_cloud` with this comparison's up-axis estimate (or ``estimate``, one built on it)."""
        return analyze_cloud(cloud, up, estimate or self.estimate_up_axis, scene_params)

    def predict_cloud(self, cloud, up: str = "auto", top: int = 5, objects: bool = False,
                      num_points: int = 1024) -> dict:
        """The whole answer for one loaded cloud (the ``predict --json`` contract, docs/CLI.md)."""
        from core.data.preprocess import prepare_points

        self.warm_up_analysis(estimate=up == "auto")
        info = self.analyze(cloud, up)
        up_axis: UpAxis = info.pop("_up")
        support = info.pop("_support")
        times = []
        for _ in range(1 + TIMING_ROUNDS):  # a warm-up call, then the timed ones (seeded: the same points)
            t0 = time.perf_counter()
            pts = prepare_points(cloud.xyz, num_points=num_points, up_axis=up_axis.axis)
            times.append((time.perf_counter() - t0) * 1000)
        result = self.predict_points(pts, top, prepare_ms=float(np.median(times[1:])), rounds=TIMING_ROUNDS)
        for role in ("teacher", "student"):
            result[role].pop("probs")
        result = file_answer(info, result, cloud.path)
        if objects:
            result["objects"] = self.predict_objects(cloud.xyz, up_axis, support, top=top, num_points=num_points)
        return result

    def predict_objects(self, xyz: np.ndarray, up_axis: UpAxis, support: np.ndarray | None = None,
                        top: int = 5, num_points: int = 1024) -> list[dict]:
        """Objects found in a scene, each with both models' predictions, largest first.

        Each object is turned upright by the scene's support plane when there is one (its normal
        becomes z), else by the decided up axis; ``rotation`` (3x3, file -> z up) and ``indices``
        (into ``xyz``) say exactly what the models saw, for a caller that shows or re-runs it.
        """
        from core.data.preprocess import prepare_points
        from core.data.scene import find_objects, rotation_between
        from core.data.orient import rotation_to_z

        found, plane_up = find_objects(xyz)
        normal = support if support is not None else plane_up
        if up_axis.source == "user" or normal is None:
            rot = rotation_to_z(up_axis.axis)
        else:
            rot = rotation_between(normal)
        if not found:
            return []
        batch = np.stack([prepare_points(np.asarray(xyz)[o.indices] @ rot.T, num_points=num_points) for o in found])
        preds = self.predict_batch(batch, top)
        return [{"bbox_min": o.bbox_min.tolist(), "bbox_max": o.bbox_max.tolist(), "points": o.points,
                 "indices": o.indices, "rotation": rot, **p} for o, p in zip(found, preds)]

    def predict_file(self, path: str | Path, top: int = 5, up: str = "auto", num_points: int = 1024,
                     channels: int | None = None, objects: bool = False) -> dict:
        from core.data.io import load_point_cloud

        cloud = load_point_cloud(path, channels=channels)
        return self.predict_cloud(cloud, up=up, top=top, objects=objects, num_points=num_points)


def file_answer(info: dict, prediction: dict, file: str) -> dict:
    """The ``predict --json`` object (without ``objects``) of one file: its analysis ``info`` (the
    ``input`` block, private keys removed) and both models' ``prediction`` (:meth:`Comparison.predict_points`
    without ``probs``, or one of :meth:`Comparison.predict_many`). A scene's verdict is ``scene``."""
    if info["scene"]:
        prediction["verdict"] = "scene"
    return {"input": info, **prediction, "file": file}


def analyze_cloud(cloud, up: str = "auto", estimate=None, scene_params=None) -> dict:
    """What the input is before any prediction: its up axis (and where it came from) and whether
    it is a scene. Returns the JSON ``input`` block plus the private keys ``_up`` (the
    :class:`~core.data.orient.UpAxis`) and ``_support`` (the support plane's normal or None).

    Args:
        cloud: a :class:`core.data.io.PointCloud`.
        up: ``auto`` or a signed axis named by the user.
        estimate: ``xyz -> (axis, scores)`` for objects, or None (then z is the default).
    """
    from core.data.scene import check_scene, nearest_signed_axis

    t0 = time.perf_counter()
    check = check_scene(cloud.xyz, scene_params) if len(cloud.xyz) >= SCENE_MIN_POINTS else None
    scene = bool(check is not None and check.scene)
    support = check.support.normal if scene else None
    if scene:
        estimator = (lambda: (nearest_signed_axis(support), {}))
    else:
        estimator = None if estimate is None else (lambda: estimate(cloud.xyz))
    up_axis = decide_up_axis(up, getattr(cloud, "up_hint", None), estimator)
    info = {
        "path": cloud.path,
        "format": cloud.format,
        "kind": cloud.kind,
        "points_in_file": int(cloud.original_points),
        "points_used": int(len(cloud.xyz)),
        "channels": getattr(cloud, "channels", None),
        "layout": getattr(cloud, "layout", None),
        "notes": list(getattr(cloud, "notes", []) or []),
        **up_axis.to_dict(),
        "up_axis_scores": up_axis.scores,
        "up_axis_confidence": up_axis.confidence,
        "up_axis_unsure": up_axis.unsure,
        "scene": scene,
        "scene_reason": (check.reason if check is not None else
                         f"fewer than {SCENE_MIN_POINTS} points: treated as one object"),
        "analysis_ms": (time.perf_counter() - t0) * 1000,
        "_up": up_axis,
        "_support": support,
    }
    if getattr(cloud, "origin", None) is not None:  # geo-referenced: coordinates are relative to it
        info["origin"] = [float(v) for v in cloud.origin]
    return info


def pick_axes(scores: np.ndarray, margin: float) -> np.ndarray:
    """Per row of (B, 6) scores in :data:`~core.data.orient.UP_AXES` order, the index of the best
    axis, unless it beats z (index 0) by less than ``margin`` (then z)."""
    scores = np.asarray(scores, np.float64)
    best = scores.argmax(1)
    return np.where(scores[np.arange(len(scores)), best] - scores[:, 0] < margin, 0, best)


def _pick_axis(scores: dict[str, float], margin: float = UP_ESTIMATE_MARGIN) -> tuple[str, dict[str, float]]:
    """:func:`pick_axes` for one cloud's scores by axis name."""
    return UP_AXES[int(pick_axes(np.array([[scores[a] for a in UP_AXES]]), margin)[0])], scores


#: Checkpoint key of the up-axis estimator's probe (``scripts/train_up_estimator.py``).
PROBE_KEY = "up_probe"


def candidate_views(xyz: np.ndarray, num_points: int = 1024) -> np.ndarray:
    """(6, num_points, 3): the cloud prepared once, then turned with each candidate axis of
    :data:`~core.data.orient.UP_AXES` up (one reduction for all six, so they differ by the turn alone)."""
    from core.data.orient import convert_up_axis
    from core.data.preprocess import prepare_points

    base = prepare_points(xyz, num_points=num_points)
    return np.stack([convert_up_axis(base, a, "z") for a in UP_AXES]).astype(np.float32)


@torch.no_grad()
def view_embedding(model, views: torch.Tensor, grouping=None) -> torch.Tensor:
    """What the up-axis probe reads from a classifier for each view (B, P, 3): its embedding, and
    the maximum logit and ``logsumexp`` of its logits (how familiar the view looks). ``model``: a
    :class:`~core.models.ClassifierBase`, or its inference module when it has ``forward_features``
    (the same function, faster); ``grouping``: the model's sampling/grouping indices for ``views``
    (required with an inference module)."""
    if isinstance(model, ClassifierBase):
        feats = model.forward_features(views, grouping).float()
    else:
        feats = model.forward_features(views, *model.grouping_inputs(grouping, views))
    logits = model.forward_head(feats).float()
    return torch.cat([feats, logits.max(1, keepdim=True).values, torch.logsumexp(logits, 1, keepdim=True)], 1)


def probe_scores(feats: np.ndarray, probe: dict) -> np.ndarray:
    """(B, 6) score of each view from (B, 6, C) view embeddings: the probe's features standardised,
    through its hidden layer when it has one (ReLU), then a linear score."""
    x = (feats - probe["mean"]) / probe["scale"]
    if "hidden_weight" in probe:
        x = np.maximum(x @ probe["hidden_weight"] + probe["hidden_bias"], 0.0)
    return x @ probe["weight"]


def probe_log_probabilities(feats: np.ndarray, probe: dict) -> np.ndarray:
    """(B, 6) log-probabilities of the six axes: :func:`probe_scores`, softmax over the six views."""
    s = probe_scores(feats, probe)
    s = s - s.max(1, keepdims=True)
    return s - np.log(np.exp(s).sum(1, keepdims=True))


def embedding_module(model: ClassifierBase):
    """What :func:`six_view_features` runs: the model's inference module when it has one with
    ``forward_features`` (BatchNorm folded: about 3x faster for PointNet++), else the model."""
    module = model.inference_module()
    return module if hasattr(module, "forward_features") else model


@torch.no_grad()
def six_view_features(model: ClassifierBase, views: np.ndarray, module=None) -> np.ndarray:
    """(B, 6, C) :func:`view_embedding` of :func:`candidate_views` of B clouds (B, 6, P, 3);
    ``module``: :func:`embedding_module` of the model when the caller keeps one.

    The six views of a cloud are turns of one prepared cloud, and sampling and grouping (FPS,
    ball query) depend only on distances, which turns keep: the indices are computed once per
    cloud, on its first view, and shared by all six (most of the estimator's time otherwise).
    """
    flat = torch.from_numpy(np.ascontiguousarray(views.reshape(-1, *views.shape[2:]), dtype=np.float32))
    first = torch.from_numpy(np.ascontiguousarray(views[:, 0], dtype=np.float32))
    grouping = _repeat_each(model.compute_grouping(first, impl="native"), views.shape[1])
    module = embedding_module(model) if module is None else module
    if getattr(module, "num_points", views.shape[2]) != views.shape[2]:  # made for another cloud size
        module = model
    feats = view_embedding(module, flat, grouping)
    return feats.numpy().reshape(len(views), views.shape[1], -1)


class UpEstimator:
    """Which signed axis of a cloud is up: a small probe on a classifier's embedding of the cloud
    turned with each candidate axis up. A model trained on upright shapes embeds an upright shape
    differently from a turned one (and finds it more familiar); the probe, fitted on turned training
    shapes (``scripts/train_up_estimator.py``), scores each view, and a softmax over the six views
    gives each axis's log-probability. Another axis must beat z by the probe's ``margin`` (chosen on
    held-out training shapes so that z-up files stay z up).
    """

    def __init__(self, model: ClassifierBase, probe: dict) -> None:
        self.model = model
        self.module = embedding_module(model)
        self.probe = {k: np.asarray(probe[k], np.float32)
                      for k in ("mean", "scale", "weight", "hidden_weight", "hidden_bias") if k in probe}
        self.margin = float(probe["margin"])
        #: What the training script measured on held-out training shapes (margin rows), if stored.
        self.validation = probe.get("validation") or {}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_UP_ESTIMATOR) -> "UpEstimator":
        model, ck = load_model(path)
        probe = ck.get(PROBE_KEY)
        if not probe or list(probe.get("axes", [])) != list(UP_AXES):
            raise CheckpointError(f"{ck['path']}: not an up-axis estimator (no {PROBE_KEY!r} for the six axes)")
        probe = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in probe.items()}
        try:
            est = cls(model, probe)
            width = model.feature_dim + 2  # view_embedding: the embedding, max logit, logsumexp
            scores = probe_scores(np.zeros((1, len(UP_AXES), width), np.float32), est.probe)
            ok = scores.shape == (1, len(UP_AXES)) and np.isfinite(scores).all() and np.isfinite(est.margin)
        except (KeyError, TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            raise CheckpointError(f"{ck['path']}: its up-axis probe is damaged or does not fit its model")
        return est

    def log_probabilities(self, views: np.ndarray) -> np.ndarray:
        """(B, 6) log-probability of each axis being up, from :func:`candidate_views` of B clouds (B, 6, P, 3)."""
        return probe_log_probabilities(six_view_features(self.model, views, self.module), self.probe)

    def estimate(self, xyz: np.ndarray) -> tuple[str, dict[str, float]]:
        logp = self.log_probabilities(candidate_views(xyz)[None])[0]
        return _pick_axis({a: float(v) for a, v in zip(UP_AXES, logp)}, self.margin)

    def estimate_many(self, clouds: np.ndarray, batch: int = 64) -> list[UpAxis]:
        """The estimated axis of each cloud of (B, P, 3), with its scores, in batches (for measurements)."""
        out = []
        for lo in range(0, len(clouds), batch):
            views = np.stack([candidate_views(c, clouds.shape[1]) for c in clouds[lo:lo + batch]])
            logp = self.log_probabilities(views)
            out += [UpAxis(UP_AXES[i], "estimated", dict(zip(UP_AXES, map(float, row))))
                    for i, row in zip(pick_axes(logp, self.margin), logp)]
        return out


def _repeat_each(tree, n: int):
    """Sampling/grouping indices (tensors with the batch first, in lists and dicts) with each cloud's
    entry repeated ``n`` times in a row, for ``n`` views of every cloud; None stays None."""
    if torch.is_tensor(tree):
        return tree.repeat_interleave(n, 0)
    if isinstance(tree, dict):
        return {k: _repeat_each(v, n) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_repeat_each(v, n) for v in tree)
    return tree


def verdict(agree: bool, teacher_knows: bool | None, student_knows: bool | None) -> str:
    """One word for what the two models say together (``scene`` is set by the caller).

    ``neither_recognises`` and ``only_teacher_recognises`` / ``only_student_recognises`` come before
    agreement: two models agreeing on a class neither of them knows is not agreement.
    """
    if teacher_knows is False and student_knows is False:
        return "neither_recognises"
    if teacher_knows is True and student_knows is False:
        return "only_teacher_recognises"
    if teacher_knows is False and student_knows is True:
        return "only_student_recognises"
    return "agree" if agree else "disagree"


@torch.no_grad()
def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test", limit: int = 0,
                        batch_size: int = 64, up: str | None = None, channels: int | None = None,
                        views: str = "clean", severity: int = 2, temperature_shapes: int = 0,
                        keep_logits: bool = False, progress=None, runtime: str = "auto") -> dict:
    """OA, mean class accuracy and ECE (fractions) of a checkpoint on a dataset split.

    ``up`` overrides the dataset layout's up-axis convention; ``channels`` is the floats per point
    of binary float32 point files. ``views='partial'`` evaluates on the split's partial-view
    benchmark (:func:`core.data.partial.partial_benchmark`, one fixed viewpoint per shape) at
    ``severity`` 1, 2 or 3; with ``limit`` each shape keeps the view it has in the whole split.
    ``shapes_per_s`` is the throughput of the model's forward passes alone (``batch_size`` shapes
    each, on ``threads`` CPU threads) on ``runtime`` (:mod:`core.runtime`; the one used is
    reported as ``runtime``).

    ``ece`` is the expected calibration error over ``ece_bins`` equal-width confidence bins
    (:mod:`core.calibration`). With ``temperature_shapes`` > 0 a temperature is fitted on that many
    (at most 1,000) evenly spread shapes of the *training* split, clean views, and ``temperature``
    and ``ece_temperature_scaled`` are added. ``keep_logits`` adds the arrays ``logits``, ``labels``
    and ``indices`` (not JSON); ``progress(done, total)`` is called after every batch.
    """
    from core.calibration import ECE_BINS, expected_calibration_error, softmax
    from core.data.datasets import load_split
    from core.data.partial import SEVERITIES, partial_benchmark
    from core.engine.metrics import classification_metrics

    if views not in ("clean", "partial"):
        raise ValueError(f"views must be 'clean' or 'partial', got {views!r}")
    if views == "partial" and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {sorted(SEVERITIES)}, got {severity!r}")

    from core.runtime import check_runtime, create_engine

    check_runtime(runtime)
    model, ck = load_model(checkpoint)
    ds = load_split(data, split, 1024, source_up_axis=up, channels=channels)
    if list(ds.class_names) != list(ck["class_names"]):
        raise CheckpointError(f"{ck['path']}: trained on {len(ck['class_names'])} classes that differ from {data}'s "
                              f"{len(ds.class_names)}")
    idx = np.arange(len(ds)) if not limit or limit >= len(ds) else np.linspace(0, len(ds) - 1, limit).round().astype(int)
    engine = create_engine(model, runtime, source=ck["path"])
    preds, forward_s = [], 0.0
    for lo in range(0, len(idx), batch_size):
        b = idx[lo : lo + batch_size]
        pts = ds.points[b] if views == "clean" else partial_benchmark(ds.points[b], severity, indices=b)
        # Timed: the model's forward pass over the batch (its sampling and grouping included), not
        # reading the dataset, making partial views or the metrics.
        t0 = time.perf_counter()
        logits = engine.logits(pts)
        forward_s += time.perf_counter() - t0
        preds.append(logits)
        if progress is not None:
            progress(min(lo + batch_size, len(idx)), len(idx))
    all_logits = np.concatenate(preds)
    m = classification_metrics(all_logits.argmax(1), ds.labels[idx], len(ds.class_names))
    m["ece"] = expected_calibration_error(softmax(all_logits), ds.labels[idx])
    m["ece_bins"] = ECE_BINS
    m["shapes_per_s"] = len(idx) / forward_s if forward_s > 0 else None
    m["batch_size"] = batch_size
    m["threads"] = engine.threads
    m["runtime"] = engine.runtime
    m["checkpoint"] = ck["path"]
    m["split"] = split
    m["views"] = views
    m["severity"] = severity if views == "partial" else None
    if temperature_shapes:
        from core.calibration import fit_checkpoint_temperature

        t = fit_checkpoint_temperature(model, data, temperature_shapes, batch_size=batch_size, up=up, channels=channels,
                                       class_names=ck["class_names"])
        m["temperature"] = t["temperature"]
        m["temperature_fitted_on"] = t["source"]
        m["ece_temperature_scaled"] = expected_calibration_error(softmax(all_logits, t["temperature"]), ds.labels[idx])
    if keep_logits:
        m["logits"], m["labels"], m["indices"] = all_logits, ds.labels[idx], idx
    return m

"""One inference engine for the app, ``predict``, ``evaluate`` and the benchmarks.

An :class:`Engine` runs one classifier on prepared clouds ``(B, P, 3)`` and returns its logits.
Sampling and grouping are computed outside any graph, by the model's own
``compute_grouping(impl="native")`` (compiled kernels, the eager indices), and turned into the
inputs of the model's :meth:`~core.models.ClassifierBase.inference_module` by its
``grouping_inputs`` (which may compute a first layer too); the module then runs in one of two
runtimes:

* ``torch``: that module in eager PyTorch (no export, nothing cached);
* ``onnx``: that module exported to ONNX and run by ONNX Runtime. The exported graph is cached in
  ``cache_dir()/runtime`` under a key made of the checkpoint's bytes (or, for a model without a
  checkpoint, its weights and configuration), the export code's version
  (:func:`export_code_version`), the ONNX Runtime version and the number of points, beside a JSON
  record holding the key and the graph's SHA-256: only
  the first use exports; a changed checkpoint gets a new key (its old graph is deleted); a cache
  file that does not match its record, or that ONNX Runtime cannot load, is exported again.

``auto`` measures both on this CPU (batch 1, after a warm-up call, median of interleaved calls)
and keeps the faster; :attr:`Engine.measured_ms` says what was measured. With more than one thread
it also measures ONNX Runtime on one thread for a single cloud (:data:`ONNX_ONE_THREAD`): a thin
network's operators are too small to share, and waking a second thread can cost more than it
saves. When that wins by :data:`ONE_THREAD_MARGIN`, single clouds use a one-thread session and
small batches the one with every thread. Batches of more than :data:`PARALLEL_CHUNK` clouds on
``onnx`` with more than one thread run in parts side by side, a one-thread session and the grouping
kernels on each thread (the same logits; measured, not chosen per model: both bundled models gain). The choice is remembered in
the same cache folder, keyed by the model's fingerprint, the export code, the library versions, the
CPU and the thread count, so later loads of the same model on the same machine take the same
runtime without measuring again (and without building the other one); ``remeasure=True`` measures
anew. Every engine has run one
warm-up call when it is returned, so the first timed call a caller makes is not a cold one.

Thread: any (the GUI builds and runs engines in its model worker).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.errors import T3DError
from core.models import ClassifierBase

RUNTIMES = ("torch", "onnx")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
#: ``auto``'s name for ONNX Runtime on one thread for single clouds (in :attr:`Engine.measured_ms`).
ONNX_ONE_THREAD = "onnx (1 thread)"
#: How much faster than ONNX Runtime on every thread the one-thread session must measure to be kept
#: (the choice is remembered: a win within the measurement's noise would be kept for good).
ONE_THREAD_MARGIN = 0.9
#: Bump when the exported graph changes in a way the source files below do not show (a new
#: dependency's behaviour): cached graphs of another version are never used.
EXPORT_VERSION = 1
#: The export code: the key holds a hash of these files too (globs, relative to the checkout), so an
#: edit to the inference modules, the layers they fold or this module re-exports on first use
#: instead of reusing an older graph.
EXPORT_SOURCES = ("core/runtime.py", "core/native.py", "core/models/*.py")
#: Calls per runtime when ``auto`` measures (after one warm-up call each).
AUTO_ROUNDS = 5
#: Clouds per pass of a larger batch: a thin network's grouped rows (about 1 MiB per cloud for the
#: student) then stay in the caches; 16 ran 1.0-1.3x the shapes/s of 8 and 64 here (the teacher: the same).
CHUNK = 16
#: ``onnx`` with more than one thread: a batch of more than this many clouds runs in parts side by
#: side on the engine's threads (as many parts as threads, more when a part would exceed this size,
#: their sizes balanced), each part's sampling and grouping kernels and network on one thread (a
#: one-thread session; only the few torch index operations between them use torch's threads). The
#: student's operators are too small to share between threads: 1.4x the shapes/s of chunks of 16 run
#: one after another on every thread (the teacher 1.1-1.25x; 2 cores), the same logits.
PARALLEL_CHUNK = 8


class RuntimeUnavailableError(T3DError):
    """A runtime that was asked for by name cannot run this model here (the message says why)."""


@dataclass
class Engine:
    """A classifier ready to run on one runtime. Build it with :func:`create_engine`."""

    model: ClassifierBase
    module: torch.nn.Module  # the model's inference module (core.models.base.InferenceModule)
    runtime: str
    threads: int
    num_points: int
    session: object | None = None  # onnxruntime.InferenceSession for "onnx"
    single_session: object | None = None  # "onnx": the session for single clouds, if not ``session``
    exported: bool = False  # this engine's creation exported the graph (it was not in the cache)
    onnx_path: Path | None = None
    graph: bytes | None = None  # "onnx": the serialised graph its sessions run
    measured_ms: dict[str, float] = field(default_factory=dict)  # ``auto``: batch-1 median per runtime
    note: str = ""  # why a runtime was not considered, if one was not
    _workers: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _one_thread: object | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def logits(self, points: np.ndarray, profile: dict | None = None) -> np.ndarray:
        """Logits (B, C) for prepared clouds ``points`` (B, P, 3) float32.

        ``profile``: seconds spent in ``grouping`` (sampling, grouping and the module's
        :meth:`~core.models.base.InferenceModule.grouping_inputs`, e.g. a first level computed
        outside the graph) and ``network`` are added to it (for a batch run in parts side by side,
        each thread's seconds, summed: more than the wall time).
        """
        x = np.ascontiguousarray(points, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected prepared clouds of shape (B, P, 3), got {x.shape}")
        if x.shape[1] != self.num_points:
            raise ValueError(f"this engine runs clouds of {self.num_points} points, got {x.shape[1]}")
        if self.session is not None and self.threads > 1 and len(x) > PARALLEL_CHUNK:
            count = min(len(x), max(self.threads, -(-len(x) // PARALLEL_CHUNK)))
            session, workers = self._parallel()
            parts = list(workers.map(lambda c: self._chunk(c, session, 1), np.array_split(x, count)))
        elif len(x) > CHUNK:
            return np.concatenate([self.logits(x[i:i + CHUNK], profile) for i in range(0, len(x), CHUNK)])
        else:
            session = self.single_session if len(x) == 1 and self.single_session is not None else self.session
            parts = [self._chunk(x, session, None)]
        if profile is not None:
            for _, times in parts:
                for k, v in times.items():
                    profile[k] = profile.get(k, 0.0) + v
        return parts[0][0] if len(parts) == 1 else np.concatenate([out for out, _ in parts])

    def _chunk(self, x: np.ndarray, session, threads: int | None) -> tuple[np.ndarray, dict[str, float]]:
        """Logits of clouds ``x`` by ``session`` (None: the module in torch), the grouping kernels on
        ``threads`` threads (None: torch's), and the seconds of ``grouping`` and ``network``."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            inputs = self.module.grouping_inputs(self.model.compute_grouping(xt, impl="native", threads=threads),
                                                 xt, threads=threads)
            t1 = time.perf_counter()
            if session is None:
                out = self.module(xt, *inputs).numpy()
            else:
                feed = {self.module.input_names[0]: x}
                feed.update((n, t.numpy()) for n, t in zip(self.module.input_names[1:], inputs))
                out = session.run(None, feed)[0]
        t2 = time.perf_counter()
        return out, {"grouping": t1 - t0, "network": t2 - t1}

    def _parallel(self):
        """The one-thread session and the worker threads that run a batch's chunks side by side
        (made on first use: a single cloud never needs them)."""
        with self._lock:
            if self._workers is None:
                self._one_thread = self.single_session or _ort_session(self.graph, 1)
                self._workers = ThreadPoolExecutor(self.threads, thread_name_prefix="t3dnet-engine")
            return self._one_thread, self._workers

    def describe(self) -> str:
        """One line: the runtime and, for ``auto``, what was measured."""
        text = f"{self.runtime}, {self.threads} thread{'s' * (self.threads != 1)}"
        if self.single_session is not None:
            text += " (1 for a single cloud)"
        if self.measured_ms:
            text += " (measured: " + ", ".join(f"{k} {v:.2f} ms" for k, v in self.measured_ms.items()) + ")"
        return text + (f"; {self.note}" if self.note else "")


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {runtime!r}")
    return runtime


def create_engine(model: ClassifierBase, runtime: str = "auto", source: str | os.PathLike | None = None,
                  threads: int | None = None, num_points: int = 1024, remeasure: bool = False) -> Engine:
    """An engine for ``model`` on ``runtime`` (``auto``, ``torch`` or ``onnx``), warmed up.

    Args:
        model: a classifier (a network-augmentation supernet is reduced to its tiny model).
        source: the checkpoint file the model was loaded from: its bytes key the ONNX cache (else
            the model's weights and configuration do).
        threads: ONNX Runtime's intra-op threads (default: torch's, which eager PyTorch and the
            grouping kernels use: ``torch.set_num_threads`` sets all of them).
        num_points: points per prepared cloud.
        remeasure: ``auto`` measures both runtimes even when a choice for this model and machine
            is remembered (and remembers the new one).

    Raises:
        RuntimeUnavailableError: ``onnx`` asked for by name and it cannot be used.
    """
    from core import native

    check_runtime(runtime)
    if model.is_augmentable:
        model = model.export()
    model = model.eval()
    threads = int(threads or torch.get_num_threads())
    native.warm_up()
    module = model.inference_module(num_points).eval()
    probe = probe_clouds(1, num_points)
    # The checkpoint's hash keys the ONNX cache and auto's remembered choice: read it once.
    fingerprint = None if runtime == "torch" else model_fingerprint(model, source)
    build = dict(model=model, module=module, fingerprint=fingerprint, source=source, threads=threads,
                 num_points=num_points)
    choice_path = None
    if runtime == "auto":
        choice_path = cache_folder() / f"auto-{_key_name(_choice_key(fingerprint, threads, num_points))}.json"
        remembered = None if remeasure else _read_choice(choice_path)
        if remembered is not None:
            try:
                engine = _single_engine(remembered["runtime"], **build)
            except Exception:  # the remembered runtime no longer builds: measure again
                pass
            else:
                if remembered.get("single_threads") == 1 and engine.session is not None:
                    engine.single_session = _ort_session(engine.graph, 1)
                engine.logits(probe)  # warm-up
                engine.measured_ms = dict(remembered["measured_ms"])
                engine.note = "remembered choice"
                return engine
    engines: dict[str, Engine] = {}
    note = ""
    for rt in RUNTIMES if runtime == "auto" else (runtime,):
        try:
            engines[rt] = _single_engine(rt, **build)
        except Exception as exc:  # auto falls back to torch, saying why
            if rt == "torch":
                raise
            if runtime == "onnx":
                raise RuntimeUnavailableError(f"the onnx runtime cannot run {model.model_config.name}: "
                                              f"{_one_line(exc)}") from exc
            note = f"onnx not used: {_one_line(exc)}"
    if runtime == "auto" and "onnx" in engines and threads > 1:
        onnx = engines["onnx"]
        engines[ONNX_ONE_THREAD] = Engine(model, module, "onnx", threads, num_points, session=onnx.session,
                                          single_session=_ort_session(onnx.graph, 1), exported=onnx.exported,
                                          onnx_path=onnx.onnx_path, graph=onnx.graph)
    for e in engines.values():
        e.logits(probe)  # warm-up
    if len(engines) == 1:
        engine = next(iter(engines.values()))
    else:
        measured = _measure({k: (lambda e=e: e.logits(probe)) for k, e in engines.items()}, AUTO_ROUNDS)
        if ONNX_ONE_THREAD in measured and measured[ONNX_ONE_THREAD] > ONE_THREAD_MARGIN * measured["onnx"]:
            del engines[ONNX_ONE_THREAD]  # not clearly faster (still reported in measured_ms)
        engine = engines[min(engines, key=measured.get)]
        engine.measured_ms = {k: v * 1e3 for k, v in measured.items()}
        engine.exported = any(e.exported for e in engines.values())
        if choice_path is not None:
            choice = {"runtime": engine.runtime, "single_threads": 1 if engine.single_session is not None else None,
                      "measured_ms": engine.measured_ms}
            _write_atomic(choice_path, (json.dumps(choice, indent=1) + "\n").encode())
    engine.note = note
    return engine


def _single_engine(runtime: str, model, module, fingerprint: str | None, source, threads: int,
                   num_points: int) -> Engine:
    if runtime == "onnx":
        return _onnx_engine(model, module, fingerprint, source, threads, num_points)
    if runtime == "torch":
        return Engine(model, module, "torch", threads, num_points)
    raise ValueError(f"unknown runtime {runtime!r}")


def _choice_key(fingerprint: str, threads: int, num_points: int) -> dict:
    """What ``auto``'s measurement depends on: the model, the code, the libraries, the CPU, the threads."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from core.engine.machine import cpu_capability, cpu_name

    try:  # without ONNX Runtime, auto measures (and remembers) torch alone
        ort_version = version("onnxruntime")
    except PackageNotFoundError:
        ort_version = None
    return {"fingerprint": fingerprint, "export_code": export_code_version(), "torch": torch.__version__,
            "onnxruntime": ort_version, "cpu": cpu_name(), "cpu_capability": cpu_capability(),
            "cores": os.cpu_count(), "machine": platform.machine(), "threads": int(threads),
            "num_points": int(num_points)}


def _read_choice(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("runtime") not in RUNTIMES or not isinstance(rec.get("measured_ms"), dict):
        return None
    return rec


def probe_clouds(batch: int, num_points: int = 1024, seed: int = 0) -> np.ndarray:
    """``batch`` clouds of ``num_points`` points, prepared as real ones (centred, unit sphere): the
    warm-up and measurement input (sampling and grouping cost depends on the geometry a little)."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(batch, num_points, 3)) * [1.0, 0.6, 0.3]
    pts -= pts.mean(1, keepdims=True)
    pts /= np.linalg.norm(pts, axis=2).max(1)[:, None, None]
    return pts.astype(np.float32)


def _measure(calls: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each entry of ``calls``, interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# The ONNX runtime and its cache


def model_fingerprint(model: ClassifierBase, source: str | os.PathLike | None = None) -> str:
    """SHA-256 of the checkpoint file's bytes, or of the model's configuration and weights."""
    h = hashlib.sha256()
    if source is not None and Path(source).is_file():
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    h.update(json.dumps(model.model_config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def cache_folder() -> Path:
    from core.data.datasets import cache_dir

    d = cache_dir() / "runtime"
    d.mkdir(parents=True, exist_ok=True)
    return d


_code_hash: str | None = None


def export_code_version() -> str:
    """:data:`EXPORT_VERSION` and the SHA-256 (first 16 hex digits) of :data:`EXPORT_SOURCES`."""
    global _code_hash
    if _code_hash is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for pattern in EXPORT_SOURCES:
            for path in sorted(root.glob(pattern)):
                h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        _code_hash = h.hexdigest()[:16]
    return f"{EXPORT_VERSION}-{_code_hash}"


def _cache_key(fingerprint: str, num_points: int) -> dict:
    import onnxruntime

    return {"fingerprint": fingerprint, "export_code": export_code_version(),
            "onnxruntime": onnxruntime.__version__, "num_points": int(num_points)}


def _key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _onnx_engine(model, module, fingerprint: str, source, threads: int, num_points: int) -> Engine:
    key = _cache_key(fingerprint, num_points)
    path = cache_folder() / f"{model.model_config.name}-{_key_name(key)}.onnx"
    record = path.with_suffix(".json")
    exported = False
    data = _read_cached(path, record, key)
    session = None
    if data is not None:
        try:
            session = _ort_session(data, threads)
        except Exception:  # a graph ONNX Runtime refuses is exported again
            session = None
    if session is None:
        data = _export(model, module, num_points)
        _write_cached(path, record, key, data, source)
        exported = True
        session = _ort_session(data, threads)
    return Engine(model, module, "onnx", threads, num_points, session=session, exported=exported, onnx_path=path,
                  graph=data)


def _read_cached(path: Path, record: Path, key: dict) -> bytes | None:
    """The cached graph's bytes when its record matches ``key`` and its SHA-256; else None."""
    try:
        rec = json.loads(record.read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key or rec.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    return data


def _write_cached(path: Path, record: Path, key: dict, data: bytes, source) -> None:
    """Write the graph, then its record (each to a unique temporary file renamed into place), and
    delete the graphs of earlier versions of the same checkpoint file."""
    src = str(Path(source).resolve()) if source is not None else None
    for target, payload in ((path, data),
                            (record, (json.dumps({"key": key, "sha256": hashlib.sha256(data).hexdigest(),
                                                  "source": src}, indent=1) + "\n").encode())):
        _write_atomic(target, payload)
    if src is None:
        return
    for other in path.parent.glob("*.json"):
        if other == record:
            continue
        try:
            stale = json.loads(other.read_text()).get("source") == src
        except (OSError, ValueError, AttributeError):
            continue
        if stale:
            other.with_suffix(".onnx").unlink(missing_ok=True)
            other.unlink(missing_ok=True)


def _write_atomic(target: Path, payload: bytes) -> None:
    """Write ``payload`` to a unique temporary file beside ``target``, then rename it into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _export(model, module, num_points: int) -> bytes:
    """The inference module as ONNX bytes: dynamic batch, grouping inputs of any length."""
    import io

    example = torch.from_numpy(probe_clouds(2, num_points))
    with torch.no_grad():
        inputs = module.grouping_inputs(model.compute_grouping(example, impl="native"), example)
    names = module.input_names
    dynamic = {names[0]: {0: "batch"}, "logits": {0: "batch"}}
    dynamic.update((n, {0: f"{n}_rows"}) for n in names[1:])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes
        torch.onnx.export(module, (example, *inputs), buf, input_names=names, output_names=["logits"],
                          dynamic_axes=dynamic, opset_version=17, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def _ort_session(data: bytes, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, full graph optimisation and
    no spinning (idle workers sleep instead of taking the cores from torch and the GUI)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

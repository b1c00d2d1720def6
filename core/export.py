"""Deployment exports of a classifier: ONNX (fp32 or int8), TorchScript, with their metadata.

Every export takes points ``(batch, num_points, 3)`` float32 (channels-last xyz, prepared as for
training) and returns logits ``(batch, num_classes)``. The batch dimension is dynamic; the number
of points is fixed at export time. Sampling starts at point 0 (deterministic, RESEARCH.md §3).

Farthest point sampling is a loop that tracing unrolls. The exported graph uses the model's
``compute_grouping(impl="traceable")``: :func:`~core.models.ops.farthest_point_sample_pairwise`
(the same squared distances as the eager FPS, computed once as an ``N x N`` matrix, so each unrolled
step is only gather, minimum and argmax: three ONNX nodes instead of about ten) and, in ONNX,
:func:`~core.models.ops.ball_query_by_flag`. Both give the eager indices (tested), so exported
logits match eager ones. These self-contained files are for deployment elsewhere; the app and the
CLI run :mod:`core.runtime`, which computes sampling and grouping outside the graph.

Each export writes its description twice: inside the file (ONNX ``metadata_props``, TorchScript
extra file ``t3dnet.json``) and in a sidecar ``<file>.json``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import __version__
from core.engine.checkpoint import CheckpointError, load_model
from core.models import ClassifierBase

EXPORT_FORMAT = "t3dnet-studio/export"
FORMATS = ("onnx", "torchscript")
METADATA_KEY = "t3dnet"
TORCHSCRIPT_EXTRA = "t3dnet.json"


class ExportError(CheckpointError):
    """An export that cannot be made or read; the message is one line naming the file.

    A :class:`CheckpointError` (so a ``ValueError``): the command line reports it as one line.
    """


class DeployModule(nn.Module):
    """``points -> logits`` with the model's own grouping built from export-friendly operations
    (``compute_grouping(impl="traceable")``, from point 0): what gets exported."""

    def __init__(self, model: ClassifierBase) -> None:
        super().__init__()
        self.model = model

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            grouping = self.model.compute_grouping(points, impl="traceable")
        return self.model(points, grouping)


# ---------------------------------------------------------------------------------------
# Models and metadata
# ---------------------------------------------------------------------------------------


def resolve_model(model_or_ckpt: ClassifierBase | str | Path, class_names=None) -> tuple[ClassifierBase, dict]:
    """A plain eval-mode model and its description, from a model or a checkpoint path.

    A supernet (network augmentation) is reduced to its tiny model first.
    """
    source = None
    if isinstance(model_or_ckpt, (str, Path)):
        model, ckpt = load_model(model_or_ckpt)
        class_names = class_names or list(ckpt["class_names"])
        source = ckpt["path"]
    elif isinstance(model_or_ckpt, ClassifierBase):
        model = model_or_ckpt
    else:
        raise ExportError(f"cannot export a {type(model_or_ckpt).__name__}: give a model or a checkpoint path")
    if model.is_augmentable:
        model = model.export()
    model = model.eval()
    cfg = model.model_config
    if class_names is None:
        class_names = [f"class_{i}" for i in range(cfg.num_classes)]
    if len(class_names) != cfg.num_classes:
        raise ExportError(f"{len(class_names)} class names for a model with {cfg.num_classes} outputs")
    meta = {
        "format": EXPORT_FORMAT,
        "project_version": __version__,
        "model": cfg.name,
        "width": cfg.width,
        "num_classes": cfg.num_classes,
        "model_config": cfg.to_dict(),
        "class_names": list(class_names),
        "source_checkpoint": source,
    }
    return model, meta


def _io_meta(meta: dict, runtime: str, num_points: int, **extra) -> dict:
    return {
        **meta,
        "runtime": runtime,
        "num_points": int(num_points),
        "input": f"points float32 (batch, {num_points}, 3): xyz channels-last, prepared as for training",
        "output": f"logits float32 (batch, {meta['num_classes']})",
        "sampling": "farthest point sampling from point 0 (deterministic), ball query / kNN inside",
        "quantization": None,
        **extra,
    }


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_sidecar(path: Path, meta: dict) -> None:
    sidecar_path(path).write_text(json.dumps(meta, indent=1) + "\n")


def read_export_metadata(path: str | Path) -> dict:
    """The description embedded in an exported file (falls back to its sidecar JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: exported model not found")
    try:
        if path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            if METADATA_KEY in props:
                return json.loads(props[METADATA_KEY])
        elif path.suffix in (".pt", ".ts", ".torchscript"):
            extra = {TORCHSCRIPT_EXTRA: ""}
            torch.jit.load(str(path), _extra_files=extra)
            if extra[TORCHSCRIPT_EXTRA]:
                return json.loads(extra[TORCHSCRIPT_EXTRA])
    except Exception as exc:
        raise ExportError(f"{path}: not a readable exported model ({exc.__class__.__name__})") from exc
    side = sidecar_path(path)
    if side.is_file():
        return json.loads(side.read_text())
    raise ExportError(f"{path}: no T3DNet Studio metadata inside and no {side.name}")


# ---------------------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------------------


def _example(num_points: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, num_points, 3, generator=g) * 2 - 1
    return x / x.norm(dim=-1).max()


def export_onnx(
    model_or_ckpt: ClassifierBase | str | Path,
    out_path: str | Path,
    num_points: int = 1024,
    opset: int = 17,
    class_names=None,
) -> dict:
    """Export to ONNX with a dynamic batch dimension; returns the metadata written.

    Input ``points`` (batch, num_points, 3), output ``logits`` (batch, num_classes).
    """

    model, meta = resolve_model(model_or_ckpt, class_names)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = _io_meta(meta, "onnx", num_points, opset=opset)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant point counts
        torch.onnx.export(
            DeployModule(model).eval(),
            (_example(num_points),),
            str(tmp),
            input_names=["points"],
            output_names=["logits"],
            dynamic_axes={"points": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return _finish_onnx(tmp, out_path, meta)


def _finish_onnx(tmp: Path, out_path: Path, meta: dict) -> dict:
    """Shorten names, embed the metadata, move the file in place and write its sidecar JSON."""
    import onnx

    proto = onnx.load(str(tmp))
    _compact_names(proto)
    _set_onnx_metadata(proto, meta)
    onnx.save(proto, str(tmp))
    tmp.replace(out_path)
    _write_sidecar(out_path, meta)
    return meta


def _compact_names(proto) -> None:
    """Short names for nodes and intermediate values: the unrolled sampling loop has thousands
    of nodes, and their exporter-made names were most of a small model's file."""
    keep = {v.name for v in proto.graph.input} | {v.name for v in proto.graph.output}
    keep |= {t.name for t in proto.graph.initializer}
    rename: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                rename[name] = node.output[j] = f"v{len(rename)}"
        for j, name in enumerate(node.input):
            if name in rename:
                node.input[j] = rename[name]
    del proto.graph.value_info[:]


def _set_onnx_metadata(proto, meta: dict) -> None:
    del proto.metadata_props[:]
    flat = {
        METADATA_KEY: json.dumps(meta),
        "model": meta["model"],
        "width": str(meta["width"]),
        "num_points": str(meta["num_points"]),
        "class_names": json.dumps(meta["class_names"]),
    }
    for key, value in flat.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "t3dnet-studio"
    proto.producer_version = __version__
    proto.doc_string = f"{meta['model']} x{meta['width']:g}: {meta['input']} -> {meta['output']}"


def export_torchscript(
    model_or_ckpt: ClassifierBase | str | Path,
    out_path: str | Path,
    num_points: int = 1024,
    class_names=None,
) -> dict:
    """Export a traced TorchScript module (dynamic batch); returns the metadata written."""
    model, meta = resolve_model(model_or_ckpt, class_names)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = _io_meta(meta, "torchscript", num_points)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(DeployModule(model).eval(), (_example(num_points),), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    tmp.replace(out_path)
    _write_sidecar(out_path, meta)
    return meta


def _weightless_matmuls(proto) -> list[str]:
    """MatMul/Gemm nodes without a constant operand: distance computations of the sampling,
    which must stay float (quantizing them would move points across the ball radius)."""
    consts = {t.name for t in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node
            if n.op_type in ("MatMul", "Gemm") and not any(i in consts for i in n.input)]


def quantize_onnx_int8(onnx_in: str | Path, onnx_out: str | Path) -> dict:
    """Dynamic int8 quantization of the weight matmuls (ONNX Runtime); returns the metadata.

    Weights are stored as int8 per channel; activations are quantized on the fly. Sampling and
    grouping stay in float32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    meta = read_export_metadata(onnx_in)
    if meta.get("runtime") != "onnx":
        raise ExportError(f"{onnx_in}: not an ONNX export")
    proto = onnx.load(str(onnx_in))
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_out.with_name(onnx_out.name + ".tmp.onnx")
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "consider pre-processing": shape inference adds nothing here
    try:
        quantize_dynamic(
            str(onnx_in),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=_weightless_matmuls(proto),
        )
    finally:
        quiet.setLevel(level)
    meta = {**meta, "quantization": "int8 dynamic (onnxruntime), per-channel weights; sampling in float32"}
    return _finish_onnx(tmp, onnx_out, meta)


# ---------------------------------------------------------------------------------------
# Running exports
# ---------------------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int = 2, profile: bool = False, spin: bool = False):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and full graph optimisation.

    ``spin=False``: idle worker threads sleep instead of busy-waiting, which otherwise steals
    the cores from everything else in the process (torch, the GUI) on a small machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = profile
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:160]})") from exc


def export(model_or_ckpt: Any, out_path: str | Path, fmt: str, quantize: str | None = None,
           num_points: int = 1024) -> dict:
    """One entry point for the command line: ``fmt`` in :data:`FORMATS`, ``quantize`` None|int8."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; available: {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; available: int8")
    out_path = Path(out_path)
    if fmt == "torchscript":
        if quantize:
            raise ExportError("int8 quantization is available for --format onnx only")
        return export_torchscript(model_or_ckpt, out_path, num_points)
    if not quantize:
        return export_onnx(model_or_ckpt, out_path, num_points)
    fp32 = out_path.with_name(out_path.stem + ".fp32.tmp.onnx")
    try:
        export_onnx(model_or_ckpt, fp32, num_points)
        return quantize_onnx_int8(fp32, out_path)
    finally:
        fp32.unlink(missing_ok=True)
        sidecar_path(fp32).unlink(missing_ok=True)

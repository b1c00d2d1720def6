"""Bring your own teacher: classifiers trained with the most used PyTorch point-cloud code.

Recognised layouts (from key names and shapes; ``model=`` forces an architecture):

* yanx27/Pointnet_Pointnet2_pytorch, ``best_model.pth`` (a dict holding ``model_state_dict``):
  ``pointnet2_cls_ssg`` -> ``pointnet2_ssg``, ``pointnet2_cls_msg`` -> ``pointnet2_msg``,
  ``pointnet_cls`` -> ``pointnet``;
* WangYueFTD/dgcnn (PyTorch), ``model.t7`` (a bare state dict, usually with DataParallel's
  ``module.`` prefixes) -> ``dgcnn`` (any ``emb_dims``; ``k`` is not stored, default 20).

Every source tensor lands on exactly one tensor of ours, or the import is refused: a 1x1
convolution kernel ``(out, in, 1[, 1])`` becomes a linear weight ``(out, in)``, BatchNorm weights
and running statistics are copied as they are, and where the original concatenates a layer's
input in another order than ours (PointNet++ MSG groups ``[features, xyz]``, ours ``[xyz,
features]``) the weight's columns are reordered. In eval mode the imported model computes the
original's function, with our convention that farthest point sampling starts at point 0 (the
originals draw a random first point).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from core.data.datasets import MODELNET40_CLASSES
from core.errors import T3DError

from .base import ClassifierBase
from .complexity import count_parameters
from .registry import create_model

POINTNET2_REPO = "yanx27/Pointnet_Pointnet2_pytorch"
DGCNN_REPO = "WangYueFTD/dgcnn"


@dataclass(frozen=True)
class SourceLayout:
    """One supported original: where it comes from and which of our models it becomes."""

    architecture: str  # our registered model
    repo: str
    source_model: str  # the original's model file / class
    classifier_key: str  # the class layer's weight: its rows are the class count
    first_key: str  # the first layer's weight: its columns tell xyz from xyz + normals
    xyz_columns: int  # columns of ``first_key`` for xyz input


LAYOUTS: dict[str, SourceLayout] = {
    "pointnet2_ssg": SourceLayout("pointnet2_ssg", POINTNET2_REPO, "pointnet2_cls_ssg",
                                  "fc3.weight", "sa1.mlp_convs.0.weight", 3),
    "pointnet2_msg": SourceLayout("pointnet2_msg", POINTNET2_REPO, "pointnet2_cls_msg",
                                  "fc3.weight", "sa1.conv_blocks.0.0.weight", 3),
    "pointnet": SourceLayout("pointnet", POINTNET2_REPO, "pointnet_cls", "fc3.weight", "feat.conv1.weight", 3),
    "dgcnn": SourceLayout("dgcnn", DGCNN_REPO, "DGCNN (pytorch/model.py)", "linear3.weight", "conv1.0.weight", 6),
}

DGCNN_DEFAULT_K = 20


class TeacherImportError(T3DError):
    """A checkpoint that cannot be imported exactly; the one-line message says which file and why."""


@dataclass
class ImportedTeacher:
    """The model of ours holding the imported weights and its self-describing checkpoint."""

    model: ClassifierBase
    checkpoint: dict  # core.engine.checkpoint.model_state(...): ready for atomic_save
    layout: SourceLayout
    class_names_from: str  # "ModelNet40 (default)" or the names file
    source_info: dict = field(default_factory=dict)  # epoch / accuracies the original stored
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return count_parameters(self.model)

    def summary(self) -> str:
        """One line: what was recognised and what it became."""
        cfg = self.model.model_config
        kw = "".join(f", {k}={v}" for k, v in cfg.kwargs.items())
        return (f"{self.layout.repo} {self.layout.source_model} -> {cfg.name}{kw}: {cfg.num_classes} classes "
                f"({self.class_names_from}), {self.params:,} parameters")


# ---------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------


def _numpy_safe_globals() -> list:
    """What the original training scripts pickle besides tensors: numpy scalars (their
    accuracies are ``np.mean`` results) and those scalars' dtypes, under the module path numpy 1
    and numpy 2 write. Nothing else is allowed: no arrays, no functions."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    codes = ("f8", "f4", "i8", "i4")
    allowed += list(dict.fromkeys(type(np.dtype(c)) for c in codes))  # Float64DType, ... (numpy >= 1.25)
    return allowed


def _load_file(path: Path) -> object:
    if not path.exists():
        raise TeacherImportError(f"{path}: file not found")
    if path.is_dir():
        raise TeacherImportError(f"{path}: is a folder; give the checkpoint file itself "
                                 "(e.g. log/classification/NAME/checkpoints/best_model.pth)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        text = " ".join(str(exc).split())
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if isinstance(exc, pickle.UnpicklingError) and found:
            raise TeacherImportError(
                f"{path}: holds a pickled {found.group(1)}, not only tensors and numbers; refused, since "
                "loading it would run code (save the model's state_dict() instead)") from exc
        raise TeacherImportError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__})") from exc


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _plain_number(v):
    if torch.is_tensor(v) and v.numel() == 1:
        v = v.item()
    try:
        import numpy as np

        if isinstance(v, np.generic):
            v = v.item()
    except ImportError:
        pass
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The model's state dict inside what the original script saved, and its numeric metadata."""
    if isinstance(obj, Mapping) and obj.get("format") == "t3dnet-studio/checkpoint":
        raise TeacherImportError(f"{path}: already a T3DNet Studio checkpoint; use it directly (--teacher)")
    if _is_state_dict(obj):
        return dict(obj), {}
    if isinstance(obj, Mapping):
        for key in ("model_state_dict", "state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                info = {k: n for k, v in obj.items() if (n := _plain_number(v)) is not None}
                return dict(obj[key]), info
        keys = ", ".join(sorted(str(k) for k in obj)[:8])
        raise TeacherImportError(f"{path}: unknown layout: no model state dict inside (top-level keys: {keys})")
    raise TeacherImportError(f"{path}: unknown layout: holds a {type(obj).__name__}, not a state dict")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix(es) DataParallel / DistributedDataParallel put on every key."""
    state = dict(state)
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_source(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint as the original code saved it (weights only): its state dict, with
    DataParallel prefixes stripped, and the numbers stored beside it (epoch, accuracies)."""
    path = Path(path)
    state, info = _unwrap(_load_file(path), path)
    return strip_module_prefix(state), info


# ---------------------------------------------------------------------------------------
# Recognising the architecture
# ---------------------------------------------------------------------------------------


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """Our model name for a stripped state dict of one of the supported originals.

    Raises:
        TeacherImportError: not a layout we know (the message says what it looks like).
    """
    keys = set(state)
    if any(k.startswith(("fp1.", "fp2.", "fp3.", "fp4.")) for k in keys):
        raise TeacherImportError("a segmentation model (feature propagation layers fp*), not a classifier")
    if "sa1.conv_blocks.0.0.weight" in keys:
        return "pointnet2_msg"
    if "sa1.mlp_convs.0.weight" in keys:
        return "pointnet2_ssg"
    if "feat.stn.conv1.weight" in keys or "feat.conv1.weight" in keys:
        return "pointnet"
    if "conv1.0.weight" in keys and "linear1.weight" in keys:
        return "dgcnn"
    if {"conv1.weight", "conv5.weight", "linear1.weight"} <= keys:
        raise TeacherImportError(
            f"the {DGCNN_REPO} repository's PointNet baseline (five 1x1 convolutions, no input or feature "
            "transform): no model of ours has that architecture")
    sample = ", ".join(sorted(keys)[:4])
    raise TeacherImportError(
        f"unknown layout (keys such as {sample}): supported are {POINTNET2_REPO} pointnet2_cls_ssg / "
        f"pointnet2_cls_msg / pointnet_cls and {DGCNN_REPO} DGCNN checkpoints")


def _shape(t) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ")"


def _architecture_kwargs(arch: str, state: Mapping[str, torch.Tensor], k: int | None) -> dict:
    if arch != "dgcnn":
        if k is not None:
            raise TeacherImportError(f"--k applies to DGCNN checkpoints only (this one is {arch})")
        return {}
    conv5 = state.get("conv5.0.weight")
    if conv5 is None:
        raise TeacherImportError("architecture mismatch: dgcnn needs conv5.0.weight (emb_dims, 512, 1), "
                                 "not in the checkpoint")
    kk = DGCNN_DEFAULT_K if k is None else int(k)
    if kk < 1:
        raise TeacherImportError(f"--k must be a positive neighbour count (got {kk})")
    return {"k": kk, "emb_dims": int(conv5.shape[0])}


# ---------------------------------------------------------------------------------------
# Mapping the tensors
# ---------------------------------------------------------------------------------------


class _TensorMapper:
    """Copies source tensors onto our model's state dict, checking every shape and recording
    which source tensors were used."""

    def __init__(self, source: Mapping[str, torch.Tensor], model: ClassifierBase) -> None:
        self.source = source
        self.arch = model.model_config.name
        self.target = model.state_dict()
        self.filled: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = self.source.get(key)
        if t is None:
            raise TeacherImportError(f"architecture mismatch: {self.arch} needs {key} {_shape(shape)}, "
                                     "not in the checkpoint")
        if tuple(t.shape) != tuple(shape):
            raise TeacherImportError(f"architecture mismatch: {key} is {_shape(t.shape)} in the checkpoint, "
                                     f"{self.arch} expects {_shape(shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TeacherImportError(f"{key} holds NaN or infinite values: the training diverged")
        self.used.add(key)
        return t

    def put(self, ours: str, value: torch.Tensor) -> None:
        dst = self.target[ours]
        self.filled[ours] = value.detach().to(dst.dtype).reshape(dst.shape).clone()

    def linear(self, src: str, ours: str, kernel_dims: int = 0, features_first: bool = False) -> None:
        """``src.weight`` (out, in, 1 x kernel_dims) and ``src.bias`` onto our layer ``ours``.

        ``features_first``: the original's input is ``[features, xyz]`` where ours is
        ``[xyz, features]`` (its last 3 columns become our first 3)."""
        out_c, in_c = self.target[f"{ours}.weight"].shape
        w = self.take(f"{src}.weight", (out_c, in_c) + (1,) * kernel_dims).reshape(out_c, in_c)
        if features_first:
            w = torch.cat([w[:, in_c - 3:], w[:, : in_c - 3]], dim=1)
        self.put(f"{ours}.weight", w)
        if f"{ours}.bias" in self.target:  # a bias of the source without a place here stays unused
            self.put(f"{ours}.bias", self.take(f"{src}.bias", (out_c,)))

    def batchnorm(self, names: tuple[str, ...], ours: str) -> None:
        """A BatchNorm's parameters and running statistics. ``names``: the prefixes the source
        may register it under (DGCNN's ``conv1.1`` and ``bn1`` are one module): the first present
        is copied, the others must hold the same values."""
        present = [n for n in names if f"{n}.weight" in self.source] or [names[0]]
        src = present[0]
        c = self.target[f"{ours}.weight"].shape[0]
        for attr in ("weight", "bias", "running_mean", "running_var"):
            self.put(f"{ours}.{attr}", self.take(f"{src}.{attr}", (c,)))
        if f"{src}.num_batches_tracked" in self.source:  # absent from checkpoints of torch < 0.4.1
            self.put(f"{ours}.num_batches_tracked", self.take(f"{src}.num_batches_tracked", ()))
        for alias in present[1:]:
            for key in [k for k in self.source if k.startswith(alias + ".")]:
                twin = src + key[len(alias):]
                if twin not in self.used or not torch.equal(self.source[key], self.source[twin]):
                    raise TeacherImportError(f"{key} differs from {twin}, which the original registers as "
                                             "the same BatchNorm")
                self.used.add(key)

    def unit(self, conv: str, bn: tuple[str, ...] | str, ours: str, kernel_dims: int,
             features_first: bool = False) -> None:
        """Our ``LinearBNAct`` ``ours`` from a (conv | linear) and its BatchNorm."""
        self.linear(conv, f"{ours}.linear", kernel_dims, features_first)
        self.batchnorm((bn,) if isinstance(bn, str) else bn, f"{ours}.bn")

    def finish(self, model: ClassifierBase) -> None:
        unfilled = [k for k in self.target if k not in self.filled and not k.endswith("num_batches_tracked")]
        if unfilled:  # a gap in the mapping tables below, not the user's file
            raise RuntimeError(f"importer mapping leaves {unfilled[0]} of {self.arch} unset")
        unused = sorted(set(self.source) - self.used)
        if unused:
            more = f" and {len(unused) - 1} more" if len(unused) > 1 else ""
            raise TeacherImportError(
                f"tensor {unused[0]} {_shape(self.source[unused[0]].shape)}{more} of the checkpoint has no place "
                f"in our {self.arch}: refused rather than dropped")
        model.load_state_dict({**self.target, **self.filled})


def _head(m: _TensorMapper, hidden: tuple[tuple[str, str], ...], fc: str) -> None:
    for i, (lin, bn) in enumerate(hidden):
        m.unit(lin, bn, f"head.hidden.{i}", 0)
    m.linear(fc, "head.fc")


def _map_pointnet2(m: _TensorMapper, model) -> None:
    msg = model.model_config.name == "pointnet2_msg"
    for li, level in enumerate(model.levels):
        sa = f"sa{li + 1}"
        grouped = level.layout.npoint is not None
        for bi, branch in enumerate(level.branches):
            for j in range(len(branch.layers)):
                ours = f"levels.{li}.branches.{bi}.layers.{j}"
                if msg and grouped:  # PointNetSetAbstractionMsg: [features, xyz] in, per branch
                    m.unit(f"{sa}.conv_blocks.{bi}.{j}", f"{sa}.bn_blocks.{bi}.{j}", ours, 2,
                           features_first=(j == 0 and li > 0))
                else:  # PointNetSetAbstraction: [xyz, features] in
                    m.unit(f"{sa}.mlp_convs.{j}", f"{sa}.mlp_bns.{j}", ours, 2)
    _head(m, (("fc1", "bn1"), ("fc2", "bn2")), "fc3")


def _map_tnet(m: _TensorMapper, src: str, ours: str) -> None:
    for j in range(3):
        m.unit(f"{src}.conv{j + 1}", f"{src}.bn{j + 1}", f"{ours}.mlp.layers.{j}", 1)
    m.unit(f"{src}.fc1", f"{src}.bn4", f"{ours}.fc1", 0)
    m.unit(f"{src}.fc2", f"{src}.bn5", f"{ours}.fc2", 0)
    m.linear(f"{src}.fc3", f"{ours}.fc3")


def _map_pointnet(m: _TensorMapper, model) -> None:
    if "feat.fstn.conv1.weight" not in m.source:
        raise TeacherImportError("a PointNet without the feature transform (no feat.fstn.*); our PointNet always "
                                 "has it (pointnet_cls trains with feature_transform=True)")
    _map_tnet(m, "feat.stn", "stn")
    m.unit("feat.conv1", "feat.bn1", "conv1", 1)
    _map_tnet(m, "feat.fstn", "fstn")
    m.unit("feat.conv2", "feat.bn2", "conv2", 1)
    m.unit("feat.conv3", "feat.bn3", "conv3", 1)
    _head(m, (("fc1", "bn1"), ("fc2", "bn2")), "fc3")


def _map_dgcnn(m: _TensorMapper, model) -> None:
    for i in range(4):  # EdgeConv: Conv2d on [x_j - x_i, x_i], same order as ours
        m.unit(f"conv{i + 1}.0", (f"conv{i + 1}.1", f"bn{i + 1}"), f"convs.{i}.unit", 2)
    m.unit("conv5.0", ("conv5.1", "bn5"), "embed", 1)  # on cat(x1, x2, x3, x4), as ours
    _head(m, (("linear1", "bn6"), ("linear2", "bn7")), "linear3")  # on cat(max, mean), as ours


_MAPPERS = {"pointnet2_ssg": _map_pointnet2, "pointnet2_msg": _map_pointnet2, "pointnet": _map_pointnet,
            "dgcnn": _map_dgcnn}


# ---------------------------------------------------------------------------------------
# The whole import
# ---------------------------------------------------------------------------------------


def read_class_names(path: str | Path) -> list[str]:
    """Class names, one per line in label order (blank lines ignored)."""
    path = Path(path)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise TeacherImportError(f"{path}: class names file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TeacherImportError(f"{path}: not a readable text file of class names ({exc.__class__.__name__})") from exc
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise TeacherImportError(f"{path}: class name {dup!r} appears twice")
    return names


def import_teacher(path: str | Path, model: str | None = None, classes: str | Path | None = None,
                   k: int | None = None) -> ImportedTeacher:
    """Map a checkpoint of a supported original onto our model, exactly or not at all.

    Args:
        path: the original's checkpoint (``best_model.pth``, ``model.t7``, ...).
        model: force our architecture (one of :data:`LAYOUTS`) instead of recognising it.
        classes: a names file (one per line, label order); default ModelNet40's 40 names.
        k: DGCNN's neighbour count (not stored in its checkpoint; default 20, the authors').

    Raises:
        TeacherImportError: unreadable file, unknown layout, architecture mismatch, normals input,
            wrong class-name count, unused tensors. The message is one line and names the file.
    """
    from core import __version__
    from core.engine.checkpoint import model_state

    path = Path(path)
    state, info = read_source(path)
    try:
        arch = model or detect_architecture(state)
        if arch not in LAYOUTS:
            raise TeacherImportError(f"--model {arch}: can import {', '.join(sorted(LAYOUTS))}")
        layout = LAYOUTS[arch]
        first = state.get(layout.first_key)
        if first is not None and first.dim() >= 2 and first.shape[1] == 2 * layout.xyz_columns:
            raise TeacherImportError(
                f"trained with normals ({first.shape[1] // (layout.xyz_columns // 3)} input channels per point, "
                f"{layout.first_key} is {_shape(first.shape)}); our models read xyz only: retrain without "
                "normals (normal_channel=False)")
        fc = state.get(layout.classifier_key)
        if fc is None or fc.dim() != 2:
            raise TeacherImportError(f"architecture mismatch: {arch} needs the class layer {layout.classifier_key} "
                                     f"(classes, 256), {'not in the checkpoint' if fc is None else _shape(fc.shape)}")
        num_classes = int(fc.shape[0])
        kwargs = _architecture_kwargs(arch, state, k)
    except TeacherImportError as exc:
        raise TeacherImportError(f"{path}: {exc}") from None

    if classes is not None:
        names, names_from = read_class_names(classes), str(classes)
        if len(names) != num_classes:
            raise TeacherImportError(f"{classes}: {len(names)} class names, but the classifier in {path.name} "
                                     f"has {num_classes} outputs")
    elif num_classes == len(MODELNET40_CLASSES):
        names, names_from = list(MODELNET40_CLASSES), "ModelNet40 names"
    else:
        raise TeacherImportError(f"{path}: the classifier has {num_classes} outputs, ModelNet40 has 40 classes: "
                                 "give its class names with --classes names.txt (one per line, in label order)")

    ours = create_model(arch, num_classes=num_classes, **kwargs)
    mapper = _TensorMapper(state, ours)
    try:
        _MAPPERS[arch](mapper, ours)
        mapper.finish(ours)
    except TeacherImportError as exc:
        raise TeacherImportError(f"{path}: {exc}") from None
    ours.eval()

    notes = []
    if arch == "dgcnn":
        notes.append(f"k={kwargs['k']} neighbours" + (" (not stored in the checkpoint: the authors' default; "
                                                      "pass --k if you trained with another)" if k is None else ""))
    if arch.startswith("pointnet2"):
        notes.append("farthest point sampling starts at point 0 (the original draws a random first point)")
    provenance = {
        "repo": layout.repo,
        "source_model": layout.source_model,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "importer_version": __version__,
        **{k_: v for k_, v in info.items() if k_ in ("epoch", "instance_acc", "class_acc")},
    }
    ckpt = model_state(ours, names, metrics={}, config={"imported": provenance})
    return ImportedTeacher(ours, ckpt, layout, names_from, info, notes)


def write_teacher(result: ImportedTeacher, out: str | Path, source: str | Path | None = None) -> Path:
    """Write the imported checkpoint atomically: a failed write leaves an existing ``out`` as it was."""
    from core.engine.checkpoint import atomic_save

    out = Path(out)
    if out.is_dir():
        raise TeacherImportError(f"{out}: is a folder; give the file to write (e.g. teacher.pt)")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise TeacherImportError(f"{out}: is the checkpoint being imported; write to another file")
    try:
        atomic_save(result.checkpoint, out)
    except OSError as exc:
        tmp = out.with_name(out.name + ".tmp")
        if tmp.is_file():
            tmp.unlink()
        raise TeacherImportError(f"{out}: cannot write ({exc.strerror or exc.__class__.__name__})") from exc
    return out


__all__ = ["LAYOUTS", "MODELNET40_CLASSES", "ImportedTeacher", "TeacherImportError", "detect_architecture",
           "import_teacher", "read_class_names", "read_source", "strip_module_prefix", "write_teacher"]

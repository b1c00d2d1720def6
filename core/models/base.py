"""What every classifier of the zoo shares: the head, width control, channel sorting, export."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .fused import FastPaths
from .slim import LinearBNAct, SlimBatchNorm, SlimGridLinear, SlimLinear, WidthSpec


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: stored in every checkpoint."""

    name: str
    num_classes: int = 40
    width: float = 1.0
    aug_factors: tuple[float, ...] = (1.0,)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: How the model computes, never what: see :class:`~core.models.fused.FastPaths`.
    fast_paths: FastPaths = field(default_factory=FastPaths)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aug_factors"] = list(self.aug_factors)
        d["kwargs"] = dict(self.kwargs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        return cls(
            name=str(d["name"]),
            num_classes=int(d["num_classes"]),
            width=float(d["width"]),
            aug_factors=tuple(float(f) for f in d.get("aug_factors", (1.0,))),
            kwargs=dict(d.get("kwargs", {})),
            fast_paths=FastPaths.from_dict(d.get("fast_paths")),
        )


class ClassifierHead(nn.Module):
    """Global feature -> hidden layers (BN, activation, dropout) -> class scores."""

    def __init__(
        self,
        in_segments: Sequence,
        num_classes: int,
        width: float,
        factors,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.4,
        act: str = "relu",
        first_bias: bool = True,
    ) -> None:
        super().__init__()
        layers, segs = [], list(in_segments)
        for i, h in enumerate(hidden):
            layer = LinearBNAct(segs, WidthSpec(h, width, factors), act=act, bias=first_bias or i > 0)
            layers.append(layer)
            segs = [layer.out]
        self.hidden = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = SlimLinear(segs, num_classes, augmentable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.dropout(layer(x))
        return self.fc(x)


class ClassifierBase(nn.Module):
    """Base of every registered classifier.

    Input: points ``(B, N, 3)`` (channels-last xyz). ``forward_features`` returns the global
    embedding ``(B, D)``, ``forward_head`` the class scores. ``grouping`` (from
    :meth:`compute_grouping`) lets callers reuse sampling/grouping indices between models whose
    :meth:`grouping_key` is equal.
    """

    head: ClassifierHead
    model_config: ModelConfig

    # -- forward -------------------------------------------------------------------------
    def forward_features(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        return self.forward_head(self.forward_features(points, grouping))

    @property
    def fast_paths(self) -> FastPaths:
        """The exact rewrites this model runs (a field of its config; setting it replaces the config)."""
        return self.model_config.fast_paths

    @fast_paths.setter
    def fast_paths(self, fast: FastPaths) -> None:
        self.model_config = replace(self.model_config, fast_paths=fast)

    def grouping_key(self) -> tuple | None:
        """Models with equal keys can share :meth:`compute_grouping`'s output."""
        return None

    def compute_grouping(self, xyz: torch.Tensor, start: torch.Tensor | None = None, impl: str = "eager",
                         threads: int | None = None):
        """Sampling/grouping indices for ``xyz`` (None for models without any). ``impl``
        (``eager``, ``native``, ``traceable``) chooses how they are computed, never what they are;
        ``threads``: the compiled kernels' threads for ``native`` (None: torch's)."""
        return None

    def grouping_cost(self, num_points: int = 1024) -> int:
        """Pairwise distance evaluations per sample of :meth:`compute_grouping` and of any
        grouping the forward computes itself (FPS, ball query, kNN; each about 3 multiply-adds)."""
        return 0

    def inference_module(self, num_points: int = 1024) -> "InferenceModule":
        """This model (eval mode) as ``forward(points, *grouping_inputs) -> logits`` for clouds of
        ``num_points`` points, with its sampling/grouping given as inputs: what
        :mod:`core.runtime` runs in torch and exports to ONNX. Subclasses may return a form made
        for inference (same function, fewer operations)."""
        return GroupedForward(self, num_points)

    @property
    def feature_dim(self) -> int:
        return sum(s if isinstance(s, int) else s.active_out for s in self.head.hidden[0].linear.in_segments)

    # -- widths (network augmentation) ----------------------------------------------------
    def slim_layers(self) -> dict[str, SlimLinear]:
        return {n: m for n, m in self.named_modules() if isinstance(m, SlimLinear)}

    @property
    def is_augmentable(self) -> bool:
        return any(m.augmentable for m in self.slim_layers().values())

    def set_widths(self, widths: str | Mapping[str, int] = "max") -> dict[str, int]:
        """Activate ``"max"``, ``"tiny"`` or explicit per-layer widths; returns what was set."""
        layers = self.slim_layers()
        chosen = {}
        for name, layer in layers.items():
            if widths == "max":
                w = layer.out_features
            elif widths == "tiny":
                w = layer.tiny_out
            elif isinstance(widths, Mapping):
                w = int(widths.get(name, layer.tiny_out))
            else:
                raise ValueError(f"unknown width mode {widths!r}")
            if not 1 <= w <= layer.out_features:
                raise ValueError(f"width {w} out of range for layer {name} (max {layer.out_features})")
            layer.active_out = w
            chosen[name] = w
        return chosen

    def sample_widths(self, rng: random.Random) -> dict[str, int]:
        """One random augmented model: every augmentable layer draws its width independently."""
        return {
            n: (rng.choice(m.candidates) if m.augmentable else m.tiny_out)
            for n, m in self.slim_layers().items()
        }

    @torch.no_grad()
    def sort_channels(self, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Reorder every augmentable layer's output channels by L1 importance (NetAug).

        The function of the network at any width changes only through which channels are
        leading; the full network's function is unchanged. Optimizer state is permuted along.
        Returns the number of layers sorted.
        """
        layers = list(self.slim_layers().values())
        grid_sources = {id(m.grid_of[0]) for m in layers if isinstance(m, SlimGridLinear)}
        bns = {id(m.layer[0]): m for m in self.modules() if isinstance(m, SlimBatchNorm)}
        sorted_count = 0
        for prod in layers:
            if not prod.augmentable or id(prod) in grid_sources:
                continue
            perm = prod.weight.abs().sum(1).argsort(descending=True)
            _permute(prod.weight, 0, perm, optimizer)
            if prod.bias is not None:
                _permute(prod.bias, 0, perm, optimizer)
            bn = bns.get(id(prod))
            if bn is not None:
                for t in (bn.weight, bn.bias):
                    _permute(t, 0, perm, optimizer)
                for t in (bn.running_mean, bn.running_var):
                    t.copy_(t[perm])
            for cons in layers:
                start = 0
                for seg in cons.in_segments:
                    size = seg if isinstance(seg, int) else seg.out_features
                    if seg is prod:
                        cols = torch.arange(cons.in_features, device=perm.device)
                        cols[start : start + size] = perm + start
                        _permute(cons.weight, 1, cols, optimizer)
                    start += size
            sorted_count += 1
        return sorted_count

    def export(self) -> "ClassifierBase":
        """A plain model at the tiny widths holding this supernet's leading channels."""
        from .registry import create_model

        cfg = self.model_config
        plain = create_model(cfg.name, num_classes=cfg.num_classes, width=cfg.width, fast_paths=cfg.fast_paths,
                             **dict(cfg.kwargs))
        previous = {n: m.active_out for n, m in self.slim_layers().items()}
        self.set_widths("tiny")
        try:
            src = dict(self.named_modules())
            with torch.no_grad():
                for name, dst in plain.named_modules():
                    s = src[name]
                    if isinstance(dst, SlimLinear):
                        w, b = s.effective_weight()
                        dst.weight.copy_(w)
                        if dst.bias is not None:
                            dst.bias.copy_(b)
                    elif isinstance(dst, SlimBatchNorm):
                        c = dst.num_features
                        dst.weight.copy_(s.weight[:c])
                        dst.bias.copy_(s.bias[:c])
                        dst.running_mean.copy_(s.running_mean[:c])
                        dst.running_var.copy_(s.running_var[:c])
                        dst.num_batches_tracked.copy_(s.num_batches_tracked)
        finally:
            self.set_widths(previous)
        plain.train(self.training)
        return plain


class InferenceModule(nn.Module):
    """``forward(points, *inputs) -> logits`` where ``inputs`` are :meth:`grouping_inputs` of the
    model's sampling/grouping for ``points`` (B, num_points, 3); :attr:`input_names` names them."""

    num_points: int
    input_names: list[str]

    def grouping_inputs(self, grouping, points: torch.Tensor, threads: int | None = None) -> list[torch.Tensor]:
        """The inputs after ``points`` for the model's ``grouping`` of ``points``; ``threads``: those
        of any compiled kernel computing them (None: torch's)."""
        raise NotImplementedError


class GroupedForward(InferenceModule):
    """Any classifier as an :class:`InferenceModule`: its own forward, its grouping (whatever
    nesting of tensors :meth:`ClassifierBase.compute_grouping` returns) passed as flat inputs."""

    def __init__(self, model: ClassifierBase, num_points: int = 1024) -> None:
        super().__init__()
        self.model = model.eval()
        self.num_points = num_points
        example = torch.linspace(-1, 1, num_points * 3).reshape(1, num_points, 3)
        self._spec = _tree_spec(model.compute_grouping(example))
        self.input_names = ["points"] + [f"grouping{i}" for i in range(_count_leaves(self._spec))]

    def grouping_inputs(self, grouping, points: torch.Tensor, threads: int | None = None) -> list[torch.Tensor]:
        leaves: list[torch.Tensor] = []
        _flatten(grouping, leaves)
        return leaves

    def forward(self, points: torch.Tensor, *leaves: torch.Tensor) -> torch.Tensor:
        return self.model(points, _unflatten(self._spec, iter(leaves)))


def _tree_spec(tree):
    """The shape of a nesting of lists, tuples and dicts of tensors (``"T"`` for a tensor)."""
    if torch.is_tensor(tree):
        return "T"
    if isinstance(tree, dict):
        return {k: _tree_spec(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_tree_spec(v) for v in tree]
    return None


def _count_leaves(spec) -> int:
    if spec == "T":
        return 1
    if isinstance(spec, dict):
        return sum(_count_leaves(v) for v in spec.values())
    if isinstance(spec, list):
        return sum(_count_leaves(v) for v in spec)
    return 0


def _flatten(tree, out: list) -> None:
    if torch.is_tensor(tree):
        out.append(tree)
    elif isinstance(tree, dict):
        for v in tree.values():
            _flatten(v, out)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _flatten(v, out)


def _unflatten(spec, leaves):
    if spec == "T":
        return next(leaves)
    if isinstance(spec, dict):
        return {k: _unflatten(v, leaves) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_unflatten(v, leaves) for v in spec]
    return None


def _permute(t: torch.Tensor, dim: int, perm: torch.Tensor, optimizer) -> None:
    t.copy_(t.index_select(dim, perm))
    if optimizer is None:
        return
    state = optimizer.state.get(t)
    if not state:
        return
    for _key, value in state.items():
        if torch.is_tensor(value) and value.shape == t.shape:
            value.copy_(value.index_select(dim, perm))


def reestimate_bn(model: nn.Module, batches, grouping_fn=None) -> None:
    """Recompute BatchNorm running statistics (cumulative average) on ``batches`` of points.

    Needed after network augmentation: the tiny model's statistics are polluted by the wider
    models' passes (NetAug).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {m: m.momentum for m in bns}
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        for points in batches:
            grouping = grouping_fn(points) if grouping_fn else None
            model(points, grouping)
    for m, mom in saved.items():
        m.momentum = mom
    model.train(was_training)


__all__ = ["ClassifierBase", "ClassifierHead", "GroupedForward", "InferenceModule", "ModelConfig", "reestimate_bn"]

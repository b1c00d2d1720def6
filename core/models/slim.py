"""Width-sliceable layers shared by every model of the zoo: the models' maths, one forward each.

Every hidden layer is a :class:`SlimLinear`: allocated at its widest width, it runs on the
*leading* channels of each input segment and produces its first ``active_out`` channels. A plain
model is the special case where every layer is active at its full width (no slicing cost). The
tensors are channels-last rows ``(..., C)``, so every shared MLP is one matmul.

Segments matter at concatenations: the input of a layer is described as a list of producers
(a fixed channel count such as ``3`` for xyz, or the :class:`SlimLinear` that made those channels),
and the active input channels are the first active channels of *each* segment (RESEARCH.md §2).

The faster formulations that the models run on grouped rows (same outputs) are in
:mod:`core.models.fused`.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

Segment = Union[int, "SlimLinear"]


def rows_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.t() + b`` for 2-D rows ``x`` (``(M, in)``, or a transposed channels-first view).

    The weight goes in as a contiguous ``(in, out)`` copy (a few hundred numbers), not as the
    transposed view ``w.t()``: for a transposed operand autograd computes the weight gradient
    as ``g.t() @ x`` so that it comes out in the operand's layout, a product over M rows with
    both factors strided, 3x slower in fp32 on this CPU for a tiny model's layers
    (``(M, 16)`` from ``(8, M)`` channels-first: 153 ms against 50 ms forward + backward)."""
    wt = w.t().contiguous()
    return torch.addmm(b, x, wt) if b is not None else x @ wt


def activation(x: torch.Tensor, act: str, inplace: bool = False) -> torch.Tensor:
    """``relu``, ``leaky`` (LeakyReLU, slope 0.2) or ``none`` (identity)."""
    if act == "relu":
        return F.relu(x, inplace=inplace)
    if act == "leaky":
        return F.leaky_relu(x, 0.2, inplace=inplace)
    return x


class SlimLinear(nn.Module):
    """``y = x @ W[:out, cols].t() + b[:out]``: a linear layer whose output and input widths can
    be narrowed at run time (``out`` = :attr:`active_out`, ``cols`` = the active columns of each
    input segment).

    Args:
        in_segments: producers of the input channels, in concatenation order: an ``int`` for a
            fixed-width segment (xyz), or the layer whose output forms that segment.
        out_features: widest output width (allocated).
        tiny_out: the tiny model's width (defaults to ``out_features``).
        candidates: output widths that network augmentation may draw (defaults to all widths
            from ``tiny_out`` to ``out_features`` given by the model).
        bias: whether the layer has a bias.
        augmentable: ``False`` pins the layer to ``tiny_out`` = ``out_features`` (class layers).
    """

    def __init__(
        self,
        in_segments: Sequence[Segment],
        out_features: int,
        *,
        tiny_out: int | None = None,
        candidates: Sequence[int] | None = None,
        bias: bool = True,
        augmentable: bool = True,
    ) -> None:
        super().__init__()
        # Plain list: producers are registered where they live, not here.
        self.in_segments: list[Segment] = list(in_segments)
        self.in_features = sum(_seg_max(s) for s in self.in_segments)
        self.out_features = int(out_features)
        self.tiny_out = int(tiny_out if tiny_out is not None else out_features)
        self.candidates = sorted(set(candidates or [self.tiny_out, self.out_features]))
        self.augmentable = augmentable and self.tiny_out < self.out_features
        self.active_out = self.out_features
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rows ``(..., active in)`` -> ``(..., active_out)``."""
        w, b = self.effective_weight()
        return rows_linear(x.reshape(-1, x.shape[-1]), w, b).reshape(*x.shape[:-1], w.shape[0])

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    # -- width bookkeeping -------------------------------------------------------------
    def effective_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight ``(active out, active in)`` and bias the layer applies at its current widths."""
        if self.is_full():
            return self.weight, self.bias
        idx = self.out_index()
        if idx is None:
            w = self.weight[: self.active_out]
            b = self.bias[: self.active_out] if self.bias is not None else None
        else:
            idx = idx.to(self.weight.device)
            w = self.weight.index_select(0, idx)
            b = self.bias.index_select(0, idx) if self.bias is not None else None
        spans = self.active_in_segments()
        if len(spans) == 1:
            s, n = spans[0]
            w = w[:, s : s + n]
        else:
            w = torch.cat([w[:, s : s + n] for s, n in spans], dim=1)
        return w, b

    def active_in_segments(self) -> list[tuple[int, int]]:
        """(start, length) of the active columns of each input segment."""
        spans, start = [], 0
        for seg in self.in_segments:
            spans.append((start, _seg_active(seg)))
            start += _seg_max(seg)
        return spans

    def out_index(self) -> torch.Tensor | None:
        """Active output rows as an index tensor, or ``None`` for a leading slice."""
        return None

    def is_full(self) -> bool:
        return self.active_out == self.out_features and all(
            _seg_active(s) == _seg_max(s) for s in self.in_segments
        )

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, tiny={self.tiny_out}"


class SlimGridLinear(SlimLinear):
    """Linear layer producing a ``k x k`` matrix, where ``k`` follows another layer's width.

    Used for PointNet's feature transform: at width ``a`` of the producer the active outputs are
    the leading ``a x a`` block of the ``k_max x k_max`` grid (row-major).
    """

    def __init__(self, in_segments: Sequence[Segment], grid_of: Segment, **kw) -> None:
        k = _seg_max(grid_of)
        super().__init__(in_segments, k * k, augmentable=False, **kw)
        self.grid_of = [grid_of]  # list: not registered as a child

    @property
    def grid_k(self) -> int:
        return _seg_active(self.grid_of[0])

    def is_full(self) -> bool:
        return self.grid_k == _seg_max(self.grid_of[0]) and super().is_full()

    def out_index(self) -> torch.Tensor | None:
        k, kmax = self.grid_k, _seg_max(self.grid_of[0])
        rows = torch.arange(k).unsqueeze(1) * kmax + torch.arange(k).unsqueeze(0)
        return rows.reshape(-1)

    def effective_weight(self):
        self.active_out = self.grid_k * self.grid_k
        return super().effective_weight()


class SlimBatchNorm(nn.BatchNorm1d):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` over the leading channels of rows
    ``(M, C)`` or of ``(1, C, M)``, following ``layer``'s width; batch statistics in training
    (running statistics updated as :class:`nn.BatchNorm1d` does), running ones in eval."""

    def __init__(self, layer: SlimLinear, **kw) -> None:
        super().__init__(layer.out_features, **kw)
        self.layer = [layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]  # rows (M, C) or channels-first (1, C, M)
        momentum = self.count_batch()
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            self.training or self.running_mean is None,
            momentum,
            self.eps,
        )

    def count_batch(self) -> float:
        """In training, count this batch; returns the momentum of its running-statistics update
        (:attr:`momentum`, or the cumulative average's ``1 / batches`` when it is ``None``)."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return momentum


class WidthSpec:
    """Widths of one hidden layer: the tiny width, the allocated maximum and the candidates."""

    def __init__(self, base: int, width: float, aug_factors: Sequence[float] = (1.0,)) -> None:
        self.tiny = max(1, int(round(base * width)))
        self.candidates = sorted({max(1, int(round(self.tiny * f))) for f in aug_factors})
        self.max = self.candidates[-1]

    def __repr__(self) -> str:
        return f"WidthSpec(tiny={self.tiny}, max={self.max})"


class LinearBNAct(nn.Module):
    """``act(bn(linear(x)))`` on rows of any leading shape: :class:`SlimLinear` ->
    :class:`SlimBatchNorm` -> activation (``relu``, ``leaky`` or ``none``)."""

    def __init__(
        self,
        in_segments: Sequence[Segment],
        width: WidthSpec,
        *,
        bias: bool = True,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.linear = SlimLinear(
            in_segments, width.max, tiny_out=width.tiny, candidates=width.candidates, bias=bias
        )
        self.bn = SlimBatchNorm(self.linear)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_act(self.linear(x))

    def bn_act(self, y: torch.Tensor) -> torch.Tensor:
        """BN and activation of an already computed linear output ``y`` (``(..., C)``)."""
        shape = y.shape
        y = self.bn(y.reshape(-1, shape[-1]))
        # In place on BN's own output, before the reshape: in place on a view of it would make
        # autograd record a CopySlices node (a full extra copy in backward, ~10% of a tiny step).
        return activation(y, self.act, inplace=True).reshape(shape)

    @property
    def out(self) -> SlimLinear:
        return self.linear

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``(out, in)`` and bias ``(out,)`` of this layer with its BatchNorm's running
        statistics folded in: ``bn(linear(x)) == x @ w.t() + b`` in eval mode (computed in float64,
        returned in float32). For inference only: the activation is not included."""
        w, b = self.linear.effective_weight()
        c, bn = w.shape[0], self.bn
        scale = bn.weight[:c].double() / torch.sqrt(bn.running_var[:c].double() + bn.eps)
        shift = (b.double() if b is not None else 0.0) - bn.running_mean[:c].double()
        return (w.double() * scale.unsqueeze(1)).float(), (shift * scale + bn.bias[:c].double()).float()


class SharedMLP(nn.Module):
    """A chain of :class:`LinearBNAct` layers applied to every row (PointNet's shared MLP)."""

    def __init__(self, in_segments: Sequence[Segment], widths: Sequence[WidthSpec], **kw) -> None:
        super().__init__()
        layers, segs = [], list(in_segments)
        for w in widths:
            layer = LinearBNAct(segs, w, **kw)
            layers.append(layer)
            segs = [layer.out]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, first_linear_done: bool = False) -> torch.Tensor:
        """``first_linear_done``: ``x`` is already the first layer's linear output."""
        for i, layer in enumerate(self.layers):
            x = layer.bn_act(x) if (i == 0 and first_linear_done) else layer(x)
        return x

    @property
    def out(self) -> SlimLinear:
        return self.layers[-1].out


def _seg_max(seg: Segment) -> int:
    return seg if isinstance(seg, int) else seg.out_features


def _seg_active(seg: Segment) -> int:
    if isinstance(seg, int):
        return seg
    if isinstance(seg, SlimGridLinear):
        return seg.grid_k * seg.grid_k
    return seg.active_out

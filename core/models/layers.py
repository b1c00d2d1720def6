"""Width-sliceable building blocks shared by every model of the zoo.

Every hidden layer is a :class:`SlimLinear`: allocated at its widest width, it runs on the
*leading* channels of each input segment and produces its first ``active_out`` channels. A plain
model is the special case where every layer is active at its full width (no slicing cost). The
tensors are channels-last rows ``(M, C)``, so every shared MLP is one matmul.

Segments matter at concatenations: the input of a layer is described as a list of producers
(a fixed channel count such as ``3`` for xyz, or the :class:`SlimLinear` that made those channels),
and the active input channels are the first active channels of *each* segment (RESEARCH.md §2).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

Segment = Union[int, "SlimLinear"]

# When a list, every linear layer adds its multiply-accumulates here (see core.models.complexity).
MAC_COUNTER: list[int] | None = None

# Layers at most this wide run channels-first ``(C, M)`` inside grouped MLPs, wider ones as rows
# ``(M, C)`` (same outputs). A row of fewer than 16 fp32 channels leaves AVX-512 lanes idle.
# 12 was the fastest limit for the tiny SSG and MSG in fp32 and bf16 (bench/tiny_step_variants.py,
# part C; docs/BENCHMARKS_TINY_VARIANTS.md). Wider models are unaffected (all layers wider).
CHANNELS_FIRST_MAX = 12


# When true, a grouped MLP's last layer and the max over each group that follows it run as
# :meth:`LinearBNAct.forward_max` (BN and activation after the max: same outputs, a fraction of
# the passes). False runs the plain formulation (for tests and bench/tiny_step_variants.py).
FUSED_MAX = True


def rows_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.t() + b`` for 2-D rows ``x`` (``(M, in)``, or a transposed channels-first view).

    The weight goes in as a contiguous ``(in, out)`` copy (a few hundred numbers), not as the
    transposed view ``w.t()``: for a transposed operand autograd computes the weight gradient
    as ``g.t() @ x`` so that it comes out in the operand's layout, a product over M rows with
    both factors strided, 3x slower in fp32 on this CPU for a tiny model's layers
    (``(M, 16)`` from ``(8, M)`` channels-first: 153 ms against 50 ms forward + backward)."""
    wt = w.t().contiguous()
    return torch.addmm(b, x, wt) if b is not None else x @ wt


def count_linear_macs(rows: int, weight: torch.Tensor) -> None:
    """Record ``rows x in x out`` MACs of a linear map applied to ``rows`` rows."""
    if MAC_COUNTER is not None:
        MAC_COUNTER.append(int(rows) * weight.shape[0] * weight.shape[1])


class SlimLinear(nn.Module):
    """Linear layer whose output and input widths can be narrowed at run time.

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

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    # -- width bookkeeping -------------------------------------------------------------
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

    def effective_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the layer applies at its current widths."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective_weight()
        if MAC_COUNTER is not None:
            count_linear_macs(x.numel() // x.shape[-1], w)
        return rows_linear(x.reshape(-1, x.shape[-1]), w, b).reshape(*x.shape[:-1], w.shape[0])

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
    """BatchNorm over the channels of rows ``(M, C)`` or of ``(1, C, M)``, following ``layer``'s width."""

    def __init__(self, layer: SlimLinear, **kw) -> None:
        super().__init__(layer.out_features, **kw)
        self.layer = [layer]

    def forward(self, x: torch.Tensor, pre_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``pre_bias`` (training only): a bias the producing linear layer left out of ``x``.
        The batch statistics cancel it from the output; the running mean gets it added (so it
        tracks the mean of ``x + pre_bias``), and it is kept in the graph with its exact
        gradient, zero."""
        c = x.shape[1]  # rows (M, C) or channels-first (1, C, M)
        if pre_bias is not None and not self.training:
            raise ValueError("pre_bias is only valid with batch statistics (training mode)")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm does
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        running_mean = self.running_mean[:c] if self.running_mean is not None else None
        beta, batch_mean = self.bias[:c], running_mean
        if pre_bias is not None:
            beta = beta + 0.0 * pre_bias
            # A copy: batch_norm's autograd node keeps what it was given, so the buffer itself
            # must not be passed when it is to be updated in place afterwards.
            batch_mean = running_mean.clone() if running_mean is not None else None
        y = F.batch_norm(
            x,
            batch_mean,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            beta,
            use_batch,
            momentum,
            self.eps,
        )
        if pre_bias is not None and running_mean is not None and use_batch:
            with torch.no_grad():
                running_mean.copy_(torch.add(batch_mean, pre_bias.to(batch_mean.dtype), alpha=momentum))
        return y


class LinearBNAct(nn.Module):
    """``SlimLinear`` -> ``SlimBatchNorm`` -> activation, on rows of any leading shape."""

    def __init__(
        self,
        in_segments: Sequence[Segment],
        width: "WidthSpec",
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

    @property
    def out(self) -> SlimLinear:
        return self.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.linear(x))

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

    def post(self, y: torch.Tensor, pre_bias: torch.Tensor | None = None) -> torch.Tensor:
        """BN and activation of an already computed linear output (``pre_bias``: the linear
        bias left out of ``y``, see :meth:`SlimBatchNorm.forward`)."""
        shape = y.shape
        y = self.bn(y.reshape(-1, shape[-1]), pre_bias)
        # In place on BN's own output, before the reshape: in place on a view of it would make
        # autograd record a CopySlices node (a full extra copy in backward, ~10% of a tiny step).
        if self.act == "relu":
            y = F.relu(y, inplace=True)
        elif self.act == "leaky":
            y = F.leaky_relu(y, 0.2, inplace=True)
        return y.reshape(shape)

    def forward_flex(self, x: torch.Tensor, x_cf: bool) -> tuple[torch.Tensor, bool]:
        """The layer on 2-D input, rows ``(M, C)`` or channels-first ``(C, M)`` (``x_cf``).

        The output comes channels-first when the layer is at most ``CHANNELS_FIRST_MAX`` wide,
        as rows otherwise; a transposed operand costs the matmul nothing. Returns it and its
        layout flag."""
        w, b = self.linear.effective_weight()
        if MAC_COUNTER is not None:
            count_linear_macs(x.shape[1] if x_cf else x.shape[0], w)
        pre_bias = None
        if b is not None and self.bn.training:
            # Batch-statistics BN subtracts the batch mean, so a bias before it cancels: the
            # matmul skips it (addmm first writes the broadcast bias into its output, one more
            # pass over a grouped tensor) and the BN adds it to its running mean.
            pre_bias, b = b, None
        if w.shape[0] <= CHANNELS_FIRST_MAX:
            xin = x if x_cf else x.t()
            y = torch.addmm(b.unsqueeze(1), w, xin) if b is not None else w @ xin
            return self.post_cf(y, pre_bias), True
        y = rows_linear(x.t() if x_cf else x, w, b)
        return self.post(y, pre_bias), False

    def forward_max(self, x: torch.Tensor, x_cf: bool, k: int) -> torch.Tensor:
        """``max`` over each run of ``k`` consecutive rows of this layer's output: ``(M / k, C)``.

        Per channel, BN is an affine map ``g * (z - mean) / std + beta`` and the activation is
        non-decreasing, so both commute with the max over a group when ``g >= 0`` (with the min
        when ``g < 0``). The linear weights of channels with ``g < 0`` are negated (free: the
        weight is tiny) so one max serves every channel, and BN and the activation run on the
        pooled ``(M / k, C)`` tensor only: the full ``(M, C)`` output is read for its batch
        statistics and its max, never normalised, activated or stored twice. Same outputs,
        gradients and running statistics as ``max(act(bn(linear(x))))`` (tested); running
        statistics are updated as :class:`nn.BatchNorm1d` does (unbiased variance, momentum or
        cumulative average)."""
        if not FUSED_MAX:
            return _group_max(*self.forward_flex(x, x_cf), k)
        w, b = self.linear.effective_weight()
        if MAC_COUNTER is not None:
            count_linear_macs(x.shape[1] if x_cf else x.shape[0], w)
        c, bn = w.shape[0], self.bn
        gamma, beta = bn.weight[:c], bn.bias[:c]
        sign = torch.where(gamma.detach() >= 0, 1.0, -1.0).to(w.dtype)
        w = w * sign.unsqueeze(1)
        # The bias is added to the pooled maxima and to the mean, not to the (M, C) output
        # (addmm would write it there first: one more pass over the largest tensor).
        b = b * sign if b is not None else None
        out_cf = c <= CHANNELS_FIRST_MAX  # z channels-first (C, M), else rows (M, C)
        n = x.shape[1] if x_cf else x.shape[0]
        use_batch = bn.training or bn.running_mean is None
        if use_batch:
            if n <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got {n} rows")
            zmax, mean, var = _LinearPooledBatchStats.apply(x, w, x_cf, out_cf, k)
            out_dtype = zmax.dtype
            if b is not None:
                zmax, mean = zmax + b, mean + b
            if bn.training and bn.track_running_stats and bn.running_mean is not None:
                with torch.no_grad():
                    momentum = 0.0 if bn.momentum is None else bn.momentum
                    if bn.num_batches_tracked is not None:
                        bn.num_batches_tracked.add_(1)
                        if bn.momentum is None:
                            momentum = 1.0 / float(bn.num_batches_tracked)
                    rm, rv = bn.running_mean[:c], bn.running_var[:c]
                    rm.mul_(1 - momentum).add_(mean.to(rm.dtype) * sign.to(rm.dtype), alpha=momentum)
                    rv.mul_(1 - momentum).add_(var.to(rv.dtype) * (n / (n - 1)), alpha=momentum)
        else:
            zmax = _group_max(_linear_any(x, w, x_cf, out_cf), out_cf, k)
            out_dtype = zmax.dtype
            if b is not None:
                zmax = zmax + b
            mean = bn.running_mean[:c] * sign.to(bn.running_mean.dtype)
            var = bn.running_var[:c]
        dt = torch.promote_types(out_dtype, torch.float32)  # bf16 statistics: the epilogue in fp32
        scale = gamma.abs() * torch.rsqrt(var.to(dt) + bn.eps)
        y = (zmax.to(dt) - mean.to(dt)) * scale + beta
        if self.act == "relu":
            y = F.relu(y)
        elif self.act == "leaky":
            y = F.leaky_relu(y, 0.2)
        return y.to(out_dtype)

    def post_cf(self, y: torch.Tensor, pre_bias: torch.Tensor | None = None) -> torch.Tensor:
        """BN and activation of a channels-first linear output ``(C, M)``."""
        y = self.bn(y.unsqueeze(0), pre_bias)
        if self.act == "relu":
            y = F.relu(y, inplace=True)
        elif self.act == "leaky":
            y = F.leaky_relu(y, 0.2, inplace=True)
        # squeeze, not y[0]: select's backward fills a zero tensor and copies into it.
        return y.squeeze(0)


class SharedMLP(nn.Module):
    """A chain of :class:`LinearBNAct` layers (PointNet's shared MLP, channels-last)."""

    def __init__(self, in_segments: Sequence[Segment], widths: Sequence["WidthSpec"], **kw) -> None:
        super().__init__()
        layers, segs = [], list(in_segments)
        for w in widths:
            layer = LinearBNAct(segs, w, **kw)
            layers.append(layer)
            segs = [layer.out]
        self.layers = nn.ModuleList(layers)

    @property
    def out(self) -> SlimLinear:
        return self.layers[-1].out

    def forward(self, x: torch.Tensor, skip_first_linear: bool = False) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer.post(x) if (i == 0 and skip_first_linear) else layer(x)
        return x

    @staticmethod
    def _flex(layers, x: torch.Tensor, x_cf: bool, skip_first_linear: bool) -> tuple[torch.Tensor, bool]:
        """``layers`` on 2-D rows or channels-first input, each in the layout that suits its width
        (:meth:`LinearBNAct.forward_flex`); returns the output and its layout flag."""
        for i, layer in enumerate(layers):
            if i == 0 and skip_first_linear:
                x = layer.post_cf(x) if x_cf else layer.post(x)
            else:
                x, x_cf = layer.forward_flex(x, x_cf)
        return x, x_cf


    def forward_max(self, x: torch.Tensor, x_cf: bool, k: int, skip_first_linear: bool = False) -> torch.Tensor:
        """``max`` over each run of ``k`` consecutive rows of the chain's output, as rows
        ``(M / k, C)``: the last layer pooled by :meth:`LinearBNAct.forward_max`."""
        if skip_first_linear and len(self.layers) == 1:  # no linear left to pool through
            return _group_max(*self._flex(self.layers, x, x_cf, True), k)
        x, x_cf = self._flex(self.layers[:-1], x, x_cf, skip_first_linear)
        return self.layers[-1].forward_max(x, x_cf, k)

class WidthSpec:
    """Widths of one hidden layer: the tiny width, the allocated maximum and the candidates."""

    def __init__(self, base: int, width: float, aug_factors: Sequence[float] = (1.0,)) -> None:
        self.tiny = max(1, int(round(base * width)))
        self.candidates = sorted({max(1, int(round(self.tiny * f))) for f in aug_factors})
        self.max = self.candidates[-1]

    def __repr__(self) -> str:
        return f"WidthSpec(tiny={self.tiny}, max={self.max})"


def _seg_max(seg: Segment) -> int:
    return seg if isinstance(seg, int) else seg.out_features


def _seg_active(seg: Segment) -> int:
    if isinstance(seg, int):
        return seg
    if isinstance(seg, SlimGridLinear):
        return seg.grid_k * seg.grid_k
    return seg.active_out


class _MaxOverRows(torch.autograd.Function):
    """Max over K of ``(B, S, K, C)`` rows by channels-last max-pooling; backward scatters the
    gradient into the winners (as ``max(dim).values`` does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        b, s, k, c = x.shape
        vals, idx = F.max_pool2d(x.permute(0, 3, 1, 2), (1, k), return_indices=True)
        ctx.save_for_backward(idx)
        ctx.shape = (b, s, k, c)
        return vals.squeeze(3).permute(0, 2, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (idx,) = ctx.saved_tensors
        b, s, k, c = ctx.shape
        out = grad.new_zeros(b, s * k, c)
        out.scatter_(1, idx.squeeze(3).permute(0, 2, 1), grad)  # idx = s * K + k
        return out.view(b, s, k, c)


def _linear_any(x: torch.Tensor, w: torch.Tensor, x_cf: bool, out_cf: bool) -> torch.Tensor:
    """``x @ w.t()`` without bias for 2-D ``x`` (rows ``(M, in)``, or channels-first ``(in, M)``
    when ``x_cf``), as channels-first ``(out, M)`` when ``out_cf``, else as rows ``(M, out)``."""
    if out_cf:
        return w @ (x if x_cf else x.t())
    return rows_linear(x.t() if x_cf else x, w, None)


class _LinearPooledBatchStats(torch.autograd.Function):
    """A bias-free linear layer ``z = x @ w.t()`` whose output ``z`` (``M`` rows made of groups of
    ``k`` consecutive rows) is only needed through the per-channel max of each group, as rows
    ``(M / k, C)``, and the per-channel batch mean and biased variance over all ``M`` rows, in at
    least float32 (bf16 statistics rounded to bf16 would shift a channel by up to 0.4% of its
    mean, many standard deviations when the mean is large). ``x`` is rows ``(M, in)`` or
    channels-first ``(in, M)`` (``x_cf``); ``z`` is computed channels-first when ``out_cf``.

    The statistics come from the BatchNorm kernel (``torch.var_mean`` is 10-20x slower on this
    CPU). The gradient ``z`` gets is ``dz = a z + b`` per channel (from the mean and variance:
    ``a = 2 g_var / M``, ``b = g_mean / M - a mean``) plus the pooled gradient at each group's
    winner (a tie sends it to one winner, as ``max`` does). For a thin input (``2 in <= k``, a
    tiny model's layers) in float32 or float64 it goes straight to the layer's input and weight,
    with ``z = x w^T``, and ``z`` is not kept:

    * ``dx = x (w^T diag(a) w) + 1 (b^T w) + (winner rows) g_max w``, one small-matrix product over ``x``;
    * ``dw = diag(a) w (x^T x) + b (1^T x) + g_max^T x[winners]``, one ``in x in`` Gram matrix.

    That skips writing, reading and multiplying the MLP's largest tensor, ``(M, C)``, in backward;
    the winners' rows cost ``M C in / k`` reads, hence the limit. A wider input, or bf16, keeps
    ``z`` and builds ``dz`` (one pass), then ``dx = dz w`` and ``dw = dz^T x``. Same values as
    backpropagating through ``z``, up to rounding (tested in float64). Measured on the whole
    training step with tcmalloc (2 threads, interleaved against the dz path everywhere): SSG / 8
    fp32 1.08x; SSG / 8 bf16, MSG / 8 fp32 and width 1 within 2%; MSG / 8 bf16 0.94x (hence bf16
    takes the dz path)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, x_cf: bool, out_cf: bool, k: int):
        z = _linear_any(x, w, x_cf, out_cf)
        dt = torch.promote_types(z.dtype, torch.float32)
        c = w.shape[0]
        ones, zeros = torch.ones(c, dtype=dt, device=z.device), torch.zeros(c, dtype=dt, device=z.device)
        _, mean, invstd = torch.native_batch_norm(z.unsqueeze(0) if out_cf else z, ones, zeros,
                                                  None, None, True, 0.0, 0.0)
        var = invstd.pow(-2)  # eps 0: invstd = 1 / sqrt(var); a constant channel gives inf -> 0
        if out_cf:  # (C, G, k): the max over the contiguous k
            zmax, j = z.view(c, -1, k).max(2)
            zmax = zmax.t()
            rows = (j + torch.arange(0, z.shape[1], k, device=z.device)).t()  # winner row, (G, C)
        else:  # (G, k, C): channels-last pooling reads the rows contiguously (see max_rows)
            vals, idx = F.max_pool2d(z.view(1, -1, k, c).permute(0, 3, 1, 2), (1, k), return_indices=True)
            zmax, rows = vals.view(c, -1).t(), idx.view(c, -1).t()  # idx = g * k + j
        # bf16: the dz path was as fast or faster (MSG / 8: 6%), so only fp32 / fp64 skip dz.
        ctx.thin = 2 * w.shape[1] <= k and z.dtype in (torch.float32, torch.float64)
        ctx.save_for_backward(x, w, mean, rows, None if ctx.thin else z)
        ctx.x_cf, ctx.out_cf, ctx.mm_dtype = x_cf, out_cf, z.dtype
        return zmax, mean, var

    @staticmethod
    def backward(ctx, g_max, g_mean, g_var):
        x, w, mean, rows, z = ctx.saved_tensors
        dt = ctx.mm_dtype  # the forward matmul's dtype (bf16 under autocast)
        x = x.to(dt)
        n = x.shape[1] if ctx.x_cf else x.shape[0]
        g_mean = torch.zeros_like(mean) if g_mean is None else g_mean
        g_var = torch.zeros_like(mean) if g_var is None else g_var
        a = 2.0 * g_var / n
        b = g_mean / n - a * mean  # a, b: float32 at least
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not ctx.thin:
            gx, gw = _pooled_dense_backward(ctx, x, w, z, rows, a, b, g_max, need_x, need_w)
            return gx, gw, None, None, None
        wf = w.to(a.dtype)
        gx = gw = None
        if g_max is not None:
            g_max = g_max.to(a.dtype)
            flat = rows.reshape(-1)  # (G * C) winner rows, channel fastest
        if need_x:
            m = (wf.t() * a) @ wf  # w^T diag(a) w, (in, in)
            shift = b @ wf  # b^T w, (in,)
            if ctx.x_cf:
                gx = torch.addmm(shift.to(dt).unsqueeze(1), m.to(dt), x)
            else:
                gx = torch.addmm(shift.to(dt), x, m.to(dt))
            if g_max is not None:  # each winner row gets g_max[g, c] * w[c]
                if ctx.x_cf:  # (in, G * C), in the order of flat
                    src = (wf.t().unsqueeze(1) * g_max.unsqueeze(0)).reshape(wf.shape[1], -1)
                    gx.index_add_(1, flat, src.to(gx.dtype))
                else:  # (G * C, in)
                    src = (g_max.unsqueeze(2) * wf).reshape(-1, wf.shape[1])
                    gx.index_add_(0, flat, src.to(gx.dtype))
        if need_w:
            # x^T x and the column sums, over x's contiguous layout
            gram = (x @ x.t() if ctx.x_cf else x.t() @ x).to(a.dtype)  # (in, in)
            colsum = x.sum(1 if ctx.x_cf else 0, dtype=a.dtype)
            gw = a.unsqueeze(1) * (wf @ gram) + torch.outer(b, colsum)
            if g_max is not None:  # + sum over groups of g_max[g, c] * x[winner(g, c)]
                if ctx.x_cf:
                    xw = x.index_select(1, flat).view(x.shape[0], *rows.shape).to(a.dtype)  # (in, G, C)
                    gw = gw + torch.einsum("gc,igc->ci", g_max, xw)
                else:
                    xw = x.index_select(0, flat).view(*rows.shape, -1).to(a.dtype)  # (G, C, in)
                    gw = gw + torch.einsum("gc,gci->ci", g_max, xw)
            gw = gw.to(w.dtype)
        return gx, gw, None, None, None


def _pooled_dense_backward(ctx, x, w, z, rows, a, b, g_max, need_x, need_w):
    """:class:`_LinearPooledBatchStats`'s backward through ``dz`` (wide inputs)."""
    if ctx.out_cf:  # z (C, M)
        dz = torch.addcmul(b.unsqueeze(1), z, a.unsqueeze(1))  # float32 at least (a, b are)
        if g_max is not None:
            dz.scatter_add_(1, rows.t(), g_max.t().to(dz.dtype))
    else:  # z (M, C)
        dz = torch.addcmul(b, z, a)
        if g_max is not None:
            dz.scatter_add_(0, rows, g_max.to(dz.dtype))
    dz = dz.to(z.dtype)
    wd = w.to(z.dtype)
    gx = gw = None
    if need_x:  # x's layout: (in, M) when x_cf, else (M, in)
        if ctx.out_cf:
            gx = wd.t() @ dz if ctx.x_cf else dz.t() @ wd
        else:
            gx = (dz @ wd).t() if ctx.x_cf else dz @ wd
    if need_w:
        if ctx.out_cf:
            gw = dz @ (x.t() if ctx.x_cf else x)
        else:
            gw = dz.t() @ (x.t() if ctx.x_cf else x)
        gw = gw.to(w.dtype)
    return gx, gw


def _group_max(y: torch.Tensor, y_cf: bool, k: int) -> torch.Tensor:
    """The plain max over each run of ``k`` rows of ``y`` (rows or channels-first), as rows."""
    if y_cf:
        return y.view(y.shape[0], -1, k).max(2).values.t()
    return max_rows(y.view(-1, k, y.shape[-1]))


def max_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.max(-2).values`` for rows ``(..., K, C)``: max-pooling over K in channels-last layout.

    A reduction over K with C innermost is strided; the channels-last pooling kernel reads the
    rows contiguously: 3-4x faster in training, 6-16x in inference, same values (measured:
    bench/tiny_step_variants.py). A traced graph (TorchScript, ONNX) gets the plain reduction:
    its pooling window would be a traced shape, which ONNX export refuses."""
    if torch.jit.is_tracing():
        return x.max(-2).values
    *lead, k, c = x.shape
    x4 = x.contiguous().view(1, -1, k, c)
    if x.requires_grad and torch.is_grad_enabled():
        out = _MaxOverRows.apply(x4)
    else:
        out = F.max_pool2d(x4.permute(0, 3, 1, 2), (1, k)).squeeze(3).permute(0, 2, 1)
    return out.reshape(*lead, c)


# ---------------------------------------------------------------------------------------
# Sampling and grouping. Pure torch, batched; every result is an index tensor that callers
# may compute once and reuse (RESEARCH.md §5).
# ---------------------------------------------------------------------------------------


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, N, C) picked by ``idx`` (B, ...) -> (B, ..., C)."""
    b, n, c = x.shape
    flat = idx.reshape(b, -1)
    offset = torch.arange(b, device=x.device).unsqueeze(1) * n
    out = x.reshape(b * n, c).index_select(0, (flat + offset).reshape(-1))
    return out.reshape(*idx.shape, c)


def farthest_point_sample(
    xyz: torch.Tensor, npoint: int, start: torch.Tensor | None = None
) -> torch.Tensor:
    """Farthest point sampling: (B, N, 3) -> indices (B, npoint).

    ``start`` gives each cloud's first index; ``None`` starts at point 0, which makes inference
    deterministic (and exportable).
    """
    b, n, _ = xyz.shape
    npoint = min(npoint, n)
    xyz = _at_least_float32(xyz.detach())
    out = torch.empty(b, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device, dtype=xyz.dtype)
    far = start.to(xyz.device).long() if start is not None else torch.zeros(b, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        out[:, i] = far
        centre = xyz[rows, far].unsqueeze(1)
        dist = torch.minimum(dist, (xyz - centre).square().sum(-1))
        far = dist.argmax(-1)
    return out


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances (B, S, C) x (B, N, C) -> (B, S, N), one matmul.

    Always float32, autocast off: in bfloat16, 15% of ball-query neighbours and 11% of kNN sets
    change, so sampling and grouping would depend on the training precision.
    """
    with torch.autocast(a.device.type, enabled=False):
        a, b = _at_least_float32(a), _at_least_float32(b)
        d = -2 * a @ b.transpose(1, 2)
        d += a.square().sum(-1, keepdim=True)
        d += b.square().sum(-1).unsqueeze(1)
        return d.clamp_min_(0)


def ball_query(xyz: torch.Tensor, centres: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """First ``nsample`` point indices (in index order) within ``radius`` of each centre.

    Slots beyond the points found repeat the first one (PointNet++ convention). Uses ``topk`` on
    a key instead of a full sort (3x faster here). Returns (B, S, nsample).
    """
    n = xyz.shape[1]
    d = square_distance(centres.detach(), xyz.detach())
    key = torch.arange(n, device=xyz.device, dtype=d.dtype).expand_as(d)
    key = torch.where(d > radius * radius, key + n, key)
    k = min(nsample, n)
    vals, idx = key.topk(k, dim=-1, largest=False, sorted=True)
    first = idx[..., :1].expand_as(idx)
    idx = torch.where(vals >= n, first, idx)
    if k < nsample:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], nsample - k)], dim=-1)
    return idx


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` nearest neighbours of every point (itself included): (B, N, k)."""
    d = square_distance(x.detach(), x.detach())
    return d.topk(min(k, x.shape[1]), dim=-1, largest=False, sorted=True)[1]


# ---------------------------------------------------------------------------------------
# The same sampling and grouping from operations that export to a graph (ONNX, TorchScript):
# tracing unrolls the FPS loop, so each step must be few nodes. Same indices as above (tested).
# ---------------------------------------------------------------------------------------


def pairwise_sq_dist_exact(xyz: torch.Tensor) -> torch.Tensor:
    """``d[b, c, j] = sum_k (xyz[b, j, k] - xyz[b, c, k])^2`` (B, N, N), summed in index order.

    Differences and sums in the order eager FPS uses, hence bit-identical to its distances (a
    matmul expansion is not).
    """
    out = None
    for k in range(xyz.shape[-1]):
        coord = xyz[..., k]
        diff = coord.unsqueeze(1) - coord.unsqueeze(2)
        sq = diff * diff
        out = sq if out is None else out + sq
    return out


class _GatherRows(torch.autograd.Function):
    """``mat[b, idx[b, 0]]`` for every ``b``: (B, N, M), (B, 1) -> (B, M); one ONNX node."""

    @staticmethod
    def forward(ctx, mat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return mat.gather(1, idx.unsqueeze(-1).expand(-1, -1, mat.shape[-1])).squeeze(1)

    @staticmethod
    def symbolic(g, mat, idx):
        return g.op("GatherND", mat, idx, batch_dims_i=1)


def farthest_point_sample_pairwise(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Farthest point sampling from point 0 on a precomputed distance matrix: (B, N, 3) -> (B, npoint).

    Same indices as :func:`farthest_point_sample` with ``start=None``; costs ``N x N`` memory per
    cloud (4 MiB at 1024 points). In ONNX each step is three nodes (GatherND, Min, ArgMax).
    """
    n = xyz.shape[1]
    npoint = min(npoint, n)
    dist_mat = pairwise_sq_dist_exact(xyz.detach())  # (B, N, N)
    far = torch.zeros_like(xyz[:, :1, 0], dtype=torch.long)  # (B, 1)
    picked = [far]
    dist = None
    for _ in range(npoint - 1):
        if torch.onnx.is_in_onnx_export():
            row = _GatherRows.apply(dist_mat, far)
        else:  # TorchScript cannot serialise a Python autograd.Function
            row = _GatherRows.forward(None, dist_mat, far)
        dist = row if dist is None else torch.minimum(dist, row)
        far = dist.argmax(-1, keepdim=True)
        picked.append(far)
    return torch.cat(picked, 1)


def ball_query_by_flag(xyz: torch.Tensor, centres: torch.Tensor, radius: float, nsample: int) -> torch.Tensor:
    """:func:`ball_query` for ONNX: TopK over a 0/1 "outside the ball" flag.

    ONNX TopK (opset >= 11) breaks ties by the lower index, so the smallest flags come as the
    points inside the ball in index order: the same indices as the eager key ``index (+N if
    outside)``, without building that key (its Where/Add over S x N were most of the tiny
    model's grouping time). Not for eager use: ``torch.topk`` does not promise that tie order.
    """
    n = xyz.shape[1]
    d = square_distance(centres.detach(), xyz.detach())
    outside = (d > radius * radius).to(d.dtype)
    k = min(nsample, n)
    flags, idx = outside.topk(k, dim=-1, largest=False, sorted=True)
    idx = torch.where(flags > 0, idx[..., :1].expand_as(idx), idx)
    if k < nsample:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], nsample - k)], dim=-1)
    return idx

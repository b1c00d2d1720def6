"""Fast paths: exact rewrites of the slim layers that the models run on grouped rows.

The models' maths is :mod:`core.models.slim` (each layer's plain forward). A grouped MLP
followed by the max over each group, ``max_k act(bn(linear(x)))`` layer after layer, is what
dominates PointNet++ and PointNet; :func:`mlp_max` computes it either plainly or through two
rewrites, chosen by the model config's :class:`FastPaths`:

* **Layouts** (``channels_first_max``): layers at most this wide run channels-first ``(C, M)``,
  wider ones as rows ``(M, C)``; in training a layer's bias is left out of its matmul and added
  to its BatchNorm's running mean instead (batch statistics cancel it).
* **BN and activation after the max** (``fused_max``): the last layer's linear output is reduced
  to its batch statistics and its per-group max in one pass, with a hand-written backward
  (:class:`_LinearPooledBatchStats`); BN and the activation then run on the pooled rows only.

The third rewrite, the first layer applied per point and gathered (``per_point``), is where the
grouping is: :class:`~core.models.pointnet2.SetAbstraction`, :class:`~core.models.dgcnn.EdgeConv`.
Each gives the plain formulation's outputs, gradients and BatchNorm statistics up to rounding
(tests/test_reference_parity.py); measured speed-ups: docs/BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from .ops import max_rows
from .slim import LinearBNAct, SlimBatchNorm, activation, rows_linear


@dataclass(frozen=True)
class FastPaths:
    """Which exact rewrites a model runs; a field of :class:`~core.models.base.ModelConfig`.

    Every combination computes the same function: this chooses speed, never results (up to
    float rounding). :data:`PLAIN` turns every rewrite off: the slim layers' own forwards on the
    reference formulation's grouped rows, which is what :func:`~core.models.complexity.count_macs`
    counts.
    """

    #: The first layer of a grouped MLP is linear in ``[xyz_j - xyz_c, f_j]`` (PointNet++) or
    #: ``[x_j - x_i, x_i]`` (DGCNN EdgeConv): applied once per point and gathered, instead of once
    #: per (centre, neighbour) row.
    per_point: bool = True
    #: A grouped MLP's last layer and the max over each group run as one pooled pass, with BN
    #: and the activation after the max (:func:`linear_bn_act_max`).
    fused_max: bool = True
    #: Grouped MLP layers at most this wide run channels-first ``(C, M)``, wider ones as rows
    #: ``(M, C)`` (a row of fewer than 16 fp32 channels leaves AVX-512 lanes idle). 12 was the
    #: fastest limit for the tiny SSG and MSG in fp32 and bf16 (bench/tiny_step_variants.py, part
    #: C; docs/BENCHMARKS_TINY_VARIANTS.md); wider models are unaffected (all layers wider). With
    #: ``fused_max`` off, 0 runs the grouped MLPs as the plain layers.
    channels_first_max: int = 12

    def __post_init__(self) -> None:
        for name in ("per_point", "fused_max"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fast path {name} must be true or false, got {getattr(self, name)!r}")
        limit = self.channels_first_max
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"fast path channels_first_max must be an integer >= 0, got {limit!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "FastPaths":
        """From :func:`dataclasses.asdict`'s form; missing keys take the defaults (checkpoints that
        predate a field), unknown keys are an error."""
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fast paths: {', '.join(sorted(unknown))}")
        return cls(**d)


#: Every rewrite off: the plain formulation.
PLAIN = FastPaths(per_point=False, fused_max=False, channels_first_max=0)


def mlp_max(layers: Sequence[LinearBNAct], x: torch.Tensor, k: int, fast: FastPaths, *,
            x_cf: bool = False, first_linear_done: bool = False) -> torch.Tensor:
    """``max`` over each run of ``k`` consecutive rows of the chain ``layers`` applied to ``x``,
    as rows ``(M / k, C)``.

    Args:
        layers: the chain (a :class:`~core.models.slim.SharedMLP`'s ``layers``, or one layer).
        x: 2-D rows ``(M, in)``, or channels-first ``(in, M)`` when ``x_cf``.
        k: rows per group (consecutive).
        fast: the rewrites to run.
        first_linear_done: ``x`` is already the first layer's linear output.
    """
    if not fast.fused_max and fast.channels_first_max == 0:  # the plain layers
        x = x.t() if x_cf else x
        for i, layer in enumerate(layers):
            x = layer.bn_act(x) if (i == 0 and first_linear_done) else layer(x)
        return max_rows(x.view(-1, k, x.shape[-1]))
    limit = fast.channels_first_max
    if first_linear_done and len(layers) == 1:  # no linear left to pool through
        return group_max(*_flex(layers, x, x_cf, True, limit), k)
    x, x_cf = _flex(layers[:-1], x, x_cf, first_linear_done, limit)
    if fast.fused_max:
        return linear_bn_act_max(layers[-1], x, x_cf, k, limit)
    return group_max(*linear_bn_act_flex(layers[-1], x, x_cf, limit), k)


def _flex(layers: Sequence[LinearBNAct], x: torch.Tensor, x_cf: bool, first_linear_done: bool,
          limit: int) -> tuple[torch.Tensor, bool]:
    """``layers`` on 2-D rows or channels-first input, each in the layout that suits its width
    (:func:`linear_bn_act_flex`); returns the output and its layout flag."""
    for i, layer in enumerate(layers):
        if i == 0 and first_linear_done:
            x = _bn_act_cf(layer, x) if x_cf else layer.bn_act(x)
        else:
            x, x_cf = linear_bn_act_flex(layer, x, x_cf, limit)
    return x, x_cf


def linear_bn_act_flex(layer: LinearBNAct, x: torch.Tensor, x_cf: bool, limit: int) -> tuple[torch.Tensor, bool]:
    """``layer`` on 2-D input, rows ``(M, C)`` or channels-first ``(C, M)`` (``x_cf``).

    The output comes channels-first when the layer is at most ``limit`` wide, as rows otherwise;
    a transposed operand costs the matmul nothing. Returns it and its layout flag."""
    w, b = layer.linear.effective_weight()
    pre_bias = None
    if b is not None and layer.bn.training:
        # Batch-statistics BN subtracts the batch mean, so a bias before it cancels: the
        # matmul skips it (addmm first writes the broadcast bias into its output, one more
        # pass over a grouped tensor) and the BN adds it to its running mean.
        pre_bias, b = b, None
    if w.shape[0] <= limit:
        xin = x if x_cf else x.t()
        y = torch.addmm(b.unsqueeze(1), w, xin) if b is not None else w @ xin
        return _bn_act_cf(layer, y, pre_bias), True
    y = rows_linear(x.t() if x_cf else x, w, b)
    if pre_bias is None:
        return layer.bn_act(y), False
    y = _batch_norm_bias_after(layer.bn, y, pre_bias)
    return activation(y, layer.act, inplace=True), False


def _bn_act_cf(layer: LinearBNAct, y: torch.Tensor, pre_bias: torch.Tensor | None = None) -> torch.Tensor:
    """BN and activation of a channels-first linear output ``(C, M)``."""
    y = y.unsqueeze(0)
    y = layer.bn(y) if pre_bias is None else _batch_norm_bias_after(layer.bn, y, pre_bias)
    y = activation(y, layer.act, inplace=True)
    # squeeze, not y[0]: select's backward fills a zero tensor and copies into it.
    return y.squeeze(0)


def _batch_norm_bias_after(bn: SlimBatchNorm, x: torch.Tensor, pre_bias: torch.Tensor) -> torch.Tensor:
    """``bn(x + pre_bias)`` in training, for ``x`` rows ``(M, C)`` or ``(1, C, M)``: the batch
    statistics cancel ``pre_bias`` from the output; the running mean gets it added (so it tracks
    the mean of ``x + pre_bias``), and it is kept in the graph with its exact gradient, zero."""
    if not bn.training:
        raise ValueError("pre_bias is only valid with batch statistics (training mode)")
    c = x.shape[1]
    momentum = bn.count_batch()
    running_mean = bn.running_mean[:c] if bn.running_mean is not None else None
    # A copy: batch_norm's autograd node keeps what it was given, so the buffer itself must not
    # be passed when it is to be updated in place afterwards.
    batch_mean = running_mean.clone() if running_mean is not None else None
    y = F.batch_norm(
        x,
        batch_mean,
        bn.running_var[:c] if bn.running_var is not None else None,
        bn.weight[:c],
        bn.bias[:c] + 0.0 * pre_bias,
        True,
        momentum,
        bn.eps,
    )
    if running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(torch.add(batch_mean, pre_bias.to(batch_mean.dtype), alpha=momentum))
    return y


def linear_bn_act_max(layer: LinearBNAct, x: torch.Tensor, x_cf: bool, k: int, limit: int) -> torch.Tensor:
    """``max`` over each run of ``k`` consecutive rows of ``layer``'s output: ``(M / k, C)``.

    Per channel, BN is an affine map ``g * (z - mean) / std + beta`` and the activation is
    non-decreasing, so both commute with the max over a group when ``g >= 0`` (with the min
    when ``g < 0``). The linear weights of channels with ``g < 0`` are negated (free: the
    weight is tiny) so one max serves every channel, and BN and the activation run on the
    pooled ``(M / k, C)`` tensor only: the full ``(M, C)`` output is read for its batch
    statistics and its max, never normalised, activated or stored twice. Same outputs,
    gradients and running statistics as ``max(act(bn(linear(x))))`` (tested); running
    statistics are updated as :class:`nn.BatchNorm1d` does (unbiased variance, momentum or
    cumulative average). ``x``: rows, or channels-first when ``x_cf``; the linear output is
    computed channels-first when the layer is at most ``limit`` wide."""
    w, b = layer.linear.effective_weight()
    c, bn = w.shape[0], layer.bn
    gamma, beta = bn.weight[:c], bn.bias[:c]
    sign = torch.where(gamma.detach() >= 0, 1.0, -1.0).to(w.dtype)
    w = w * sign.unsqueeze(1)
    # The bias is added to the pooled maxima and to the mean, not to the (M, C) output
    # (addmm would write it there first: one more pass over the largest tensor).
    b = b * sign if b is not None else None
    out_cf = c <= limit  # z channels-first (C, M), else rows (M, C)
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
                momentum = bn.count_batch()
                rm, rv = bn.running_mean[:c], bn.running_var[:c]
                rm.mul_(1 - momentum).add_(mean.to(rm.dtype) * sign.to(rm.dtype), alpha=momentum)
                rv.mul_(1 - momentum).add_(var.to(rv.dtype) * (n / (n - 1)), alpha=momentum)
    else:
        zmax = group_max(_linear_any(x, w, x_cf, out_cf), out_cf, k)
        out_dtype = zmax.dtype
        if b is not None:
            zmax = zmax + b
        mean = bn.running_mean[:c] * sign.to(bn.running_mean.dtype)
        var = bn.running_var[:c]
    dt = torch.promote_types(out_dtype, torch.float32)  # bf16 statistics: the epilogue in fp32
    scale = gamma.abs() * torch.rsqrt(var.to(dt) + bn.eps)
    y = (zmax.to(dt) - mean.to(dt)) * scale + beta
    return activation(y, layer.act).to(out_dtype)


def group_max(y: torch.Tensor, y_cf: bool, k: int) -> torch.Tensor:
    """The plain max over each run of ``k`` rows of ``y`` (rows or channels-first), as rows."""
    if y_cf:
        return y.view(y.shape[0], -1, k).max(2).values.t()
    return max_rows(y.view(-1, k, y.shape[-1]))


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

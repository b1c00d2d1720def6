"""Sampling, grouping and pooling over groups: pure torch, batched, no learned weights.

Every sampling/grouping result is an index tensor that callers may compute once and reuse
(RESEARCH.md §5): it depends only on point distances, not on a model's weights or width.
The traceable variants at the end compute the same indices from operations that export to a
graph (ONNX, TorchScript).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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

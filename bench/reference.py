"""Straightforward reference implementations of the model zoo, for parity tests and benchmarks.

The classic layout of the popular PyTorch ports, written independently of ``core.models``:
channels-first tensors ``(B, C, N)`` and grouped tensors ``(B, C, S, K)``, shared MLPs as 1x1
``Conv1d`` / ``Conv2d`` with ``BatchNorm1d`` / ``BatchNorm2d``, sampling (FPS), ball query and kNN
recomputed inside every forward pass, every grouped row pushed through every layer (no per-point
rewrite, no index reuse). Widths and the width multiplier follow ``core.models`` exactly, so
:func:`load_from_ours` can copy any plain model of ours into its reference twin.

Deliberate choices, so that the reference is a fair (not a strawman) baseline:

* ball query selects the first ``nsample`` in-radius indices with ``topk`` (the common port's full
  ``sort`` is about 3x slower, RESEARCH.md §5); ``BALL_QUERY = "sort"`` switches to the port's way;
* farthest point sampling starts at point 0 unless ``random_start`` is set (the ports draw a random
  start; ours is deterministic in eval mode, and parity needs the same start).

Build with :func:`create_reference` (same names as :func:`core.models.list_models`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

# "topk" (default, faster) or "sort" (the common PyTorch port): same indices either way.
BALL_QUERY = "topk"


def scaled(base: int, width: float) -> int:
    """A hidden width under the multiplier (same rounding as the zoo's width rule)."""
    return max(1, int(round(base * width)))


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def _activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky":
        return nn.LeakyReLU(0.2, inplace=True)
    return nn.Identity()


def conv_bn(c_in: int, c_out: int, dims: int, *, bias: bool = True, act: str = "relu") -> nn.Sequential:
    """1x1 convolution (``dims`` = 1 or 2) -> BatchNorm -> activation: one shared-MLP layer."""
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return nn.Sequential(conv(c_in, c_out, 1, bias=bias), bn(c_out), _activation(act))


def linear_bn(c_in: int, c_out: int, *, bias: bool = True, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out, bias=bias), nn.BatchNorm1d(c_out), _activation(act))


class RefHead(nn.Module):
    """Fully connected classifier: (Linear, BN, act, dropout) x len(hidden), then Linear."""

    def __init__(self, c_in: int, num_classes: int, hidden: Sequence[int], dropout: float,
                 act: str = "relu", first_bias: bool = True) -> None:
        super().__init__()
        blocks = []
        for i, h in enumerate(hidden):
            blocks.append(linear_bn(c_in, h, bias=first_bias or i > 0, act=act))
            c_in = h
        self.hidden = nn.ModuleList(blocks)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.hidden:
            x = self.drop(block(x))
        return self.fc(x)


# ---------------------------------------------------------------------------------------
# Sampling and grouping, recomputed in every forward pass (channels-last xyz (B, N, 3))
# ---------------------------------------------------------------------------------------


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``points`` (B, N, C) indexed by ``idx`` (B, *shape) -> (B, *shape, C)."""
    b = points.shape[0]
    batch = torch.arange(b, device=points.device).view(b, *([1] * (idx.dim() - 1)))
    return points[batch.expand_as(idx), idx]


def pairwise_sq_dist(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Squared distances between rows of ``src`` (B, S, C) and ``dst`` (B, N, C): (B, S, N)."""
    dist = -2 * torch.matmul(src, dst.transpose(1, 2))
    dist = dist + (src ** 2).sum(-1).unsqueeze(-1)
    dist = dist + (dst ** 2).sum(-1).unsqueeze(1)
    return dist


def fps(xyz: torch.Tensor, npoint: int, random_start: bool = False) -> torch.Tensor:
    """Farthest point sampling of ``npoint`` indices from ``xyz`` (B, N, 3)."""
    b, n, _ = xyz.shape
    chosen = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    min_dist = torch.full((b, n), 1e10, dtype=xyz.dtype, device=xyz.device)
    if random_start:
        current = torch.randint(0, n, (b,), device=xyz.device)
    else:
        current = torch.zeros(b, dtype=torch.long, device=xyz.device)
    batch = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        chosen[:, i] = current
        centre = xyz[batch, current].view(b, 1, 3)
        min_dist = torch.minimum(min_dist, ((xyz - centre) ** 2).sum(-1))
        current = torch.argmax(min_dist, dim=-1)
    return chosen


def query_ball(radius: float, nsample: int, xyz: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """First ``nsample`` indices (ascending) of points within ``radius`` of each centre.

    Empty slots repeat the first index found. Returns (B, S, nsample).
    """
    b, n, _ = xyz.shape
    s = centres.shape[1]
    idx = torch.arange(n, dtype=torch.long, device=xyz.device).view(1, 1, n).repeat(b, s, 1)
    idx[pairwise_sq_dist(centres, xyz) > radius ** 2] = n
    if BALL_QUERY == "sort":
        idx = idx.sort(dim=-1)[0][:, :, :nsample]
    else:
        idx = idx.topk(nsample, dim=-1, largest=False, sorted=True)[0]
    first = idx[:, :, :1].expand(-1, -1, nsample)
    empty = idx == n
    idx[empty] = first[empty]
    return idx


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest neighbours (self included) of every point of ``x`` (B, C, N): (B, N, k)."""
    inner = torch.matmul(x.transpose(1, 2), x)
    sq = (x ** 2).sum(1, keepdim=True)
    neg_dist = 2 * inner - sq - sq.transpose(1, 2)
    return neg_dist.topk(k, dim=-1)[1]


# ---------------------------------------------------------------------------------------
# PointNet
# ---------------------------------------------------------------------------------------


class RefTNet(nn.Module):
    """Regresses a ``k x k`` transform from (B, k, N) features; identity added at the end."""

    def __init__(self, k: int, width: float) -> None:
        super().__init__()
        self.k = k
        c1, c2, c3 = scaled(64, width), scaled(128, width), scaled(1024, width)
        f1, f2 = scaled(512, width), scaled(256, width)
        self.convs = nn.Sequential(conv_bn(k, c1, 1), conv_bn(c1, c2, 1), conv_bn(c2, c3, 1))
        self.fc1 = linear_bn(c3, f1)
        self.fc2 = linear_bn(f1, f2)
        self.fc3 = nn.Linear(f2, k * k)
        nn.init.zeros_(self.fc3.weight)
        nn.init.zeros_(self.fc3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.max(self.convs(x), dim=2)[0]
        y = self.fc3(self.fc2(self.fc1(y)))
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device).flatten()
        return (y + eye).view(-1, self.k, self.k)


class RefPointNet(nn.Module):
    """PointNet with input (3x3) and feature (64x64 at width 1) transforms."""

    def __init__(self, num_classes: int = 40, width: float = 1.0, dropout: float = 0.4) -> None:
        super().__init__()
        c1, c2, c3 = scaled(64, width), scaled(128, width), scaled(1024, width)
        self.stn = RefTNet(3, width)
        self.conv1 = conv_bn(3, c1, 1)
        self.fstn = RefTNet(c1, width)
        self.conv2 = conv_bn(c1, c2, 1)
        self.conv3 = conv_bn(c2, c3, 1, act="none")
        self.head = RefHead(c3, num_classes, [scaled(512, width), scaled(256, width)], dropout)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(1, 2)  # (B, 3, N)
        trans = self.stn(x)
        x = torch.bmm(x.transpose(1, 2), trans).transpose(1, 2)
        x = self.conv1(x)
        trans_feat = self.fstn(x)
        x = torch.bmm(x.transpose(1, 2), trans_feat).transpose(1, 2)
        x = self.conv3(self.conv2(x))
        return self.head(torch.max(x, dim=2)[0])


# ---------------------------------------------------------------------------------------
# PointNet++ (SSG and MSG share one set abstraction class)
# ---------------------------------------------------------------------------------------


class RefSetAbstraction(nn.Module):
    """Sample ``npoint`` centres, group each radius's neighbours as [xyz_rel, features], shared
    MLP per branch, max over neighbours, branches concatenated in order.

    ``npoint=None`` groups the whole cloud once as [xyz, features].
    """

    def __init__(self, npoint: int | None, radii: Sequence[float], nsamples: Sequence[int],
                 c_in: int, mlps: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.npoint, self.radii, self.nsamples = npoint, list(radii), list(nsamples)
        branches = []
        for widths in mlps:
            layers, c = [], c_in + 3
            for w in widths:
                layers.append(conv_bn(c, w, 2))
                c = w
            branches.append(nn.Sequential(*layers))
        self.branches = nn.ModuleList(branches)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None):
        """xyz (B, 3, N), feats (B, C, N) or None -> new_xyz (B, 3, S), new_feats (B, C', S)."""
        b = xyz.shape[0]
        if self.npoint is None:
            grouped = xyz if feats is None else torch.cat([xyz, feats], dim=1)
            out = torch.max(self.branches[0](grouped.unsqueeze(-1)), dim=2)[0]  # (B, C', 1)
            return xyz.new_zeros(b, 3, 1), out
        xyz_t = xyz.transpose(1, 2).contiguous()  # (B, N, 3)
        feats_t = None if feats is None else feats.transpose(1, 2).contiguous()
        centres = index_points(xyz_t, fps(xyz_t, self.npoint))  # (B, S, 3)
        outs = []
        for radius, k, mlp in zip(self.radii, self.nsamples, self.branches):
            idx = query_ball(radius, k, xyz_t, centres)
            grouped = index_points(xyz_t, idx) - centres.unsqueeze(2)  # (B, S, K, 3)
            if feats_t is not None:
                grouped = torch.cat([grouped, index_points(feats_t, idx)], dim=-1)
            grouped = grouped.permute(0, 3, 1, 2)  # (B, C, S, K)
            outs.append(torch.max(mlp(grouped), dim=3)[0])
        return centres.transpose(1, 2), torch.cat(outs, dim=1)


SSG = [
    (512, [0.2], [32], [[64, 64, 128]]),
    (128, [0.4], [64], [[128, 128, 256]]),
    (None, [], [], [[256, 512, 1024]]),
]
MSG = [
    (512, [0.1, 0.2, 0.4], [16, 32, 128], [[32, 32, 64], [64, 64, 128], [64, 96, 128]]),
    (128, [0.2, 0.4, 0.8], [32, 64, 128], [[64, 64, 128], [128, 128, 256], [128, 128, 256]]),
    (None, [], [], [[256, 512, 1024]]),
]


class RefPointNet2(nn.Module):
    """PointNet++ classifier (xyz input): set abstractions, then the fully connected head."""

    def __init__(self, levels, num_classes: int = 40, width: float = 1.0, dropout: float = 0.4) -> None:
        super().__init__()
        sas, c = [], 0
        for npoint, radii, nsamples, mlps in levels:
            mlps = [[scaled(w, width) for w in mlp] for mlp in mlps]
            sas.append(RefSetAbstraction(npoint, radii, nsamples, c, mlps))
            c = sum(mlp[-1] for mlp in mlps)
        self.sa = nn.ModuleList(sas)
        self.head = RefHead(c, num_classes, [scaled(512, width), scaled(256, width)], dropout)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        xyz, feats = points.transpose(1, 2), None
        for sa in self.sa:
            xyz, feats = sa(xyz, feats)
        return self.head(feats.squeeze(-1))


# ---------------------------------------------------------------------------------------
# DGCNN
# ---------------------------------------------------------------------------------------


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """[x_j - x_i, x_i] for the k nearest neighbours j of each point i: (B, 2C, N, k)."""
    b, c, n = x.shape
    idx = knn_indices(x, k)  # (B, N, k)
    x_t = x.transpose(1, 2).contiguous()  # (B, N, C)
    nbrs = index_points(x_t, idx)  # (B, N, k, C)
    centre = x_t.unsqueeze(2).expand(-1, -1, k, -1)
    return torch.cat([nbrs - centre, centre], dim=3).permute(0, 3, 1, 2).contiguous()


class RefDGCNN(nn.Module):
    """DGCNN: EdgeConv 64-64-128-256 on dynamic kNN graphs, 1024 embedding, max+mean pooling."""

    def __init__(self, num_classes: int = 40, width: float = 1.0, k: int = 20, emb_dims: int = 1024,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.k = k
        widths = [scaled(c, width) for c in (64, 64, 128, 256)]
        convs, c = [], 3
        for w in widths:
            convs.append(conv_bn(2 * c, w, 2, bias=False, act="leaky"))
            c = w
        self.edge_convs = nn.ModuleList(convs)
        emb = scaled(emb_dims, width)
        self.embed = conv_bn(sum(widths), emb, 1, bias=False, act="leaky")
        self.head = RefHead(2 * emb, num_classes, [scaled(512, width), scaled(256, width)], dropout,
                            act="leaky", first_bias=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x, outs = points.transpose(1, 2), []
        for conv in self.edge_convs:
            x = torch.max(conv(edge_features(x, self.k)), dim=3)[0]
            outs.append(x)
        y = self.embed(torch.cat(outs, dim=1))
        return self.head(torch.cat([torch.max(y, dim=2)[0], torch.mean(y, dim=2)], dim=1))


# ---------------------------------------------------------------------------------------
# Construction and weight transfer
# ---------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "pointnet": lambda **kw: RefPointNet(**kw),
    "pointnet2_ssg": lambda **kw: RefPointNet2(SSG, **kw),
    "pointnet2_msg": lambda **kw: RefPointNet2(MSG, **kw),
    "dgcnn": lambda **kw: RefDGCNN(**kw),
}


def reference_names() -> list[str]:
    return sorted(_BUILDERS)


def create_reference(name: str, num_classes: int = 40, width: float = 1.0, **kwargs) -> nn.Module:
    """The reference twin of ``core.models.create_model(name, num_classes, width, **kwargs)``."""
    if name not in _BUILDERS:
        raise KeyError(f"no reference for model {name!r}; available: {', '.join(reference_names())}")
    return _BUILDERS[name](num_classes=num_classes, width=width, **kwargs)


def _unit_pairs(ours: nn.Module, ref: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(our module, reference module) pairs: our ``LinearBNAct`` / ``SlimLinear`` against the
    reference's ``Sequential(conv|linear, bn, act)`` / ``Linear``, in architecture order."""
    from core.models.dgcnn import DGCNN
    from core.models.pointnet import PointNet
    from core.models.pointnet2 import PointNet2

    def head(o, r):
        return list(zip(o.hidden, r.hidden)) + [(o.fc, r.fc)]

    def tnet(o, r):
        pairs = list(zip(o.mlp.layers, r.convs))
        return pairs + [(o.fc1, r.fc1), (o.fc2, r.fc2), (o.fc3, r.fc3)]

    if isinstance(ours, PointNet) and isinstance(ref, RefPointNet):
        pairs = tnet(ours.stn, ref.stn) + [(ours.conv1, ref.conv1)] + tnet(ours.fstn, ref.fstn)
        pairs += [(ours.conv2, ref.conv2), (ours.conv3, ref.conv3)]
    elif isinstance(ours, PointNet2) and isinstance(ref, RefPointNet2):
        pairs = []
        for level, sa in zip(ours.levels, ref.sa, strict=True):
            for branch, seq in zip(level.branches, sa.branches, strict=True):
                pairs += list(zip(branch.layers, seq, strict=True))
    elif isinstance(ours, DGCNN) and isinstance(ref, RefDGCNN):
        pairs = [(c.unit, r) for c, r in zip(ours.convs, ref.edge_convs, strict=True)]
        pairs.append((ours.embed, ref.embed))
    else:
        raise TypeError(f"no weight mapping from {type(ours).__name__} to {type(ref).__name__}")
    return pairs + head(ours.head, ref.head)


@torch.no_grad()
def load_from_ours(ref_model: nn.Module, our_model: nn.Module) -> list[tuple[str, str]]:
    """Copy the weights of a plain model of ours into its reference twin.

    Our ``SlimLinear`` weight ``(out, in)`` becomes the conv weight ``(out, in, 1[, 1])``; BN
    parameters and running statistics are copied as they are. Input channel order needs no
    permutation: both layouts concatenate [xyz_rel, features] (PointNet++), branches in order
    (MSG), [x_j - x_i, x_i] and cat(x1..x4) (DGCNN), cat(max, mean) (DGCNN head).

    Returns:
        ``(our name, reference name)`` of every tensor copied (parameters and buffers), so
        callers can compare gradients or statistics tensor by tensor.

    Raises:
        ValueError: a shape differs (e.g. a supernet with widths wider than the plain model).
    """
    our_names = {id(t): n for n, t in [*our_model.named_parameters(), *our_model.named_buffers()]}
    ref_names = {id(t): n for n, t in [*ref_model.named_parameters(), *ref_model.named_buffers()]}
    copied: list[tuple[str, str]] = []

    def copy(dst: torch.Tensor | None, src: torch.Tensor | None) -> None:
        if dst is None and src is None:
            return
        if dst is None or src is None:
            raise ValueError(f"bias present on one side only ({our_names.get(id(src))})")
        if tuple(dst.shape) != tuple(src.shape) + (1,) * (dst.dim() - src.dim()):
            raise ValueError(
                f"shape mismatch: ours {our_names[id(src)]} {tuple(src.shape)} vs reference "
                f"{ref_names[id(dst)]} {tuple(dst.shape)}"
            )
        dst.copy_(src.reshape(dst.shape))
        copied.append((our_names[id(src)], ref_names[id(dst)]))

    def copy_linear(dst: nn.Module, src: nn.Module) -> None:
        copy(dst.weight, src.weight)
        copy(dst.bias, src.bias)

    def copy_bn(dst: nn.Module, src: nn.Module) -> None:
        for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            copy(getattr(dst, attr), getattr(src, attr))

    all_ours = set(our_names.values())
    for mine, theirs in _unit_pairs(our_model, ref_model):
        if isinstance(theirs, nn.Sequential):  # LinearBNAct -> (conv | linear, bn, act)
            copy_linear(theirs[0], mine.linear)
            copy_bn(theirs[1], mine.bn)
        else:
            copy_linear(theirs, mine)
    missing = all_ours - {o for o, _ in copied}
    if missing:
        raise ValueError(f"tensors of ours without a reference counterpart: {sorted(missing)}")
    return copied


def reference_from_ours(our_model: nn.Module) -> nn.Module:
    """Build the reference twin of a plain model of ours and load its weights (same mode)."""
    cfg = our_model.model_config
    ref = create_reference(cfg.name, num_classes=cfg.num_classes, width=cfg.width, **dict(cfg.kwargs))
    load_from_ours(ref, our_model)
    return ref.train(our_model.training)

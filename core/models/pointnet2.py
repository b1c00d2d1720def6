"""PointNet++ classifiers (Qi et al., NeurIPS 2017): single-scale (SSG) and multi-scale (MSG).

Layout of the widely used PyTorch port (xyz input, grouped features ordered [xyz, features]).
Four exact rewrites make it fast on a CPU without changing its outputs:

* the first layer of each set abstraction is linear in ``[xyz_j - xyz_c, f_j]``, so it is applied
  once per *point* and gathered, instead of once per (centre, neighbour) pair;
* sampling and grouping indices come from :meth:`PointNet2.compute_grouping` and can be reused by
  every model with the same sampling layout (teacher and student, tiny and augmented passes,
  successive epochs of the same shape: they depend only on point distances);
* thin grouped MLPs (a tiny model's) run channels-first ``(C, rows)``, wide ones channels-last;
* each MLP's last BN and ReLU run after the max over the group (``LinearBNAct.forward_max``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from . import layers
from .layers import (
    LinearBNAct,
    SharedMLP,
    SlimLinear,
    WidthSpec,
    ball_query,
    count_linear_macs,
    farthest_point_sample,
    gather_points,
)
from .base import ClassifierBase, ClassifierHead


@dataclass(frozen=True)
class SALayout:
    """Sampling layout of one set abstraction level (``npoint=None`` groups everything)."""

    npoint: int | None
    radii: tuple[float, ...]
    nsamples: tuple[int, ...]
    mlps: tuple[tuple[int, ...], ...]


SSG_LAYOUT = (
    SALayout(512, (0.2,), (32,), ((64, 64, 128),)),
    SALayout(128, (0.4,), (64,), ((128, 128, 256),)),
    SALayout(None, (), (), ((256, 512, 1024),)),
)
MSG_LAYOUT = (
    SALayout(512, (0.1, 0.2, 0.4), (16, 32, 128), ((32, 32, 64), (64, 64, 128), (64, 96, 128))),
    SALayout(128, (0.2, 0.4, 0.8), (32, 64, 128), ((64, 64, 128), (128, 128, 256), (128, 128, 256))),
    SALayout(None, (), (), ((256, 512, 1024),)),
)


class SetAbstraction(nn.Module):
    """One set abstraction level: sample centres, group neighbours per radius, shared MLP, max."""

    def __init__(self, layout: SALayout, in_segments: Sequence, width: float, factors) -> None:
        super().__init__()
        self.layout = layout
        segs = [3, *in_segments]
        self.branches = nn.ModuleList(
            SharedMLP(segs, [WidthSpec(c, width, factors) for c in mlp]) for mlp in layout.mlps
        )

    @property
    def outs(self) -> list[SlimLinear]:
        return [b.out for b in self.branches]

    def forward(self, xyz, feats, group):
        """xyz (B,N,3), feats (B,N,C)|None, group: this level's indices -> (new_xyz, new_feats)."""
        b = xyz.shape[0]
        if self.layout.npoint is None:
            rows = xyz if feats is None else torch.cat([xyz, feats], -1)
            out = self.branches[0].forward_max(rows.reshape(-1, rows.shape[-1]), False, rows.shape[1])
            return xyz.new_zeros(b, 1, 3), out.unsqueeze(1)
        centres = gather_points(xyz, group["centres"])
        b, n, s = xyz.shape[0], xyz.shape[1], centres.shape[1]
        outs = []
        for mlp, nbr in zip(self.branches, group["neighbours"]):
            first = mlp.layers[0].linear
            w, bias = first.effective_weight()
            w_xyz, w_feat = w[:, :3], w[:, 3:]
            per_point = xyz @ w_xyz.t()
            if feats is not None:
                per_point = per_point + feats @ w_feat.t()
            if bias is not None:
                per_point = per_point + bias
            # Negated here, on the small tensor, and added below: autograd's backward of a
            # broadcast subtraction negates the full-size gradient before reducing it. (Not added
            # in place: on a view that records a CopySlices node, a full copy in backward.)
            neg_centre = centres @ -w_xyz.t()
            # Convention: MACs of the reference formulation (the layer applied per grouped row).
            count_linear_macs(nbr.numel(), w)
            k = nbr.shape[-1]
            if w.shape[0] <= layers.CHANNELS_FIRST_MAX:  # thin: gathered channels-first (C, B*S*K)
                flat = (nbr.reshape(b, -1) + torch.arange(b, device=nbr.device).unsqueeze(1) * n).reshape(-1)
                y = per_point.reshape(b * n, -1).t().contiguous().index_select(1, flat)
                y = y.view(-1, b * s, k) + neg_centre.reshape(b * s, -1).t().unsqueeze(2)
                y = mlp.forward_max(y.view(y.shape[0], -1), True, k, skip_first_linear=True)
            else:  # gathered rows (B*S*K, C)
                y = gather_points(per_point, nbr) + neg_centre.unsqueeze(2)
                y = mlp.forward_max(y.view(-1, y.shape[-1]), False, k, skip_first_linear=True)
            outs.append(y.reshape(b, s, -1))
        return centres, torch.cat(outs, -1) if len(outs) > 1 else outs[0]


class PointNet2(ClassifierBase):
    """PointNet++ classifier at any width; an augmentable supernet when ``aug_factors`` widen it."""


    def __init__(
        self,
        layout: Sequence[SALayout],
        num_classes: int = 40,
        width: float = 1.0,
        aug_factors: Sequence[float] = (1.0,),
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        self.layout = tuple(layout)
        levels, segs = [], []
        for sa in self.layout:
            level = SetAbstraction(sa, segs, width, aug_factors)
            levels.append(level)
            segs = level.outs
        self.levels = nn.ModuleList(levels)
        self.head = ClassifierHead(segs, num_classes, width, aug_factors, dropout=dropout)

    def grouping_key(self) -> tuple:
        return ("pointnet2", tuple((sa.npoint, sa.radii, sa.nsamples) for sa in self.layout))

    @torch.no_grad()
    def compute_grouping(self, xyz: torch.Tensor, start: torch.Tensor | None = None) -> list[dict]:
        """Sampling and grouping indices of every level for ``xyz`` (B, N, 3).

        ``start``: (B,) first FPS index of each cloud (``None``: point 0, deterministic).
        """
        groups, cur = [], xyz
        for sa in self.layout:
            if sa.npoint is None:
                groups.append({})
                continue
            centres_idx = farthest_point_sample(cur, sa.npoint, start)
            start = None
            centres = gather_points(cur, centres_idx)
            nbrs = [ball_query(cur, centres, r, k) for r, k in zip(sa.radii, sa.nsamples)]
            groups.append({"centres": centres_idx, "neighbours": nbrs})
            cur = centres
        return groups

    def forward_features(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        if grouping is None:
            grouping = self.compute_grouping(points)
        xyz, feats = points, None
        for level, group in zip(self.levels, grouping):
            xyz, feats = level(xyz, feats, group)
        return feats.squeeze(1)


def pointnet2_ssg(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> PointNet2:
    """PointNet++ SSG: 3 levels, 1.47M parameters at width 1."""
    return PointNet2(SSG_LAYOUT, num_classes, width, aug_factors, **kw)


def pointnet2_msg(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> PointNet2:
    """PointNet++ MSG (T3DNet's teacher): 1.75M parameters at width 1."""
    return PointNet2(MSG_LAYOUT, num_classes, width, aug_factors, **kw)


__all__ = ["PointNet2", "pointnet2_ssg", "pointnet2_msg", "LinearBNAct"]

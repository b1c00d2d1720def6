"""DGCNN classifier (Wang et al., ACM TOG 2019): four EdgeConv layers on a dynamic kNN graph.

EdgeConv's shared layer is linear in the edge feature ``[x_j - x_i, x_i]``:
``W1 x_j + (W2 - W1) x_i``. With the model config's ``fast_paths.per_point`` both terms are
computed once per point and gathered per edge, an exact rewrite that divides the layer's matmul
cost by ``k``. The first kNN graph (on xyz) can be shared between models via
:meth:`DGCNN.compute_grouping`; the later ones depend on learned features.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ClassifierBase, ClassifierHead
from .fused import FastPaths
from .ops import gather_points, knn, max_rows
from .slim import LinearBNAct, WidthSpec


class EdgeConv(nn.Module):
    """``max_j act(BN(W [x_j - x_i, x_i]))`` over the k nearest neighbours j of each point i."""

    def __init__(self, segment, width: WidthSpec) -> None:
        super().__init__()
        self.unit = LinearBNAct([segment, segment], width, bias=False, act="leaky")

    @property
    def out(self):
        return self.unit.out

    def forward(self, x: torch.Tensor, idx: torch.Tensor, fast: FastPaths) -> torch.Tensor:
        """x (B, N, C), idx (B, N, k) neighbours of each point -> (B, N, C_out)."""
        if not fast.per_point:
            nbr = gather_points(x, idx)
            centre = x.unsqueeze(2).expand_as(nbr)
            return max_rows(self.unit(torch.cat([nbr - centre, centre], -1)))
        w, _ = self.unit.linear.effective_weight()
        c = x.shape[-1]
        w_nbr, w_ctr = w[:, :c], w[:, c:]
        per_nbr = x @ w_nbr.t()
        per_ctr = x @ (w_ctr - w_nbr).t()
        y = gather_points(per_nbr, idx) + per_ctr.unsqueeze(2)
        return max_rows(self.unit.bn_act(y))


class DGCNN(ClassifierBase):
    """DGCNN at any width (EdgeConv 64-64-128-256, embedding 1024, head 512-256)."""

    def __init__(self, num_classes=40, width=1.0, aug_factors=(1.0,), k: int = 20, emb_dims: int = 1024,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.k = k
        convs, seg = [], 3
        for c in (64, 64, 128, 256):
            conv = EdgeConv(seg, WidthSpec(c, width, aug_factors))
            convs.append(conv)
            seg = conv.out
        self.convs = nn.ModuleList(convs)
        self.embed = LinearBNAct([c.out for c in convs], WidthSpec(emb_dims, width, aug_factors),
                                 bias=False, act="leaky")
        self.head = ClassifierHead([self.embed.out, self.embed.out], num_classes, width, aug_factors,
                                   dropout=dropout, act="leaky", first_bias=False)

    def grouping_key(self) -> tuple:
        return ("dgcnn", self.k)

    def grouping_cost(self, num_points: int = 1024) -> int:
        """One N x N distance matrix per EdgeConv (its kNN graph)."""
        return len(self.convs) * num_points * num_points

    @torch.no_grad()
    def compute_grouping(self, xyz: torch.Tensor, start=None, impl: str = "eager", threads: int | None = None):
        return knn(xyz, self.k)

    def forward_features(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        x, outs, fast = points, [], self.fast_paths
        for i, conv in enumerate(self.convs):
            idx = grouping if (i == 0 and grouping is not None) else knn(x, self.k)
            x = conv(x, idx, fast)
            outs.append(x)
        y = self.embed(torch.cat(outs, -1))
        return torch.cat([max_rows(y), y.mean(1)], -1)


def dgcnn(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> DGCNN:
    """DGCNN (k=20): 1.81M parameters at width 1."""
    return DGCNN(num_classes, width, aug_factors, **kw)

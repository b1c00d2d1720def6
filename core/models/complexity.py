"""Parameters, MACs and sampling/grouping cost per sample, with the convention stated.

Convention: MACs are the multiply-accumulates of the linear (1x1 convolution / fully connected)
layers for one sample, counted as in the reference formulation (a grouped layer costs one row per
(centre, neighbour) pair, even where our implementation computes it once per point). BatchNorm,
activations, pooling are not counted. Sampling and grouping are reported separately as pairwise
distance evaluations (FPS, ball query, kNN), each costing about 3*C multiply-adds for C channels.
"""

from __future__ import annotations

import torch

from . import layers
from .base import ClassifierBase


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: ClassifierBase, num_points: int = 1024) -> int:
    """Linear-layer MACs per sample at the model's active widths (see module docstring)."""
    was_training = model.training
    model.eval()
    layers.MAC_COUNTER = []
    try:
        model(torch.rand(1, num_points, 3) * 2 - 1)
        return int(sum(layers.MAC_COUNTER))
    finally:
        layers.MAC_COUNTER = None
        model.train(was_training)


def grouping_cost(model: ClassifierBase, num_points: int = 1024) -> int:
    """Pairwise distance evaluations per sample for sampling and grouping."""
    from .dgcnn import DGCNN
    from .pointnet2 import PointNet2

    if isinstance(model, PointNet2):
        total, n = 0, num_points
        for sa in model.layout:
            if sa.npoint is None:
                continue
            s = min(sa.npoint, n)
            total += s * n  # farthest point sampling
            total += s * n  # one distance matrix shared by the radii of a level
            n = s
        return total
    if isinstance(model, DGCNN):
        return len(model.convs) * num_points * num_points
    return 0


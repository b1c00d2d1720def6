"""PointNet classifier (Qi et al., CVPR 2017) with the input (3x3) and feature (kxk) T-Nets."""

from __future__ import annotations

import torch
from torch import nn

from .base import ClassifierBase, ClassifierHead
from .fused import FastPaths, mlp_max
from .slim import LinearBNAct, SharedMLP, SlimGridLinear, SlimLinear, WidthSpec


class TNet(nn.Module):
    """Predicts a ``k x k`` transform (identity-initialised) from a cloud of features.

    ``grid_of`` is the layer whose width ``k`` follows (feature T-Net); ``None`` means k = 3.
    """

    def __init__(self, in_segments, width, factors, grid_of=None) -> None:
        super().__init__()
        self.mlp = SharedMLP(in_segments, [WidthSpec(c, width, factors) for c in (64, 128, 1024)])
        self.fc1 = LinearBNAct([self.mlp.out], WidthSpec(512, width, factors))
        self.fc2 = LinearBNAct([self.fc1.out], WidthSpec(256, width, factors))
        if grid_of is None:
            self.fc3 = SlimLinear([self.fc2.out], 9, augmentable=False)
        else:
            self.fc3 = SlimGridLinear([self.fc2.out], grid_of)
        nn.init.zeros_(self.fc3.weight)
        nn.init.zeros_(self.fc3.bias)

    def forward(self, x: torch.Tensor, fast: FastPaths) -> torch.Tensor:
        """x (B, N, k) -> (B, k, k): max over points of the shared MLP, then fully connected layers."""
        b, n, k = x.shape
        y = self.fc3(self.fc2(self.fc1(mlp_max(self.mlp.layers, x.reshape(b * n, k), n, fast))))
        return y.view(-1, k, k) + torch.eye(k, device=x.device, dtype=x.dtype)


class PointNet(ClassifierBase):
    """PointNet (both T-Nets): 3.47M parameters at width 1."""

    def __init__(self, num_classes=40, width=1.0, aug_factors=(1.0,), dropout: float = 0.4) -> None:
        super().__init__()
        self.stn = TNet([3], width, aug_factors)
        self.conv1 = LinearBNAct([3], WidthSpec(64, width, aug_factors))
        self.fstn = TNet([self.conv1.out], width, aug_factors, grid_of=self.conv1.out)
        self.conv2 = LinearBNAct([self.conv1.out], WidthSpec(128, width, aug_factors))
        self.conv3 = LinearBNAct([self.conv2.out], WidthSpec(1024, width, aug_factors), act="none")
        self.head = ClassifierHead([self.conv3.out], num_classes, width, aug_factors, dropout=dropout)

    def forward_features(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        fast = self.fast_paths
        x = torch.bmm(points, self.stn(points, fast))
        x = self.conv1(x)
        x = self.conv2(torch.bmm(x, self.fstn(x, fast)))
        b, n, c = x.shape  # the max over points of conv3
        return mlp_max([self.conv3], x.reshape(b * n, c), n, fast)


def pointnet(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> PointNet:
    """PointNet with input and feature transforms."""
    return PointNet(num_classes, width, aug_factors, **kw)

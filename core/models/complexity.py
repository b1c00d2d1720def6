"""Parameters, MACs and sampling/grouping cost per sample, with the convention stated.

Convention: MACs are the multiply-accumulates of the linear (1x1 convolution / fully connected)
layers for one sample, counted as in the reference formulation (a grouped layer costs one row per
(centre, neighbour) pair, even where the fast paths compute it once per point). BatchNorm,
activations, pooling are not counted. Sampling and grouping are reported separately as pairwise
distance evaluations (FPS, ball query, kNN), each costing about 3*C multiply-adds for C channels.
"""

from __future__ import annotations

import torch

from .base import ClassifierBase
from .fused import PLAIN
from .slim import SlimLinear


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: ClassifierBase, num_points: int = 1024) -> int:
    """Linear-layer MACs per sample at the model's active widths (see module docstring).

    Counted by a forward hook on every :class:`SlimLinear` (``rows x in x out`` of each call)
    while the model runs its plain formulation (:data:`~core.models.fused.PLAIN`), in which every
    linear layer is applied to every row of the reference formulation."""
    macs: list[int] = []

    def count(_module, args, output) -> None:
        macs.append(args[0].numel() * output.shape[-1])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, SlimLinear)]
    was_training, config = model.training, model.model_config
    model.eval()
    model.fast_paths = PLAIN
    try:
        model(torch.rand(1, num_points, 3) * 2 - 1)
        return int(sum(macs))
    finally:
        model.model_config = config
        for hook in hooks:
            hook.remove()
        model.train(was_training)


def grouping_cost(model: ClassifierBase, num_points: int = 1024) -> int:
    """Pairwise distance evaluations per sample for sampling and grouping (the model's
    :meth:`~core.models.base.ClassifierBase.grouping_cost`)."""
    return model.grouping_cost(num_points)

"""PointNet++ classifiers (Qi et al., NeurIPS 2017): single-scale (SSG) and multi-scale (MSG).

Layout of the widely used PyTorch port (xyz input, grouped features ordered [xyz, features]).
A set abstraction level samples centres, groups each centre's neighbours within a radius as
rows ``[xyz_j - xyz_c, f_j]``, applies a shared MLP to every row and takes the max over each
group. Exact rewrites make it fast on a CPU without changing its outputs:

* sampling and grouping indices come from :meth:`PointNet2.compute_grouping` and can be reused by
  every model with the same sampling layout (teacher and student, tiny and augmented passes,
  successive epochs of the same shape: they depend only on point distances);
* the model config's :class:`~core.models.fused.FastPaths`: the first layer of each level
  applied once per *point* and gathered, instead of once per (centre, neighbour) row
  (``per_point``); thin grouped MLPs run channels-first, and each MLP's last BN and ReLU after
  the max over the group (:func:`~core.models.fused.mlp_max`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core import native

from .fused import FastPaths, mlp_max
from .ops import (
    ball_query,
    ball_query_by_flag,
    farthest_point_sample,
    farthest_point_sample_pairwise,
    gather_points,
)
from .slim import LinearBNAct, SharedMLP, SlimLinear, WidthSpec, activation
from .base import ClassifierBase, ClassifierHead, InferenceModule


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

    def forward(self, xyz, feats, group, fast: FastPaths):
        """xyz (B,N,3), feats (B,N,C)|None, group: this level's indices -> (new_xyz, new_feats)."""
        b = xyz.shape[0]
        if self.layout.npoint is None:  # one group of every point, features [xyz, f]
            rows = xyz if feats is None else torch.cat([xyz, feats], -1)
            out = mlp_max(self.branches[0].layers, rows.reshape(-1, rows.shape[-1]), rows.shape[1], fast)
            return xyz.new_zeros(b, 1, 3), out.unsqueeze(1)
        centres = gather_points(xyz, group["centres"])
        s = centres.shape[1]
        outs = []
        for mlp, nbr in zip(self.branches, group["neighbours"]):
            k = nbr.shape[-1]
            if fast.per_point:
                y, y_cf = self._first_linear_per_point(mlp.layers[0], xyz, feats, centres, nbr, fast)
                y = mlp_max(mlp.layers, y, k, fast, x_cf=y_cf, first_linear_done=True)
            else:
                rows = self._grouped_rows(xyz, feats, centres, nbr)
                y = mlp_max(mlp.layers, rows.view(-1, rows.shape[-1]), k, fast)
            outs.append(y.reshape(b, s, -1))
        return centres, torch.cat(outs, -1) if len(outs) > 1 else outs[0]

    @staticmethod
    def _grouped_rows(xyz, feats, centres, nbr) -> torch.Tensor:
        """The grouped rows ``[xyz_j - xyz_c, f_j]`` of every centre c and neighbour j: (B, S, K, 3 + C)."""
        rel = gather_points(xyz, nbr) - centres.unsqueeze(2)
        return rel if feats is None else torch.cat([rel, gather_points(feats, nbr)], -1)

    @staticmethod
    def _first_linear_per_point(first: LinearBNAct, xyz, feats, centres, nbr, fast: FastPaths):
        """The first layer's linear output on the grouped rows, ``W [xyz_j - xyz_c, f_j] + b =
        (W_xyz xyz_j + W_f f_j + b) - W_xyz xyz_c``: the bracket computed once per point and
        gathered. Returns it as 2-D rows ``(B*S*K, C)``, or channels-first ``(C, B*S*K)`` for a layer
        at most ``fast.channels_first_max`` wide, and the layout flag."""
        b, n, s = xyz.shape[0], xyz.shape[1], centres.shape[1]
        w, bias = first.linear.effective_weight()
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
        k = nbr.shape[-1]
        if w.shape[0] <= fast.channels_first_max:  # thin: gathered channels-first (C, B*S*K)
            flat = (nbr.reshape(b, -1) + torch.arange(b, device=nbr.device).unsqueeze(1) * n).reshape(-1)
            y = per_point.reshape(b * n, -1).t().contiguous().index_select(1, flat)
            y = y.view(-1, b * s, k) + neg_centre.reshape(b * s, -1).t().unsqueeze(2)
            return y.view(y.shape[0], -1), True
        y = gather_points(per_point, nbr) + neg_centre.unsqueeze(2)  # gathered rows (B*S*K, C)
        return y.view(-1, y.shape[-1]), False


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

    def forward_features(self, points: torch.Tensor, grouping=None) -> torch.Tensor:
        if grouping is None:
            grouping = self.compute_grouping(points)
        xyz, feats, fast = points, None, self.fast_paths
        for level, group in zip(self.levels, grouping):
            xyz, feats = level(xyz, feats, group, fast)
        return feats.squeeze(1)

    def grouping_key(self) -> tuple:
        return ("pointnet2", tuple((sa.npoint, sa.radii, sa.nsamples) for sa in self.layout))

    def grouping_cost(self, num_points: int = 1024) -> int:
        """Per sampled level: FPS (S x N distances) and one S x N distance matrix shared by its radii."""
        total, n = 0, num_points
        for sa in self.layout:
            if sa.npoint is None:
                continue
            s = min(sa.npoint, n)
            total += 2 * s * n
            n = s
        return total

    @torch.no_grad()
    def compute_grouping(self, xyz: torch.Tensor, start: torch.Tensor | None = None, impl: str = "eager",
                         threads: int | None = None) -> list[dict]:
        """Sampling and grouping indices of every level for ``xyz`` (B, N, 3).

        ``start``: (B,) first FPS index of each cloud (``None``: point 0, deterministic).
        ``impl``: how they are computed, always the same indices: ``eager`` (torch, any device
        and dtype), ``native`` (compiled kernels of :mod:`core.native` on float32 CPU
        tensors; eager where those do not apply), ``traceable`` (operations that export to a
        graph; start at point 0). ``threads``: the compiled kernels' (None: torch's).
        """
        if impl == "native" and native.AVAILABLE and xyz.device.type == "cpu" and xyz.dtype == torch.float32:
            return self._grouping_native(xyz, start, threads)
        if impl not in ("eager", "native", "traceable"):
            raise ValueError(f"impl must be 'eager', 'native' or 'traceable', got {impl!r}")
        traceable = impl == "traceable"
        query = ball_query_by_flag if traceable and torch.onnx.is_in_onnx_export() else ball_query
        groups, cur = [], xyz
        for sa in self.layout:
            if sa.npoint is None:
                groups.append({})
                continue
            if traceable:
                centres_idx = farthest_point_sample_pairwise(cur, sa.npoint)
            else:
                centres_idx = farthest_point_sample(cur, sa.npoint, start)
            start = None
            centres = gather_points(cur, centres_idx)
            nbrs = [query(cur, centres, r, k) for r, k in zip(sa.radii, sa.nsamples)]
            groups.append({"centres": centres_idx, "neighbours": nbrs})
            cur = centres
        return groups

    def _grouping_native(self, xyz: torch.Tensor, start: torch.Tensor | None, threads: int | None) -> list[dict]:
        """:meth:`compute_grouping` by the compiled kernels of :mod:`core.native`, the points and
        indices kept in numpy between them (a single cloud's torch operations cost a tenth of its
        whole call)."""
        groups, cur = [], np.ascontiguousarray(xyz.detach().numpy())
        start_np = None if start is None else start.cpu().numpy()
        clouds = np.arange(len(cur))[:, None]
        for sa in self.layout:
            if sa.npoint is None:
                groups.append({})
                continue
            centres_idx = native.farthest_point_sample(cur, sa.npoint, start_np, threads)
            start_np = None
            centres = cur[clouds, centres_idx]  # gather_points
            nbrs = [torch.from_numpy(native.ball_query(cur, centres, r, k, threads))
                    for r, k in zip(sa.radii, sa.nsamples)]
            groups.append({"centres": torch.from_numpy(centres_idx), "neighbours": nbrs})
            cur = centres
        return groups

    def inference_module(self, num_points: int = 1024) -> "PointNet2Inference":
        return PointNet2Inference(self, num_points)


class PointNet2Inference(InferenceModule):
    """A :class:`PointNet2` in eval mode, made for inference: the same function in fewer operations.

    Every BatchNorm is folded into the linear layer before it (:meth:`LinearBNAct.folded`), tensors
    are 2-D rows ``(M, C)`` throughout, and each MLP's activation runs after the max over the group
    (activations are non-decreasing). The grouping comes as flat row indices into the batch's
    rows (:meth:`grouping_inputs`: per level the centres ``(B*S,)``, and per radius the neighbours
    ``(B*S*K,)`` with each cloud's offset added and the group of each neighbour row ``(B*S*K,)``), so
    each gather is one ``index_select`` (one ONNX ``Gather``). The first level's grouped rows depend
    on the points alone, so :meth:`grouping_inputs` computes them too, gathered by a compiled kernel
    (ONNX Runtime gathers thin rows one copy at a time: a third of the student's network time).
    Logits equal the model's up to float32 rounding (tested).
    """

    def __init__(self, model: PointNet2, num_points: int = 1024) -> None:
        super().__init__()
        self.num_points = num_points
        self.input_names = ["points"]
        self._levels: list[dict] = []
        n = num_points
        for li, (sa, level) in enumerate(zip(model.layout, model.levels)):
            branches = []
            for bi, mlp in enumerate(level.branches):
                layers_ = []
                for j, layer in enumerate(mlp.layers):
                    w, b = layer.folded()
                    name = f"l{li}b{bi}m{j}"
                    if j == 0 and sa.npoint is not None:  # applied per point: xyz and feature columns apart
                        self.register_buffer(name + "_xyz", w[:, :3].t().contiguous())
                        self.register_buffer(name + "_feat", w[:, 3:].t().contiguous() if w.shape[1] > 3 else None)
                    else:
                        self.register_buffer(name + "_w", w.t().contiguous())
                    self.register_buffer(name + "_b", b)
                    layers_.append((name, layer.act))
                branches.append({"layers": layers_, "k": None if sa.npoint is None else sa.nsamples[bi]})
            if sa.npoint is None:
                self._levels.append({"group_all": True, "rows": n, "branches": branches})
                continue
            s = min(sa.npoint, n)
            self.input_names += [f"centres{li}"]
            first = not self._levels  # its grouped rows come as inputs
            for bi in range(len(branches)):
                self.input_names += [f"rows{li}_{bi}"] if first else [f"neighbours{li}_{bi}", f"group_of{li}_{bi}"]
            self._levels.append({"group_all": False, "branches": branches, "rows_given": first})
            n = s
        self._head = []
        for j, layer in enumerate(model.head.hidden):
            w, b = layer.folded()
            self.register_buffer(f"head{j}_w", w.t().contiguous())
            self.register_buffer(f"head{j}_b", b)
            self._head.append((f"head{j}", layer.act))
        w, b = model.head.fc.effective_weight()
        self.register_buffer("fc_w", w.detach().t().contiguous())
        self.register_buffer("fc_b", b.detach().clone() if b is not None else torch.zeros(w.shape[0]))

    def grouping_inputs(self, grouping: list[dict], points: torch.Tensor, threads: int | None = None) -> list[torch.Tensor]:
        # The index arithmetic in numpy: a few microseconds per operation where torch's dispatch
        # takes several times that; the inputs go to the points' device.
        out, n, device = [], self.num_points, points.device
        xyz = points.reshape(-1, 3)
        for level, g in zip(self._levels, grouping):
            if not g:
                continue
            centres = g["centres"].cpu().numpy()
            offset = np.arange(centres.shape[0])[:, None] * n
            flat_centres = torch.from_numpy((centres + offset).reshape(-1)).to(device)
            out.append(flat_centres)
            for br, nb in zip(level["branches"], g["neighbours"]):
                k = nb.shape[-1]
                flat_nb = torch.from_numpy((nb.cpu().numpy() + offset[:, :, None]).reshape(-1)).to(device)
                if level["rows_given"]:  # (one cloud's rows: too few to share between threads)
                    out.append(self._first_rows(br["layers"], xyz, flat_centres, flat_nb, k,
                                                threads=1 if len(points) == 1 else threads))
                else:
                    out.append(flat_nb)
                    out.append(torch.from_numpy(np.repeat(np.arange(centres.size), k)).to(device))
            n = centres.shape[1]
        return out

    def _first_rows(self, layers_: list, xyz: torch.Tensor, centres: torch.Tensor, neighbours: torch.Tensor,
                    k: int, threads: int | None) -> torch.Tensor:
        """The first level's grouped rows: its first layer applied to each point, less the centre's
        term (``W (x_j - c_i) + b``), one row per neighbour slot, then that layer's activation unless
        it is the MLP's last (which runs after the max). ``threads``: the kernel's (None: torch's)."""
        name, act = layers_[0]
        act = act if len(layers_) > 1 else "none"
        w_xyz, b = getattr(self, name + "_xyz"), getattr(self, name + "_b")
        if native.AVAILABLE and xyz.device.type == "cpu" and xyz.dtype == torch.float32 and act in ("relu", "none"):
            return torch.from_numpy(native.group_rows(xyz.numpy(), w_xyz.numpy(), b.numpy(), centres.numpy(),
                                                      neighbours.numpy(), k, relu=act == "relu", threads=threads))
        per_point = torch.addmm(b, xyz, w_xyz)
        rows = per_point.index_select(0, neighbours) - (xyz.index_select(0, centres) @ w_xyz).repeat_interleave(k, 0)
        return activation(rows, act)

    def _rest(self, h: torch.Tensor, layers_: list, k: int, first_done: bool, activated: bool = False) -> torch.Tensor:
        """The layers after the first (``first_done``: ``h`` is the first's linear output, and with
        ``activated`` its activation too), the last one pooled over runs of ``k`` rows, then its
        activation."""
        for j, (name, act) in enumerate(layers_):
            if j == 0 and first_done:
                if len(layers_) > 1 and not activated:
                    h = activation(h, act)
                continue
            h = torch.addmm(getattr(self, name + "_b"), h, getattr(self, name + "_w"))
            if j < len(layers_) - 1:
                h = activation(h, act)
        return activation(h.reshape(-1, k, h.shape[-1]).amax(1), layers_[-1][1])

    def forward(self, points: torch.Tensor, *index: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(points, *index))

    def forward_features(self, points: torch.Tensor, *index: torch.Tensor) -> torch.Tensor:
        """(B, C) global features: the model's ``forward_features`` (its embedding before the head)."""
        xyz, feats = points.reshape(-1, 3), None
        index_iter = iter(index)
        for level in self._levels:
            if level["group_all"]:
                rows = xyz if feats is None else torch.cat([xyz, feats], 1)
                br = level["branches"][0]
                feats = self._rest(rows, br["layers"], level["rows"], first_done=False)
                continue
            centres = xyz.index_select(0, next(index_iter))
            outs = []
            for br in level["branches"]:
                if level["rows_given"]:
                    outs.append(self._rest(next(index_iter), br["layers"], br["k"], first_done=True, activated=True))
                    continue
                nbr, group_of = next(index_iter), next(index_iter)
                name = br["layers"][0][0]
                w_xyz, w_feat = getattr(self, name + "_xyz"), getattr(self, name + "_feat")
                per_point = torch.addmm(getattr(self, name + "_b"), xyz, w_xyz)
                if w_feat is not None:
                    per_point = per_point + feats @ w_feat
                # The centre's term gathered to every row of its group: a same-shape subtraction
                # (a broadcast one over the thin (B*S, K, C) tensor was most of ONNX Runtime's time).
                h = per_point.index_select(0, nbr) - (centres @ w_xyz).index_select(0, group_of)
                outs.append(self._rest(h, br["layers"], br["k"], first_done=True))
            feats = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
            xyz = centres
        return feats

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits from :meth:`forward_features`."""
        for name, act in self._head:
            feats = activation(torch.addmm(getattr(self, name + "_b"), feats, getattr(self, name + "_w")), act)
        return torch.addmm(self.fc_b, feats, self.fc_w)


def pointnet2_ssg(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> PointNet2:
    """PointNet++ SSG: 3 levels, 1.47M parameters at width 1."""
    return PointNet2(SSG_LAYOUT, num_classes, width, aug_factors, **kw)


def pointnet2_msg(num_classes: int = 40, width: float = 1.0, aug_factors=(1.0,), **kw) -> PointNet2:
    """PointNet++ MSG (T3DNet's teacher): 1.75M parameters at width 1."""
    return PointNet2(MSG_LAYOUT, num_classes, width, aug_factors, **kw)


__all__ = ["PointNet2", "PointNet2Inference", "pointnet2_ssg", "pointnet2_msg"]

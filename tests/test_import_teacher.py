"""Importing teachers trained with the most used PyTorch PointNet / PointNet++ / DGCNN code.

The originals are rebuilt here as minimal channels-first references (1x1 Conv1d / Conv2d and
BatchNorm modules under the original code's module names, so their ``state_dict()`` has the
original key names and shapes), written independently of ``core.models``. Their checkpoints are
saved as the original training scripts save them; the import must give the same probabilities on
the same points, or refuse with one line and write nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# Minimal references of the originals (eval-mode maths; FPS starts at point 0)
# ---------------------------------------------------------------------------------------


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, S, C) x (B, N, C) -> (B, S, N) squared distances, as the port computes them."""
    d = -2 * torch.matmul(a, b.permute(0, 2, 1))
    d += torch.sum(a ** 2, -1).unsqueeze(-1)
    d += torch.sum(b ** 2, -1).unsqueeze(1)
    return d


def _take(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    batch = torch.arange(points.shape[0]).view(-1, *([1] * (idx.dim() - 1))).expand_as(idx)
    return points[batch, idx]


def _fps_from_zero(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    b, n, _ = xyz.shape
    out = torch.zeros(b, npoint, dtype=torch.long)
    dist = torch.full((b, n), 1e10)
    cur = torch.zeros(b, dtype=torch.long)
    for i in range(npoint):
        out[:, i] = cur
        d = ((xyz - xyz[torch.arange(b), cur].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.where(d < dist, d, dist)
        cur = dist.max(-1)[1]
    return out


def _ball(radius: float, nsample: int, xyz: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    b, n, _ = xyz.shape
    idx = torch.arange(n).view(1, 1, n).repeat(b, centres.shape[1], 1)
    idx[_sq_dist(centres, xyz) > radius ** 2] = n
    idx = idx.sort(dim=-1)[0][:, :, :nsample]
    first = idx[:, :, :1].expand_as(idx)
    return torch.where(idx == n, first, idx)


class RefSA(nn.Module):
    """``PointNetSetAbstraction``: keys ``mlp_convs.j`` / ``mlp_bns.j``; input [xyz_rel, features]."""

    def __init__(self, npoint, radius, nsample, in_channel, mlp, group_all):
        super().__init__()
        self.npoint, self.radius, self.nsample, self.group_all = npoint, radius, nsample, group_all
        self.mlp_convs, self.mlp_bns = nn.ModuleList(), nn.ModuleList()
        for c in mlp:
            self.mlp_convs.append(nn.Conv2d(in_channel, c, 1))
            self.mlp_bns.append(nn.BatchNorm2d(c))
            in_channel = c

    def forward(self, xyz, feats):  # (B, 3, N), (B, D, N) | None
        xyz = xyz.permute(0, 2, 1)
        feats = None if feats is None else feats.permute(0, 2, 1)
        if self.group_all:
            centres = torch.zeros(xyz.shape[0], 1, 3)
            grouped = xyz.unsqueeze(1)
            if feats is not None:
                grouped = torch.cat([grouped, feats.unsqueeze(1)], -1)
        else:
            centres = _take(xyz, _fps_from_zero(xyz, self.npoint))
            idx = _ball(self.radius, self.nsample, xyz, centres)
            grouped = _take(xyz, idx) - centres.unsqueeze(2)
            if feats is not None:
                grouped = torch.cat([grouped, _take(feats, idx)], -1)
        x = grouped.permute(0, 3, 2, 1)  # (B, C, K, S)
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            x = F.relu(bn(conv(x)))
        return centres.permute(0, 2, 1), x.max(2)[0]


class RefSAMsg(nn.Module):
    """``PointNetSetAbstractionMsg``: keys ``conv_blocks.i.j`` / ``bn_blocks.i.j``; input [features, xyz_rel]."""

    def __init__(self, npoint, radii, nsamples, in_channel, mlps):
        super().__init__()
        self.npoint, self.radii, self.nsamples = npoint, radii, nsamples
        self.conv_blocks, self.bn_blocks = nn.ModuleList(), nn.ModuleList()
        for mlp in mlps:
            convs, bns, c_in = nn.ModuleList(), nn.ModuleList(), in_channel + 3
            for c in mlp:
                convs.append(nn.Conv2d(c_in, c, 1))
                bns.append(nn.BatchNorm2d(c))
                c_in = c
            self.conv_blocks.append(convs)
            self.bn_blocks.append(bns)

    def forward(self, xyz, feats):
        xyz = xyz.permute(0, 2, 1)
        feats = None if feats is None else feats.permute(0, 2, 1)
        centres = _take(xyz, _fps_from_zero(xyz, self.npoint))
        outs = []
        for radius, k, convs, bns in zip(self.radii, self.nsamples, self.conv_blocks, self.bn_blocks):
            idx = _ball(radius, k, xyz, centres)
            g = _take(xyz, idx) - centres.unsqueeze(2)
            if feats is not None:
                g = torch.cat([_take(feats, idx), g], -1)
            x = g.permute(0, 3, 2, 1)
            for conv, bn in zip(convs, bns):
                x = F.relu(bn(conv(x)))
            outs.append(x.max(2)[0])
        return centres.permute(0, 2, 1), torch.cat(outs, 1)


class RefPointNet2Cls(nn.Module):
    """``pointnet2_cls_ssg`` / ``pointnet2_cls_msg`` ``get_model`` (xyz input, or xyz + normals)."""

    def __init__(self, msg: bool, num_class: int = 40, normals: bool = False):
        super().__init__()
        self.normals = normals
        if msg:
            self.sa1 = RefSAMsg(512, [0.1, 0.2, 0.4], [16, 32, 128], 3 if normals else 0,
                                [[32, 32, 64], [64, 64, 128], [64, 96, 128]])
            self.sa2 = RefSAMsg(128, [0.2, 0.4, 0.8], [32, 64, 128], 320,
                                [[64, 64, 128], [128, 128, 256], [128, 128, 256]])
            self.sa3 = RefSA(None, None, None, 640 + 3, [256, 512, 1024], True)
        else:
            self.sa1 = RefSA(512, 0.2, 32, 6 if normals else 3, [64, 64, 128], False)
            self.sa2 = RefSA(128, 0.4, 64, 128 + 3, [128, 128, 256], False)
            self.sa3 = RefSA(None, None, None, 256 + 3, [256, 512, 1024], True)
        self.fc1, self.bn1, self.drop1 = nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.Dropout(0.4)
        self.fc2, self.bn2, self.drop2 = nn.Linear(512, 256), nn.BatchNorm1d(256), nn.Dropout(0.4)
        self.fc3 = nn.Linear(256, num_class)

    def forward(self, x):  # (B, 3, N)
        xyz, feats = self.sa1(x, None)
        xyz, feats = self.sa2(xyz, feats)
        _, feats = self.sa3(xyz, feats)
        h = self.drop1(F.relu(self.bn1(self.fc1(feats.view(x.shape[0], 1024)))))
        h = self.drop2(F.relu(self.bn2(self.fc2(h))))
        return F.log_softmax(self.fc3(h), -1)


class RefSTN(nn.Module):
    """``STN3d`` / ``STNkd``: conv1..3 + bn1..3, fc1..3 + bn4, bn5; identity added."""

    def __init__(self, k: int, channel: int | None = None):
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv1d(channel or k, 64, 1)
        self.conv2, self.conv3 = nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, k * k)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)
        self.bn4, self.bn5 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x))).max(2)[0]
        x = F.relu(self.bn5(self.fc2(F.relu(self.bn4(self.fc1(x))))))
        return (self.fc3(x) + torch.eye(self.k).flatten()).view(-1, self.k, self.k)


class RefEncoder(nn.Module):
    def __init__(self, channel: int):
        super().__init__()
        self.stn = RefSTN(3, channel)
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(channel, 64, 1), nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)
        self.fstn = RefSTN(64)

    def forward(self, x):  # (B, 3, N)
        x = torch.bmm(x.transpose(2, 1), self.stn(x)).transpose(2, 1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = torch.bmm(x.transpose(2, 1), self.fstn(x)).transpose(2, 1)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x)).max(2)[0]


class RefPointNetCls(nn.Module):
    """``pointnet_cls`` ``get_model``: keys ``feat.*``, fc1..3, bn1, bn2 (dropout before bn2)."""

    def __init__(self, num_class: int = 40, normals: bool = False):
        super().__init__()
        self.feat = RefEncoder(6 if normals else 3)
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, num_class)
        self.dropout = nn.Dropout(0.4)
        self.bn1, self.bn2 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):
        x = F.relu(self.bn1(self.fc1(self.feat(x))))
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return F.log_softmax(self.fc3(x), 1)


def _edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, N) -> (B, 2C, N, k): [x_j - x_i, x_i] over the k nearest j (negative distance top-k)."""
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x ** 2, dim=1, keepdim=True)
    idx = (-xx - inner - xx.transpose(2, 1)).topk(k=k, dim=-1)[1]
    pts = x.transpose(2, 1)
    nbrs = _take(pts, idx)
    centre = pts.unsqueeze(2).expand(-1, -1, k, -1)
    return torch.cat([nbrs - centre, centre], 3).permute(0, 3, 1, 2)


class RefDGCNN(nn.Module):
    """The DGCNN authors' ``DGCNN``: bn1..bn5 registered both as attributes and inside conv1..conv5."""

    def __init__(self, k: int = 20, emb_dims: int = 1024, output_channels: int = 40):
        super().__init__()
        self.k = k
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(c) for c in (64, 64, 128, 256))
        self.bn5 = nn.BatchNorm1d(emb_dims)
        act = lambda: nn.LeakyReLU(negative_slope=0.2)
        self.conv1 = nn.Sequential(nn.Conv2d(6, 64, 1, bias=False), self.bn1, act())
        self.conv2 = nn.Sequential(nn.Conv2d(128, 64, 1, bias=False), self.bn2, act())
        self.conv3 = nn.Sequential(nn.Conv2d(128, 128, 1, bias=False), self.bn3, act())
        self.conv4 = nn.Sequential(nn.Conv2d(256, 256, 1, bias=False), self.bn4, act())
        self.conv5 = nn.Sequential(nn.Conv1d(512, emb_dims, 1, bias=False), self.bn5, act())
        self.linear1, self.bn6 = nn.Linear(emb_dims * 2, 512, bias=False), nn.BatchNorm1d(512)
        self.linear2, self.bn7 = nn.Linear(512, 256), nn.BatchNorm1d(256)
        self.linear3 = nn.Linear(256, output_channels)
        self.dp1, self.dp2 = nn.Dropout(0.5), nn.Dropout(0.5)

    def forward(self, x):
        outs = []
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = conv(_edge_features(x, self.k)).max(dim=-1)[0]
            outs.append(x)
        x = self.conv5(torch.cat(outs, 1))
        x = torch.cat([F.adaptive_max_pool1d(x, 1).flatten(1), F.adaptive_avg_pool1d(x, 1).flatten(1)], 1)
        x = self.dp1(F.leaky_relu(self.bn6(self.linear1(x)), 0.2))
        x = self.dp2(F.leaky_relu(self.bn7(self.linear2(x)), 0.2))
        return self.linear3(x)


# ---------------------------------------------------------------------------------------
# Checkpoints as the original scripts save them
# ---------------------------------------------------------------------------------------


def _randomise(model: nn.Module, seed: int, calibrate: bool = True) -> nn.Module:
    """Non-trivial weights everywhere (negative BN scales too) and non-trivial running statistics.

    Running statistics are first measured on a few clouds (so activations stay informative through
    every layer), then perturbed; the class layer is scaled for logits of a few units.
    ``calibrate=False`` (models with normals, which these references do not run) skips both."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5 + 0.8)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # one pass: the running statistics are that pass's statistics
        for name, p in model.named_parameters():
            if p.dim() > 1 or (name.endswith("bias") and not any(p is m.bias for m in bns)):
                p.add_(torch.randn(p.shape, generator=g) * 0.3 * p.abs().mean().clamp_min(0.01))
        if not calibrate:
            for m in bns:
                m.running_var.uniform_(0.5, 2.0, generator=g)
            return model.eval()
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        calib = _points(batch=4, seed=seed + 100).transpose(1, 2)
        model(calib)
        model.eval()
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(torch.empty(m.running_var.shape).uniform_(0.7, 1.4, generator=g))
            m.num_batches_tracked.fill_(1234)
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the class layer
        seen = {}
        hook = last.register_forward_hook(lambda mod, inp, out: seen.setdefault("logits", out))
        model(calib)
        hook.remove()
        scale = 3.0 / seen["logits"].std().clamp_min(1e-6)
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model


def _adam_state(model: nn.Module) -> dict:
    """An Adam optimizer state with moments, as after training (weights restored after the step)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
    sum(p.square().sum() for p in model.parameters()).backward()
    opt.step()
    opt.zero_grad()
    model.load_state_dict(saved)
    return opt.state_dict()


def save_like_pointnet2_port(model: nn.Module, path: Path) -> Path:
    """``train_classification.py``'s ``best_model.pth``: accuracies are numpy float64 (``np.mean``)."""
    torch.save({"epoch": 187, "instance_acc": np.mean([0.93, 0.92]), "class_acc": np.float64(0.9012),
                "model_state_dict": model.state_dict(), "optimizer_state_dict": _adam_state(model)}, path)
    return path


def save_like_dgcnn(model: nn.Module, path: Path) -> Path:
    """The authors' ``main.py``: ``torch.save(model.state_dict(), model.t7)`` of a DataParallel model."""
    torch.save(nn.DataParallel(model).state_dict(), path)
    return path


def build_reference(arch: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "pointnet2_ssg":
        ref = RefPointNet2Cls(msg=False, **kw)
    elif arch == "pointnet2_msg":
        ref = RefPointNet2Cls(msg=True, **kw)
    elif arch == "pointnet":
        ref = RefPointNetCls(**kw)
    else:
        ref = RefDGCNN(**kw)
    return _randomise(ref, seed + 1, calibrate=not kw.get("normals", False))


def _points(batch: int = 3, n: int = 1024, seed: int = 0) -> torch.Tensor:
    """Clouds in the unit ball, as our data and the port's ``pc_normalize`` prepare them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, 3, generator=g) * torch.tensor([1.0, 0.6, 0.3])
    return x / x.norm(dim=-1).amax(dim=1).view(-1, 1, 1)


def cli(*args, capsys):
    from core.cli import main

    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------

CASES = {
    "pointnet2_ssg": ("Pointnet_Pointnet2_pytorch pointnet2_cls_ssg", save_like_pointnet2_port),
    "pointnet2_msg": ("Pointnet_Pointnet2_pytorch pointnet2_cls_msg", save_like_pointnet2_port),
    "pointnet": ("Pointnet_Pointnet2_pytorch pointnet_cls", save_like_pointnet2_port),
    "dgcnn": ("WangYueFTD/dgcnn DGCNN", save_like_dgcnn),
}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch", list(CASES))
def test_imported_teacher_gives_the_originals_probabilities(arch, tmp_path, capsys):
    from core.engine.checkpoint import load_model
    from core.models.importers import MODELNET40_CLASSES

    recognised, save = CASES[arch]
    ref = build_reference(arch)
    src = save(ref, tmp_path / ("model.t7" if arch == "dgcnn" else "best_model.pth"))
    out = tmp_path / "teacher.pt"
    rc, stdout, err = cli("import-teacher", src, "--out", out, capsys=capsys)
    assert rc == 0, err
    assert recognised in stdout and f"-> {arch}" in stdout and "parameters" in stdout and f"wrote {out}" in stdout
    n_params = sum(p.numel() for n, p in ref.named_parameters())
    assert f"{n_params:,} parameters" in stdout  # every parameter of the original, none more

    model, ckpt = load_model(out)
    assert ckpt["model"]["name"] == arch and ckpt["class_names"] == list(MODELNET40_CLASSES)
    x = _points()
    with torch.no_grad():
        theirs = F.softmax(ref(x.transpose(1, 2)), -1)
        mine = F.softmax(model(x), -1)
    assert mine.shape == (3, 40) and mine.dtype == torch.float32
    assert theirs.max() < 0.999 and theirs.max(-1).values.min() > 2 / 40, "degenerate probabilities"
    assert torch.equal(mine.argmax(-1), theirs.argmax(-1))
    assert torch.allclose(mine, theirs, rtol=0, atol=1e-4), (mine - theirs).abs().max().item()


def test_the_port_checkpoint_loads_under_weights_only_with_its_numbers(tmp_path):
    """Adam's state and the numpy float64 accuracies load with weights_only (no code runs); the
    numbers are kept as provenance in our checkpoint, the optimizer state is not."""
    from core.models.importers import import_teacher, read_source

    src = save_like_pointnet2_port(build_reference("pointnet2_ssg"), tmp_path / "best_model.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(src, weights_only=True)  # plain weights_only refuses the numpy scalars
    state, info = read_source(src)
    assert info == {"epoch": 187, "instance_acc": pytest.approx(0.925), "class_acc": pytest.approx(0.9012)}
    assert "sa1.mlp_convs.0.weight" in state and not any("optimizer" in k for k in state)
    result = import_teacher(src)
    imported = result.checkpoint["config"]["imported"]
    assert imported["epoch"] == 187 and imported["instance_acc"] == pytest.approx(0.925)
    assert imported["repo"] == "yanx27/Pointnet_Pointnet2_pytorch" and len(imported["sha256"]) == 64


def test_a_checkpoint_pickled_under_numpy_1_loads(tmp_path):
    """numpy 1 pickles its scalars as ``numpy.core.multiarray.scalar`` (numpy 2: ``numpy._core``)."""
    from core.models.importers import read_source

    ref = build_reference("pointnet2_ssg")
    legacy = tmp_path / "legacy.pth"
    torch.save({"epoch": 3, "instance_acc": np.float64(0.5), "model_state_dict": ref.state_dict()}, legacy,
               _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in raw
    legacy.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    _, info = read_source(legacy)
    assert info["instance_acc"] == 0.5


@pytest.mark.slow
@pytest.mark.parametrize("wrap", ["bare", "module_prefix", "dict_module_prefix"])
def test_layouts_are_recognised_however_the_state_dict_was_saved(wrap, tmp_path):
    """Bare state dict, DataParallel ``module.`` prefixes, prefixes inside a training-script dict:
    the same weights land on the same tensors of ours."""
    from core.models.importers import import_teacher

    ref = build_reference("dgcnn", emb_dims=512)
    sd = ref.state_dict()
    if wrap != "bare":
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"epoch": 5, "model_state_dict": sd} if wrap.startswith("dict") else sd
    torch.save(obj, tmp_path / "m.pth")
    result = import_teacher(tmp_path / "m.pth")
    model = result.model
    assert model.model_config.kwargs == {"k": 20, "emb_dims": 512}
    w = ref.conv5[0].weight.detach().reshape(512, 512)
    assert torch.equal(model.embed.linear.weight, w)
    assert torch.equal(model.convs[2].unit.bn.running_var, ref.bn3.running_var)
    assert any("k=20" in n for n in result.notes)


@pytest.mark.slow
def test_msg_feature_columns_are_reordered_to_ours(tmp_path):
    """The MSG port groups [features, xyz]; ours [xyz, features]: the first layer's columns move."""
    from core.models.importers import import_teacher

    ref = build_reference("pointnet2_msg")
    result = import_teacher(save_like_pointnet2_port(ref, tmp_path / "best_model.pth"))
    src = ref.sa2.conv_blocks[1][0].weight.detach().reshape(128, 323)
    ours = result.model.levels[1].branches[1].layers[0].linear.weight
    assert torch.equal(ours[:, :3], src[:, 320:]) and torch.equal(ours[:, 3:], src[:, :320])


def test_dgcnn_k_is_taken_from_the_user_and_recorded(tmp_path, capsys):
    from core.engine.checkpoint import load_model

    src = save_like_dgcnn(build_reference("dgcnn", k=10, emb_dims=256), tmp_path / "model.t7")
    out = tmp_path / "t.pt"
    rc, stdout, err = cli("import-teacher", src, "--out", out, "--k", "10", capsys=capsys)
    assert rc == 0, err
    model, _ = load_model(out)
    assert model.k == 10 and model.model_config.kwargs == {"k": 10, "emb_dims": 256}


def test_class_names_file_sets_the_names(tmp_path, capsys):
    from core.engine.checkpoint import load_model

    names = [f"part_{i}" for i in range(10)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n")
    src = save_like_pointnet2_port(build_reference("pointnet", num_class=10), tmp_path / "best_model.pth")
    rc, stdout, err = cli("import-teacher", src, "--out", tmp_path / "t.pt", "--classes", tmp_path / "names.txt",
                          capsys=capsys)
    assert rc == 0, err
    _, ckpt = load_model(tmp_path / "t.pt")
    assert ckpt["class_names"] == names


# ---------------------------------------------------------------------------------------
# Refusals: one line, exit status 2, nothing written, an existing output left as it was
# ---------------------------------------------------------------------------------------


def _ssg_state() -> dict:
    return dict(build_reference("pointnet2_ssg").state_dict())


def _refusal_source(kind: str, tmp_path: Path) -> tuple[Path, list[str], str]:
    """(checkpoint, extra arguments, text the message must contain) for one kind of refusal."""
    p = tmp_path / "best_model.pth"
    extra: list[str] = []
    if kind == "missing":
        return tmp_path / "nope.pth", extra, "not found"
    if kind == "folder":
        return tmp_path, extra, "is a folder"
    if kind == "corrupt":
        p.write_bytes(os.urandom(4096))
        return p, extra, "not a readable PyTorch checkpoint"
    if kind == "truncated":
        save_like_pointnet2_port(build_reference("pointnet"), p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return p, extra, "not a readable PyTorch checkpoint"
    if kind == "code":  # a pickled object (whole module / argparse args) never loads
        import argparse

        torch.save({"args": argparse.Namespace(k=20), "model_state_dict": _ssg_state()}, p)
        return p, extra, "argparse.Namespace"
    if kind == "unknown_layout":
        torch.save({"model_state_dict": {"backbone.layer1.weight": torch.zeros(4, 4)}}, p)
        return p, extra, "unknown layout"
    if kind == "no_state_dict":
        torch.save({"epoch": 3, "note": "weights elsewhere"}, p)
        return p, extra, "no model state dict"
    if kind == "segmentation":
        sd = _ssg_state()
        sd["fp1.mlp_convs.0.weight"] = torch.zeros(128, 131, 1)
        torch.save({"model_state_dict": sd}, p)
        return p, extra, "segmentation"
    if kind == "shape_mismatch":
        sd = _ssg_state()
        sd["sa2.mlp_convs.1.weight"] = torch.zeros(128, 100, 1, 1)
        torch.save({"model_state_dict": sd}, p)
        return p, extra, ("sa2.mlp_convs.1.weight is (128, 100, 1, 1) in the checkpoint, "
                          "pointnet2_ssg expects (128, 128, 1, 1)")
    if kind == "missing_key":
        sd = _ssg_state()
        del sd["sa3.mlp_bns.2.running_var"]
        torch.save({"model_state_dict": sd}, p)
        return p, extra, "pointnet2_ssg needs sa3.mlp_bns.2.running_var (1024), not in the checkpoint"
    if kind == "forced_model":
        save_like_pointnet2_port(build_reference("pointnet2_ssg"), p)
        return p, ["--model", "pointnet2_msg"], "pointnet2_msg needs sa1.conv_blocks.0.0.weight"
    if kind == "unused_key":
        sd = _ssg_state()
        sd["sa1.mlp_convs.0.extra_scale"] = torch.ones(64)
        torch.save({"model_state_dict": sd}, p)
        return p, extra, "sa1.mlp_convs.0.extra_scale (64) of the checkpoint has no place"
    if kind == "normals_ssg":
        save_like_pointnet2_port(build_reference("pointnet2_ssg", normals=True), p)
        return p, extra, "trained with normals (6 input channels"
    if kind == "normals_pointnet":
        save_like_pointnet2_port(build_reference("pointnet", normals=True), p)
        return p, extra, "trained with normals (6 input channels"
    if kind == "class_count_default":
        save_like_pointnet2_port(build_reference("pointnet", num_class=10), p)
        return p, extra, "10 outputs"
    if kind == "class_count_file":
        (tmp_path / "names.txt").write_text("a\nb\nc\n")
        save_like_pointnet2_port(build_reference("pointnet"), p)
        return p, ["--classes", str(tmp_path / "names.txt")], "3 class names, but the classifier"
    if kind == "nan_weights":
        sd = _ssg_state()
        sd["fc2.weight"][0, 0] = float("nan")
        torch.save({"model_state_dict": sd}, p)
        return p, extra, "fc2.weight holds NaN or infinite values"
    if kind == "ours_already":
        from core.engine.checkpoint import save_model
        from core.models import create_model

        save_model(p, create_model("pointnet", width=0.125), [str(i) for i in range(40)])
        return p, extra, "already a T3DNet Studio checkpoint"
    if kind == "dgcnn_pointnet_baseline":
        sd = {f"conv{i}.weight": torch.zeros(64, 3, 1) for i in range(1, 6)}
        sd["linear1.weight"] = torch.zeros(512, 1024)
        torch.save(sd, p)
        return p, extra, "PointNet baseline"
    if kind == "pointnet_without_feature_transform":
        sd = {k: v for k, v in build_reference("pointnet").state_dict().items() if not k.startswith("feat.fstn.")}
        torch.save({"model_state_dict": sd}, p)
        return p, extra, "without the feature transform"
    if kind == "k_on_pointnet2":
        save_like_pointnet2_port(build_reference("pointnet2_ssg"), p)
        return p, ["--k", "10"], "--k applies to DGCNN"
    raise AssertionError(kind)


REFUSALS = ["missing", "folder", "corrupt", "truncated", "code", "unknown_layout", "no_state_dict", "segmentation",
            "shape_mismatch", "missing_key", "forced_model", "unused_key", "normals_ssg", "normals_pointnet",
            "class_count_default", "class_count_file", "nan_weights", "ours_already", "dgcnn_pointnet_baseline",
            "pointnet_without_feature_transform", "k_on_pointnet2"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", REFUSALS)
def test_refusals_are_one_line_exit_2_and_write_nothing(kind, tmp_path, capsys):
    src, extra, expected = _refusal_source(kind, tmp_path)
    out = tmp_path / "out" / "teacher.pt"
    rc, stdout, err = cli("import-teacher", src, "--out", out, *extra, capsys=capsys)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert "wrote" not in stdout


def test_a_failed_import_never_clobbers_an_existing_output(tmp_path, capsys):
    src, _, _ = _refusal_source("normals_ssg", tmp_path)
    out = tmp_path / "teacher.pt"
    out.write_bytes(b"the teacher imported yesterday")
    rc, _, err = cli("import-teacher", src, "--out", out, capsys=capsys)
    assert rc == 2 and out.read_bytes() == b"the teacher imported yesterday"
    # the source itself is never the destination
    good = save_like_pointnet2_port(build_reference("pointnet"), tmp_path / "best.pth")
    before = good.read_bytes()
    rc, _, err = cli("import-teacher", good, "--out", good, capsys=capsys)
    assert rc == 2 and "is the checkpoint being imported" in err and good.read_bytes() == before
    # an impossible destination (its folder is a file): one line, nothing left behind
    (tmp_path / "a_file").write_text("x")
    rc, _, err = cli("import-teacher", good, "--out", tmp_path / "a_file" / "t.pt", capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and "cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "best.pth", "best_model.pth", "teacher.pt"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_exit_status_of_the_real_command(tmp_path):
    """Through main.py itself: a refusal exits 2 with one line; --help documents the command."""
    env = dict(os.environ, OMP_NUM_THREADS="1", T3DNET_NO_TCMALLOC="1")
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "import-teacher", str(tmp_path / "none.pth"), "--out",
                        str(tmp_path / "t.pt")], capture_output=True, text=True, timeout=100, cwd=ROOT, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, text=True,
                       timeout=100, cwd=ROOT, env=env)
    assert "import-teacher" in r.stdout


@pytest.mark.slow
def test_importer_is_headless():
    """core never imports Qt: the importer and its command load without PySide6."""
    code = ("import sys; sys.modules['PySide6'] = None; import core.models.importers, core.cli.import_cmd; "
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, cwd=ROOT,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ---------------------------------------------------------------------------------------
# The imported teacher in use: compress, and the app's menu
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compress_runs_from_an_imported_teacher(modelnet40, tmp_path, capsys):
    from core.engine.checkpoint import load_model

    src = save_like_pointnet2_port(build_reference("pointnet2_ssg"), tmp_path / "best_model.pth")
    teacher = tmp_path / "teacher.pt"
    rc, _, err = cli("import-teacher", src, "--out", teacher, capsys=capsys)
    assert rc == 0, err
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "compress", "--teacher", str(teacher), "--data",
                        str(modelnet40), "--preset", "smoke", "--out", str(out), "--events", "none", "--epochs", "1",
                        "--kd-epochs", "1", "--limit-train", "16", "--limit-test", "8", "--threads", "1"],
                       capture_output=True, text=True, timeout=550, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    student, ckpt = load_model(out / "student.pt")
    assert ckpt["class_names"] == load_model(teacher)[1]["class_names"]
    assert student.model_config.width < 1
    assert str(teacher) in repr(ckpt["config"])  # distilled from the imported teacher


@pytest.fixture
def app_window(qtbot, tmp_path):
    """The main window with a small teacher and student of ours, settings isolated in tmp_path."""
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from app.main_window import MainWindow
    from app.settings import Settings
    from core.engine.checkpoint import save_model
    from core.models import create_model
    from core.models.importers import MODELNET40_CLASSES

    torch.manual_seed(0)
    save_model(tmp_path / "t0.pt", create_model("pointnet", width=0.125), MODELNET40_CLASSES)
    save_model(tmp_path / "s0.pt", create_model("pointnet", width=0.125), MODELNET40_CLASSES)
    s = Settings()
    s.runs_dir = str(tmp_path / "runs")
    w = MainWindow(settings=s, teacher=str(tmp_path / "t0.pt"), student=str(tmp_path / "s0.pt"))
    w.quiet_errors = True
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.compare.teacher is not None and w.compare.student is not None, timeout=60000)
    assert Path(s.q.fileName()).resolve().is_relative_to(tmp_path.resolve())
    yield w
    w.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_models_menu_imports_a_teacher_and_loads_it(qtbot, app_window, tmp_path):
    w = app_window
    menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&Models")
    assert any(a.text().startswith("&Import teacher") for a in menu.actions())
    src = save_like_pointnet2_port(build_reference("pointnet"), tmp_path / "best_model.pth")
    out = tmp_path / "imported.pt"
    with qtbot.waitSignal(w.teacher_imported, timeout=60000) as blocker:
        w.import_teacher(str(src), str(out))
    assert blocker.args[0] == str(out) and out.is_file()
    qtbot.waitUntil(lambda: w.compare.teacher is not None and Path(w.compare.teacher.checkpoint) == out,
                    timeout=60000)
    assert w.compare.teacher.model.model_config.name == "pointnet"
    # a refused import: a one-line message, the teacher loaded before stays
    bad = tmp_path / "normals.pth"
    save_like_pointnet2_port(build_reference("pointnet", normals=True), bad)
    with qtbot.waitSignal(w.import_failed, timeout=60000) as blocker:
        w.import_teacher(str(bad), str(tmp_path / "never.pt"))
    assert "normals" in blocker.args[0] and "\n" not in blocker.args[0]
    assert not (tmp_path / "never.pt").exists()
    assert Path(w.compare.teacher.checkpoint) == out

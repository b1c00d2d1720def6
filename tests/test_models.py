"""The model zoo, parametrised over every registered model."""

from __future__ import annotations

import random

import pytest
import torch

from core.engine.checkpoint import CheckpointError, load_model, save_model
from core.models import ModelConfig, create_model, list_models, reestimate_bn
from core.models.complexity import count_macs, count_parameters, grouping_cost
from core.models.fused import FastPaths

# RESEARCH.md §1 and §3: reference parameter counts (width 1 and 1/8) and MACs per sample.
REFERENCE = {
    "pointnet2_msg": (1.748e6, 0.0302e6, 3.93e9),
    "pointnet2_ssg": (1.47e6, 0.026e6, 0.84e9),
    "dgcnn": (1.81e6, 0.030e6, 2.4e9),
    "pointnet": (3.47e6, 0.043e6, 0.44e9),
}
MODELS = list_models()


def _cloud(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1).max()


def _warm_bn(model, n=256):
    """Give BatchNorm non-trivial running statistics."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(_cloud(4, n, seed=10 + s) * (1 + s))
    model.eval()


def test_registry_lists_the_paper_models():
    assert {"pointnet", "pointnet2_ssg", "pointnet2_msg", "dgcnn"} <= set(MODELS)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown model 'pointnet3'.*available"):
        create_model("pointnet3")


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_match_reference_architectures(name):
    full, tiny, _ = REFERENCE[name]
    assert count_parameters(create_model(name)) == pytest.approx(full, rel=0.02)
    # The tiny references are quoted to two significant digits (SSG/8 "0.026M"; exact count 25,456).
    assert count_parameters(create_model(name, width=1 / 8)) == pytest.approx(tiny, rel=0.025)


@pytest.mark.parametrize("name", MODELS)
def test_macs_match_reference_convention(name):
    assert count_macs(create_model(name), 1024) == pytest.approx(REFERENCE[name][2], rel=0.02)


def test_macs_follow_the_active_widths_and_leave_the_model_as_it_was():
    supernet = create_model("pointnet2_ssg", width=1 / 8, aug_factors=(1.0, 2.0)).train()
    config = supernet.model_config
    wide = count_macs(supernet, 1024)
    supernet.set_widths("tiny")
    assert count_macs(supernet, 1024) == count_macs(create_model("pointnet2_ssg", width=1 / 8), 1024) < wide
    assert supernet.training and supernet.model_config is config


def test_grouping_cost_counts_the_distance_evaluations():
    """FPS and one centre-point distance matrix per sampled level (PointNet++: 512 x 1024 twice,
    128 x 512 twice), one N x N matrix per EdgeConv (DGCNN), none for PointNet."""
    expected = {"pointnet2_ssg": 2 * (512 * 1024 + 128 * 512), "pointnet2_msg": 2 * (512 * 1024 + 128 * 512),
                "dgcnn": 4 * 1024 * 1024, "pointnet": 0}
    assert {name: grouping_cost(create_model(name, width=1 / 8), 1024) for name in expected} == expected


def test_fast_paths_are_part_of_the_config_and_default_for_older_checkpoints(tmp_path):
    model = create_model("pointnet2_ssg", width=1 / 8, fast_paths=FastPaths(channels_first_max=0))
    save_model(tmp_path / "m.pt", model, [f"c{i}" for i in range(40)])
    assert load_model(tmp_path / "m.pt")[0].fast_paths == FastPaths(channels_first_max=0)
    older = model.model_config.to_dict()
    del older["fast_paths"]
    assert ModelConfig.from_dict(older).fast_paths == FastPaths()
    with pytest.raises(ValueError, match="unknown fast paths: fused"):
        ModelConfig.from_dict(older | {"fast_paths": {"fused": True}})
    with pytest.raises(ValueError, match="channels_first_max"):
        FastPaths(channels_first_max=-1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch,points", [(1, 256), (3, 512)])
def test_output_shape_and_finite(name, batch, points):
    model = create_model(name, num_classes=10, width=1 / 8).eval()
    out = model(_cloud(batch, points))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()
    feats = model.forward_features(_cloud(batch, points))
    assert feats.shape == (batch, model.feature_dim)


@pytest.mark.parametrize("name", MODELS)
def test_full_width_forward(name):
    model = create_model(name).eval()
    out = model(_cloud(2, 1024))
    assert out.shape == (2, 40) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = create_model(name, width=1 / 8).train()
    out = model(_cloud(4, 256))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # The class layer and the first layer both receive a signal.
    assert model.head.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(name):
    model = create_model(name, width=1 / 8)
    _warm_bn(model)
    x = _cloud(2, 512, seed=3)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    model = create_model(name, num_classes=5, width=1 / 8)
    _warm_bn(model)
    path = tmp_path / "m.pt"
    save_model(path, model, [f"c{i}" for i in range(5)], metrics={"oa": 0.5})
    loaded, ck = load_model(path)
    x = _cloud(2, 256)
    assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert ck["class_names"] == [f"c{i}" for i in range(5)] and ck["metrics"]["oa"] == 0.5
    # float16 storage: same predictions up to half precision
    save_model(tmp_path / "h.pt", model, [f"c{i}" for i in range(5)], half=True)
    half, _ = load_model(tmp_path / "h.pt")
    assert torch.allclose(model(x), half(x), atol=5e-2)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_model(tmp_path / "dg.pt", create_model("dgcnn", width=1 / 8), [str(i) for i in range(40)])
    with pytest.raises(CheckpointError, match="holds a dgcnn model, expected pointnet2_ssg"):
        load_model(tmp_path / "dg.pt", expect_model="pointnet2_ssg")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt: not a readable checkpoint"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", MODELS)
def test_supernet_export_equals_tiny_slice(name):
    supernet = create_model(name, width=1 / 8, aug_factors=(1.0, 2.0, 3.0))
    rng = random.Random(0)
    # Train-mode passes at random widths and at tiny widths give every BN slice statistics.
    supernet.train()
    with torch.no_grad():
        for s in range(3):
            supernet.set_widths(supernet.sample_widths(rng))
            supernet(_cloud(4, 256, seed=s))
    supernet.set_widths("tiny")
    _warm_bn(supernet)
    tiny = supernet.export().eval()
    direct = create_model(name, width=1 / 8)
    assert count_parameters(tiny) == count_parameters(direct)
    assert [p.shape for p in tiny.parameters()] == [p.shape for p in direct.parameters()]
    x = _cloud(3, 512, seed=7)
    supernet.set_widths("tiny")
    assert torch.allclose(supernet(x), tiny(x), atol=1e-5)
    assert count_parameters(supernet) > 4 * count_parameters(direct)


@pytest.mark.parametrize("name", MODELS)
def test_random_augmented_widths_run_and_differ(name):
    supernet = create_model(name, width=1 / 8, aug_factors=(1.0, 2.0, 3.0)).eval()
    x = _cloud(2, 256)
    supernet.set_widths("tiny")
    tiny_out = supernet(x)
    widths = supernet.sample_widths(random.Random(1))
    assert any(w > supernet.slim_layers()[n].tiny_out for n, w in widths.items())
    supernet.set_widths(widths)
    aug_out = supernet(x)
    assert aug_out.shape == tiny_out.shape and not torch.allclose(aug_out, tiny_out)


@pytest.mark.parametrize("name", MODELS)
def test_channel_sorting_keeps_the_full_network_function(name):
    supernet = create_model(name, width=1 / 8, aug_factors=(1.0, 2.0))
    _warm_bn(supernet)
    supernet.set_widths("max")
    x = _cloud(2, 256, seed=5)
    before = supernet(x)
    opt = torch.optim.SGD(supernet.parameters(), lr=0.1, momentum=0.9)
    assert supernet.sort_channels(opt) > 0
    assert torch.allclose(before, supernet(x), atol=1e-4)
    # The tiny model now holds the most important channels of a sorted layer.
    layer = next(m for m in supernet.slim_layers().values() if m.augmentable)
    norms = layer.weight.abs().sum(1)
    assert norms[: layer.tiny_out].min() >= norms[layer.tiny_out :].max() - 1e-6


@pytest.mark.parametrize("name", ["pointnet2_ssg", "pointnet2_msg", "dgcnn"])
def test_grouping_is_shared_between_teacher_and_student(name):
    teacher = create_model(name).eval()
    student = create_model(name, width=1 / 8).eval()
    assert teacher.grouping_key() == student.grouping_key()
    x = _cloud(2, 1024, seed=2)
    grouping = teacher.compute_grouping(x)
    assert torch.equal(student(x, grouping), student(x))
    # Indices do not change under rotation about z and translation.
    c, s = torch.cos(torch.tensor(0.7)), torch.sin(torch.tensor(0.7))
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    moved = x @ rot + 0.3
    g2 = teacher.compute_grouping(moved)
    if name == "dgcnn":
        assert (g2 == grouping).float().mean() > 0.99  # ties may swap under float rounding
    else:
        assert torch.equal(g2[0]["centres"], grouping[0]["centres"])


def test_bn_reestimation_changes_running_stats():
    model = create_model("pointnet2_ssg", width=1 / 8).eval()
    before = model.head.hidden[0].bn.running_mean.clone()
    reestimate_bn(model, [_cloud(4, 256, seed=i) for i in range(2)])
    assert not torch.allclose(before, model.head.hidden[0].bn.running_mean)
    assert not model.training  # the caller's mode is restored


@pytest.mark.parametrize("name", ["pointnet2_ssg", "dgcnn"])
def test_grouping_does_not_depend_on_autocast_precision(name):
    model = create_model(name, width=1 / 8).eval()
    x = _cloud(2, 1024, seed=4)
    plain = model.compute_grouping(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.compute_grouping(x)
        out = model(x)
    if name == "dgcnn":
        assert torch.equal(plain, mixed)
    else:
        for a, b in zip(plain[:2], mixed[:2]):
            assert torch.equal(a["centres"], b["centres"])
            assert all(torch.equal(p, q) for p, q in zip(a["neighbours"], b["neighbours"]))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_max_rows_equals_max_with_the_same_gradient_per_point(dtype):
    """max_rows pools channels-last; values equal max(-2), and each row's gradient total equals
    max's, also with duplicated neighbours (a padded ball query repeats its first index)."""
    from core.models.ops import max_rows

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 6, generator=g).to(dtype)
    x[:, :, 4] = x[:, :, 0]  # exact ties
    grad = torch.randn(3, 5, 6, generator=g).to(dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = max_rows(a), a.detach().max(-2).values
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    ours.backward(grad)
    b.max(-2).values.backward(grad)
    # Ties may send the gradient to another duplicate; per (centre, channel) the total is the same.
    torch.testing.assert_close(a.grad.sum(-2), b.grad.sum(-2), rtol=0, atol=0)
    assert (a.grad != 0).sum() == (b.grad != 0).sum()
    with torch.no_grad():  # the plain pooling path (what inference and export run)
        torch.testing.assert_close(max_rows(x), ref, rtol=0, atol=0)
    # Any leading shape: (B, N, C) pools over N.
    y = torch.randn(2, 9, 4, generator=g).to(dtype)
    torch.testing.assert_close(max_rows(y), y.max(1).values, rtol=0, atol=0)

"""Our fast models compute exactly what the classic channels-first formulation computes.

``bench/reference.py`` is an independent, straightforward implementation of every registered
architecture (1x1 convolutions on grouped tensors, sampling and grouping recomputed in every
forward, no per-point rewrite). With the same weights, outputs, gradients and BatchNorm
statistics must agree: this is what licenses quoting the reference's accuracy for our models and
the speed-ups of bench/train_speed.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.models import create_model, list_models
from core.models.fused import PLAIN, FastPaths, mlp_max
from core.models.slim import LinearBNAct, WidthSpec

ROOT = Path(__file__).resolve().parents[1]


def _load_reference():
    spec = importlib.util.spec_from_file_location("t3dnet_bench_reference", ROOT / "bench" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reference = _load_reference()
MODELS = list_models()
WIDTHS = [1.0, 1 / 8]


def _points(name: str, width: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A small batch in the unit ball. PointNet++ samples 512 centres, so it gets 1024 points;
    the other models are exercised on fewer (DGCNN's kNN graph is N x N)."""
    n = 1024 if name.startswith("pointnet2") else 512
    if width == 1.0 and name in ("pointnet2_msg", "dgcnn"):
        n = 512  # keeps the module fast; MSG still samples 512 centres (all of them)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, 3, generator=g)
    return x / x.norm(dim=-1).max()


def _randomised(name: str, width: float, seed: int = 0):
    """A model of ours with non-trivial weights everywhere (T-Nets' last layers are zero at
    initialisation, which would hide a wrong transform) and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, width=width)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def _pair(name: str, width: float, dtype=torch.float32):
    ours = _randomised(name, width).to(dtype)
    ref = reference.create_reference(name, num_classes=10, width=width).to(dtype)
    copied = reference.load_from_ours(ref, ours)
    return ours, ref, copied


@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", WIDTHS, ids=["w1", "w1_8"])
@pytest.mark.parametrize("name", MODELS)
def test_eval_outputs_match_reference(name, width):
    ours, ref, _ = _pair(name, width)
    ours.eval(), ref.eval()
    x = _points(name, width)
    with torch.no_grad():
        mine, theirs = ours(x), ref(x)
    scale = theirs.abs().max().item()
    assert scale > 0.05, "degenerate logits would make the comparison vacuous"
    assert torch.allclose(mine, theirs, rtol=0, atol=1e-4 * max(1.0, scale)), (
        f"max |diff| {(mine - theirs).abs().max().item():.3g} at logit scale {scale:.3g}"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", MODELS)
def test_eval_outputs_match_reference_exactly_in_float64(name):
    """In double precision kNN ties cannot flip and rounding cannot hide a small real mismatch."""
    ours, ref, _ = _pair(name, 1 / 8, torch.float64)
    ours.eval(), ref.eval()
    x = _points(name, 1 / 8, seed=1).double()
    with torch.no_grad():
        mine, theirs = ours(x), ref(x)
    assert torch.allclose(mine, theirs, rtol=0, atol=1e-9)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "pointnet2_msg" else n for n in MODELS])
def test_fast_paths_match_the_plain_formulation(name):
    """Every rewrite of the model config's FastPaths (first layer per point, layouts, BN after
    the max) against none of them (the slim layers' own forwards on grouped rows): in float64,
    on a supernet at mixed widths with some BN scales negative, train-mode outputs, gradients
    and BN statistics, then eval outputs, agree."""
    import random

    results = []
    for fast in (FastPaths(), PLAIN):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, width=1 / 8, aug_factors=(1.0, 2.0, 3.0), fast_paths=fast).double()
        with torch.no_grad():  # T-Nets' last layers are zero at initialisation: perturb everything
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.weight.mul_(torch.where(torch.rand_like(m.weight) < 0.4, -1.0, 1.0).double())
        model.set_widths(model.sample_widths(random.Random(3)))
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
        x = _points(name, 1 / 8, batch=3, seed=5).double()
        out = model(x)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
        model.eval()
        with torch.no_grad():
            results.append((out.detach(), grads, stats, model(x)))
    (o1, g1, s1, e1), (o2, g2, s2, e2) = results
    assert o2.abs().max() > 0.05 and e2.abs().max() > 0.05
    torch.testing.assert_close(o1, o2, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(e1, e2, rtol=1e-9, atol=1e-10)
    # Gradients pass through sums whose order the paths (and the thread count) change, some with
    # cancellation: each tensor is compared at the scale of the largest gradient of the model.
    scale = max(1.0, max(b.abs().max().item() for b in g2))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7 * scale)
    assert g2[0].abs().sum() > 0
    for (m1, v1, n1), (m2, v2, n2) in zip(s1, s2, strict=True):
        torch.testing.assert_close(m1, m2, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(v1, v2, rtol=1e-9, atol=1e-10)
        assert n1 == n2 == 1


# Gradients at width 1/8 for every model, and at width 1 for the CPU teacher (SSG): float64
# convolutions are slow, and with batch statistics of 3 samples float32 gradients are too
# ill-conditioned to compare tightly.
GRAD_CASES = [(name, 1 / 8) for name in MODELS] + [("pointnet2_ssg", 1.0)]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,width", GRAD_CASES, ids=[f"{n}-w{'1' if w == 1 else '1_8'}" for n, w in GRAD_CASES])
def test_training_gradients_and_bn_statistics_match_reference(name, width):
    """Train mode (batch statistics), float64, dropout off so neither side draws random masks.
    Every parameter's gradient and every BN running statistic after the pass must agree."""
    ours, ref, copied = _pair(name, width, torch.float64)
    for model in (ours, ref):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
    x = _points(name, width, batch=3, seed=2).double()
    target = torch.tensor([0, 3, 7])
    F.cross_entropy(ours(x), target).backward()
    F.cross_entropy(ref(x), target).backward()

    our_tensors = dict([*ours.named_parameters(), *ours.named_buffers()])
    ref_tensors = dict([*ref.named_parameters(), *ref.named_buffers()])
    grads_checked = 0
    for our_name, ref_name in copied:
        a, b = our_tensors[our_name], ref_tensors[ref_name]
        # BN running statistics after one train-mode pass (unbiased variance, momentum 0.1).
        assert torch.allclose(a.reshape(b.shape).to(b.dtype), b, rtol=1e-7, atol=1e-9), our_name
        if isinstance(a, torch.nn.Parameter):
            assert a.grad is not None and b.grad is not None, our_name
            ga, gb = a.grad.reshape(b.shape), b.grad
            assert torch.allclose(ga, gb, rtol=1e-6, atol=1e-9 * max(1.0, gb.abs().max().item())), our_name
            grads_checked += 1
    assert grads_checked == sum(1 for _ in ours.parameters())
    # The first and the last layer both got a real signal (the comparison is not 0 == 0).
    first = next(n for n, _ in copied if n.endswith("weight"))
    assert our_tensors[first].grad.abs().sum() > 0
    assert ours.head.fc.weight.grad.abs().sum() > 0


def test_load_from_ours_refuses_a_supernet():
    supernet = create_model("pointnet2_ssg", width=1 / 8, aug_factors=(1.0, 2.0))
    ref = reference.create_reference("pointnet2_ssg", width=1 / 8)
    with pytest.raises(ValueError, match="shape mismatch"):
        reference.load_from_ours(ref, supernet)


def test_reference_registry_covers_every_model():
    assert reference.reference_names() == MODELS


def test_port_ball_query_sort_selects_the_same_indices_as_topk():
    """bench/train_speed.py's "port ref" column swaps the ball query for the common port's full
    sort; it must select exactly the same neighbours, so that column times the same model."""
    torch.manual_seed(0)
    xyz = torch.rand(2, 512, 3)
    centres = xyz[:, :64]
    saved = reference.BALL_QUERY
    try:
        reference.BALL_QUERY = "topk"
        a = reference.query_ball(0.2, 32, xyz, centres)
        reference.BALL_QUERY = "sort"
        b = reference.query_ball(0.2, 32, xyz, centres)
    finally:
        reference.BALL_QUERY = saved
    assert torch.equal(a, b)
    assert (a[..., 1:] != a[..., :1]).any()  # some centres have several neighbours: the test bites


def test_channels_first_and_rows_layouts_agree_on_a_supernet():
    """PointNet++ runs thin grouped MLPs channels-first and wide ones as rows; on a supernet at
    mixed widths (some branches thin, some wide) both layouts give the same outputs, gradients
    and BN statistics as running everything as rows."""
    results, default = [], FastPaths().channels_first_max
    for limit in (default, 0):
        torch.manual_seed(0)
        model = create_model("pointnet2_msg", num_classes=10, width=1 / 8, aug_factors=(1.0, 2.0, 3.0),
                             fast_paths=FastPaths(channels_first_max=limit)).double()
        widths = model.sample_widths(__import__("random").Random(3))
        model.set_widths(widths)
        model.train()
        x = _points("pointnet2_msg", 1 / 8, batch=2, seed=4).double()
        out = model(x)
        out.square().sum().backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        stats = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        results.append((out.detach(), grads, stats))
    thin = [layer.linear.active_out for level in model.levels[:2] for b in level.branches for layer in b.layers[:1]]
    assert min(thin) <= default < max(thin), thin  # both paths exercised
    (o1, g1, s1), (o2, g2, s2) = results
    torch.testing.assert_close(o1, o2)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pointnet2_ssg", "pointnet2_msg", "pointnet"])
def test_bn_and_relu_after_the_max_match_the_plain_formulation(name):
    """fused_max pools each MLP's last linear output and applies BN and ReLU to the pooled
    tensor: outputs, gradients, BN running statistics (momentum and cumulative) and eval outputs
    equal the plain max(relu(bn(linear))), on a supernet at mixed widths (thin channels-first and
    wide rows layers both pooled; PointNet: the max over points) with some BN scales negative
    (the min side of the identity)."""
    import random

    from core.models.base import reestimate_bn

    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, width=1 / 8, aug_factors=(1.0, 2.0, 3.0),
                             fast_paths=FastPaths(fused_max=fused)).double()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.weight.mul_(torch.where(torch.rand_like(m.weight) < 0.4, -1.0, 1.0).double())
        model.set_widths(model.sample_widths(random.Random(3)))
        model.train()
        x = _points(name, 1 / 8, batch=3, seed=4).double()
        out = model(x)
        out.square().sum().backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
        reestimate_bn(model, [x, x.flip(1)])  # momentum None: cumulative average
        stats += [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]
        model.eval()
        with torch.no_grad():
            ev = model(x)
        results.append((out.detach(), grads, stats, ev))
    assert any((m.weight < 0).any() for m in bns)
    (o1, g1, s1, e1), (o2, g2, s2, e2) = results
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(e1, e2)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    for (m1, v1, n1), (m2, v2, n2) in zip(s1, s2):
        torch.testing.assert_close(m1, m2)
        torch.testing.assert_close(v1, v2)
        assert n1 == n2


def test_bn_after_the_max_in_bf16_autocast_stays_close():
    """The tiny SSG trains in bf16 autocast: the fused pooling stays within bf16 rounding of the
    plain formulation (the batch statistics are reduced from bf16 values)."""
    outs = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = create_model("pointnet2_ssg", num_classes=40, width=1 / 8,
                             fast_paths=FastPaths(fused_max=fused)).train()
        x = _points("pointnet2_ssg", 1 / 8, batch=8, seed=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(model(x).float().detach())
    a, b = outs
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() < 0.05 * b.abs().max(), ((a - b).abs().max(), b.abs().max())


def _fused_vs_plain_layer(cin, cout, k, x_cf, dtype, autocast=False, seed=0):
    """One LinearBNAct followed by the max over groups of ``k`` rows, fused and plain, on the
    same input: outputs and the gradients of the input and of every parameter, plus the running
    statistics."""
    results = []
    for fused in (True, False):
        torch.manual_seed(seed)
        layer = LinearBNAct([cin], WidthSpec(cout, 1.0)).to(dtype).train()
        with torch.no_grad():  # some negative BN scales (the min side) and a large mean
            layer.bn.weight.mul_(torch.where(torch.rand(cout) < 0.4, -1.0, 1.0).to(dtype))
            layer.linear.bias.add_(3.0)
        g = torch.Generator().manual_seed(seed + 1)
        x0 = torch.randn(40 * k, cin, generator=g, dtype=dtype).relu()
        x = (x0.t().contiguous() if x_cf else x0).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = mlp_max([layer], x, k, FastPaths(fused_max=fused), x_cf=x_cf)
        assert y.shape == (40, cout)
        wts = torch.randn(y.shape, generator=g, dtype=torch.float32).to(y.dtype)
        (y.float() * wts.float()).sum().backward()
        grads = [x.grad] + [p.grad for p in layer.parameters()]
        results.append((y.detach().float(), [t.float() for t in grads],
                        layer.bn.running_mean.clone(), layer.bn.running_var.clone()))
    return results


@pytest.mark.parametrize("cin,cout,k,x_cf", [
    (8, 16, 32, True),    # thin input (2 in <= k): gradients straight to x and w; rows output
    (8, 16, 32, False),
    (6, 8, 16, True),     # channels-first output
    (40, 16, 32, False),  # wide input: through dz
    (40, 8, 32, True),
])
def test_fused_pooled_layer_matches_plain_in_float64(cin, cout, k, x_cf):
    """fused.linear_bn_act_max (statistics and max of a bias-free linear output, the bias added
    after, gradients to x and w without dz for thin inputs) equals max(relu(bn(linear(x)))):
    outputs, gradients of the input and of every parameter, running statistics."""
    (o1, g1, m1, v1), (o2, g2, m2, v2) = _fused_vs_plain_layer(cin, cout, k, x_cf, torch.float64)
    assert o2.abs().max() > 0
    torch.testing.assert_close(o1, o2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * max(1.0, b.abs().max().item()))
    assert g2[0].abs().sum() > 0 and g2[1].abs().sum() > 0  # not 0 == 0
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(v1, v2)


@pytest.mark.parametrize("cin,k,x_cf", [(8, 32, True), (40, 32, False)])
def test_fused_pooled_layer_gradients_in_bf16_autocast_stay_close(cin, k, x_cf):
    """Under bf16 autocast (the `cpu` preset, which takes the dz path) the fused layer's input
    and weight gradients are as close to the float32 gradients as the plain formulation's bf16
    gradients are (a large BN mean makes bf16 gradients several percent off either way)."""
    (o1, g1, _, _), (o2, g2, _, _) = _fused_vs_plain_layer(cin, 16, k, x_cf, torch.float32, autocast=True)
    _, (_, g32, _, _) = _fused_vs_plain_layer(cin, 16, k, x_cf, torch.float32)
    assert (o1 - o2).abs().max() <= 0.05 * o2.abs().max()
    for fused, plain, exact in zip(g1[:2], g2[:2], g32[:2]):  # input, linear weight
        assert torch.isfinite(fused).all()
        err_fused = ((fused - exact).norm() / exact.norm()).item()
        err_plain = ((plain - exact).norm() / exact.norm()).item()
        assert err_fused <= 1.25 * err_plain + 1e-3, (err_fused, err_plain)

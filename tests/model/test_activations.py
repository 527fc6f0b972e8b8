import pytest
import torch

from dpa3_al.model.activation_math import silut_reference
from dpa3_al.model.activations import get_activation, make_silut


@pytest.mark.parametrize("threshold", [3.0, 10.0])
def test_silut_matches_definition_and_is_twice_differentiable(threshold):
    f = make_silut(threshold)
    x = torch.linspace(-8, threshold + 6, 400, dtype=torch.float64)
    torch.testing.assert_close(f(x), silut_reference(x, *f.params))
    xs = (torch.randn(30, dtype=torch.float64) * 4 + threshold).requires_grad_()   # both branches
    assert torch.autograd.gradcheck(f, (xs,))
    assert torch.autograd.gradgradcheck(f, (xs,))
    # C1 at the threshold, saturating at silu(T) + 1
    t = torch.tensor([threshold - 1e-7, threshold + 1e-7], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(t).sum(), t)
    assert abs(g[0] - g[1]) < 1e-5
    assert float(f(torch.tensor(1e4, dtype=torch.float64))) == pytest.approx(f.params[2] + 1.0)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*silu"):
        get_activation("swish")
    assert get_activation("custom_silu:10.0").params[0] == 10.0


@pytest.mark.parametrize("threshold", [3.0, 10.0])
def test_fused_act_scale_with_tail_matches_reference(threshold):
    """act(x) * w through model/ops.act_scale (silut's raw/backward/value path, tail patched on
    the tail elements only), on a non-contiguous 2-D input with both branches: values, first and
    second derivatives."""
    from dpa3_al.model.kernels.ops import act_scale

    f = make_silut(threshold)
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(8, 12, dtype=torch.float64, generator=gen) * 4 + threshold).t()[:, :6]   # (12, 6) strided
    w = torch.rand(12, dtype=torch.float64, generator=gen) + 0.5
    assert (x >= threshold).any() and (x < threshold).any()
    torch.testing.assert_close(act_scale(x, w, f), silut_reference(x, *f.params) * w[:, None])
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: act_scale(a, b, f), (xs, ws))
    assert torch.autograd.gradgradcheck(lambda a, b: act_scale(a, b, f), (xs, ws))
    grad = torch.randn(12, 6, dtype=torch.float64, generator=gen)
    ref_x = xs.detach().clone().requires_grad_()
    (ref,) = torch.autograd.grad((silut_reference(ref_x, *f.params) * grad).sum(), ref_x)
    with torch.no_grad():   # the inference path: the tail patched in place into a fresh gradient
        _, tail = f.raw(xs.detach())
        torch.testing.assert_close(f.backward(grad, xs.detach(), tail), ref)


def test_silu_grad_times_first_and_second_derivatives():
    """silu.backward = grad * silu'(x) (fused, differentiable once more) against autograd's own silu derivative."""
    silu = get_activation("silu")

    def silu_grad_times(grad, x):
        return silu.backward(grad, x, None)

    gen = torch.Generator().manual_seed(3)
    x = (4 * torch.randn(40, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    g = torch.randn(40, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    (ref,) = torch.autograd.grad(torch.nn.functional.silu(x), x, g, create_graph=True)
    torch.testing.assert_close(silu_grad_times(g, x), ref, rtol=1e-14, atol=1e-14)
    assert torch.autograd.gradcheck(silu_grad_times, (g, x))
    v = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad(silu_grad_times(g, x), (g, x), v)
    theirs = torch.autograd.grad(ref, (g, x), v)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["silu", "tanh", "silut:1.0"])
def test_smooth_activations_and_fused_scale_twice_differentiable(name):
    """act(x) and act(x) * w (model/ops.act_scale) against plain compositions: values and the
    first and second derivatives (the force-training path uses their hand-written derivatives)."""
    from dpa3_al.model.kernels.ops import act_scale

    act = get_activation(name)
    plain = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}.get(name) or (lambda t: silut_reference(t, *act.params))
    gen = torch.Generator().manual_seed(5)
    x = (2 * torch.randn(9, 4, dtype=torch.float64, generator=gen)).requires_grad_()
    w = (torch.rand(9, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    torch.testing.assert_close(act(x), plain(x))
    assert torch.autograd.gradgradcheck(act, (x,))
    assert torch.autograd.gradgradcheck(lambda a, b: act_scale(a, b, act), (x, w))
    # second derivatives against autograd on the plain composition, with w carrying a gradient
    v = torch.randn(9, 4, dtype=torch.float64, generator=gen)
    results = []
    for f in (lambda a, b: act_scale(a, b, act), lambda a, b: plain(a) * b[:, None]):
        gx, gw = torch.autograd.grad((f(x, w) * v).sum(), (x, w), create_graph=True)
        results.append(torch.autograd.grad(gx.pow(2).sum() + gw.pow(3).sum(), (x, w)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)

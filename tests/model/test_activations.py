import pytest
import torch

from dpa3_al.model.activations import get_activation, make_silut, silut_reference


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

"""Recomputed operations (model/recompute.py): first and second derivatives equal the plain ones."""

import torch

from dpa3_al.model.kernels.recompute import recompute


def _net(seed=0):
    gen = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(3, 4).double()
    with torch.no_grad():
        for p in lin.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return lin


def test_recompute_passes_gradcheck_and_gradgradcheck():
    lin = _net()

    def fn(x, y):                       # two outputs, one an (empty) view of an input
        return torch.tanh(lin(x)) * y, x[:, :0]

    def f(x, y, *params):
        out, _ = recompute(fn, (x, y), list(lin.parameters()))
        return out

    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    params = tuple(lin.parameters())
    assert torch.autograd.gradcheck(f, (x, y, *params))
    assert torch.autograd.gradgradcheck(f, (x, y, *params))


def test_force_loss_gradients_equal_the_unrecomputed_ones_and_skip_unused_parameter_grads(monkeypatch):
    from dpa3_al.model.kernels import recompute as rc
    lin = _net(1)
    calls = {"n": 0}
    asked = []
    engine_uses = rc._engine_uses
    monkeypatch.setattr(rc, "_engine_uses", lambda t: asked.append(engine_uses(t)) or asked[-1])

    def fn(x):
        calls["n"] += 1
        return (torch.sin(lin(x)).pow(2).sum(-1),)

    def energy(pos, use):
        (e,) = recompute(fn, (pos * 1.1,), list(lin.parameters())) if use else fn(pos * 1.1)
        return e.sum()

    pos0 = torch.randn(6, 3, dtype=torch.float64)
    results = []
    for use in (False, True):
        lin.zero_grad()
        pos = pos0.clone().requires_grad_(True)
        e = energy(pos, use)
        (f,) = torch.autograd.grad(e, pos, create_graph=True)
        if use:   # the force pass asked for d/dpos only: no parameter gradient was computed
            assert asked == [False, False]
        (e + f.pow(2).sum()).backward()
        results.append([e.detach(), f.detach(), *(p.grad.clone() for p in lin.parameters()), pos.grad.clone()])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    # unrecomputed: 1 call; recomputed: forward, force pass, loss backward (first + second order)
    assert calls["n"] == 1 + 4

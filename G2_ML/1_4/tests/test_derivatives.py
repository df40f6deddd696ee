import pytest
import torch

from k7lib import derivatives as D
from k7lib import forms as F


def trig_field(k, seed=0):
    """A random trigonometric dense k-form field on R^7."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(F.n_components(k), 7, generator=g, dtype=torch.float64)
    b = torch.randn(F.n_components(k), generator=g, dtype=torch.float64)
    return lambda x: F.unpack(torch.sin(x @ W.T + b) * torch.cos(0.5 * x[:, :1]), k)


def points(n=6, seed=1):
    return torch.rand(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("k", range(6))
def test_d_of_d_vanishes(k):
    x, field = points(), trig_field(k)
    dd = D.d(lambda y: D.d(field, y), x)
    assert dd.shape == (6,) + (7,) * (k + 2)
    assert float(dd.abs().max()) < 1e-13


def test_d_of_function_is_gradient_and_d_of_one_form_is_curl():
    x = points()
    f = lambda y: torch.sin(y[:, 0] * y[:, 3]) + y[:, 6] ** 3
    grad = D.d(f, x)
    expect = torch.zeros_like(x)
    expect[:, 0] = torch.cos(x[:, 0] * x[:, 3]) * x[:, 3]
    expect[:, 3] = torch.cos(x[:, 0] * x[:, 3]) * x[:, 0]
    expect[:, 6] = 3 * x[:, 6] ** 2
    assert torch.allclose(grad, expect, atol=1e-14)
    # a = x^0 x^1 dx^2  ->  da = x^1 dx^0^dx^2 + x^0 dx^1^dx^2; (da)_{02} = x^1, (da)_{12} = x^0
    def a(y):
        out = torch.zeros(y.shape[0], 7, dtype=y.dtype)
        out = out + torch.nn.functional.one_hot(torch.tensor(2), 7).to(y.dtype) * (y[:, 0] * y[:, 1])[:, None]
        return out
    da = D.d(a, x)
    assert torch.allclose(da[:, 0, 2], x[:, 1]) and torch.allclose(da[:, 1, 2], x[:, 0])
    assert torch.allclose(da[:, 2, 0], -x[:, 1]) and float(da[:, 3:].abs().max()) == 0.0


@pytest.mark.parametrize("k", [1, 3])
def test_fd_converges_at_second_order(k):
    x, field = points(), trig_field(k, seed=4)
    exact = D.d(field, x)
    errs = [float((D.d(field, x, method="fd", h=h) - exact).abs().max()) for h in (4e-2, 2e-2, 1e-2)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.6 < r < 4.4 for r in ratios), (errs, ratios)
    assert float((D.d(field, x, method="fd") - exact).abs().max()) < 1e-8   # default h ~ eps^(1/3)


def test_packed_fields_and_tuples():
    x = points()
    W = torch.randn(35, 7, dtype=torch.float64)
    field = lambda y: torch.cos(y @ W.T)
    value, dw = D.d_packed(field, x, 3)
    assert value.shape == (6, 35) and dw.shape == (6, 35)
    assert torch.allclose(F.unpack(dw, 4), D.d(lambda y: F.unpack(field(y), 3), x), atol=1e-13)
    (v1, v2), (j1, j2) = D.value_and_jacobian(lambda y: (y.sum(-1), y ** 2), x)
    assert torch.allclose(j1, torch.ones(6, 7, dtype=torch.float64))
    assert torch.allclose(j2, torch.diag_embed(2 * x))


def test_bad_input():
    x, field = points(), trig_field(2)
    with pytest.raises(ValueError, match="unknown derivative method"):
        D.d(field, x, method="spectral")
    with pytest.raises(ValueError, match="shape \\(batch, 7\\)"):
        D.d(field, x[:, :6])
    with pytest.raises(ValueError, match="step h must be positive"):
        D.d(field, x, method="fd", h=-1.0)
    with pytest.raises(ValueError, match="packed 3-form"):
        D.d_packed(lambda y: y, x, 3)

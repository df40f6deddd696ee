import math

import pytest
import torch

from k7lib import chart, g2
from k7lib.constants import ZeroParamGeometry
from k7lib.derivatives import value_and_jacobian
from k7lib.sampling import points as sampling
from k7lib.torsion import torsion, torsion_classes_packed, torsion_packed

L = 1.5


def test_region_weights_partition_of_unity_and_pure_blocks(f64):
    lam = torch.linspace(-L, L, 2001)
    w = chart.Chart(L).region_weights(lam)
    assert w.shape == (2001, 3)
    assert (w >= 0).all()
    assert (w.sum(-1) - 1).abs().max() <= 4 * torch.finfo(torch.float64).eps
    t = lam / L
    assert torch.equal(w[t <= -0.75, 0], torch.ones_like(w[t <= -0.75, 0]))
    assert torch.equal(w[t >= 0.75, 2], torch.ones_like(w[t >= 0.75, 2]))
    assert torch.equal(w[t.abs() <= 0.25, 1], torch.ones_like(w[t.abs() <= 0.25, 1]))


def test_region_weights_are_smooth(f64):
    # First and second derivatives by forward mode (pointwise, so one jvp covers the grid)
    # agree with central differences, and the slope changes gradually (no kinks) on a fine grid.
    lam = torch.linspace(-L, L, 4001)
    f = lambda u: chart.Chart(L).region_weights(u)
    one = torch.ones_like(lam)
    d1 = lambda u: torch.func.jvp(f, (u,), (one,))[1]
    first = d1(lam)
    second = torch.func.jvp(d1, (lam,), (one,))[1]
    h = 1e-5
    assert torch.allclose(first, (f(lam + h) - f(lam - h)) / (2 * h), atol=1e-6)
    assert torch.allclose(second, (d1(lam + h) - d1(lam - h)) / (2 * h), atol=1e-4)
    assert torch.isfinite(second).all() and first.abs().max() > 1
    assert (first[1:] - first[:-1]).abs().max() < 0.05


def test_twist_angle_ends_and_monotone(f64):
    lam = torch.linspace(-L, L, 1001)
    th = chart.Chart(L).twist_angle(lam)
    assert float(th[0]) == 0.0 and float(th[-1]) == pytest.approx(math.pi / 2, abs=0)
    assert (th[1:] - th[:-1] >= 0).all()
    assert float(chart.Chart(L).twist_angle(torch.tensor([0.0]))) == pytest.approx(math.pi / 4, rel=1e-12)


def test_frame_has_unit_determinant(f64):
    lam = torch.linspace(-L, L, 101)
    A = chart.Chart(L).frame(lam)
    assert torch.allclose(torch.linalg.det(A), torch.ones(101), atol=1e-13)


def test_background_det_is_exact_and_metric_is_g_of_phi(f64):
    gen = torch.Generator().manual_seed(3)
    x, _ = sampling.uniform(500, L, gen, dtype=torch.float64)
    phi = chart.Chart(L).phi_background(x)
    m = g2.metric_data_packed(phi)
    target = float(ZeroParamGeometry().det_g_target)
    assert (m.det - target).abs().max() < 1e-13
    # g(phi_bg) = s^2 A^T A (docs/conventions.md §3: g of a pulled-back phi0), with s^14 = 65/32.
    A = chart.Chart(L).frame(x[:, 0])
    s2 = chart.scale_s() ** 2
    assert torch.allclose(m.g, s2 * A.transpose(-1, -2) @ A, atol=1e-12)
    assert (m.orientation > 0).all()


def test_background_metric_varies_with_lambda(f64):
    y = torch.full((3, 6), 0.3)
    lam = torch.tensor([[-L], [0.0], [L]])
    g = g2.metric_data_packed(chart.Chart(L).phi_background(torch.cat([lam, y], 1))).g
    assert (g[0] - g[1]).abs().max() > 0.1
    assert (g[2] - g[1]).abs().max() > 0.1
    assert (g[0] - g[2]).abs().max() > 0.1


def test_background_is_not_constant_coefficient(f64):
    gen = torch.Generator().manual_seed(4)
    x, _ = sampling.uniform(64, L, gen, neck_weighted=True, dtype=torch.float64)
    _, jac = value_and_jacobian(lambda p: chart.Chart(L).phi_background(p), x)
    assert jac[..., 0].abs().amax() > 0.1                  # depends on lambda
    assert jac[..., 1:].abs().amax() == 0                  # and on nothing else


def test_background_torsion_is_computed_and_reported(f64):
    gen = torch.Generator().manual_seed(5)
    x, _ = sampling.uniform(256, L, gen, dtype=torch.float64)
    t = torsion_packed(lambda p: chart.Chart(L).phi_background(p), x)
    c = torsion_classes_packed(t)
    T = t.T
    assert torch.isfinite(T).all()
    dense = torsion(lambda p: chart.Chart(L).phi_background(p), x[:8])
    assert torch.allclose(dense.T, T[:8], atol=1e-12)       # dense and packed paths agree
    kappa = float(ZeroParamGeometry().kappa_T)
    print(f"\nbackground torsion (L={L}): <T> = {float(T.mean()):.4f} = {float(T.mean()) / kappa:.1f} kappa_T, "
          f"max T = {float(T.max()):.4f}, <|tau0|> = {float(c.tau0.abs().mean()):.3e}, "
          f"deep in the blocks T = {float(T[(x[:, 0].abs() > 0.75 * L)].max()):.2e}")
    # Outside the transitions the background is constant in lambda, so torsion-free there.
    assert float(T[(x[:, 0].abs() > 0.76 * L)].abs().max()) < 1e-12


def test_sampler_weights_give_unbiased_integrals(f64):
    f = lambda x: x[:, 0] ** 2 + torch.cos(2 * math.pi * x[:, 3])     # integral over the chart: 2 L^3 / 3
    exact = 2 * L**3 / 3
    for neck in (False, True):
        gen = torch.Generator().manual_seed(11)
        x, w = sampling.uniform(200_000, L, gen, neck_weighted=neck, dtype=torch.float64)
        assert x[:, 0].abs().max() <= L and (x[:, 1:] >= 0).all() and (x[:, 1:] < 1).all()
        est = float((w * f(x)).mean()) * chart.Chart(L).volume
        err = float((w * f(x)).std()) / math.sqrt(len(w)) * chart.Chart(L).volume
        assert abs(est - exact) < 4 * err
    # The neck-weighted sampler really puts more points where |lambda| < L/2.
    assert float((x[:, 0].abs() < L / 2).double().mean()) == pytest.approx(0.75, abs=0.01)


def test_sampler_is_reproducible_and_validates(f64):
    a = sampling.uniform(10, L, torch.Generator().manual_seed(1))
    b = sampling.uniform(10, L, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="L"):
        sampling.uniform(10, 0.0)
    with pytest.raises(ValueError, match="n"):
        sampling.uniform(0, L)
    with pytest.raises(ValueError, match="L"):
        chart.Chart(-1.0).region_weights(torch.zeros(3))
    assert chart.Chart(L).volume == 2 * L

"""Harmonic extraction: exterior powers, Hodge-star derivatives, Gram/Dirichlet integrals, counts."""
import math
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from scipy.integrate import quad

from k7lib import forms as F
from k7lib import g2
from k7lib.fixtures import lambda_frame_field
from k7lib import harmonic as H
from k7lib.derivatives import value_and_jacobian

L = 2.0


def flat_phi(x):
    return g2.phi0_packed(x.dtype).expand(x.shape[0], 35) + 0 * x[:, :1]


def conformal_phi(f):
    """phi = e^{3 f(lambda)} phi0: g = e^{2f} I (DESIGN §3 fixture (b))."""
    return lambda x: torch.exp(3 * f(x[:, 0]))[:, None] * g2.phi0_packed(x.dtype)


@pytest.fixture(scope="module")
def flat_result():
    with warnings.catch_warnings():
        warnings.simplefilter("error", H.RankDeficiencyWarning)
        return H.extract(flat_phi, 1200, L, seed=1)


def test_exterior_power_is_transform(f64):
    M = torch.randn(4, 7, 7)
    for k in range(8):
        w = torch.randn(4, F.n_components(k))
        P = H.exterior_power(M, k)
        assert torch.allclose(torch.einsum("bij,bj->bi", P, w), F.transform_packed(w, k, M), atol=1e-12)
    A, B = torch.randn(7, 7), torch.randn(7, 7)
    assert torch.allclose(H.exterior_power(A @ B, 3), H.exterior_power(A, 3) @ H.exterior_power(B, 3), atol=1e-10)


def test_hodge_derivative_matches_forward_mode(f64):
    gen = torch.Generator().manual_seed(0)
    A0 = torch.eye(7) + 0.05 * torch.randn(7, 7, generator=gen)
    B0 = 0.1 * torch.randn(7, 7, generator=gen)

    def phi(y):
        A = A0 + torch.sin(2 * math.pi * y[:, 1:2, None]) * B0 + 0.2 * y[:, 0:1, None] * B0.T
        return F.transform_packed(g2.phi0_packed().expand(y.shape[0], 35), 3, A.transpose(-1, -2))

    x = H.sample_chart(32, 1.0, seed=3)
    for k in (2, 3):
        def S_of(y):
            m = g2.metric_data_packed(phi(y), check=False)
            return H.hodge_matrix(m.ginv, m.det, m.orientation, k)
        S1, jS = value_and_jacobian(S_of, x)
        K1 = F.d_from_jacobian(jS.transpose(1, 2), 7 - k).transpose(1, 2)
        g, jg = value_and_jacobian(lambda y: g2.metric_data_packed(phi(y), check=False).g, x)
        o = torch.sign(torch.linalg.det(g2.bilinear_B_packed(phi(x))))
        S2, K2 = H.hodge_matrix_and_d(g, jg, o, k)
        assert torch.allclose(S1, S2, atol=1e-12) and torch.allclose(K1, K2, atol=1e-10)
        # S is the Hodge star of forms.star_packed
        w = torch.randn(32, F.n_components(k))
        m = g2.metric_data_packed(phi(x))
        ref = F.star_packed(w, k, m.g, m.ginv, m.det, orientation=m.orientation)
        assert torch.allclose(torch.einsum("bij,bj->bi", S2, w), ref, atol=1e-12)


def test_conformal_gram_and_dirichlet_match_quadrature(f64):
    """g = e^{2f} I, f = 0.3 sin(lambda): G(dx^ij) = int e^{3f}, E(dx^0j) = int 9 f'^2 e^f, E(dx^ij, i>0) = 0."""
    Lq, n = 1.0, 4000
    f = lambda lam: 0.3 * torch.sin(lam)
    x = H.sample_chart(n, Lq, seed=2)
    x[:, 0] = -Lq + (torch.arange(n) + 0.5) * (2 * Lq / n)          # midpoint rule in lambda
    ints = H.integrate(H.constant_basis(2), conformal_phi(f), x, volume=2 * Lq, chunk=1000)
    G_ref = quad(lambda t: math.exp(0.9 * math.sin(t)), -Lq, Lq)[0]
    E_ref = quad(lambda t: 9 * (0.3 * math.cos(t)) ** 2 * math.exp(0.3 * math.sin(t)), -Lq, Lq)[0]
    assert torch.allclose(ints.gram, G_ref * torch.eye(21), rtol=1e-6, atol=1e-9)
    with_0 = torch.tensor([0 in I for I in F.combos(2)], dtype=torch.float64)
    assert torch.allclose(ints.dirichlet, torch.diag(E_ref * with_0), rtol=1e-5, atol=1e-8)


def test_profile_dirichlet_matches_quadrature(f64):
    """Flat metric, h(lambda) = tanh(2 lambda): w = h dx12 has |dw|^2 = h'^2 and d*w = 0;
    w = h dx01 has dw = 0 and |d*w|^2 = h'^2 (*dx01 = dx23456). So E = int h'^2 times I."""
    Lq, n = 1.0, 2000
    coef = torch.stack([H.basis_form((1, 2)), H.basis_form((0, 1))])[None]
    basis = H.CandidateBasis(2, ("h*dx12", "h*dx01"), lambda x: torch.tanh(2 * x[:, :1]), coef)
    x = H.sample_chart(n, Lq, seed=4)
    x[:, 0] = -Lq + (torch.arange(n) + 0.5) * (2 * Lq / n)
    E_ref = quad(lambda t: (2 / math.cosh(2 * t) ** 2) ** 2, -Lq, Lq)[0]
    for method, tol in (("autograd", 1e-5), ("fd", 1e-5)):
        ints = H.integrate(basis, flat_phi, x, volume=2 * Lq, chunk=700, method=method)
        assert torch.allclose(ints.dirichlet, E_ref * torch.eye(2), rtol=tol, atol=1e-9)


def test_flat_phi0_counts(flat_result):
    r = flat_result
    assert (r.b2_eff, r.b2_harm) == (21, 21)
    assert r.b3_eff == 77                     # 77 independent candidates: independence, not harmonicity
    assert r.b3_harm == 35
    mu = r.three.mu
    assert float(mu[:35].abs().max()) < 1e-10
    assert float(mu[35]) > 1e-3 and float(mu[35]) / max(float(mu[:35].abs().max()), 1e-300) > 1e6
    s = r.summary()
    assert s["b3_harm"] == 35 and s["three.mu_gap_ratio"] > 1e6
    assert all(isinstance(v, (int, float, str)) for v in s.values())


def test_harmonic_representatives_are_the_constants(flat_result, f64):
    t = flat_result.three
    V, G = t.vectors, t.integrals.gram
    assert torch.allclose(V.T @ G @ V, torch.eye(V.shape[1], dtype=V.dtype), atol=1e-8)
    assert float(t.harmonic_vectors[35:].abs().max()) < 1e-8     # no weight on the 42 TCS modes
    x = H.sample_chart(5, L, seed=9)
    assert t.forms(x).shape == (5, 35, 35)


def test_constant_3forms_alone(f64):
    r = H.extract(flat_phi, 400, L, basis3=H.constant_basis(3))
    assert (r.b3_eff, r.b3_harm) == (35, 35)
    assert float(r.three.gram_se.max()) < 1e-12                  # constant integrand: no sampling noise


def test_tcs_modes_are_not_constant_combinations(flat_result, f64):
    tcs = H.tcs_modes(L)
    assert tcs.n_modes == 42 and len(set(tcs.names)) == 42
    x = H.sample_chart(400, L, seed=5)
    w = tcs(x)                                                   # (400, 42, 35)
    spread = (w - w.mean(0)).pow(2).sum(-1).mean(0).sqrt()        # distance from the best constant form
    assert float(spread.min()) > 0.05
    nu = flat_result.three.gram_eigenvalues                     # and jointly independent of the 35 constants
    assert float(nu.min()) > 20 * flat_result.three.noise_floor and float(nu.min()) > 1e-2
    assert float(flat_result.three.gram_se[35:].max()) > 0        # position dependence: sampling noise


def test_nontrivial_frame_counts_stable_when_points_double(f64):
    a = H.extract(lambda_frame_field, 800, L, seed=3)
    b = H.extract(lambda_frame_field, 1600, L, seed=4)
    for r in (a, b):
        s = r.summary()
        assert all(np.isfinite(s[k]) for k in ("three.condition", "three.mu_max", "two.mu_max"))
    assert (a.b2_eff, a.b3_eff, a.b2_harm, a.b3_harm) == (b.b2_eff, b.b3_eff, b.b2_harm, b.b3_harm)
    assert a.b2_eff == 21 and a.b3_eff == 77
    # a metric that depends on lambda only: fibre forms dy^I stay closed and co-closed (*dy^I is
    # dlambda ^ (function of lambda) x constant), forms with dlambda do not -> the T^6 counts (15, 20)
    assert (a.b2_harm, a.b3_harm) == (15, 20)
    assert float(b.two.mu.max()) > 1e-6


def test_dependent_set_loses_rank_and_names_it(f64):
    dup = H.CandidateBasis(2, ("dup",), H._ones, (H.basis_form((0, 1)) + H.basis_form((2, 3)))[None, None])
    with pytest.warns(H.RankDeficiencyWarning, match="dup"):
        r = H.extract(flat_phi, 400, L, basis2=H.constant_basis(2) + dup, basis3=H.constant_basis(3))
    assert r.b2_eff == 21 and r.two.n_candidates == 22
    assert {"dup", "dx01", "dx23"} <= set(r.two.null_modes)


def test_bad_input(f64):
    with pytest.raises(ValueError, match="wrong degree"):
        H.CandidateBasis(3, ("a",), H._ones, torch.zeros(1, 1, 21))
    bad_shape = H.CandidateBasis(2, ("a", "b"), lambda x: x[:, :1], torch.zeros(2, 2, 21))
    with pytest.raises(ValueError, match="profiles returned"):
        H.extract(flat_phi, 400, L, basis2=bad_shape, basis3=H.constant_basis(3))
    with pytest.raises(ValueError, match="expected 2-forms"):
        H.extract(flat_phi, 400, L, basis2=H.constant_basis(3))
    with pytest.raises(ValueError, match="too few points"):
        H.extract(flat_phi, 100, L)
    with pytest.raises(ValueError, match="unknown derivative method"):
        H.extract(flat_phi, 1000, L, method="spectral")
    with pytest.raises(ValueError, match="L must be"):
        H.extract(flat_phi, 1000, -1.0)
    degenerate = lambda x: H.basis_form((0, 1, 2)).expand(x.shape[0], 35) + 0 * x[:, :1]
    with pytest.raises(ValueError, match="not positive"):
        H.integrate(H.constant_basis(2), degenerate, H.sample_chart(300, L), 2 * L)


def test_plot_spectra(flat_result):
    matplotlib.use("Agg")
    fig = H.plot_spectra(flat_result)
    axes = fig.get_axes()
    assert len(axes) == 4
    assert all(len(ax.lines) >= 2 for ax in axes)               # data + threshold lines
    assert axes[1].get_yscale() == "log" and axes[2].get_yscale() == "log"


def test_near_harmonic_cluster_is_a_labelled_diagnostic(flat_result):
    """With exact zero modes the cluster is b_harm; the export table shows both numbers side by side."""
    from k7lib.export import harmonic_table
    assert flat_result.three.near_harmonic[0] == flat_result.b3_harm
    assert flat_result.three.near_harmonic[1] > 1e6
    table = harmonic_table(flat_result)
    assert list(table["3-forms"][:3]) == [flat_result.b3_eff, flat_result.b3_harm, flat_result.b3_harm]


def test_twist_candidates_follow_the_chart_twist():
    """At lambda = -L the twisted modes are dx_a ^ wI; at +L the chart has turned wI into wJ."""
    L = 2.0
    basis = H.tcs_modes(L)
    x = torch.zeros(2, 7, dtype=torch.float64)
    x[:, 0] = torch.tensor([-L, L], dtype=torch.float64)
    w = basis(x)
    i = basis.names.index("twist*dx1^wI")
    wI = H.basis_form((3, 4)) + H.basis_form((5, 6))
    wJ = H.basis_form((3, 5)) - H.basis_form((4, 6))
    e1 = H.basis_form((1,))
    assert torch.allclose(w[0, i], F.wedge_packed(e1, wI, 1, 2), atol=1e-12)
    assert torch.allclose(w[1, i], F.wedge_packed(e1, wJ, 1, 2), atol=1e-12)

"""The GIFT ansatz (TauLayer), GIFT reference ratios, the triple wedge integral and Hitchin's cubic d^3V
(float64, small samples)."""
import ast
import inspect
import math
from fractions import Fraction

import pandas as pd
import pytest
import torch

from k7lib import chart, g2, gift
from k7lib import forms as F
from k7lib.constants import StructuralConstants, ZeroParamGeometry
from k7lib.fixtures import pullback_packed, random_frame
from k7lib.geometry import couplings


def chart_points(n, L=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 7, generator=g, dtype=torch.float64)
    x[:, 0] = L * (2 * x[:, 0] - 1)
    return x


# ---------------------------------------------------------------- TauLayer and references
def test_tau_layer_holds_exact_fractions():
    layer = gift.TauLayer()
    assert isinstance(layer.tau, Fraction) and isinstance(layer.kappa_T, Fraction)
    assert layer.tau == ZeroParamGeometry().tau == Fraction(3472, 891)
    assert layer.kappa_T == Fraction(1, 61)
    assert layer.exponent("m_tau/m_e") == -2 * layer.tau
    assert not any(p.requires_grad for p in getattr(layer, "parameters", lambda: [])())


def test_module_types_no_float_literal_for_tau_or_kappa():
    trees = [ast.parse(inspect.getsource(m)) for m in (couplings, gift)]
    floats = [n.value for t in trees for n in ast.walk(t) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
    for bad in (3472 / 891, 1 / 61, 65 / 32):
        assert not any(math.isclose(v, bad, rel_tol=1e-3) for v in floats)


def test_mass_map_is_a_power_of_the_coupling_and_multiplicative():
    layer = gift.TauLayer()
    eps = 0.3
    tau = float(layer.tau)
    assert layer.ansatz_mass_ratio(eps, "m_s/m_d") == pytest.approx(eps ** -tau, rel=1e-14)
    assert layer.ansatz_mass_ratio(-eps, "m_tau/m_mu") == pytest.approx(eps ** -tau, rel=1e-14)
    r = {s: layer.ansatz_mass_ratio(eps, s) for s in layer.sectors}
    assert r["m_tau/m_e"] == pytest.approx(r["m_tau/m_mu"] ** 2, rel=1e-12)  # two equal steps
    t = layer.ansatz_mass_ratio(torch.tensor([0.3, 0.5]), "m_tau/m_e")
    assert torch.allclose(t, torch.tensor([0.3, 0.5], dtype=torch.float64) ** (-2 * tau))
    m = layer.lepton_masses(1.0)
    assert gift.koide_q(*m) == pytest.approx(1 / 3)           # degenerate masses give Q = 1/3


def test_unknown_sector_and_bad_coupling_raise():
    layer = gift.TauLayer()
    with pytest.raises(ValueError, match="unknown sector 'm_c/m_s'.*m_s/m_d.*m_tau/m_mu.*m_tau/m_e"):
        layer.ansatz_mass_ratio(0.5, "m_c/m_s")
    with pytest.raises(ValueError, match="non-zero"):
        layer.ansatz_mass_ratio(0.0, "m_s/m_d")
    with pytest.raises(ValueError, match="finite"):
        layer.ansatz_mass_ratio(torch.tensor([float("nan")]), "m_s/m_d")


def test_gift_reference_ratios_equal_their_integers():
    refs = gift.gift_reference_ratios()
    expected = {"m_s/m_d": Fraction(20), "m_tau/m_e": Fraction(3477), "m_tau/m_mu": Fraction(84, 5),
                "Q_Koide": Fraction(2, 3)}
    assert {k: r.exact for k, r in refs.items()} == expected
    assert all(isinstance(r.exact, Fraction) for r in refs.values())
    # computed from the integers, not stored: other integers give other values
    other = gift.gift_reference_ratios(StructuralConstants(Weyl_factor=7))
    assert other["m_s/m_d"].exact == 28 and other["m_tau/m_mu"].exact == Fraction(84, 7)


def test_literal_triple_product_note():
    assert "9-form" in couplings.TRIPLE_PRODUCT_VANISHES
    a, b, c = (torch.randn(35, dtype=torch.float64) for _ in range(3))
    assert F.wedge_packed(F.wedge_packed(a, b, 3, 3), c, 6, 3).numel() == 0   # nothing above degree 7


# ---------------------------------------------------------------- the topological triple pairing
def basis_field(k, idx, coef=None):
    """x -> (batch, len(idx), C(7,k)) with unit components idx (optionally times coef(x))."""
    ci = F.combo_index(k)

    def field(x):
        out = torch.zeros(x.shape[0], len(idx), F.n_components(k), dtype=x.dtype)
        for n, I in enumerate(idx):
            out[:, n, ci[I]] = 1.0 if coef is None else coef[n](x)
        return out
    return field


def test_wedge_of_constant_forms_is_volume_times_sign(f64):
    x = chart_points(64, L=1.5)
    vol = chart.Chart(1.5).volume
    om = basis_field(2, [(0, 1), (2, 3), (0, 2), (1, 3)])
    ph = basis_field(3, [(4, 5, 6), (0, 1, 2)])
    w = couplings.triple_pairing(om, ph, x, volume=vol, chunk=20)
    assert w.Y[0, 1, 0] == pytest.approx(vol, abs=1e-13)         # dx01 ^ dx23 ^ dx456 = +vol
    assert w.Y[2, 3, 0] == pytest.approx(-vol, abs=1e-13)        # dx02 ^ dx13 = -dx0123
    assert w.Y[0, 1, 1] == 0 and w.Y[0, 0, 0] == 0               # repeated indices
    assert float(w.stderr.max()) < 1e-12                         # constant integrands
    assert w.couplings([(0, 1, 0)]).normalised.item() == pytest.approx(1.0)


def test_wedge_symmetric_in_the_two_2forms_and_mc_error_honest(f64):
    x = chart_points(400, L=1.0, seed=3)
    g = torch.Generator().manual_seed(5)
    A, Bm = torch.randn(3, 21, generator=g, dtype=torch.float64), torch.randn(2, 35, generator=g, dtype=torch.float64)

    def om(x):
        return A[None] * (1 + 0.5 * torch.sin(2 * math.pi * x[:, 1]))[:, None, None] + x[:, :1, None] * A.flip(0)[None]

    def ph(x):
        return Bm[None] * torch.cos(2 * math.pi * x[:, 2])[:, None, None] ** 2

    w = couplings.triple_pairing(om, ph, x, volume=2.0, chunk=128)
    assert torch.allclose(w.Y, w.Y.transpose(0, 1), atol=1e-12)     # 2-forms commute: Y_ijk = Y_jik
    # exact integral: the lambda-odd part integrates to 0, <cos^2> = 1/2, <1 + .5 sin> = 1
    T = couplings._wedge22_table("cpu", torch.float64)
    top = torch.einsum("ia,acL,jc,kL->ijk", A, T, A, F.star0_packed(Bm, 3))
    exact = 2.0 * 0.5 * top * (1 + 0.5 ** 2 / 2) + 2.0 * 0.5 * torch.einsum(
        "ia,acL,jc,kL->ijk", A.flip(0), T, A.flip(0), F.star0_packed(Bm, 3)) * (1 / 3)
    z = ((w.Y - exact) / w.stderr).abs()
    assert float(z.max()) < 5                                        # within 5 standard errors
    assert float(w.stderr.max()) > 0


def test_wedge_weights_and_input_errors(f64):
    x = chart_points(32)
    om = basis_field(2, [(0, 1), (2, 3)])
    ph = basis_field(3, [(4, 5, 6)])
    w2 = couplings.triple_pairing(om, ph, x, weights=torch.full((32,), 2.0), volume=2.0)
    assert w2.Y[0, 1, 0] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="weights"):
        couplings.triple_pairing(om, ph, x, weights=torch.ones(31), volume=2.0)
    with pytest.raises(ValueError, match="volume"):
        couplings.triple_pairing(om, ph, x, volume=-1.0)
    with pytest.raises(ValueError, match="omega2"):
        couplings.triple_pairing(ph, ph, x, volume=2.0)
    with pytest.raises(ValueError, match="L must be"):
        chart.Chart(0).volume


def test_triple_pairing_sees_classes_only_on_a_closed_torus(f64):
    """On T^7 adding an exact form to omega leaves int omega ^ omega' ^ Phi unchanged (Stokes): omega_0 =
    dx01 + d(sin(2 pi x2) dx3) and omega_1 = dx01 are one class; the integrands differ pointwise by
    multiples of cos(2 pi x2), which integrate to 0 on a grid exact for these trigonometric polynomials."""
    n = 8
    x = torch.rand(n * 16, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[:, 2] = torch.arange(n, dtype=torch.float64).repeat(16) / n          # equispaced in x2
    ci = F.combo_index(2)

    def om(x):
        out = torch.zeros(x.shape[0], 3, 21, dtype=x.dtype)
        out[:, 0, ci[(0, 1)]] = 1.0
        out[:, 0, ci[(2, 3)]] = 2 * math.pi * torch.cos(2 * math.pi * x[:, 2])    # d(sin(2 pi x2) dx3)
        out[:, 1, ci[(0, 1)]] = 1.0
        out[:, 2, ci[(2, 3)]] = 1.0
        return out

    w = couplings.triple_pairing(om, basis_field(3, [(4, 5, 6)]), x, volume=1.0)
    for j in range(3):                                   # class 0 = class 1 against every 2-form
        assert float((w.Y[0, j, 0] - w.Y[1, j, 0]).abs()) < 1e-12
    assert float(w.stderr[0, 1, 0]) > 0.1                # ... although the integrands differ pointwise
    assert float(w.Y[0, 2, 0]) == pytest.approx(1.0, abs=1e-12)
    cp = w.couplings([(0, 2, 0)])
    assert cp.kind == couplings.PAIRING_KIND == "triple wedge integral on the chart"


# ---------------------------------------------------------------- Hitchin cubic
def test_hitchin_cubic_along_phi0_is_28_27_volume(f64):
    x = chart_points(16)
    A = random_frame(4, 0.2)
    phi = pullback_packed(A)                          # constant positive 3-form, g = A^T A

    def phi_field(x):
        return phi.expand(x.shape[0], 35)

    h = couplings.hitchin_cubic(phi_field, lambda x: phi.expand(x.shape[0], 1, 35), x, volume=2.0)
    V_exact = 2.0 * abs(float(torch.linalg.det(A)))  # sqrt det(A^T A) = |det A|
    assert float(h.V) == pytest.approx(V_exact, rel=1e-12)
    assert couplings.HITCHIN_CUBIC_FACTOR == Fraction(28, 27)
    assert float(h.values[0]) == pytest.approx(float(couplings.HITCHIN_CUBIC_FACTOR) * V_exact, rel=1e-12)
    assert float(h.normalised[0]) == pytest.approx(1.0, rel=1e-12)
    assert float(h.norms2[0]) == pytest.approx(7 * V_exact, rel=1e-12)   # |phi|^2_g = 7


def test_hitchin_cubic_mixed_derivative_matches_finite_differences(f64):
    x = chart_points(24, seed=1)
    g = torch.Generator().manual_seed(2)
    D0 = 0.3 * torch.randn(3, 35, generator=g, dtype=torch.float64)

    def phi_field(x):                                   # varying positive 3-form
        return g2.phi0_packed()[None] * (1 + 0.2 * torch.sin(2 * math.pi * x[:, 1]))[:, None] \
            + 0.1 * torch.cos(x[:, :1]) * D0[2]

    def directions(x):
        return D0[None] * (1 + 0.3 * x[:, 3])[:, None, None]

    trip = [(0, 1, 2), (2, 0, 1)]
    h = couplings.hitchin_cubic(phi_field, directions, x, volume=2.0, triplets=trip, chunk=10)
    assert float(h.values[0]) == pytest.approx(float(h.values[1]), rel=1e-12)   # symmetric

    def V(t):
        shifted = lambda y: phi_field(y) + torch.einsum("a,bac->bc", t, directions(y))
        return float(couplings.hitchin_volume(shifted, x, volume=2.0)[0])

    def fd(hstep):   # third-order central difference for d^3 V / dt0 dt1 dt2, error O(h^2)
        tot = 0.0
        for s in [(a, b, c) for a in (1, -1) for b in (1, -1) for c in (1, -1)]:
            tot += s[0] * s[1] * s[2] * V(hstep * torch.tensor(s, dtype=torch.float64))
        return tot / (8 * hstep ** 3)

    exact = float(h.values[0])
    e1, e2 = abs(fd(2e-2) - exact), abs(fd(1e-2) - exact)
    assert e2 < 1e-3 * max(1.0, abs(exact))
    assert 2.5 < e1 / e2 < 5.5                          # second-order convergence of the FD estimate


def test_hitchin_rejects_non_positive_phi(f64):
    x = chart_points(8)
    split = g2.phi0_packed().clone()
    split[F.combo_index(3)[(0, 5, 6)]] = -1.0          # B of signature (3, 4): not a G2 form
    with pytest.raises(ValueError, match="not positive"):
        couplings.hitchin_cubic(lambda x: split.expand(x.shape[0], 35),
                             lambda x: torch.ones(x.shape[0], 1, 35, dtype=x.dtype), x, volume=2.0)
    with pytest.raises(ValueError, match="triplet"):
        couplings.hitchin_cubic(lambda x: g2.phi0_packed()[None].expand(x.shape[0], 35),
                             lambda x: torch.ones(x.shape[0], 1, 35, dtype=x.dtype), x, triplets=[(0, 0, 1)])


# ---------------------------------------------------------------- the table
def test_ansatz_table_columns_and_values(f64):
    x = chart_points(32)
    om = basis_field(2, [(0, 1), (2, 3), (0, 2), (1, 3)],
                     coef=[lambda x: torch.ones_like(x[:, 0]), lambda x: 1 + 0 * x[:, 0],
                           lambda x: 0.5 + 0 * x[:, 0], lambda x: 0.4 + 0 * x[:, 0]])
    ph = basis_field(3, [(4, 5, 6)])
    w = couplings.triple_pairing(om, ph, x, volume=2.0)
    cp = w.couplings()
    df = gift.ansatz_table(cp, n=2)
    assert isinstance(df, pd.DataFrame)
    assert {"triplet", "Y", "Y_stderr", "epsilon", "quantity", "exponent", "mapped", "gift_formula",
            "gift_exact", "gift_value", "mapped/gift"} <= set(df.columns)
    assert len(df) == 2 * 4 and set(df["quantity"]) == {"m_s/m_d", "m_tau/m_e", "m_tau/m_mu", "Q_Koide"}
    assert df.loc[df.quantity == "m_tau/m_e", "gift_exact"].iloc[0] == "3477"
    row = df[(df.triplet == "(0, 1, 0)") & (df.quantity == "m_s/m_d")].iloc[0]
    assert row.Y == pytest.approx(2.0) and row.mapped == pytest.approx(row.epsilon ** -float(Fraction(3472, 891)))
    with pytest.raises(ValueError, match="not among"):
        gift.ansatz_table(cp, triplets=[(1, 0, 0)])
    assert set(df["kind"]) == {couplings.PAIRING_KIND}
    zero = couplings.Couplings(couplings.PAIRING_KIND, ((0, 0, 0),), torch.zeros(1), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="non-zero"):
        gift.ansatz_table(zero)


def test_a_coupling_consistent_with_zero_is_flagged_and_not_mapped():
    """|Y| <= 3 standard errors: flagged in the table (and its compact form), never mapped to ratios; the
    resolved ones are shown first, and the table carries how many of the kind's couplings are resolved."""
    kind = couplings.PAIRING_KIND
    cp = couplings.Couplings(kind, ((0, 1, 0), (0, 2, 1), (1, 1, 1), (2, 2, 2), (3, 3, 3)),
                             torch.tensor([2.0, -0.7, 3e-3, 5.8e-7, 1.0], dtype=torch.float64),
                             torch.tensor([0.01, 0.3, 1e-3, 2.3e-7, float("nan")], dtype=torch.float64),
                             torch.tensor([0.5, 0.4, 0.95, 0.99, 0.98], dtype=torch.float64))
    assert cp.consistent_with_zero().tolist() == [False, True, True, True, True]   # 3.0 sigma exactly is not resolved
    assert cp.to_frame()["consistent_with_zero"].tolist() == [False, True, True, True, True]
    assert gift.choose_triplets(cp, n=3) == ((0, 1, 0), (2, 2, 2), (3, 3, 3))       # resolved first, then by eps
    df = gift.ansatz_table(cp, n=3)
    flagged = df[df.consistent_with_zero]
    assert set(flagged.triplet) == {"(2, 2, 2)", "(3, 3, 3)"} and flagged["mapped"].isna().all()
    assert flagged["mapped/gift"].isna().all() and df[~df.consistent_with_zero]["mapped"].notna().all()
    assert (df.n_computed == 5).all() and (df.n_resolved == 1).all()
    compact = gift.compact_table(df)
    assert compact["consistent_with_zero"].tolist() == [False, True, True] and compact["m_s/m_d"].isna().tolist() == [False, True, True]


def test_compact_table_one_row_per_triplet(f64):
    x = chart_points(32)
    om = basis_field(2, [(0, 1), (2, 3), (0, 2), (1, 3)],
                     coef=[lambda x: torch.ones_like(x[:, 0]), lambda x: 1 + 0 * x[:, 0],
                           lambda x: 0.5 + 0 * x[:, 0], lambda x: 0.4 + 0 * x[:, 0]])
    ph = basis_field(3, [(4, 5, 6)])
    long = gift.ansatz_table(couplings.triple_pairing(om, ph, x, volume=2.0).couplings(), n=2)
    df = gift.compact_table(long)
    assert len(df) == 2 and list(df.columns[:5]) == ["kind", "triplet", "Y", "Y_stderr", "epsilon"]
    cols = list(df.columns)
    for q in ("m_s/m_d", "m_tau/m_e", "m_tau/m_mu", "Q_Koide"):
        assert cols.index(f"{q} GIFT") == cols.index(q) + 1                   # each beside its formula
    assert df["m_tau/m_e GIFT"].iloc[0] == "dim_K7 + 10*dim_E8 + 10*H* = 3477"
    row = long[(long.triplet == df.triplet.iloc[0]) & (long.quantity == "m_s/m_d")].iloc[0]
    assert df["m_s/m_d"].iloc[0] == row.mapped
    with pytest.raises(ValueError, match="long ansatz_table"):
        gift.compact_table(df)


def test_couplings_on_orthonormal_harmonic_forms(f64):
    """Flat phi0: the harmonic forms are the fibre forms dy^I / sqrt(2L), L2_g-orthonormal. A 7-form needs
    dlambda and these fields have no dlambda-part (no lambda-y mixing), so every wedge integral vanishes.
    Hitchin's cubic on all 20 directions: the four the notebook used (dy123..dy126) give 0, others do not."""
    from k7lib.geometry import harmonic as H
    from k7lib.geometry import hodge
    L = 1.0
    flat = lambda x: g2.phi0_packed(x.dtype).expand(x.shape[0], 35) + 0 * x[:, :1]
    st = hodge.ProjectionSettings(hodge.SpectralBasis(1, 1, 1, axes=(), pairs=()), n_lambda=16, fibre_points=31)
    r = H.extract(flat, 1024, L, settings=st)
    om, ph = r.two.representatives(), r.three.representatives()
    x = chart_points(64, L=L)
    assert om(x).shape == (64, 15, 21) and ph(x).shape == (64, 20, 35)
    w = couplings.triple_pairing(om, ph, x, volume=2 * L)
    assert float(w.Y.abs().max()) < 1e-12
    h = couplings.hitchin_cubic(flat, ph, x[:8], volume=2 * L)
    assert len(h.triplets) == 1540 and bool(torch.isfinite(h.values).all())
    assert h.couplings().kind == couplings.HITCHIN_KIND == "Hitchin cubic d3V"
    first4 = [i for i, t in enumerate(h.triplets) if max(t) < 4]
    assert float(h.values[first4].abs().max()) < 1e-12 < float(h.values.abs().max())
    top = h.largest(4)
    assert float(top.normalised[0]) > 6 and torch.allclose(top.normalised, top.normalised[0].expand(4))
    assert float(top.stderr.max()) < 1e-12                          # constant integrand


def test_density_cubic_form_matches_nested_jvp(f64):
    """The packed cubic form T = d^3 rho (35 x 35 x 35 per point) is symmetric and contracts to the third
    directional derivative of nested forward-mode jvps, to round-off."""
    phi = torch.stack([pullback_packed(random_frame(s, 0.3)) for s in range(3)])
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(3, 35, generator=g, dtype=torch.float64) for _ in range(3))
    T = couplings.density_cubic_form(phi)
    assert torch.allclose(T, T.permute(0, 2, 1, 3), atol=1e-10) and torch.allclose(T, T.permute(0, 3, 2, 1), atol=1e-10)
    fast = torch.einsum("bIJK,bI,bJ,bK->b", T, a, b, c)
    ref = couplings.third_derivative_jvp(phi, a, b, c)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))

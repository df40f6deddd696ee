"""Exact torsion-free fixtures (k7lib.exact): T = 0, Ric = 0 and g(phi) = the stated metric in float64;
the Gibbons-Hawking potential's monopole equation; the box and the positivity check."""
import pytest
import torch

from k7lib import g2
from k7lib.curvature import curvature
from k7lib.derivatives import value_and_jacobian
from k7lib.exact import (
    FIXTURES,
    Box,
    as_box,
    check_positive,
    first_nonpositive,
    fixture,
)
from k7lib.exact import gibbons_hawking as GH
from k7lib.torsion import torsion_packed


def box_points(box, n, seed=0):
    return box.from_unit(torch.rand(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


@pytest.mark.parametrize("name", list(FIXTURES))
def test_fixture_is_torsion_free_with_its_metric(name):
    fx = FIXTURES[name]
    x = box_points(fx.box, 24)
    t = torsion_packed(fx.phi, x)
    assert float(t.T.max()) <= 1e-10
    assert bool((t.metric.orientation > 0).all())
    g = fx.metric(x)
    assert float((t.metric.g - g).abs().max()) <= 1e-12 * float(g.abs().max())


@pytest.mark.parametrize("name", ["bryant-salamon", "gibbons-hawking"])
def test_fixture_is_ricci_flat_and_curved(name):
    fx = FIXTURES[name]
    c = curvature(g2.metric_field_from_phi(fx.phi), box_points(fx.box, 4, seed=1), chunk=2)
    rm = float(c.riemann_norm.min())
    assert rm > 0.1                                  # curved: Ricci-flatness is not a triviality here
    assert float(c.ricci_norm.max()) <= 1e-10 * rm


def test_gibbons_hawking_monopole_equation():
    """dA = -*_3 dV: curl A = -grad V on the box (the sign for which omega_1..3 are closed)."""
    x = box_points(GH.BOX, 16)
    (V, A), (dV, dA) = value_and_jacobian(lambda y: GH.potential(y[:, 4:7]), x)
    dV, dA = dV[:, 4:7], dA[..., 4:7]                  # d_m V and d_m A_i along x^1..x^3
    curl = torch.stack([dA[:, 2, 1] - dA[:, 1, 2], dA[:, 0, 2] - dA[:, 2, 0], dA[:, 1, 0] - dA[:, 0, 1]], -1)
    assert float((curl + dV).abs().max()) <= 1e-12
    assert float(dV.abs().max()) > 0.1                 # the potential is not constant on the box


def test_box_rejects_empty_inverted_and_wrong_dimension():
    with pytest.raises(ValueError, match="empty in coordinate x\\^2"):
        Box((0,) * 7, (1, 1, 0, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="inverted in coordinate x\\^0"):
        Box((2,) + (0,) * 6, (1,) * 7)
    with pytest.raises(ValueError, match="7 numbers"):
        Box((0,) * 6, (1,) * 6)
    with pytest.raises(ValueError, match="finite"):
        Box((0,) * 7, (1,) * 6 + (float("inf"),))
    assert as_box(((0,) * 7, (2,) * 7)).volume == 128.0


def test_unknown_fixture_and_non_positive_point_are_named():
    with pytest.raises(ValueError, match="unknown fixture 'hyperbolic'; choose one of bryant-salamon"):
        fixture("hyperbolic")
    bs = FIXTURES["bryant-salamon"]
    x = torch.tensor([[1.5, 1.0, 0.2, 0.3, 1.1, 0.4, 0.5], [0.7, 1.0, 0.2, 0.3, 1.1, 0.4, 0.5]], dtype=torch.float64)
    assert first_nonpositive(bs.phi, x) == 1              # r = 0.7 < 1: outside the manifold
    with pytest.raises(ValueError, match=r"phi_E is not a positive 3-form at x = \(0.7, 1, 0.2"):
        check_positive(bs.phi, x, "phi_E")
    minus = lambda y: -FIXTURES["flat"].phi(y)            # positive for the other orientation only
    assert first_nonpositive(minus, x) == 0

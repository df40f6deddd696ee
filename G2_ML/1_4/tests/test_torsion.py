import pytest
import torch

from k7lib import forms as F
from k7lib import g2
from k7lib.fixtures import (
    conformal_f,
    conformal_field,
    diffeo_field,
    diffeo_jacobian,
    generic_field,
    pullback_packed,
    random_frame,
)
from k7lib.torsion import torsion, torsion_classes_packed, torsion_packed


def points(n=8, seed=2):
    return 2 * torch.rand(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1


def test_fixture_a_pullback_by_a_diffeomorphism_is_torsion_free():
    x = points()
    t = torsion(diffeo_field, x)
    DF = diffeo_jacobian(x)
    assert torch.allclose(t.g, DF.transpose(1, 2) @ DF, atol=1e-13)
    scale = float(torsion(generic_field, x).T.max())          # a typical non-zero torsion, for scale
    assert float(t.T.max()) < 1e-10 * scale
    for cls in (t.tau0, t.tau1, t.tau2, t.tau3):
        assert float(cls.abs().max()) < 1e-12


def test_fixture_b_conformal_rescaling():
    x = points()
    t = torsion(conformal_field, x)
    f, df = conformal_f(x)
    n2 = torch.exp(-2 * f) * (df ** 2).sum(1)                 # |df|^2_g with g = e^{2f} I
    assert torch.allclose(t.g, torch.exp(2 * f)[:, None, None] * torch.eye(7, dtype=x.dtype), rtol=1e-13)
    assert torch.allclose(t.tau1, df, rtol=1e-10, atol=1e-13)
    assert float(t.tau0.abs().max()) < 1e-12
    assert float(t.tau2.abs().max()) < 1e-12 and float(t.tau3.abs().max()) < 1e-12
    assert torch.allclose(t.norm2_dphi, 36 * n2, rtol=1e-10)
    assert torch.allclose(t.norm2_dpsi, 48 * n2, rtol=1e-10)
    assert torch.allclose(t.T, (84 * n2).sqrt(), rtol=1e-10)


def test_fixture_c_constant_form():
    A = random_frame(5, 0.25)
    phiA = pullback_packed(A)
    x = points()
    t = torsion(lambda y: phiA.expand(y.shape[0], 35) * 1, x)
    assert torch.allclose(t.g, (A.T @ A).expand(8, 7, 7), atol=1e-12)
    assert float(t.T.abs().max()) == 0.0


def test_fd_method_converges_at_second_order_on_fixture_b():
    x = points()
    exact = torsion(conformal_field, x).T
    errs = [float((torsion(conformal_field, x, method="fd", h=h).T - exact).abs().max()) for h in (4e-2, 2e-2, 1e-2)]
    assert all(3.6 < errs[i] / errs[i + 1] < 4.4 for i in range(2)), errs


def test_torsion_class_identities_on_a_generic_field():
    x = points(6)
    tp = torsion_packed(generic_field, x)
    c = torsion_classes_packed(tp)
    m = tp.metric
    assert float(c.tau0.abs().min()) > 1e-3 and float(c.tau2.abs().max()) > 1e-3   # genuinely generic

    def star(w, k):
        return F.star_packed(w, k, m.g, m.ginv, m.det, orientation=m.orientation)

    def close(a, b):
        return float((a - b).abs().max()) <= 1e-10 * max(1.0, float(b.abs().max()))

    W = F.wedge_packed
    assert close(tp.dphi, c.tau0[:, None] * tp.psi + 3 * W(c.tau1, tp.phi, 1, 3) + star(c.tau3, 3))
    assert close(tp.dpsi, 4 * W(c.tau1, tp.psi, 1, 4) + W(c.tau2, tp.phi, 2, 3))
    zero7 = torch.zeros(6, 1, dtype=x.dtype)
    assert close(W(c.tau3, tp.phi, 3, 3), torch.zeros(6, 7, dtype=x.dtype))
    assert close(W(c.tau3, tp.psi, 3, 4), zero7)
    assert close(W(c.tau2, tp.psi, 2, 4), torch.zeros(6, 7, dtype=x.dtype))

    def n2(w, k):
        return F.inner_packed(w, w, k, m.g, m.ginv, m.det)

    assert close(tp.norm2_dphi, 7 * c.tau0 ** 2 + 36 * n2(c.tau1, 1) + n2(c.tau3, 3))
    assert close(tp.norm2_dpsi, 48 * n2(c.tau1, 1) + n2(c.tau2, 2))


def test_dense_and_packed_fields_agree():
    x = points(4)
    a = torsion(generic_field, x)
    b = torsion(lambda y: F.unpack(generic_field(y), 3), x)
    assert torch.allclose(a.T, b.T, rtol=1e-13) and torch.allclose(a.tau2, b.tau2, atol=1e-13)
    assert a.dpsi.shape == (4,) + (7,) * 5 and a.tau3.shape == (4, 7, 7, 7)


def test_gradients_flow_to_parameters_through_forward_mode():
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    field = lambda y: torch.exp(3 * w * torch.sin(y[:, 0]))[:, None] * g2.phi0_packed(y.dtype)
    x = points(5)
    t = torsion_packed(field, x)
    (t.T ** 2).mean().backward()
    eps = 1e-6
    with torch.no_grad():
        fp = lambda v: (torsion_packed(lambda y: torch.exp(3 * v * torch.sin(y[:, 0]))[:, None]
                                       * g2.phi0_packed(y.dtype), x).T ** 2).mean()
        fd = (fp(w + eps) - fp(w - eps)) / (2 * eps)
    assert float(w.grad) == pytest.approx(float(fd), rel=1e-7)


def test_bad_input():
    x = points(4)
    with pytest.raises(ValueError, match="unknown derivative method"):
        torsion(generic_field, x, method="spline")
    with pytest.raises(ValueError, match="not positive"):
        torsion(lambda y: -0.0 * generic_field(y), x)
    with pytest.raises(ValueError, match="phi field must return"):
        torsion(lambda y: y, x)

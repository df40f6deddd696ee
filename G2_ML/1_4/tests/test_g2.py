import pytest
import torch

from k7lib import forms as F
from k7lib import g2
from k7lib.fixtures import pullback_packed, random_frame

EYE = torch.eye(7, dtype=torch.float64)


def test_phi0_and_psi0_match_the_design_convention():
    c3, c4 = F.combo_index(3), F.combo_index(4)
    phi, psi = g2.phi0_packed(), g2.psi0_packed()
    expect_phi = {(0, 1, 2): 1, (0, 3, 4): 1, (0, 5, 6): 1, (1, 3, 5): 1, (1, 4, 6): -1, (2, 3, 6): -1, (2, 4, 5): -1}
    expect_psi = {(3, 4, 5, 6): 1, (1, 2, 3, 4): 1, (1, 2, 5, 6): 1, (0, 2, 4, 6): 1, (0, 2, 3, 5): -1,
                  (0, 1, 4, 5): -1, (0, 1, 3, 6): -1}
    assert {I: int(phi[c3[I]]) for I in expect_phi} == expect_phi and int(phi.abs().sum()) == 7
    assert {I: int(psi[c4[I]]) for I in expect_psi} == expect_psi and int(psi.abs().sum()) == 7


def test_metric_of_phi0_is_identity_and_psi_is_star_phi():
    assert torch.allclose(g2.metric_from_phi(g2.phi0()), EYE, atol=1e-15)
    assert torch.allclose(g2.psi_from_phi(g2.phi0()), g2.psi0(), atol=1e-15)
    assert torch.allclose(F.wedge(g2.phi0(), g2.psi0()), 7 * F.volume_form(EYE), atol=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_metric_of_pulled_back_phi0_is_AtA(seed):
    A = random_frame(seed, 0.25)
    phi = F.unpack(pullback_packed(A), 3)
    assert torch.allclose(g2.metric_from_phi(phi), A.T @ A, rtol=1e-12, atol=1e-12)


def test_orientation_reversing_frame():
    A = random_frame(3, 0.3)
    A[0] = -A[0]
    m = g2.metric_data_packed(pullback_packed(A))
    assert torch.allclose(m.g, A.T @ A, atol=1e-12) and float(m.orientation) == -1.0
    ids = g2.g2_identities(F.unpack(pullback_packed(A), 3)[None])
    assert torch.allclose(ids.phi_wedge_psi, torch.tensor([7.0], dtype=torch.float64))


def test_scaling_phi_by_s3_scales_g_by_s2():
    s = 1.3
    g = g2.metric_from_phi(s ** 3 * g2.phi0())
    assert torch.allclose(g, s ** 2 * EYE, rtol=1e-13)
    assert torch.allclose(torch.linalg.det(g), torch.tensor(s ** 14, dtype=torch.float64), rtol=1e-12)


def test_identities_on_random_positive_forms():
    A = torch.stack([random_frame(s, 0.25) for s in range(8)])
    phi = F.unpack(pullback_packed(A), 3)
    phi = phi * torch.linspace(0.5, 2.0, 8, dtype=torch.float64)[:, None, None, None]
    ids = g2.g2_identities(phi)
    seven = torch.full((8,), 7.0, dtype=torch.float64)
    for v in (ids.norm2_phi, ids.norm2_psi, ids.phi_wedge_psi):
        assert torch.allclose(v, seven, rtol=1e-12)
    assert float(ids.psi_error.max()) < 1e-13
    # a wrong psi is caught
    bad = ids_bad = g2.g2_identities(phi, psi=1.01 * g2.psi_from_phi(phi))
    assert float(bad.psi_error.min()) == pytest.approx(0.01, rel=1e-8)
    assert torch.allclose(ids_bad.phi_wedge_psi, 1.01 * seven)


def test_non_positive_form_is_rejected_with_a_count():
    phi = g2.phi0().expand(5, 7, 7, 7).clone()
    degenerate = torch.zeros(7, 7, 7, dtype=torch.float64)
    for p, s in ((( 0, 1, 2), 1), ((0, 2, 1), -1), ((1, 0, 2), -1), ((1, 2, 0), 1), ((2, 0, 1), 1), ((2, 1, 0), -1)):
        degenerate[p] = s
    phi[1] = degenerate
    phi[3] = degenerate
    with pytest.raises(ValueError, match="2 of 5 points"):
        g2.metric_from_phi(phi)
    with pytest.raises(ValueError, match="shape"):
        g2.metric_from_phi(torch.zeros(5, 7, 7))


@pytest.mark.parametrize("flip", [False, True])
def test_psi_tangent_is_the_derivative_of_star_phi(flip):
    """Theta'(phi) eta from the pi_1/pi_7/pi_27 formula equals forward-mode autograd of phi -> *phi."""
    from torch.func import jvp
    A = torch.stack([random_frame(s, 0.25) for s in range(5)])
    if flip:
        A[:, 0] = -A[:, 0]                      # orientation-reversing frames: B negative definite
    phi = pullback_packed(A)
    eta = torch.randn(5, 3, 35, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = g2.metric_data_packed(phi)
    got = g2.psi_tangent_packed(phi, g2.psi_packed(phi, m), m, eta)
    ref = torch.stack([jvp(lambda p: g2.psi_packed(p, check=False), (phi,), (eta[:, n],))[1] for n in range(3)], 1)
    assert float((got - ref).abs().max()) < 1e-12 * float(ref.abs().max())

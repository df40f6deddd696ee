"""The holonomy test (k7lib.holonomy): adapted frames, the split of the curvature operator by phi, and the
rank of the Ambrose-Singer span: 14 for Bryant-Salamon, 3 for Gibbons-Hawking x R^3, 0 for flat."""
import pytest
import torch

from k7lib import fixtures, g2
from k7lib import holonomy as H
from k7lib.exact import FIXTURES


def box_points(box, n, seed=0):
    return box.from_unit(torch.rand(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def test_adapted_frame_is_orthonormal_and_carries_phi0():
    x = torch.rand(6, 7, dtype=torch.float64)
    phi = fixtures.generic_field(x)
    g = g2.metric_data_packed(phi).g
    frame = H.adapted_frame(phi, g)
    assert float((frame.transpose(-1, -2) @ g @ frame - torch.eye(7, dtype=torch.float64)).abs().max()) <= 1e-12
    assert float((H.frame_components(phi, frame) - g2.phi0_packed()).abs().max()) <= 1e-12
    P7 = H.lambda7_projector(g2.phi0_packed()[None])[0]
    assert torch.allclose(P7 @ P7, P7, atol=1e-14) and abs(float(torch.trace(P7)) - 7) <= 1e-12


@pytest.mark.parametrize("name,rank", [("bryant-salamon", 14), ("gibbons-hawking", 3), ("flat", 0)])
def test_holonomy_rank_of_the_fixtures(name, rank):
    fx = FIXTURES[name]
    h = H.holonomy_test(fx.phi, box_points(fx.box, 12), fx.box.centre, n_steps=4, chunk=6)
    assert h.rank == rank
    assert h.outside_g2 <= 1e-10
    if rank:
        assert h.gap >= 1e3                      # RK4 error with 4 steps sets the floor, far below the rank's values
        assert float(h.singular_values[rank - 1]) >= 1e-2


def test_a_torsion_free_metric_that_is_not_g2_adapted_shows_curvature_outside_g2():
    """phi = e^{3f} phi0 is not torsion-free: its curvature has a clear part outside g2 (the test can fail)."""
    x = torch.rand(8, 7, dtype=torch.float64)
    h = H.holonomy_test(fixtures.conformal_field, x, x.mean(0), n_steps=2, chunk=8)
    assert h.outside_g2 > 0.1

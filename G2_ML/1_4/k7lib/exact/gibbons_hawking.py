"""Gibbons-Hawking x R^3: a hyper-Kaehler 4-manifold times flat R^3, holonomy SU(2) inside G2.

Source: G. Gibbons, S. Hawking, "Gravitational multi-instantons", Phys. Lett. B 78 (1978) 430-432.
On R^3 (coordinates x^1..x^3) with a positive harmonic V and a 1-form A, the metric
  g_GH = V dx.dx + V^-1 (dtau + A)^2
is hyper-Kaehler when dA = -*_3 dV for the orientation dx^1^dx^2^dx^3 (dA = *_3 dV for the opposite one):
then the three 2-forms omega_i = (dtau + A) ^ dx^i + (1/2) V eps_ijk dx^j ^ dx^k are closed
(d omega_1 = dA ^ dx^1 + dV ^ dx^2 ^ dx^3 = (-d_1 V + d_1 V) vol_3 = 0). Here
  V = 1 + sum_j m_j / |x - p_j|,   A = sum_j m_j (n_j x (x - p_j)) . dx / (rho_j (rho_j + n_j . (x - p_j))),
rho_j = |x - p_j|, n_j the unit vector from the centre p_j towards the box: each term is
m_j (1 - cos theta_j) dphi_j about the axis n_j, singular only on the Dirac string x = p_j - s n_j (s >= 0),
which points away from the box. The centres lie outside the box, so V and A are smooth on it.

With flat R^3 (y^1..y^3) and coordinates x = (y^1, y^2, y^3, tau, x^1, x^2, x^3), the 3-form
  phi = dy^123 + dy^1 ^ omega_1 + dy^2 ^ omega_2 - dy^3 ^ omega_3
is phi0 of conventions §3 in the coframe (dy^1, dy^2, dy^3, V^-1/2 (dtau + A), V^1/2 dx^1, V^1/2 dx^2,
V^1/2 dx^3) (omega_I = e^34 + e^56 = omega_1, omega_J = omega_2, omega_K = omega_3): torsion-free with
g(phi) = dy.dy + g_GH. The holonomy is the SU(2) acting on the anti-self-dual 2-forms of the
Gibbons-Hawking factor: rank 3 in g2.
"""
from __future__ import annotations

import torch

from ..fixtures import pullback_packed
from .box import Box

BOX = Box((0.0, 0.0, 0.0, 0.0, -0.5, -0.5, -0.5), (1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5))
CENTRES = ((0.0, 0.0, 1.3), (0.25, -0.15, -1.4))      # both outside BOX (|x^3| <= 0.5 there)
MASSES = (1.0, 0.7)
SOURCE = "Gibbons-Hawking (Phys. Lett. B 78, 1978), two centres outside the box, times flat R^3"


def potential(x3: torch.Tensor, centres=CENTRES, masses=MASSES, towards=(0.0, 0.0, 0.0)):
    """(V (batch,), A (batch, 3)) at points x3 (batch, 3) of R^3; each Dirac string points away from `towards`."""
    V = torch.ones_like(x3[:, 0])
    A = torch.zeros_like(x3)
    target = x3.new_tensor(towards)
    for p, m in zip(centres, masses):
        p = x3.new_tensor(p)
        n = (target - p) / (target - p).norm()
        d = x3 - p
        rho = d.norm(dim=-1)
        V = V + m / rho
        A = A + m * torch.cross(n.expand_as(d), d, dim=-1) / (rho * (rho + d @ n))[:, None]
    return V, A


def coframe(x: torch.Tensor) -> torch.Tensor:
    """E (batch, 7, 7), rows (dy^1, dy^2, dy^3, V^-1/2 (dtau + A), V^1/2 dx^1..3): phi = E^* phi0, g = E^T E."""
    V, A = potential(x[:, 4:7])
    eye = torch.eye(7, dtype=x.dtype, device=x.device).expand(x.shape[0], 7, 7)
    s, si = V.sqrt()[:, None], V.rsqrt()[:, None]
    rows = [eye[:, 0], eye[:, 1], eye[:, 2], torch.cat([torch.zeros_like(x[:, :3]), si, si * A], -1)]
    rows += [s * eye[:, 4 + i] for i in range(3)]
    return torch.stack(rows, 1)


def phi(x: torch.Tensor) -> torch.Tensor:
    """The Gibbons-Hawking x R^3 3-form: x (batch, 7) -> packed (batch, 35)."""
    return pullback_packed(coframe(x))


def metric(x: torch.Tensor) -> torch.Tensor:
    """dy.dy + V dx.dx + V^-1 (dtau + A)^2, term by term: (batch, 7) -> (batch, 7, 7)."""
    V, A = potential(x[:, 4:7])
    g = torch.zeros(x.shape[0], 7, 7, dtype=x.dtype, device=x.device)
    g[:, :3, :3] = torch.eye(3, dtype=x.dtype, device=x.device)
    theta = torch.cat([torch.ones_like(V)[:, None], A], -1)          # dtau + A on (tau, x^1, x^2, x^3)
    g[:, 3:, 3:] = theta[:, :, None] * theta[:, None, :] / V[:, None, None]
    g[:, 4:, 4:] = g[:, 4:, 4:] + V[:, None, None] * torch.eye(3, dtype=x.dtype, device=x.device)
    return g

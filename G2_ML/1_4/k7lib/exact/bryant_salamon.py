"""The Bryant-Salamon metric on S^3 x R^4 (the spinor bundle of S^3): complete, holonomy exactly G2.

Sources: R. Bryant, S. Salamon, "On the construction of some complete metrics with exceptional
holonomy", Duke Math. J. 58 (1989) 829-850; in the coframe form of G. Gibbons, D. Page, C. Pope,
"Einstein metrics on S^3, R^3 and R^4 bundles", Commun. Math. Phys. 127 (1990) 529-553:

  ds^2 = dr^2 / (1 - r^-3) + (r^2/9) (1 - r^-3) sum_i (nu_i - sigma_i/2)^2 + (r^2/12) sum_i sigma_i^2,

r > 1 (the zero section S^3 sits at r = 1), sigma_i and nu_i left-invariant 1-forms of two copies of
SU(2) with d sigma_1 = -sigma_2 ^ sigma_3 (cyclic), likewise nu. In Euler angles (theta, phi, psi):
  sigma_1 = cos psi dtheta + sin psi sin theta dphi,  sigma_2 = -sin psi dtheta + cos psi sin theta dphi,
  sigma_3 = dpsi + cos theta dphi,
regular for 0 < theta < pi. Coordinates x = (r, theta_1, phi_1, psi_1, theta_2, phi_2, psi_2): sigma from
the first triple, nu from the second.

Orthonormal coframe e^0 = dr / sqrt(1 - r^-3), a_i = (r/3) sqrt(1 - r^-3) (nu_i - sigma_i/2),
b_i = (r / 2 sqrt 3) sigma_i, and the 3-form
  phi = e^0 ^ (a_1^b_1 + a_2^b_2 + a_3^b_3) + b_1^b_2^b_3 - a_1^a_2^b_3 - a_2^a_3^b_1 - a_3^a_1^b_2,
which is phi0 of conventions §3 in the coframe (e^0, a_1, b_1, a_2, b_2, -b_3, a_3) (positive, orientation
+1). The signs were found by requiring d phi = d*phi = 0 among all signed orderings of the coframe
that keep e^0 first; tests/test_exact.py checks T = 0 and Ric = 0 to round-off, g(phi) = ds^2 above,
and holonomy rank 14.
"""
from __future__ import annotations

import math

import torch

from ..fixtures import pullback_packed
from .box import Box

# r in [1.3, 2.3] keeps clear of the zero section r = 1; theta in [0.8, 1.8] of the chart's poles.
BOX = Box((1.3, 0.8, 0.0, 0.0, 0.8, 0.0, 0.0), (2.3, 1.8, 1.0, 1.0, 1.8, 1.0, 1.0))
SOURCE = ("Bryant-Salamon (Duke Math. J. 58, 1989), coframe form of Gibbons-Page-Pope "
          "(Commun. Math. Phys. 127, 1990) with a = 1")


def left_invariant_forms(angles: torch.Tensor) -> torch.Tensor:
    """sigma_i = S[..., i, :] . (dtheta, dphi, dpsi) for Euler angles (batch, 3) -> S (batch, 3, 3)."""
    th, ph, ps = angles.unbind(-1)
    z, o = torch.zeros_like(th), torch.ones_like(th)
    return torch.stack([torch.stack([torch.cos(ps), torch.sin(ps) * torch.sin(th), z], -1),
                        torch.stack([-torch.sin(ps), torch.cos(ps) * torch.sin(th), z], -1),
                        torch.stack([z, torch.cos(th), o], -1)], -2)


def one_forms(x: torch.Tensor):
    """(e^0 (batch, 7), a (batch, 3, 7), b (batch, 3, 7)): the coframe's rows in coordinates."""
    r = x[:, 0]
    f = 1 - r ** -3
    sigma, nu = left_invariant_forms(x[:, 1:4]), left_invariant_forms(x[:, 4:7])
    z = torch.zeros_like(sigma[..., :1])
    e0 = torch.cat([f.rsqrt()[:, None], torch.zeros_like(x[:, 1:])], -1)
    ca = (r / 3 * f.sqrt())[:, None, None]
    cb = (r / (2 * math.sqrt(3)))[:, None, None]
    a = torch.cat([z, -0.5 * ca * sigma, ca * nu], -1)
    b = torch.cat([z, cb * sigma, torch.zeros_like(nu)], -1)
    return e0, a, b


def coframe(x: torch.Tensor) -> torch.Tensor:
    """E (batch, 7, 7) with rows (e^0, a_1, b_1, a_2, b_2, -b_3, a_3): phi = E^* phi0, g = E^T E."""
    e0, a, b = one_forms(x)
    return torch.stack([e0, a[:, 0], b[:, 0], a[:, 1], b[:, 1], -b[:, 2], a[:, 2]], 1)


def phi(x: torch.Tensor) -> torch.Tensor:
    """The Bryant-Salamon 3-form: x (batch, 7) -> packed (batch, 35)."""
    return pullback_packed(coframe(x))


def metric(x: torch.Tensor) -> torch.Tensor:
    """ds^2 of the module docstring, assembled term by term from sigma and nu: (batch, 7) -> (batch, 7, 7)."""
    r = x[:, 0]
    f = 1 - r ** -3
    z = torch.zeros_like(x[:, :1, None].expand(-1, 3, 1))
    sigma = torch.cat([z, left_invariant_forms(x[:, 1:4]), torch.zeros_like(z).expand(-1, 3, 3)], -1)
    nu = torch.cat([z, torch.zeros_like(z).expand(-1, 3, 3), left_invariant_forms(x[:, 4:7])], -1)
    fibre = nu - sigma / 2
    g = torch.einsum("b,bia,bic->bac", r * r * f / 9, fibre, fibre)
    g = g + torch.einsum("b,bia,bic->bac", r * r / 12, sigma, sigma)
    dr = torch.zeros_like(x)
    dr[:, 0] = 1
    return g + (1 / f)[:, None, None] * dr[:, :, None] * dr[:, None, :]

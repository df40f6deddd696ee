"""The twisted-connected-sum chart of K7: neck coordinate, regions and background 3-form.

Its points are drawn by `k7lib.sampling`.

The chart is one frozen object, `Chart(L)`: its half-length L is checked once, when it is built, and
everything that derives from L (the coordinate volume, the regions, the twist, the background 3-form)
is read from it. Functions elsewhere take a `chart` where they need the chart (`as_chart` also admits
a bare positive L, wrapped once at the entry).

Points are x (batch, 7): x[:, 0] = lambda in [-L, L] (the neck coordinate, not periodic;
lambda = -L lies deep in the left block, +L deep in the right one) and x[:, 1:] = y in
[0, 1)^6, periodic fibre coordinates of period 1 (docs/conventions.md §5).

With t = lambda / L the regions are (all transitions C-infinity, built from `smooth_step`):
  left  = 1 on t <= -3/4, falls to 0 over [-3/4, -1/4];
  right = 0 on t <= 1/4, rises to 1 over [1/4, 3/4];
  neck  = 1 - left - right (1 on |t| <= 1/4, support |t| < 3/4).

Background (docs/conventions.md §3, §5): phi_bg = s^3 A(lambda)^* phi0, i.e. (phi_bg)_{ijk} =
s^3 A_ai A_bj A_ck (phi0)_{abc}, with A = W(lambda) R(theta(lambda)) and det A = 1, so that
g(phi_bg) = s^2 A^T A (Bryant/Hitchin) and det g(phi_bg) = s^14 = 65/32 exactly at every point.
  - s = (det_g_target)^(1/14), det_g_target = 65/32 from `ZeroParamGeometry` (a scale of phi,
    never a rescaled metric).
  - W = exp(left * u_L + right * u_R), diagonal, trace-free exponents: in the left block the
    fibre circle y^1 is stretched by 2 and the other five fibre directions shrunk by 2^(-1/5);
    in the right block the same with y^2 (each block has its own distinguished circle, as the
    two ACyl pieces M1 x S^1 and M2 x S^1 of a TCS). Neck: no warp.
  - R(theta) rotates the fibre planes (y^3, y^6) and (y^4, y^5) by theta/2. On the T^4 fibre
    (y^3..y^6) with hyper-Kaehler triple w_I = e34 + e56, w_J = e35 - e46, w_K = e36 + e45
    (phi0 = e012 + e0^w_I + e1^w_J - e2^w_K) this rotates (w_I, w_J) by theta about w_K, so
    theta = pi/2 maps w_I to w_J: the hyper-Kaehler rotation of the TCS matching
    (Kovalev 2003; Corti-Haskins-Nordstroem-Pacini, arXiv:1207.4470, §3).
  - theta(lambda) = (pi/2) smooth_step((t + 3/4) * 2/3): 0 in the left block, pi/2 in the right
    one, rising across the support of the neck weight.
The integers (2, 1/5, 3/4, 1/4) and pi/2 are architecture; nothing is fitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from . import forms as F
from . import g2
from .constants import DIM, ZeroParamGeometry
from .inputs import check_length

# Neck core |t| <= 1/4, pure blocks |t| >= 3/4 (t = lambda / L).
NECK_CORE = Fraction(1, 4)
BLOCK_START = Fraction(3, 4)
# Warp of each block: its distinguished circle stretched by this integer factor.
WARP_FACTOR = 2
LEFT_CIRCLE, RIGHT_CIRCLE = 1, 2
# Hyper-Kaehler rotation: total angle of (w_I, w_J) about w_K; frame planes it turns.
TWIST_TOTAL = math.pi / 2
TWIST_PLANES = ((3, 6), (4, 5))


def scale_s() -> float:
    """s with s^14 = det_g_target = 65/32 (phi -> s^3 phi scales det g(phi) by s^14)."""
    return float(ZeroParamGeometry().det_g_target) ** (1.0 / 14)


def smooth_step(t: torch.Tensor) -> torch.Tensor:
    """C-infinity step: 0 for t <= 0, 1 for t >= 1, f(t) / (f(t) + f(1 - t)) with f(u) = exp(-1/u)."""
    def f(u):
        pos = u > 0
        return torch.where(pos, torch.exp(-1 / torch.where(pos, u, torch.ones_like(u))), torch.zeros_like(u))
    a, b = f(t), f(1 - t)
    return a / (a + b)


def _region_weights(lam: torch.Tensor, L: float) -> torch.Tensor:
    t = lam / L
    width = float(BLOCK_START - NECK_CORE)
    left = 1 - smooth_step((t + float(BLOCK_START)) / width)
    right = smooth_step((t - float(NECK_CORE)) / width)
    return torch.stack([left, 1 - left - right, right], dim=-1)


def _twist_angle(lam: torch.Tensor, L: float) -> torch.Tensor:
    span = 2 * float(BLOCK_START)
    return TWIST_TOTAL * smooth_step((lam / L + float(BLOCK_START)) / span)


def _warp_exponents(dtype, device) -> torch.Tensor:
    """(2, 7) trace-free log-scales of the left and right warps (rows sum to 0: det W = 1)."""
    u = torch.zeros(2, DIM, dtype=dtype, device=device)
    for row, circle in enumerate((LEFT_CIRCLE, RIGHT_CIRCLE)):
        u[row, 1:] = -math.log(WARP_FACTOR) / 5       # the five other fibre directions
        u[row, circle] = math.log(WARP_FACTOR)
    return u


def _frame(lam: torch.Tensor, L: float) -> torch.Tensor:
    w = _region_weights(lam, L)
    u = w[:, 0:1] * _warp_exponents(lam.dtype, lam.device)[0] + w[:, 2:3] * _warp_exponents(lam.dtype, lam.device)[1]
    half = _twist_angle(lam, L) / 2
    c, s = torch.cos(half), torch.sin(half)
    n = lam.shape[0]
    eye = torch.eye(DIM, dtype=lam.dtype, device=lam.device).expand(n, DIM, DIM)
    rot_idx, rot_val = [], []
    for i, j in TWIST_PLANES:
        rot_idx += [(i, i), (j, j), (i, j), (j, i)]
        rot_val += [c - 1, c - 1, s, -s]
    rows = torch.tensor([p[0] for p in rot_idx], device=lam.device)
    cols = torch.tensor([p[1] for p in rot_idx], device=lam.device)
    delta = torch.zeros(n, DIM * DIM, dtype=lam.dtype, device=lam.device)
    delta = delta.index_add(1, rows * DIM + cols, torch.stack(rot_val, dim=-1))
    R = eye + delta.reshape(n, DIM, DIM)
    return torch.exp(u)[:, :, None] * R


@dataclass(frozen=True)
class Chart:
    """The TCS chart [-L, L] x [0, 1)^6 (conventions §5): L checked once here; volume, regions, twist,
    frame and background all derive from it."""
    L: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "L", check_length(self.L))

    @property
    def volume(self) -> float:
        """Coordinate volume of [-L, L] x [0, 1)^6, i.e. 2L."""
        return 2 * self.L

    def region_weights(self, lam: torch.Tensor) -> torch.Tensor:
        """(batch,) lambda -> (batch, 3) weights (left, neck, right), smooth, non-negative, summing to 1."""
        return _region_weights(lam, self.L)

    def twist_angle(self, lam: torch.Tensor) -> torch.Tensor:
        """theta(lambda) = (pi/2) smooth_step((t + 3/4) * 2/3), t = lambda/L: 0 in the left block, pi/2 in the right."""
        return _twist_angle(lam, self.L)

    def frame(self, lam: torch.Tensor) -> torch.Tensor:
        """A(lambda) = W(lambda) R(theta(lambda)): (batch,) -> (batch, 7, 7), det A = 1.

        The coframe of phi_bg is e^a = s A_ai dx^i, so g(phi_bg) = s^2 A^T A.
        """
        return _frame(lam, self.L)

    def phi_background(self, x: torch.Tensor) -> torch.Tensor:
        """phi_bg(x) = s^3 A(lambda)^* phi0 as a packed 3-form: x (batch, 7) -> (batch, 35).

        (A^* phi0)_{ijk} = A_ai A_bj A_ck (phi0)_{abc}; det g(phi_bg) = s^14 = 65/32 for every lambda.
        """
        if x.ndim != 2 or x.shape[-1] != DIM:
            raise ValueError(f"points x must have shape (batch, 7), got {tuple(x.shape)}")
        A = self.frame(x[:, 0])
        phi0 = g2.phi0_packed(x.dtype, x.device).expand(x.shape[0], -1)
        return scale_s() ** 3 * F.transform_packed(phi0, 3, A.transpose(-1, -2))


def as_chart(chart) -> Chart:
    """chart itself if it is a Chart, Chart(L) for a bare half-length L; ValueError naming L otherwise."""
    return chart if isinstance(chart, Chart) else Chart(chart)

"""The fixed chart of the quintic link: chart points x (batch, 7) <-> unit vectors z in C^5 on the link.

x[:, 0] = theta = arg z0, x[:, 1:7] = (Re w1, Im w1, ..., Im w3) with z = e^{i theta} (1, w1, w2, w3, z4) / |.|
and z4 = `chart_z4(w)` on one branch; `fundamental_domain` moves points of the quintic into the
well-conditioned region |w_a| <= |z4| <= 1 of this patch (see `calabi_yau.link` for the geometry).
"""
from __future__ import annotations

import math

import torch

from .. import forms as F
from . import quintic as Qn

BRANCH_TOL = 1e-8


def _check_x(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.ndim != 2 or x.shape[-1] != F.DIM or torch.is_complex(x):
        raise ValueError(f"chart points must be a real tensor of shape (batch, 7), got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")


def chart_z4(w: torch.Tensor) -> torch.Tensor:
    """The chart's root of p = 0: z4 = e^{i pi/5} (1 + sum_a w_a^5)^{1/5} (principal power), (batch,).

    w (batch, 3) complex. Its cut, where 1 + sum w^5 is real and negative, meets the sampled region
    only where all |w_a| and |z4| are close to 1, away from the typical points (w ~ 0 gives z4 ~ e^{i pi/5}).
    """
    s = 1 + (w ** Qn.DEGREE).sum(-1)
    return torch.polar(s.abs() ** (1 / Qn.DEGREE), (torch.angle(s) + math.pi) / Qn.DEGREE)


def affine_chart(x: torch.Tensor):
    """(Z (batch, 5), dZ/dw (batch, 3, 5), dp/dz4 (batch,)) in the fixed patch, complex."""
    w = torch.complex(x[:, 1::2], x[:, 2::2])
    z4 = chart_z4(w)
    one = torch.ones_like(z4)
    Z = torch.cat([one[:, None], w, z4[:, None]], -1)
    dp4 = Qn.DEGREE * z4 ** (Qn.DEGREE - 1)
    slope = -(w / z4[:, None]) ** (Qn.DEGREE - 1)                    # dz4/dw_a = -(dp/dw_a)/(dp/dz4)
    base = torch.zeros(Qn.DIM_C, Qn.N_HOMOG, dtype=Z.dtype, device=Z.device)
    base[torch.arange(Qn.DIM_C, device=Z.device), torch.arange(1, Qn.DIM_C + 1, device=Z.device)] = 1
    e4 = torch.zeros(Qn.N_HOMOG, dtype=Z.dtype, device=Z.device)
    e4[Qn.N_HOMOG - 1] = 1
    dZ = base + slope[..., None] * e4
    return Z, dZ, dp4


def angle_to_cut(x: torch.Tensor) -> torch.Tensor:
    """Angular distance pi - |arg(1 + sum w^5)| of chart points from the cut of chart_z4, (batch,)."""
    _check_x(x)
    w = torch.complex(x[:, 1::2], x[:, 2::2])
    return math.pi - torch.angle(1 + (w ** Qn.DEGREE).sum(-1)).abs()


def check_chart(x: torch.Tensor) -> None:
    """ValueError unless x (batch, 7) is real, finite and inside the patch (dp/dz4 not vanishing)."""
    _check_x(x)
    if F.is_traced(x):
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError("chart points contain NaN or Inf")
    Z, _, dp4 = affine_chart(x)
    bad = ~(dp4.abs() > Qn.DERIV_TOL * Qn.gradient(Z).abs().pow(2).sum(-1).sqrt())
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of {len(x)} chart points are off the patch: dp/dz4 vanishes "
                         "there (z4 = 0 lies on the branch locus of the chart)")


def sphere_from_chart(x: torch.Tensor) -> torch.Tensor:
    """Chart points (batch, 7) -> points of L in C^5, (batch, 5) complex with |z| = 1."""
    check_chart(x)
    Z = affine_chart(x)[0]
    return torch.polar(torch.ones_like(x[:, 0]), x[:, 0])[:, None] * Z / Z.abs().pow(2).sum(-1, keepdim=True).sqrt()


def chart_from_sphere(z: torch.Tensor, tol: float = BRANCH_TOL) -> torch.Tensor:
    """Points of L (batch, 5) complex -> chart points (batch, 7) real.

    ValueError for points off Q, off the unit sphere, with z0 = 0, with dp/dz4 = 0, or whose z4/z0
    is not the chart's root `chart_z4` (another of the 5 sheets: outside the patch).
    """
    Qn.check_on_quintic(z)
    if bool(((z.abs().pow(2).sum(-1) - 1).abs() > 1e-8).any()):
        raise ValueError("points of the link must have |z| = 1")
    if bool((z[:, 0] == 0).any()):
        raise ValueError(f"z0 = 0 at {int((z[:, 0] == 0).sum())} points: outside the chart's patch z0 != 0")
    Z = z / z[:, :1]
    x = torch.cat([torch.angle(z[:, 0])[:, None], torch.view_as_real(Z[:, 1:4]).reshape(-1, 6)], -1)
    check_chart(x)
    off = (Z[:, 4] - chart_z4(Z[:, 1:4])).abs() > tol * (1 + Z[:, 4].abs())
    if bool(off.any()):
        raise ValueError(f"{int(off.sum())} of {len(z)} points have z4/z0 on another sheet than the "
                         "chart's root chart_z4: outside the fixed patch (use fundamental_domain first)")
    return x


def fundamental_domain(z: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Move points of Q or L into the chart's region with symmetries of the Fermat quintic.

    Permute coordinates so |z0| is largest and |z4| the largest of the rest, multiply z4 by the fifth
    root of unity that makes z4/z0 = chart_z4(w), then set arg z0 = theta (batch,) if given (else
    keep it) and normalise |z| = 1. These maps preserve Q, omega_FS and its measure.
    """
    Qn.check_on_quintic(z)
    order = z.abs().argsort(-1, descending=True)
    z = z.gather(-1, order[:, [0, 2, 3, 4, 1]])
    Z = z / z[:, :1]
    z4 = chart_z4(Z[:, 1:4]) * z[:, 0]          # the same root up to a fifth root of unity (p(z) = 0)
    z = torch.cat([z[:, :4], z4[:, None]], -1)
    if theta is not None:
        z = z * torch.polar(torch.ones_like(theta), theta - torch.angle(z[:, 0]))[:, None]
    return z / z.abs().pow(2).sum(-1, keepdim=True).sqrt()


def link_points(n: int, seed: int = 0) -> torch.Tensor:
    """n chart points (n, 7) float64: line-sampled points of Q (FS distributed) moved into the patch
    region (`fundamental_domain`) with a uniform fibre angle theta in [-pi, pi)."""
    qs = Qn.sample_lines(n, seed=seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    theta = (torch.rand(n, generator=gen, dtype=torch.float64, device="cpu") * 2 - 1) * math.pi
    return chart_from_sphere(fundamental_domain(qs.z, theta))

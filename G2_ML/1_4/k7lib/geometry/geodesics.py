"""Geodesics of a metric field on the chart, with the optional torsion term of GIFT v2.2 (supplement S3).

x''^k = -Gamma^k_ij x'^i x'^j [+ (1/2) g^{kl} T_ijl x'^i x'^j] by classical RK4 with a fixed step; the
energy g(x', x') is conserved by both flows, so its drift measures the integration error (O(h^4)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import forms as F
from ..chart import as_chart
from ..curvature import christoffel
from ..derivatives import value_and_jacobian
from ..inputs import check_field_call, check_points


def initial_velocities(metric_field, x0: torch.Tensor, seed: int) -> torch.Tensor:
    """Unit-speed (g(v, v) = 1) initial velocities (batch, 7) at x0: the first along d/d lambda, the others random."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device="cpu").to(x0.device)
    v[0] = 0
    v[0, 0] = 1
    g = metric_field(x0).detach()
    return v / torch.einsum("zi,zij,zj->z", v, g, v).sqrt()[:, None]


@dataclass(frozen=True)
class Geodesics:
    """RK4 solution of a geodesic flow; times (n_steps + 1,), states (n_steps + 1, batch, ...)."""
    t: torch.Tensor
    x: torch.Tensor            # (n_steps + 1, batch, 7)
    v: torch.Tensor            # (n_steps + 1, batch, 7)
    energy: torch.Tensor       # (n_steps + 1, batch)  g_x(x', x')
    flow: str                  # "levi-civita" or "torsion-modified (GIFT S3)"
    antisymmetric_force: float | None = None   # max |force| of the totally antisymmetric part of T

    @property
    def energy_drift(self) -> torch.Tensor:
        """max_t |E(t) - E(0)| / E(0) per geodesic, (batch,)."""
        return ((self.energy - self.energy[0]).abs().amax(0) / self.energy[0].abs())

    def inside_chart(self, chart) -> torch.Tensor:
        """(n_steps + 1, batch) bool: lambda within [-L, L] of the `Chart` (y is periodic, lambda is not)."""
        return self.x[..., 0].abs() <= as_chart(chart).L


def geodesics(metric_field, x0: torch.Tensor, v0: torch.Tensor, t_max: float, n_steps: int,
              torsion=None) -> Geodesics:
    """Integrate x''^k = -Gamma^k_ij x'^i x'^j [+ (1/2) g^{kl} T_ijl x'^i x'^j] by classical RK4.

    metric_field: x (batch, 7) -> g (batch, 7, 7); x0, v0 (batch, 7); fixed step t_max / n_steps.
    torsion: None (Levi-Civita geodesics) or a callable x -> T_ijl (batch, 7, 7, 7), e.g.
    `g2_torsion_tensor(phi_field)`, for the torsion-modified flow of GIFT v2.2 supplement S3.
    Energy E = g(x', x') is recorded at every step: constant for both flows, so its drift
    measures the integration error (O(h^4) for RK4).
    """
    check_field_call(metric_field, x0, name="x0")
    check_points(v0, "v0")
    if x0.shape != v0.shape:
        raise ValueError(f"x0 and v0 must have the same shape, got {tuple(x0.shape)} and {tuple(v0.shape)}")
    n_steps = int(n_steps)
    if n_steps < 1 or not (float(t_max) > 0 and math.isfinite(float(t_max))):
        raise ValueError(f"need t_max > 0 and n_steps >= 1, got t_max={t_max}, n_steps={n_steps}")
    h = float(t_max) / n_steps
    anti_max = [0.0]

    def accel(x, v):
        g, dg = value_and_jacobian(metric_field, x)
        g, dg = g.detach(), dg.detach()
        g_inv = torch.linalg.inv(g)
        a = -torch.einsum("zkij,zi,zj->zk", christoffel(g_inv, dg), v, v)
        if torsion is not None:
            T = torsion(x).detach()
            a = a + 0.5 * torch.einsum("zkl,zijl,zi,zj->zk", g_inv, T, v, v)
            anti = sum(s * T.permute(0, *p) for s, p in _PERMS3) / 6
            f_anti = 0.5 * torch.einsum("zkl,zijl,zi,zj->zk", g_inv, anti, v, v)
            anti_max[0] = max(anti_max[0], float(f_anti.abs().max()))
        return a, g

    xs, vs, es = [x0.detach()], [v0.detach()], []
    x, v = x0.detach(), v0.detach()
    for _ in range(n_steps):
        a1, g = accel(x, v)
        es.append(torch.einsum("zi,zij,zj->z", v, g, v))
        a2, _ = accel(x + 0.5 * h * v, v + 0.5 * h * a1)
        a3, _ = accel(x + 0.5 * h * (v + 0.5 * h * a1), v + 0.5 * h * a2)
        a4, _ = accel(x + h * (v + 0.5 * h * a2), v + h * a3)
        x = x + h * v + h * h / 6 * (a1 + a2 + a3)
        v = v + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
        xs.append(x)
        vs.append(v)
    g_last = metric_field(x).detach()
    es.append(torch.einsum("zi,zij,zj->z", v, g_last, v))
    return Geodesics(t=torch.linspace(0, float(t_max), n_steps + 1, dtype=x0.dtype, device=x0.device), x=torch.stack(xs),
                     v=torch.stack(vs), energy=torch.stack(es),
                     flow="levi-civita" if torsion is None else "torsion-modified (GIFT S3)",
                     antisymmetric_force=None if torsion is None else anti_max[0])


_PERMS3 = tuple((F.perm_sign(p), tuple(i + 1 for i in p)) for p in
                ((0, 1, 2), (1, 2, 0), (2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0)))

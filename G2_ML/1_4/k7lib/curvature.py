"""Curvature of a metric field on the chart: Christoffel symbols, Riemann, Ricci and scalar curvature.

A *metric field* maps points x (batch, 7) to SPD metrics (batch, 7, 7) and must act pointwise;
`g2.metric_field_from_phi` makes one of a 3-form field, g = g(phi). First and second derivatives of g
come from nested forward-mode jvps (exact, no finite differences), then the textbook formulas of
`Curvature` (signs such that the round sphere is positive). The tests check them on the round
sphere and on conformally flat metrics g = e^{2f} delta against the closed form of Besse, Einstein
Manifolds (1987), Thm 1.159 (the Besse check), and Ric = 0 for torsion-free phi (Bryant).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .batches import chunks
from .constants import DIM
from .derivatives import value_and_jacobian
from .inputs import check_field_call


def christoffel(g_inv: torch.Tensor, dg: torch.Tensor) -> torch.Tensor:
    """Gamma^k_ij = (1/2) g^{kl} (d_i g_jl + d_j g_il - d_l g_ij).

    g_inv (batch, 7, 7); dg (batch, 7, 7, 7) with dg[b, i, j, m] = d_m g_ij.
    Returns Gamma (batch, 7, 7, 7) with Gamma[b, k, i, j] = Gamma^k_ij.
    """
    first = 0.5 * (torch.einsum("bjli->blij", dg) + torch.einsum("bilj->blij", dg) - torch.einsum("bijl->blij", dg))
    return torch.einsum("bkl,blij->bkij", g_inv, first)


@dataclass(frozen=True)
class Curvature:
    """Curvature of a metric field at a batch of points; signs such that the round sphere is positive.

    christoffel[b, k, i, j] = Gamma^k_ij
    riemann[b, r, s, i, j]  = R^r_{sij}
                            = d_i Gamma^r_js - d_j Gamma^r_is + Gamma^r_im Gamma^m_js - Gamma^r_jm Gamma^m_is
    ricci[b, s, j]          = Ric_sj = R^r_{srj}            (round unit sphere: Ric = (n-1) g)
    scalar[b]               = g^{sj} Ric_sj                  (round unit sphere: n(n-1))
    """
    g: torch.Tensor            # (batch, 7, 7)
    g_inv: torch.Tensor        # (batch, 7, 7)
    christoffel: torch.Tensor  # (batch, 7, 7, 7)
    riemann: torch.Tensor      # (batch, 7, 7, 7, 7)
    ricci: torch.Tensor        # (batch, 7, 7)
    scalar: torch.Tensor       # (batch,)

    @property
    def ricci_norm(self) -> torch.Tensor:
        """|Ric|_g = sqrt(g^{ik} g^{jl} Ric_ij Ric_kl), (batch,)."""
        up = torch.einsum("bik,bkl,blj->bij", self.g_inv, self.ricci, self.g_inv)
        return (up * self.ricci).sum((-1, -2)).clamp_min(0).sqrt()

    @property
    def riemann_norm(self) -> torch.Tensor:
        """|Rm|_g = sqrt(R_{rsij} R^{rsij}) (square root of the Kretschmann scalar), (batch,)."""
        low = torch.einsum("bqr,brsij->bqsij", self.g, self.riemann)
        up = torch.einsum("bsa,bic,bjd,brsij->bracd", self.g_inv, self.g_inv, self.g_inv, self.riemann)
        return (low * up).sum((-1, -2, -3, -4)).clamp_min(0).sqrt()


def _curvature_from_derivatives(g, dg, ddg) -> Curvature:
    g_inv = torch.linalg.inv(g)
    gam = christoffel(g_inv, dg)
    first = 0.5 * (torch.einsum("bjli->blij", dg) + torch.einsum("bilj->blij", dg) - torch.einsum("bijl->blij", dg))
    # ddg[b, i, j, k, m] = d_m d_k g_ij; d_m Gamma_{l,ij} and d_m g^{kl} = -g^{ka} d_m g_ab g^{bl}
    d_first = 0.5 * (torch.einsum("bjlim->blijm", ddg) + torch.einsum("biljm->blijm", ddg)
                     - torch.einsum("bijlm->blijm", ddg))
    d_ginv = -torch.einsum("bka,bacm,bcl->bklm", g_inv, dg, g_inv)
    d_gam = torch.einsum("bklm,blij->bkijm", d_ginv, first) + torch.einsum("bkl,blijm->bkijm", g_inv, d_first)
    # d_gam[b, r, j, s, i] = d_i Gamma^r_js
    term = torch.einsum("brjsi->brsij", d_gam)
    quad = torch.einsum("brim,bmjs->brsij", gam, gam)
    riemann = term - term.transpose(-1, -2) + quad - quad.transpose(-1, -2)
    ricci = torch.einsum("brsrj->bsj", riemann)
    scalar = torch.einsum("bsj,bsj->b", g_inv, ricci)
    return Curvature(g=g, g_inv=g_inv, christoffel=gam, riemann=riemann, ricci=ricci, scalar=scalar)


def curvature(metric_field, x: torch.Tensor, chunk: int = 256, progress: bool = False) -> Curvature:
    """Christoffel symbols, Riemann, Ricci and scalar curvature of g at points x (batch, 7).

    metric_field: x (batch, 7) -> g (batch, 7, 7), pointwise. First and second derivatives
    of g come from nested forward-mode jvps (7 + 49 directions, exact; no finite differences),
    then the textbook formulas of `Curvature`. Shapes: see `Curvature`. Chunks of `chunk` points.
    """
    check_field_call(metric_field, x, chunk=chunk)
    parts = []
    for sl in chunks(x.shape[0], chunk, progress, "curvature"):
        def g_and_dg(y):
            return value_and_jacobian(metric_field, y)
        (g, dg), (_, ddg) = value_and_jacobian(g_and_dg, x[sl])
        if g.shape != (sl.stop - sl.start, DIM, DIM):
            raise ValueError(f"metric field must return (batch, 7, 7), got {tuple(g.shape)}")
        parts.append(_curvature_from_derivatives(g.detach(), dg.detach(), ddg.detach()))
    return Curvature(**{name: torch.cat([getattr(p, name) for p in parts])
                        for name in ("g", "g_inv", "christoffel", "riemann", "ricci", "scalar")})


@dataclass(frozen=True)
class CurvatureScalars:
    """Per-point curvature invariants, each (batch,): scalar curvature, |Ric|_g and |Rm|_g."""
    scalar: torch.Tensor
    ricci_norm: torch.Tensor
    riemann_norm: torch.Tensor

    def to_dict(self) -> dict:
        """{name: {min, mean, max}} of each invariant (JSON-ready)."""
        return {name: {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}
                for name, v in (("scalar", self.scalar), ("ricci_norm", self.ricci_norm),
                                ("riemann_norm", self.riemann_norm))}


def curvature_scalars(metric_field, x: torch.Tensor, chunk: int = 256, progress: bool = False) -> CurvatureScalars:
    """Per-point scalar, |Ric|_g and |Rm|_g (each (batch,)), without keeping the Riemann tensors."""
    check_field_call(metric_field, x, chunk=chunk)
    out = {"scalar": [], "ricci_norm": [], "riemann_norm": []}
    for sl in chunks(x.shape[0], chunk, progress, "curvature"):
        c = curvature(metric_field, x[sl], chunk=chunk)
        out["scalar"].append(c.scalar)
        out["ricci_norm"].append(c.ricci_norm)
        out["riemann_norm"].append(c.riemann_norm)
    return CurvatureScalars(**{k: torch.cat(v) for k, v in out.items()})

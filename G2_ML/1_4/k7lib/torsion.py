"""Torsion of a G2 structure given as a 3-form field phi(x).

T^2 = |d phi|^2_g + |d psi|^2_g with g = g(phi), psi = *phi (so d*phi = d psi).
Torsion classes (docs/conventions.md §3; Bryant 2005, Prop. 1):
  tau0 = (1/7) *(phi ^ d phi),          tau1 = (1/12) *(phi ^ *d phi),
  tau3 = *d phi - tau0 phi - 3 *(tau1 ^ phi),   tau2 = 4 *(tau1 ^ psi) - *d psi,
so that d phi = tau0 psi + 3 tau1 ^ phi + *tau3 and d psi = 4 tau1 ^ psi + tau2 ^ phi.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from . import forms as F
from . import g2
from .curvature import christoffel
from .derivatives import check_method, value_and_jacobian
from .g2 import as_packed_field
from .inputs import check_field_call


@dataclass(frozen=True)
class TorsionPacked:
    """Packed geometry of a 3-form field at a batch of points (all (batch, ...))."""
    phi: torch.Tensor          # (batch, 35)
    psi: torch.Tensor          # (batch, 35)
    dphi: torch.Tensor         # (batch, 35) packed 4-form
    dpsi: torch.Tensor         # (batch, 21) packed 5-form
    metric: g2.PhiMetric
    norm2_dphi: torch.Tensor   # (batch,)
    norm2_dpsi: torch.Tensor   # (batch,)
    jphi: torch.Tensor | None = None   # (batch, 35, 7): d_m phi_I, for other derivatives of g(phi)

    @property
    def T(self) -> torch.Tensor:
        return (self.norm2_dphi + self.norm2_dpsi).sqrt()


def torsion_packed(phi_field, x: torch.Tensor, method: str = "autograd", h: float | None = None,
                   check: bool = True) -> TorsionPacked:
    """d phi and d psi exactly (forward mode through the field, 7 tangents); norms with g(phi).

    phi_field: x (batch, 7) -> packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms.
    With check=True, x is checked (inputs.check_field_call: (batch, 7), float32/float64, finite,
    the dtype of a torch module's parameters) and a non-positive phi at any point raises ValueError
    (counted).
    """
    check_method(method)
    field = as_packed_field(phi_field)
    if check:
        check_field_call(phi_field, x)
        with torch.no_grad():
            g2.metric_data_packed(field(x), check=True)

    if method == "autograd":
        return torsion_from_jet(*value_and_jacobian(field, x, method, h))
    else:
        def phi_psi(y):
            p = field(y)
            return p, g2.psi_packed(p, check=False)

        (phi, psi), (jphi, jpsi) = value_and_jacobian(phi_psi, x, method, h)
        m = g2.metric_data_packed(phi, check=False)
    dphi, dpsi = F.d_from_jacobian(jphi, 3), F.d_from_jacobian(jpsi, 4)
    return TorsionPacked(
        phi=phi, psi=psi, dphi=dphi, dpsi=dpsi, metric=m,
        norm2_dphi=F.inner_packed(dphi, dphi, 4, m.g, m.ginv, m.det),
        norm2_dpsi=F.inner_packed(dpsi, dpsi, 5, m.g, m.ginv, m.det), jphi=jphi,
    )


def torsion_from_jet(phi: torch.Tensor, jphi: torch.Tensor) -> TorsionPacked:
    """Torsion from the 1-jet of phi at points: phi (batch, 35), jphi (batch, 35, 7) = d_m phi_I.

    psi's derivatives follow from the exact linearisation of phi -> *phi at each point
    (g2.psi_tangent_packed), so forward-mode derivatives through the field are needed for phi only.
    For callers that assemble the jet themselves (e.g. a fixed field's jet computed once plus a learned
    part, `learn.torsion_free`); `torsion_packed` is this on value_and_jacobian(field, x).
    """
    m = g2.metric_data_packed(phi, check=False)
    P3 = F.exterior_power(m.ginv, 3)
    psi = g2.psi_packed(phi, m, power3=P3)
    jpsi = g2.psi_tangent_packed(phi, psi, m, jphi.transpose(-1, -2), power3=P3).transpose(-1, -2)
    dphi, dpsi = F.d_from_jacobian(jphi, 3), F.d_from_jacobian(jpsi, 4)
    return TorsionPacked(
        phi=phi, psi=psi, dphi=dphi, dpsi=dpsi, metric=m,
        norm2_dphi=F.inner_packed(dphi, dphi, 4, m.g, m.ginv, m.det),
        norm2_dpsi=F.inner_packed(dpsi, dpsi, 5, m.g, m.ginv, m.det), jphi=jphi,
    )


@dataclass(frozen=True)
class TorsionClasses:
    """Torsion classes, packed: tau0 (batch,), tau1 (batch, 7), tau2 (batch, 21), tau3 (batch, 35)."""
    tau0: torch.Tensor
    tau1: torch.Tensor
    tau2: torch.Tensor
    tau3: torch.Tensor


def torsion_classes_packed(t: TorsionPacked) -> TorsionClasses:
    """tau0..tau3 from the packed torsion data (formulas in the module docstring)."""
    m = t.metric

    def star(w, k):
        return F.star_packed(w, k, m.g, m.ginv, m.det, orientation=m.orientation)

    tau0 = star(F.wedge_packed(t.phi, t.dphi, 3, 4), 7)[..., 0] / 7
    star_dphi = star(t.dphi, 4)
    tau1 = star(F.wedge_packed(t.phi, star_dphi, 3, 3), 6) / 12
    tau3 = star_dphi - tau0[..., None] * t.phi - 3 * star(F.wedge_packed(tau1, t.phi, 1, 3), 4)
    tau2 = 4 * star(F.wedge_packed(tau1, t.psi, 1, 4), 5) - star(t.dpsi, 5)
    return TorsionClasses(tau0=tau0, tau1=tau1, tau2=tau2, tau3=tau3)


@dataclass(frozen=True)
class Torsion:
    """Dense torsion data of a 3-form field at a batch of points (docs/conventions.md §3 conventions)."""
    g: torch.Tensor            # (batch, 7, 7)
    psi: torch.Tensor          # (batch, 7, 7, 7, 7)
    dphi: torch.Tensor         # (batch, 7^4)
    dpsi: torch.Tensor         # (batch, 7^5)  = d*phi
    norm2_dphi: torch.Tensor   # (batch,)
    norm2_dpsi: torch.Tensor   # (batch,)
    T: torch.Tensor            # (batch,)  sqrt(|d phi|^2 + |d psi|^2)
    tau0: torch.Tensor         # (batch,)
    tau1: torch.Tensor         # (batch, 7)
    tau2: torch.Tensor         # (batch, 7, 7)
    tau3: torch.Tensor         # (batch, 7, 7, 7)

    def detach(self) -> "Torsion":
        return Torsion(**{f.name: getattr(self, f.name).detach() for f in fields(self)})


def torsion(phi_field, x: torch.Tensor, method: str = "autograd", h: float | None = None) -> Torsion:
    """Torsion of the 3-form field phi_field at points x (batch, 7); dense results.

    phi_field maps (batch, 7) to dense (batch, 7, 7, 7) or packed (batch, 35) 3-forms.
    method: "autograd" (forward mode, exact) or "fd" (central differences, step h, O(h^2)).
    """
    t = torsion_packed(phi_field, x, method, h, check=True)
    c = torsion_classes_packed(t)
    return Torsion(
        g=t.metric.g, psi=F.unpack(t.psi, 4), dphi=F.unpack(t.dphi, 4), dpsi=F.unpack(t.dpsi, 5),
        norm2_dphi=t.norm2_dphi, norm2_dpsi=t.norm2_dpsi, T=t.T,
        tau0=c.tau0, tau1=c.tau1, tau2=F.unpack(c.tau2, 2), tau3=F.unpack(c.tau3, 3),
    )


# ---------------------------------------------------------------- the full torsion tensor
def _raise_all(t: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Raise every non-batch index of t (z, 7, ..., 7) with g^{-1} (z, 7, 7), one contraction at a time."""
    for j in range(1, t.ndim):
        t = torch.movedim(torch.einsum("zij,z...j->z...i", g_inv, torch.movedim(t, j, -1)), -1, j)
    return t


@dataclass(frozen=True)
class FullTorsion:
    """Full torsion tensor of a G2 structure, nabla_l phi_abc = T_l^m psi_mabc (all (batch, ...)).

    T[z, l, m] = T_lm; nabla_phi[z, l, a, b, c] = nabla_l phi_abc (Levi-Civita of g(phi));
    residual = |nabla phi - T.psi|_g / |nabla phi|_g: round-off for any G2 structure, because
    nabla_l phi always lies in the 7-dimensional space {v ⌟ psi}; a larger value means wrong
    Christoffel symbols or derivatives.
    """
    T: torch.Tensor
    nabla_phi: torch.Tensor
    residual: torch.Tensor
    phi: torch.Tensor          # dense (batch, 7, 7, 7)
    g: torch.Tensor            # (batch, 7, 7)
    g_inv: torch.Tensor        # (batch, 7, 7)

    @property
    def norm(self) -> torch.Tensor:
        """|T|_g = sqrt(T_lm T^lm), (batch,)."""
        return (self.T * _raise_all(self.T, self.g_inv)).sum((-1, -2)).clamp_min(0).sqrt()


def full_torsion(phi_field, x: torch.Tensor) -> FullTorsion:
    """T_lm = (1/24) nabla_l phi_abc psi_m^{abc} at points x (batch, 7).

    Uses psi_mabc psi_n^{abc} = 24 g_mn (|psi|^2 = 7). nabla_l phi_abc = d_l phi_abc
    - Gamma^m_la phi_mbc - Gamma^m_lb phi_amc - Gamma^m_lc phi_abm with g = g(phi); first
    derivatives of phi and g by forward-mode jvp. T = 0 iff phi is torsion-free.
    Source: S. Karigiannis, "Flows of G2-structures, I", Q. J. Math. 60 (2009) 487-522, §2.2
    (full torsion tensor T defined by nabla phi = T . psi).
    """
    check_field_call(phi_field, x)
    field_ = as_packed_field(phi_field)

    def phi_and_g(y):
        p = field_(y)
        return p, g2.metric_data_packed(p, check=False).g

    (p, g), (dp, dg) = value_and_jacobian(phi_and_g, x)
    p, g, dp, dg = p.detach(), g.detach(), dp.detach(), dg.detach()
    m = g2.metric_data_packed(p, check=True)
    phi = F.unpack(p, 3)
    dphi = F.unpack(torch.movedim(dp, -1, 1), 3)                  # (z, l, a, b, c) = d_l phi_abc
    g_inv = torch.linalg.inv(g)
    gam = christoffel(g_inv, dg)                                          # gam[z, m, l, a] = Gamma^m_la
    nabla = (dphi
             - torch.einsum("zmla,zmjk->zlajk", gam, phi)
             - torch.einsum("zmlj,zamk->zlajk", gam, phi)
             - torch.einsum("zmlk,zajm->zlajk", gam, phi))
    psi = F.unpack(g2.psi_packed(p, m, check=False), 4)
    psi_up = _raise_all(psi, g_inv)
    T_mixed = torch.einsum("zlabc,zmabc->zlm", nabla, psi_up) / 24     # T_l^m
    T = torch.einsum("zlm,zmn->zln", T_mixed, g)
    diff = nabla - torch.einsum("zlm,zmabc->zlabc", T_mixed, psi)
    num = (diff * _raise_all(diff, g_inv)).sum((1, 2, 3, 4))
    den = (nabla * _raise_all(nabla, g_inv)).sum((1, 2, 3, 4))
    residual = torch.where(den > 0, num.clamp_min(0) / den.clamp_min(torch.finfo(den.dtype).tiny), num.abs()).sqrt()
    return FullTorsion(T=T, nabla_phi=nabla, residual=residual, phi=phi, g=g, g_inv=g_inv)


def g2_torsion_tensor(phi_field):
    """Callable x (batch, 7) -> T_ijl (batch, 7, 7, 7), T_ijl = T_i^m phi_mjl, for the S3 geodesic flow.

    T_i^m is the full torsion tensor of `full_torsion` (the connection 1-form that the canonical
    G2 connection adds to Levi-Civita is, up to normalisation, this T_i^m phi_m..). T_ijl is
    antisymmetric in (j, l) only, so (1/2) g^{kl} T_ijl x'^i x'^j need not vanish; its totally
    antisymmetric part does contract to zero against x'^i x'^j, and the force is g-orthogonal to
    x' (phi_mjl x'^j x'^l = 0), so g(x', x') is conserved exactly by the modified flow.
    """
    def T_ijl(x):
        ft = full_torsion(phi_field, x)
        return torch.einsum("zim,zmn,znjl->zijl", ft.T, ft.g_inv, ft.phi)
    return T_ijl

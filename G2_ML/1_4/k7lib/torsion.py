"""Torsion of a G2 structure given as a 3-form field phi(x).

T^2 = |d phi|^2_g + |d psi|^2_g with g = g(phi), psi = *phi (so d*phi = d psi).
Torsion classes (DESIGN §3; Bryant 2005, Prop. 1):
  tau0 = (1/7) *(phi ^ d phi),          tau1 = (1/12) *(phi ^ *d phi),
  tau3 = *d phi - tau0 phi - 3 *(tau1 ^ phi),   tau2 = 4 *(tau1 ^ psi) - *d psi,
so that d phi = tau0 psi + 3 tau1 ^ phi + *tau3 and d psi = 4 tau1 ^ psi + tau2 ^ phi.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from . import forms as F
from . import g2
from .derivatives import METHODS, value_and_jacobian
from .inputs import check_points


@dataclass
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


def as_packed_field(phi_field):
    """Wrap a field returning dense (batch, 7, 7, 7) or packed (batch, 35) 3-forms into a packed one."""
    def packed(x):
        out = phi_field(x)
        if out.ndim == 2 and out.shape[-1] == 35:
            return out
        if out.ndim == 4 and tuple(out.shape[1:]) == (7, 7, 7):
            return F.pack(out, 3)
        raise ValueError(f"phi field must return (batch, 35) or (batch, 7, 7, 7), got {tuple(out.shape)}")
    return packed


def torsion_packed(phi_field, x: torch.Tensor, method: str = "autograd", h: float | None = None,
                   check: bool = True) -> TorsionPacked:
    """d phi and d psi exactly (forward mode through the field, 7 tangents); norms with g(phi).

    phi_field: x (batch, 7) -> packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms.
    With check=True, x is checked (inputs.check_points: (batch, 7), float32/float64, finite) and
    a non-positive phi at any point raises ValueError (counted).
    """
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")
    field = as_packed_field(phi_field)
    if check:
        check_points(x)
        with torch.no_grad():
            g2.metric_data_packed(field(x), check=True)

    if method == "autograd":
        # Forward mode through the field only; psi's tangents follow from the exact
        # linearisation of phi -> *phi at each point (g2.psi_tangent_packed).
        phi, jphi = value_and_jacobian(field, x, method, h)
        m = g2.metric_data_packed(phi, check=False)
        P3 = F.exterior_power(m.ginv, 3)
        psi = g2.psi_packed(phi, m, power3=P3)
        jpsi = g2.psi_tangent_packed(phi, psi, m, jphi.transpose(-1, -2), power3=P3).transpose(-1, -2)
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


@dataclass
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


@dataclass
class Torsion:
    """Dense torsion data of a 3-form field at a batch of points (DESIGN §3 conventions)."""
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

"""The G2 3-form, its metric (Bryant/Hitchin), its dual 4-form, and the G2 identity checks.

phi0 = e^{012} + e^{034} + e^{056} + e^{135} - e^{146} - e^{236} - e^{245}   (docs/conventions.md §3,
Bryant's convention, 0-indexed), psi0 = *phi0. The metric of a 3-form:
  B_ij vol_0 = (1/6) iota_i phi ^ iota_j phi ^ phi,   g = det(B)^(-1/9) B
(R. Bryant, "Some remarks on G2-structures", 2005, eq. (2.17); N. Hitchin, "The geometry of
three-forms in six and seven dimensions", 2000). phi is positive iff B is definite; a
negative-definite B means phi is positive for the opposite orientation, which is returned
as orientation = -1 (g stays positive definite).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import forms as F
from .inputs import check_phi

PHI0_TERMS = ((1, (0, 1, 2)), (1, (0, 3, 4)), (1, (0, 5, 6)), (1, (1, 3, 5)),
              (-1, (1, 4, 6)), (-1, (2, 3, 6)), (-1, (2, 4, 5)))


def phi0_packed(dtype=torch.float64, device=None) -> torch.Tensor:
    """phi0 as a packed 3-form (35,)."""
    out = torch.zeros(F.n_components(3), dtype=dtype, device=device)
    ci = F.combo_index(3)
    for s, I in PHI0_TERMS:
        out[ci[I]] = s
    return out


def psi0_packed(dtype=torch.float64, device=None) -> torch.Tensor:
    """psi0 = *phi0 as a packed 4-form (35,) (Euclidean star, eps^{0..6} = +1)."""
    return F.star0_packed(phi0_packed(dtype, device), 3)


def phi0(dtype=torch.float64, device=None) -> torch.Tensor:
    """Dense standard G2 3-form (7, 7, 7)."""
    return F.unpack(phi0_packed(dtype, device), 3)


def psi0(dtype=torch.float64, device=None) -> torch.Tensor:
    """Dense psi0 = *phi0 (7, 7, 7, 7) = e^{3456} + e^{1234} + e^{1256} + e^{0246} - e^{0235} - e^{0145} - e^{0136}."""
    return F.unpack(psi0_packed(dtype, device), 4)


@F.table_cache
def _triple_table(device: str, dtype: torch.dtype):
    """E with (phi @ E)[I, J] = sum_K eps(I, J, K) phi_K over packed 2-forms I, J and 3-forms K."""
    c2, c3 = F.combos(2), F.combo_index(3)
    E = torch.zeros(F.n_components(3), len(c2) * len(c2), dtype=dtype, device="cpu")
    for a, I in enumerate(c2):
        for b, J in enumerate(c2):
            rest = tuple(sorted(set(range(7)) - set(I) - set(J)))
            if len(rest) == 3:
                E[c3[rest], a * len(c2) + b] = F.perm_sign(I + J + rest)
    return E.to(device)


def bilinear_B_packed(phi: torch.Tensor) -> torch.Tensor:
    """B_ij = (1/6) (iota_i phi ^ iota_j phi ^ phi) / vol_0 for packed phi (*batch, 35) -> (*batch, 7, 7)."""
    a = F.interior_basis_packed(phi, 3)                         # (*batch, 7, 21)
    T = (phi @ _triple_table(F.device_key(phi.device), phi.dtype)).reshape(*phi.shape[:-1], 21, 21)
    return torch.einsum("...iI,...IJ,...jJ->...ij", a, T, a) / 6


@dataclass(frozen=True)
class PhiMetric:
    """g(phi) and what comes with it, all (*batch, ...)."""
    g: torch.Tensor            # (*batch, 7, 7)
    ginv: torch.Tensor         # (*batch, 7, 7)
    det: torch.Tensor          # (*batch,)  det g
    orientation: torch.Tensor  # (*batch,)  sign(det B): +1 for phi0-like forms
    B: torch.Tensor            # (*batch, 7, 7)


def metric_data_packed(phi: torch.Tensor, check: bool = True) -> PhiMetric:
    """g = |det B|^(-1/9) sign(det B) B for packed phi (*batch, 35), from one Cholesky of s*B.

    s = +-1 is the sign of definiteness (a definite B has diagonal entries of one sign, so s is
    read off B_00); det(sB) = prod(diag L)^2, g = det(sB)^(-1/9) sB, det g = det(sB)^(2/9).
    Cholesky rather than det/slogdet/cholesky_inverse keeps every derivative order exact in
    torch 2.13 (tests/test_forms.py). With check=True phi must be a float32/float64 tensor
    (*batch, 35) holding at least one form (inputs.check_phi; its values are read only by the
    positivity count), and a phi whose B is not definite raises ValueError with the count of failing
    points.
    """
    if check:
        check_phi(phi, layout="packed", finite=False)
    B = bilinear_B_packed(phi)
    s = torch.where(B[..., 0, 0] < 0, -1.0, 1.0).to(B.dtype)
    sB = B * s[..., None, None]
    L, info = torch.linalg.cholesky_ex(sB)
    if check and not F.is_traced(phi):
        bad = (info != 0) | ~torch.isfinite(B).flatten(-2).all(-1)
        if bool(bad.any()):
            raise ValueError(f"3-form is not positive (B not definite) at {int(bad.sum())} of "
                             f"{bad.numel()} points")
    det_sB = torch.diagonal(L, dim1=-2, dim2=-1).prod(-1) ** 2
    c = det_sB.pow(-1.0 / 9)
    g = sB * c[..., None, None]
    eye = torch.eye(7, dtype=B.dtype, device=B.device).expand_as(B)
    ginv = torch.cholesky_solve(eye, L * c.sqrt()[..., None, None])
    return PhiMetric(g=g, ginv=ginv, det=det_sB.pow(2.0 / 9), orientation=s, B=B)


def psi_tangent_packed(phi: torch.Tensor, psi: torch.Tensor, m: PhiMetric, eta: torch.Tensor,
                       power3: torch.Tensor | None = None) -> torch.Tensor:
    """Derivative of psi = Theta(phi) = *_phi phi along tangents eta: (*batch, n, 35) -> (*batch, n, 35).

    Theta'(phi) eta = *( (4/3) pi_1 eta + pi_7 eta - pi_27 eta ) = -*eta + (7/3) *pi_1 eta + 2 *pi_7 eta
    (Joyce, Compact Manifolds with Special Holonomy, Prop. 10.3.5; Hitchin 2000), with
    pi_1 eta = (<eta, phi>/7) phi and pi_7 eta = iota_v psi, v^w = (1/4) g^{wu} <iota_u psi, eta>
    (since <iota_u psi, iota_v psi> = 4 g(u, v)). Only linear maps at the base point act on the
    tangents, so forward-mode autograd never differentiates through Cholesky factors. All index
    raising goes through one matrix P = Lambda^3(g^{-1}) per point (symmetric; pass it as power3
    if it is already at hand).
    """
    P = F.exterior_power(m.ginv, 3) if power3 is None else power3
    scale = (m.orientation * m.det.sqrt())[..., None, None]                 # o sqrt(det g)
    phi_up = (P @ phi.unsqueeze(-1)).squeeze(-1)                            # Lambda^3(g^-1) phi
    ipsi_up = F.interior_basis_packed(psi, 4) @ P                          # (*batch, 7, 35): raised iota_u psi
    star_ipsi = scale * F.star0_packed(ipsi_up, 3)                         # *(iota_u psi), 4-forms
    c1 = (eta * phi_up[..., None, :]).sum(-1) / 3                         # (7/3) <eta, phi> / 7
    v = (eta @ ipsi_up.transpose(-1, -2)) @ m.ginv / 4                     # (*batch, n, 7): v^w
    return -scale * F.star0_packed(eta @ P, 3) + c1[..., None] * psi[..., None, :] + 2 * v @ star_ipsi


def metric_from_phi(phi: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Metric of a dense 3-form: phi (*batch, 7, 7, 7) -> g (*batch, 7, 7) (Bryant/Hitchin, docs/conventions.md §3)."""
    check_phi(phi, layout="dense")
    return metric_data_packed(F.pack(phi, 3, check=True), check=check).g


def psi_packed(phi: torch.Tensor, m: PhiMetric | None = None, check: bool = True,
               power3: torch.Tensor | None = None) -> torch.Tensor:
    """psi = *_{g(phi)} phi for packed phi, with the orientation phi induces (power3: Lambda^3(g^-1) if at hand)."""
    m = metric_data_packed(phi, check=check) if m is None else m
    return F.star_packed(phi, 3, m.g, m.ginv, m.det, orientation=m.orientation, power=power3)


def psi_from_phi(phi: torch.Tensor, check: bool = True) -> torch.Tensor:
    """psi = *phi with g = g(phi): dense (*batch, 7, 7, 7) -> (*batch, 7, 7, 7, 7)."""
    check_phi(phi, layout="dense")
    return F.unpack(psi_packed(F.pack(phi, 3, check=True), check=check), 4)


@dataclass(frozen=True)
class G2Identities:
    """Per-point G2 identity residuals, each (*batch,); exact values in the comments."""
    norm2_phi: torch.Tensor        # |phi|^2_g = 7
    norm2_psi: torch.Tensor        # |psi|^2_g = 7
    phi_wedge_psi: torch.Tensor    # (phi ^ psi) / vol_g = 7
    psi_error: torch.Tensor        # |psi - *phi|_g / |*phi|_g = 0

    def summary(self) -> dict:
        out = {}
        for name, exact in (("norm2_phi", 7.0), ("norm2_psi", 7.0), ("phi_wedge_psi", 7.0), ("psi_error", 0.0)):
            v = getattr(self, name).detach().double()
            out[name] = {"exact": exact, "mean": float(v.mean()), "max_abs_dev": float((v - exact).abs().max())}
        return out


def g2_identities(phi: torch.Tensor, psi: torch.Tensor | None = None) -> G2Identities:
    """Check |phi|^2 = 7, phi ^ psi = 7 vol_g and psi = *phi with g = g(phi).

    phi dense (*batch, 7, 7, 7); psi dense (*batch, 7^4) or None (then psi = *phi, so the
    psi check measures round-off only). Learned psi fields pass their own psi.
    """
    check_phi(phi, layout="dense", finite=False)          # a non-finite form counts as not positive below
    php = F.pack(phi, 3, check=True)
    m = metric_data_packed(php)
    star_phi = F.star_packed(php, 3, m.g, m.ginv, m.det, orientation=m.orientation)
    psp = star_phi if psi is None else F.pack(psi, 4, check=True)
    top = F.wedge_packed(php, psp, 3, 4)[..., 0]
    vol = m.orientation * m.det.sqrt()
    diff = psp - star_phi
    return G2Identities(
        norm2_phi=F.inner_packed(php, php, 3, m.g, m.ginv, m.det),
        norm2_psi=F.inner_packed(psp, psp, 4, m.g, m.ginv, m.det),
        phi_wedge_psi=top / vol,
        psi_error=(F.inner_packed(diff, diff, 4, m.g, m.ginv, m.det)
                   / F.inner_packed(star_phi, star_phi, 4, m.g, m.ginv, m.det)).sqrt(),
    )


# ---------------------------------------------------------------- fields of 3-forms
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


def metric_field_from_phi(phi_field):
    """Metric field x (batch, 7) -> g(phi(x)) (batch, 7, 7) of a 3-form field (Bryant/Hitchin, docs/conventions.md §3).

    phi_field returns packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms. Positivity is
    not re-checked here (it is checked once on the sample points by the callers).
    """
    field_ = as_packed_field(phi_field)
    return lambda x: metric_data_packed(field_(x), check=False).g

"""The Hodge projection on the chart [-L, L] x T^6 with absolute boundary conditions: harmonic
representatives of the closed constant forms and the harmonic parts of candidate forms.

Hodge projection (Hodge-Morrey-Friedrichs decomposition; G. Schwarz, "Hodge Decomposition - A Method for
Solving Boundary Value Problems", Lecture Notes in Mathematics 1607, Springer 1995, Thm 2.4.2 and 2.6.1).
On a compact manifold with boundary, L^2 k-forms split orthogonally into exact forms d alpha (alpha
without boundary condition), co-exact forms with vanishing normal part, and the harmonic fields H^k_N
(dh = 0, delta h = 0, normal part nu _| h = 0: absolute boundary conditions), and dim H^k_N = b_k. For a
closed form w,
    h = w - d alpha,   alpha = argmin ||w - d alpha||^2_g   (over all (k-1)-forms, no boundary condition)
is the harmonic field in its class: at the minimum h is L^2-orthogonal to every exact form, which is
delta h = 0 in the interior and nu _| h = 0 on lambda = +-L. Because these h are orthogonal to all exact
forms, the harmonic part of ANY form (closed or not) is its L^2_g projection onto span{h_I}.

Galerkin least squares. alpha = sum_{s,J} c_{sJ} s(x) dx^J with profiles s = P_n(lambda/L) F(y)
(`SpectralBasis`: Legendre n <= p times real Fourier modes of the fibre up to degree M, along one axis at
a time, optionally mixed pairs) and all constant (k-1)-forms dx^J. d(s dx^J) = sum_i d_i s dx^i ^ dx^J
is exact and analytic. The normal equations
    M c = b,   M_{uv} = <d beta_u, d beta_v>_{L2,g},   b_u = <d beta_u, w>_{L2,g}
are accumulated in float64 chunks (`_accumulate`); M has a kernel (closed combinations of the beta's),
so c = M^+ b on the eigenvalues of the Jacobi-scaled M above RCOND = 1e-10 times the largest. Then
    <h_I, h_J> = <w_I, w_J> - b_I^T c_J,   <h_I, v> = <w_I, v> - c_I^T <d beta, v>,
and h_I(x) = w_I - sum c d beta(x) can be evaluated anywhere (`HodgeProjection.forms`).
Quadrature (`sampling.gauss_sobol`): Gauss-Legendre in lambda times Sobol points in y with one random shift,
whose one-dimensional projections are equispaced grids (fibre modes along one axis integrate exactly);
inner products <a, b>_g vol_g = a^T Lambda^k(g^{-1}) b sqrt(det g) with g = g(phi(x)) evaluated once per
point. Errors: the basis truncation enters ||h||^2 quadratically, ||h_M||^2 = ||h||^2 + ||d(alpha - alpha_M)||^2.

What is projected and counted. The C(7,k) closed constant forms dx^I are projected (21 two-forms, 35
three-forms). The spectrum of their normalised harmonic Gram D^-1/2 <h_I, h_J> D^-1/2 (D = ||dx^I||^2)
has the chart's classes as O(1) eigenvalues and the exact dlambda-forms at round-off (d(lambda dy^J) lies
in the span): its rank at the largest gap is b_classes, and the b_classes forms with the largest
fractions ||h_I||^2 / ||w_I||^2 are kept; `representatives()` returns them L2_g-orthonormalised (S^-1/2,
Loewdin). For the candidates w_a (21 constant 2-forms; 35 constant plus 42 TCS-adapted 3-forms) the
harmonic parts P w_a have the Gram matrix
    harmonic_gram = C^T S^-1 C,   C_{Ia} = <h_I, w_a>,  S = <h_I, h_J> over the kept classes,
exposed per degree as FormSpectrum.harmonic_gram (float64 (n, n), candidate order). b_harm is the
rank of its normalised spectrum (eigenvalues of D^-1/2 harmonic_gram D^-1/2, D = diag of the candidates'
Gram on the same quadrature) at the largest log-gap above the round-off floor 10 n eps nu_max: the
harmonic directions are O(1) eigenvalues, the exact and co-exact directions sit at the floor. The rank
is bounded by the classes found, so b_harm = 15 / 20 says that the candidates reach every class of the
chart and that the projected classes stay independent; how harmonic the fields are is measured by the
exact fixtures (tests, `convergence_table`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..batches import chunks
from ..chart import as_chart
from ..fixtures import conformal_fibre_field, conformal_fibre_norm2
from ..g2 import as_packed_field
from ..sampling import points as sampling
from .candidates import (
    CandidateBasis,
    candidates_2forms,
    candidates_3forms,
    constant_basis,
    form_name,
)

# ---------------------------------------------------------------- Hodge projection (absolute boundary conditions)
RCOND = 1e-10       # relative eigenvalue cutoff of the Jacobi-scaled normal matrix (its kernel: closed beta's)


@dataclass(frozen=True)
class SpectralBasis:
    """Profiles s(x) of the (k-1)-forms alpha = sum_{s,J} c_{sJ} s(x) dx^J of the Hodge projection.

    s = P_n(lambda / L) F(y): Legendre polynomials n = 0..legendre_degree times real Fourier modes F of
    the fibre: the constant, cos / sin(2 pi j y_a) for each fibre axis a = 1..6 and j = 1..fourier_degree,
    and with mixed_pairs also cos / sin(2 pi (y_a +- y_b)) for a < b. The constant profile (n = 0, F = 1)
    is left out (d of a constant form is zero). Derivatives are analytic: d_lambda s = P_n'(t) F / L,
    d_y s = P_n grad F (t = lambda / L). P_1 is always present, so lambda dy^I is in the span and every
    dlambda ^ dy^I is projected to zero exactly.
    """
    legendre_degree: int = 3
    fourier_degree: int = 2
    mixed_pairs: bool = False

    def __post_init__(self):
        for name in ("legendre_degree", "fourier_degree"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"SpectralBasis.{name} must be a non-negative integer, got {v!r}")
        if self.legendre_degree < 1:
            raise ValueError("SpectralBasis.legendre_degree must be at least 1 (lambda dy^I must be in the span)")

    @property
    def fourier_modes(self) -> torch.Tensor:
        """(n_F, 7) float64: column 0 is 0 for cos and 1 for sin, columns 1..6 the wave vector; row 0 = constant."""
        rows = [[0] * 7]
        for a in range(1, 7):
            for j in range(1, self.fourier_degree + 1):
                rows += [[kind] + [j if b == a else 0 for b in range(1, 7)] for kind in (0, 1)]
        if self.mixed_pairs:
            for a, b in combinations(range(1, 7), 2):
                for sb in (1, -1):
                    rows += [[kind] + [1 if c == a else sb if c == b else 0 for c in range(1, 7)] for kind in (0, 1)]
        return torch.tensor(rows, dtype=torch.float64, device="cpu")

    @property
    def n_profiles(self) -> int:
        return (self.legendre_degree + 1) * self.fourier_modes.shape[0] - 1

    @property
    def support(self) -> tuple:
        """support[i] (long tensor): the profiles whose derivative along x^i is not identically zero."""
        m = self.fourier_modes[:, 1:]
        n = torch.arange(self.legendre_degree + 1, device="cpu")[:, None].expand(-1, m.shape[0]).flatten()[1:]
        mode = torch.arange(m.shape[0], device="cpu")[None, :].expand(self.legendre_degree + 1, -1).flatten()[1:]
        dep = torch.cat([(n > 0)[:, None], m[mode] != 0], dim=1)              # (n_profiles, 7)
        return tuple(torch.nonzero(dep[:, i]).flatten() for i in range(F.DIM))

    def __call__(self, x: torch.Tensor, L: float):
        """(s (batch, n_profiles), D (batch, n_profiles, 7) with D[..., i] = d s / d x^i) at x (batch, 7)."""
        t = x[:, 0] / L
        p = self.legendre_degree
        P, dP = [torch.ones_like(t), t], [torch.zeros_like(t), torch.ones_like(t)]
        for n in range(1, p):     # (n+1) P_{n+1} = (2n+1) t P_n - n P_{n-1};  P'_{n+1} = P'_{n-1} + (2n+1) P_n
            P.append(((2 * n + 1) * t * P[n] - n * P[n - 1]) / (n + 1))
            dP.append(dP[n - 1] + (2 * n + 1) * P[n])
        P, dP = torch.stack(P[: p + 1], 1), torch.stack(dP[: p + 1], 1) / L          # (batch, p+1)
        modes = self.fourier_modes.to(x)
        m, is_sin = modes[:, 1:], modes[:, 0].bool()
        theta = 2 * math.pi * x[:, 1:] @ m.T                                         # (batch, n_F)
        c, s = torch.cos(theta), torch.sin(theta)
        Fv = torch.where(is_sin, s, c)
        dF = torch.where(is_sin, c, -s)[:, :, None] * (2 * math.pi * m)              # (batch, n_F, 6)
        val = (P[:, :, None] * Fv[:, None, :]).flatten(1)[:, 1:]
        D = torch.cat([(dP[:, :, None] * Fv[:, None, :])[..., None],
                       P[:, :, None, None] * dF[:, None, :, :]], dim=-1).flatten(1, 2)[:, 1:]
        return val, D


@lru_cache(maxsize=None)
def _exact_table(k: int):
    """Packed index (7, C(7,k-1)) of dx^i ^ dx^J in the k-forms (C(7,k), a zero slot, when i is in J) and
    its sign: d(s dx^J) = sum_i d_i s dx^i ^ dx^J."""
    ck = F.combo_index(k)
    nJ = F.n_components(k - 1)
    idx = torch.full((F.DIM, nJ), F.n_components(k), dtype=torch.long, device="cpu")
    sgn = torch.zeros(F.DIM, nJ, dtype=torch.float64, device="cpu")
    for i in range(F.DIM):
        for j, J in enumerate(F.combos(k - 1)):
            if i not in J:
                idx[i, j] = ck[tuple(sorted((i,) + J))]
                sgn[i, j] = F.perm_sign((i,) + J)
    return idx, sgn


def exact_forms(D: torch.Tensor, coefficients: torch.Tensor, k: int) -> torch.Tensor:
    """d alpha for alpha = sum_{s,J} c_{sJr} s dx^J: D (batch, n_s, 7), coefficients (n_s, C(7,k-1), m)
    -> packed k-forms (batch, m, C(7,k))."""
    idx, sgn = _exact_table(k)
    idx, sgn = idx.to(D.device), sgn.to(D)
    Y = torch.einsum("xsi,sJr->xiJr", D, coefficients.to(D)) * sgn[None, :, :, None]
    out = D.new_zeros(D.shape[0], F.n_components(k) + 1, coefficients.shape[-1])
    out.index_add_(1, idx.flatten(), Y.reshape(D.shape[0], -1, coefficients.shape[-1]))
    return out[:, :-1].transpose(1, 2)


def _accumulate(k: int, D: torch.Tensor, support: tuple, Gk: torch.Tensor, V: torch.Tensor, M, B, G) -> None:
    """Add one chunk to the normal matrix M (n_s, n_s, nJ, nJ), the right-hand sides B (n_s, nJ, n_v) and
    the Gram matrix G (n_v, n_v) of the forms V, in place (float64).

    D (x, n_s, 7): profile derivatives; support[i]: the profiles whose derivative along x^i is not
    identically zero (SpectralBasis.support); Gk (x, C, C) = Lambda^k(g^{-1}) w sqrt(det g) with w the
    quadrature weight, so that sum_x a^T Gk b ~ int <a, b>_g vol_g; V (x, n_v, C) packed k-forms.
    With Q_{(iJ),(i'J')} = <dx^i ^ dx^J, dx^i' ^ dx^J'>_g (signed gathers of Gk):
      M_{sJ,s'J'} = sum_{i,i'} sum_x d_i s d_i' s' Q_{(iJ),(i'J')},   B_{sJ,v} = sum_x sum_i d_i s <dx^i ^ dx^J, v>.
    Each (i, i') term is one matrix product over the points, (d_i s d_i' s')^T Q_{ii'}, restricted to the
    profiles that depend on x^i and x^i' (single-axis modes depend on lambda and one fibre axis only).
    """
    idx, sgn = _exact_table(k)
    idx, sgn = idx.to(D.device), sgn.to(D)
    x, n_s = D.shape[:2]
    nJ = idx.shape[1]
    fi, sf = idx.flatten(), sgn.flatten()
    Dt = D.transpose(1, 2).reshape(x * F.DIM, n_s)                           # rows (point, direction)
    GV = torch.matmul(Gk, V.transpose(1, 2))                                  # (x, C, n_v)
    G += V.transpose(0, 1).reshape(V.shape[1], -1) @ GV.reshape(-1, GV.shape[-1])
    Pv = torch.nn.functional.pad(GV, (0, 0, 0, 1))[:, fi] * sf[:, None]       # (x, 7 nJ, n_v), rows (i, J)
    B += (Dt.T @ Pv.reshape(x * F.DIM, -1)).view(n_s, nJ, -1)
    Gp = torch.nn.functional.pad(Gk, (0, 1, 0, 1))
    Q = (Gp[:, fi][:, :, fi] * (sf[:, None] * sf[None, :])).view(x, F.DIM, nJ, F.DIM, nJ)
    for i in range(F.DIM):
        Si = support[i].to(D.device)
        if not len(Si):
            continue
        Di = D[:, Si, i]
        for ip in range(i, F.DIM):
            Sp = support[ip].to(D.device)
            if not len(Sp):
                continue
            KR = (Di[:, :, None] * D[:, Sp, ip][:, None, :]).reshape(x, -1)   # (x, n_i n_i')
            out = (KR.T @ Q[:, i, :, ip, :].reshape(x, nJ * nJ)).view(len(Si), len(Sp), nJ, nJ)
            M.index_put_((Si[:, None], Sp[None, :]), out, accumulate=True)
            if ip != i:                                                       # the (i', i) term by symmetry
                M.index_put_((Sp[:, None], Si[None, :]), out.permute(1, 0, 3, 2), accumulate=True)


def _pinv_solve(M: torch.Tensor, B: torch.Tensor, rcond: float = RCOND):
    """c = M^+ B for the symmetric positive semi-definite normal matrix M (n, n) and B (n, m).

    Unknowns with a zero diagonal (d(s dx^J) = 0 identically) are dropped; the rest is Jacobi scaled,
    Mn = D^-1/2 M D^-1/2, and inverted on its eigenvalues above rcond * max (the kernel of M is spanned
    by closed combinations of the beta's, at round-off). Returns (c, rank, number of live unknowns)."""
    d = torch.diagonal(M).clone()
    live = d > 1e-14 * float(d.max())
    r = d[live].rsqrt()
    Mn = r[:, None] * M[live][:, live] * r[None, :]
    ev, U = torch.linalg.eigh(0.5 * (Mn + Mn.T))
    keep = ev > rcond * float(ev.max())
    Uk = U[:, keep]
    c = torch.zeros_like(B)
    c[live] = r[:, None] * (Uk @ ((Uk.T @ (r[:, None] * B[live])) / ev[keep, None]))
    return c, int(keep.sum()), int(live.sum())


def closed_representatives(k: int) -> CandidateBasis:
    """The C(7,k) constant k-forms dx^I: closed, one per de Rham class of T^7. On the chart those with
    dx^0 = dlambda are exact (dlambda ^ dy^J = d(lambda dy^J)); the C(6,k) fibre forms dy^I are the
    classes of [-L, L] x T^6."""
    return constant_basis(k)


@dataclass(frozen=True)
class HodgeProjection:
    """Harmonic fields h_I = w_I - d alpha_I of the closed constant forms w_I = dx^I (one degree k).

    coefficients (n_s, C(7,k-1), C(7,k)): alpha_I = sum c_{sJI} s dx^J over `spectral` profiles;
    class_gram (C(7,k), C(7,k)) = <h_I, h_J>; class_norms2 = ||w_I||^2; fraction = ||h_I||^2 / ||w_I||^2;
    class_eigenvalues: spectrum of the normalised class Gram (decreasing); b_classes: its rank at the
    largest gap; selected: the classes kept (largest fractions), orthonormaliser: S^{-1/2} of their Gram
    S (Loewdin), so that h_selected @ orthonormaliser is L2_g-orthonormal.
    """
    degree: int
    L: float
    spectral: SpectralBasis
    names: tuple
    coefficients: torch.Tensor
    class_gram: torch.Tensor
    class_norms2: torch.Tensor
    class_eigenvalues: torch.Tensor
    class_floor: float
    b_classes: int
    class_gap: float
    selected: tuple
    orthonormaliser: torch.Tensor
    n_unknowns: int
    rank: int
    n_points: int
    n_lambda: int
    n_y: int

    @property
    def fraction(self) -> torch.Tensor:
        return torch.diagonal(self.class_gram) / self.class_norms2

    def forms(self, x: torch.Tensor) -> torch.Tensor:
        """h_I(x) for all C(7,k) classes: (batch, C(7,k), C(7,k)) packed."""
        x = x.to(torch.float64)
        _, D = self.spectral(x, self.L)
        n = F.n_components(self.degree)
        return torch.eye(n, dtype=x.dtype, device=x.device)[None] - exact_forms(D, self.coefficients, self.degree)

    def representatives(self):
        """Callable x (batch, 7) -> (batch, b_classes, C(7,k)): L2_g-orthonormal harmonic fields."""
        sel = torch.tensor(self.selected, dtype=torch.long, device="cpu")
        T = self.orthonormaliser

        def rep(x):
            h = self.forms(x)[:, sel.to(x.device)]
            return torch.einsum("xic,ir->xrc", h, T.to(h))
        return rep


# ---------------------------------------------------------------- the projection of both degrees
@dataclass(frozen=True)
class ProjectionSettings:
    """Spectral basis and quadrature of the Hodge projection.

    spectral: profiles of alpha (SpectralBasis); n_lambda: Gauss nodes in lambda (None: 2 (p + 1),
    at least 8); chunk: points per accumulation step (memory ~ chunk * (7 C(7,k-1))^2 * 8 bytes for
    the gathered metric plus chunk * n_profiles * 7 C(7,k-1) * 8 bytes); rcond: relative eigenvalue
    cutoff of the normal matrix (RCOND)."""
    spectral: SpectralBasis = SpectralBasis()
    n_lambda: int | None = None
    chunk: int = 256
    rcond: float = RCOND

    def nodes(self) -> int:
        return self.n_lambda if self.n_lambda is not None else max(8, 2 * (self.spectral.legendre_degree + 1))


def _check_solvable(settings: ProjectionSettings, n_q: int, n_y: int, degrees) -> None:
    sp = settings.spectral
    for k in degrees:
        n_u = sp.n_profiles * F.n_components(k - 1)
        if n_u > n_q * F.n_components(k):
            raise ValueError(f"normal equations cannot be solved: {n_u} unknowns for the {k}-form projection "
                             f"(spectral basis {sp}) but only {n_q} quadrature points x {F.n_components(k)} "
                             f"components = {n_q * F.n_components(k)} data; more points or a smaller basis")
    n_lambda = settings.nodes()
    if sp.legendre_degree >= n_lambda:
        raise ValueError(f"normal equations cannot be solved: Legendre degree {sp.legendre_degree} needs more "
                         f"than {sp.legendre_degree} Gauss nodes in lambda, got n_lambda = {n_lambda}")
    top = sp.fourier_degree + (1 if sp.mixed_pairs else 0)
    if 2 * top >= n_y:
        raise ValueError(f"normal equations cannot be solved: Fourier degree {top} is aliased on {n_y} fibre "
                         f"points per lambda node (need n_y > {2 * top}); use more points")


def project(phi_field, chart, n_points: int, seed: int = 0, settings: ProjectionSettings | None = None,
            candidates: dict | None = None, progress: bool = False, device=None) -> dict:
    """Hodge projections of the constant k-forms dx^I (k = keys of `candidates`, default 2 and 3) with
    g = g(phi), and the harmonic Gram matrices of the candidate bases (module docstring).

    candidates: {k: CandidateBasis}; returns {k: (HodgeProjection, harmonic_gram (n, n), candidate
    Gram on the quadrature (n, n))}. phi_field: x (batch, 7) -> packed (batch, 35) or dense 3-forms;
    chart: a `Chart` (or its L).
    Raises ValueError for a basis the quadrature cannot resolve, non-finite or non-positive phi.
    """
    chart = as_chart(chart)
    settings = ProjectionSettings() if settings is None else settings
    candidates = {2: candidates_2forms(), 3: candidates_3forms(chart)} if candidates is None else candidates
    n_lambda = settings.nodes()
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    x, wq, n_y = sampling.gauss_sobol(n_points, chart, n_lambda, seed, device)
    n_q = x.shape[0]
    _check_solvable(settings, n_q, n_y, candidates)
    sp = settings.spectral
    n_s = sp.n_profiles
    packed = as_packed_field(phi_field)
    acc = {}
    for k, basis in candidates.items():
        nJ, n_v = F.n_components(k - 1), F.n_components(k) + basis.n_modes
        acc[k] = [torch.zeros(shape, dtype=torch.float64, device=x.device)
                  for shape in ((n_s, n_s, nJ, nJ), (n_s, nJ, n_v), (n_v, n_v))]
    support = sp.support
    with torch.no_grad():
        for s in chunks(n_q, settings.chunk, progress, "Hodge projection"):
            xc, wc = x[s], wq[s]
            phi = packed(xc.to(_field_dtype(phi_field, xc))).to(torch.float64)
            check_finite(phi, xc)
            m = g2.metric_data_packed(phi, check=True)                   # non-positive phi: ValueError
            vol = (wc * m.det.sqrt())[:, None, None]
            _, D = sp(xc, chart.L)
            for k, basis in candidates.items():
                Gk = F.exterior_power(m.ginv, k) * vol
                w_const = torch.eye(F.n_components(k), dtype=torch.float64, device=xc.device).expand(xc.shape[0], -1, -1)
                V = torch.cat([w_const, basis(xc).to(torch.float64)], dim=1)
                _accumulate(k, D, support, Gk, V, *acc[k])
    out = {}
    for k, basis in candidates.items():
        out[k] = _finish(k, basis, [t.cpu() for t in acc[k]], settings, chart.L, n_q, n_lambda, n_y)
    return out


def check_finite(phi: torch.Tensor, x: torch.Tensor) -> None:
    bad = ~torch.isfinite(phi.detach()).all(-1)
    if bool(bad.any()):
        raise ValueError(f"phi_field returned non-finite values (NaN or inf) at {int(bad.sum())} of "
                         f"{phi.shape[0]} points (first at x = {x[bad][0].tolist()}): no count is possible")


def _field_dtype(phi_field, x):
    """The dtype a field's parameters use (a float32 network is evaluated in float32), else float64."""
    if isinstance(phi_field, torch.nn.Module):
        p = next(phi_field.parameters(), None)
        if p is not None:
            return p.dtype
    return torch.float64


def _finish(k, basis, sums, settings, L, n_q, n_lambda, n_y):
    M, B, G = sums
    M = M.permute(0, 2, 1, 3)                                              # (s, J, s', J')
    sp = settings.spectral
    nJ, C = F.n_components(k - 1), F.n_components(k)
    n_u = sp.n_profiles * nJ
    r = slice(0, C)
    cand = slice(C, None)
    Bf = B.reshape(n_u, -1)
    coef, rank, live = _pinv_solve(M.reshape(n_u, n_u), Bf[:, r], settings.rcond)
    G = 0.5 * (G + G.T)
    Ghh = G[r, r] - Bf[:, r].T @ coef
    Ghh = 0.5 * (Ghh + Ghh.T)
    Ghc = G[r, cand] - coef.T @ Bf[:, cand]
    eps = float(torch.finfo(torch.float64).eps)
    norms2 = torch.diagonal(G[r, r]).clone()
    dn = norms2.rsqrt()
    cls_ev = torch.linalg.eigvalsh(dn[:, None] * Ghh * dn[None, :]).flip(0)
    cls_floor = 10 * C * eps * float(cls_ev[0])
    b_cls, cls_gap, _ = rank_at_gap(cls_ev, cls_floor)
    frac = torch.diagonal(Ghh) / norms2
    sel = tuple(sorted(torch.argsort(frac, descending=True)[:b_cls].tolist()))
    si = torch.tensor(sel, dtype=torch.long, device="cpu")
    S = Ghh[si][:, si]
    ev, U = torch.linalg.eigh(S)
    T = U @ torch.diag(ev.rsqrt()) @ U.T                                   # S^{-1/2} (Loewdin)
    Hc = Ghc[si]
    H = Hc.T @ torch.linalg.solve(S, Hc)
    H = 0.5 * (H + H.T)
    names = tuple(form_name(I) for I in F.combos(k))
    proj = HodgeProjection(
        degree=k, L=L, spectral=sp, names=names, coefficients=coef.reshape(sp.n_profiles, nJ, C),
        class_gram=Ghh, class_norms2=norms2, class_eigenvalues=cls_ev, class_floor=cls_floor,
        b_classes=b_cls, class_gap=cls_gap, selected=sel, orthonormaliser=T, n_unknowns=live, rank=rank,
        n_points=n_q, n_lambda=n_lambda, n_y=n_y)
    return proj, H, G[cand, cand]


def largest_log_drop(values: np.ndarray, floor: float) -> int:
    """values decreasing, all > floor: index (count) before the largest drop in log, the floor appended."""
    logs = np.log(np.append(values, floor))
    return int(np.argmax(logs[:-1] - logs[1:])) + 1


def rank_at_gap(nu: torch.Tensor, floor: float):
    """(rank, gap ratio, threshold) of a decreasing spectrum: the count above its largest log-drop
    among values above floor (floor appended)."""
    v = nu.numpy()
    above = v[v > floor]
    if not len(above):
        return 0, float("nan"), floor
    b = largest_log_drop(above, floor)
    nxt = float(v[b]) if b < len(v) and v[b] > floor else floor
    return b, float(v[b - 1]) / nxt, math.sqrt(float(v[b - 1]) * nxt)


# ---------------------------------------------------------------- accuracy on an exact fixture
def fixture_errors(proj: HodgeProjection, a: float) -> dict:
    """Errors of one projection against `fixtures.conformal_fibre_field(a)`: the largest relative error of
    ||h_I||^2 over the fibre classes with dy1 ('with_dy1') and without ('without_dy1'), and the largest
    ||h_I||^2 / 2L of the exact dlambda-forms ('exact')."""
    n2 = torch.diagonal(proj.class_gram)
    out = {"with_dy1": 0.0, "without_dy1": 0.0, "exact": 0.0}
    for i, I in enumerate(F.combos(proj.degree)):
        ref = conformal_fibre_norm2(I, a, proj.L)
        key = "exact" if 0 in I else "with_dy1" if 1 in I else "without_dy1"
        err = abs(float(n2[i])) / (2 * proj.L) if key == "exact" else abs(float(n2[i]) / ref - 1)
        out[key] = max(out[key], err)
    return out


def convergence_table(settings=((1, 1, 512), (1, 2, 1024), (1, 3, 2048)), a: float = 0.2,
                      chart=2.0, seed: int = 0):
    """pandas.DataFrame: accuracy of the projection on the conformal fixture phi = e^{3 a sin(2 pi y1)} phi0
    (exact ||h||^2 = 2L / I0((7-2k) a) with dy1, 2L I0((7-2k) a) without) for each (Legendre degree,
    Fourier degree, points); relative errors of ||h||^2 for 2- and 3-form classes, the exact forms'
    leftover ||h||^2 / 2L, the number of unknowns and the wall time."""


    rows = []
    for p, M, n in settings:
        st = ProjectionSettings(SpectralBasis(p, M))
        t0 = time.perf_counter()
        out = project(conformal_fibre_field(a), chart, n, seed, st, {2: constant_basis(2), 3: constant_basis(3)})
        dt = time.perf_counter() - t0
        e2, e3 = fixture_errors(out[2][0], a), fixture_errors(out[3][0], a)
        rows.append({"Legendre degree": p, "Fourier degree": M, "points": out[3][0].n_points,
                     "unknowns (3-forms)": out[3][0].n_unknowns,
                     "2-forms: rel. error with dy1": e2["with_dy1"], "2-forms: without dy1": e2["without_dy1"],
                     "3-forms: rel. error with dy1": e3["with_dy1"], "3-forms: without dy1": e3["without_dy1"],
                     "exact forms: |h|^2 / 2L": max(e2["exact"], e3["exact"]), "seconds": dt})
    return pd.DataFrame(rows)

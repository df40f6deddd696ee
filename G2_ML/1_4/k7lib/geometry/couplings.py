"""Couplings of the learned geometry, named for what they are.

Two degree-consistent integrals are computed (docs/conventions.md §6):
  (a) the triple wedge integral  Y_ijk = int omega_i ^ omega_j ^ Phi_k  of harmonic 2-forms omega and
      3-forms Phi over the chart. On a closed 7-manifold, for closed forms, it would depend only on their
      cohomology classes (a cup product). On the chart [-L, L] x T^6 it does not: H^7 of the chart is 0
      (every 7-form is exact), and changing a form by d beta changes the integral by the boundary term
      int_{lambda = +-L} beta ^ ... . The classes are those of the fibre forms dy^I, and a product of three
      fibre forms has no dlambda, so the integrand c(x) dx^0..6 comes only from the dlambda-parts of the
      harmonic fields; these vanish when the metric has no lambda-y mixing (phi_bg, the flat metric) and
      measure that mixing otherwise. Estimated by Monte Carlo with a standard error; no metric enters
      the integrand;
  (b) Hitchin's cubic d^3V: the third derivative of the volume functional V(phi) = int sqrt(det g(phi)) d^7x
      (N. Hitchin, "The geometry of three-forms in six and seven dimensions", math/0010054) along
      phi + sum_a t_a Phi_a at t = 0, on every harmonic 3-form. It is d^3 V, not d^3 log V:
      d^3 log V = d^3V / V - 3 sym(d^2V dV) / V^2 + 2 dV dV dV / V^3. On the moduli space of torsion-free
      G2 structures of a compact manifold, in the period coordinates, Karigiannis-Leung (arXiv:0709.2987)
      define the Yukawa coupling as a third derivative of a volume functional, while the M-theory Kaehler
      potential is a multiple of log V (Grigorian-Yau, arXiv:0802.0723, relate the curvature of that
      Kaehler metric to the Yukawa coupling); the papers' normalisations were not re-read for this code.
      The chart is not compact, the learned phi is not torsion-free and the directions are harmonic fields
      of a manifold with boundary, so this is the cubic form of V at the learned phi, named d3V, and not a
      moduli-space coupling.
A smooth G2 manifold carries no chiral fermions (Acharya-Witten hep-th/0109152): chiral matter needs
conical singularities, so neither number is a Yukawa coupling of chiral quarks or leptons.

The GIFT ansatz that maps a normalised coupling to mass ratios lives in `k7lib.gift`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import pandas as pd
import torch
from torch.func import jvp

from .. import forms as F
from .. import g2
from ..gift import RESOLVED_SIGMA
from ..batches import check_chunk, chunks
from ..inputs import check_field_call, check_phi, check_points
from ..sampling.montecarlo import Moments

TRIPLE_PRODUCT_VANISHES = (
    "The literal integral of phi_i ^ phi_j ^ phi_k of three 3-forms vanishes identically on a "
    "7-manifold, because the integrand is a 9-form and every form of degree above 7 is zero; "
    "what is computed here is the triple wedge integral int omega_i ^ omega_j ^ Phi_k over the chart "
    "(2 + 2 + 3 = 7; not topological there, it measures the dlambda-parts of the harmonic fields) and "
    "Hitchin's cubic, the third derivative d^3V of the volume functional V along harmonic 3-forms."
)

# d^3/ds^3 s^(7/3) at s = 1: sqrt(det g(s phi)) = s^(7/3) sqrt(det g(phi)) since B(phi) is cubic in phi.
HITCHIN_CUBIC_FACTOR = Fraction(7, 3) * Fraction(4, 3) * Fraction(1, 3)

# The `kind` of each Couplings, as tables and the report print it.
PAIRING_KIND = "triple wedge integral on the chart"
HITCHIN_KIND = "Hitchin cubic d3V"


# ---------------------------------------------------------------- Monte Carlo plumbing
def _check_sampling(x, weights, volume):
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[-1] != F.DIM or x.shape[0] < 2:
        raise ValueError(f"points x must be a tensor of shape (batch >= 2, 7), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if weights is None:
        weights = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    weights = torch.as_tensor(weights, device=x.device).to(torch.float64)
    if weights.shape != (x.shape[0],):
        raise ValueError(f"weights must have shape ({x.shape[0]},) to match x, got {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    volume = float(volume)
    if not (math.isfinite(volume) and volume > 0):
        raise ValueError(f"volume must be a positive finite number, got {volume!r}")
    return weights, volume


@dataclass(frozen=True)
class Couplings:
    """Couplings on chosen triplets: values and standard errors (m,), normalised magnitudes eps (m,).

    A coupling is resolved when |Y| > RESOLVED_SIGMA standard errors (a finite one); otherwise it is
    consistent with zero (`consistent_with_zero`), and nothing is read from its size."""
    kind: str
    triplets: tuple
    values: torch.Tensor
    stderr: torch.Tensor
    normalised: torch.Tensor

    def consistent_with_zero(self, n_sigma: float = None) -> torch.Tensor:
        """(m,) bool: |Y| <= n_sigma * stderr (default RESOLVED_SIGMA), or a standard error that is not finite."""
        n_sigma = RESOLVED_SIGMA if n_sigma is None else n_sigma
        return ~((self.values.abs() > n_sigma * self.stderr) & torch.isfinite(self.stderr))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "kind": self.kind, "triplet": [str(tuple(t)) for t in self.triplets],
            "Y": self.values.tolist(), "Y_stderr": self.stderr.tolist(), "epsilon": self.normalised.tolist(),
            "consistent_with_zero": self.consistent_with_zero().tolist()})


def _check_triplets(triplets, sizes, name="triplets"):
    out = []
    for t in triplets:
        t = tuple(int(v) for v in t)
        if len(t) != 3 or any(not 0 <= v < n for v, n in zip(t, sizes)):
            raise ValueError(f"{name}: each triplet is (i, j, k) with indices below {tuple(sizes)}, got {t}")
        out.append(t)
    if not out:
        raise ValueError(f"{name}: give at least one triplet")
    return tuple(out)


# ---------------------------------------------------------------- (a) the triple wedge integral
@lru_cache(maxsize=None)
def _wedge22_table(device: str, dtype: torch.dtype) -> torch.Tensor:
    """T[a, b, L] = sign(a, b) when 2-forms a, b are disjoint with a u b = L (packed 4-form index)."""
    c2, c4 = F.combos(2), F.combo_index(4)
    T = torch.zeros(len(c2), len(c2), len(c4), dtype=dtype, device="cpu")
    for a, I in enumerate(c2):
        for b, J in enumerate(c2):
            s = F.perm_sign(I + J)
            if s:
                T[a, b, c4[tuple(sorted(I + J))]] = s
    return T.to(device)


def _norms(w: torch.Tensor, k: int, g=None) -> torch.Tensor:
    """|w|_g per point and mode for packed w (batch, n, C(7,k)); Euclidean when g is None."""
    if g is None:
        return (w * w).sum(-1).clamp_min(0).sqrt()
    ginv, det = F.metric_data(g)
    raised = F.transform_packed(w, k, ginv[:, None])
    return (w * raised).sum(-1).clamp_min(0).sqrt()


@dataclass(frozen=True)
class TriplePairing:
    """Y_ijk = int omega_i ^ omega_j ^ Phi_k d^7x over the chart, all (n2, n2, n3) float64.

    On the chart it is not a pairing of cohomology classes (module docstring): it is the coordinate
    integral of the top form, which the dlambda-parts of the harmonic fields produce.

    `scale` = int |omega_i|_g |omega_j|_g |Phi_k|_g sqrt(det g) d^7x bounds the size of Y up to a
    constant of order one (the comass of the wedge), so eps = |Y| / scale is a normalised coupling,
    invariant under rescaling any of the three forms (Euclidean norms when no metric was given).
    """
    Y: torch.Tensor
    stderr: torch.Tensor
    scale: torch.Tensor
    n_points: int
    volume: float

    def couplings(self, triplets=None) -> Couplings:
        """Couplings on triplets (i, j, k); by default every i <= j (Y_ijk = Y_jik) and every k."""
        n2, _, n3 = self.Y.shape
        if triplets is None:
            triplets = [(i, j, k) for i in range(n2) for j in range(i, n2) for k in range(n3)]
        triplets = _check_triplets(triplets, (n2, n2, n3))
        idx = torch.tensor(triplets, dtype=torch.long, device="cpu").T
        vals, se, sc = self.Y[tuple(idx)], self.stderr[tuple(idx)], self.scale[tuple(idx)]
        return Couplings(PAIRING_KIND, triplets, vals, se, vals.abs() / sc)


def triple_pairing(omega2, Phi3, x: torch.Tensor, weights=None, volume: float = 1.0, *,
                    metric=None, chunk: int = 256, progress: bool = False) -> TriplePairing:
    """Monte Carlo Y_ijk = int_chart omega_i ^ omega_j ^ Phi_k, the triple wedge integral (`TriplePairing`).

    omega2: x (batch, 7) -> packed 2-forms (batch, n2, 21); Phi3: x -> packed 3-forms (batch, n3, 35);
    x (N, 7) sample points drawn with density p, weights (N,) = 1 / (p(x) * volume) (None: uniform),
    volume the coordinate volume of the chart (2L for [-L, L] x T^6, see `chart_volume`).
    The 7-form omega_i ^ omega_j ^ Phi_k = c_ijk(x) dx^0..6 with
      c_ijk = sum_{a,b,K} sign(a, b, K) omega_i,a omega_j,b Phi_k,K,
    so Y_ijk ~ (volume / N) sum_n w_n c_ijk(x_n), with standard error volume * std(w c) / sqrt(N).
    metric: optional x -> g (batch, 7, 7), used only for the normalising `scale`.
    Work per chunk is O(chunk * n2^2 * n3 * 35); accumulation is in float64.
    """
    check_points(x)
    weights, volume = _check_sampling(x, weights, volume)
    check_chunk(chunk)
    N = x.shape[0]
    moments, scale = Moments(), None
    with torch.no_grad():
        for s in chunks(N, chunk, progress, "triple pairing"):
            xc, wc = x[s], weights[s]
            om, ph = omega2(xc), Phi3(xc)
            if om.ndim != 3 or om.shape[0] != xc.shape[0] or om.shape[-1] != F.n_components(2):
                raise ValueError(f"omega2 must return packed 2-forms (batch, n2, 21), got {tuple(om.shape)}")
            if ph.ndim != 3 or ph.shape[0] != xc.shape[0] or ph.shape[-1] != F.n_components(3):
                raise ValueError(f"Phi3 must return packed 3-forms (batch, n3, 35), got {tuple(ph.shape)}")
            om, ph = om.to(torch.float64), ph.to(torch.float64)
            T = _wedge22_table(F.device_key(om.device), om.dtype)
            w4 = torch.einsum("bia,acL,bjc->bijL", om, T, om)                     # omega_i ^ omega_j
            c = torch.einsum("bijL,bkL->bijk", w4, F.star0_packed(ph, 3))         # top coefficient
            moments.add(wc[:, None, None, None] * c)
            g = None if metric is None else metric(xc).to(torch.float64)
            vol = torch.ones_like(wc) if g is None else F.metric_data(g)[1].sqrt()
            n_om, n_ph = _norms(om, 2, g), _norms(ph, 3, g)
            part = torch.einsum("b,bi,bj,bk->ijk", wc * vol, n_om, n_om, n_ph)
            scale = part if scale is None else scale + part
    Y, se = moments.integral(volume)
    return TriplePairing(Y=Y, stderr=se, scale=scale * volume / N, n_points=N, volume=volume)


# ---------------------------------------------------------------- (b) Hitchin's cubic d^3V
def volume_density(phi: torch.Tensor) -> torch.Tensor:
    """sqrt(det g(phi)) = |det B(phi)|^(1/9) for packed phi (batch, 35) -> (batch,).

    With g = |det B|^(-1/9) B (docs/conventions.md §3), det g = |det B|^(2/9). log|det B| is taken from a
    Cholesky factor of sign(det B) B: torch.linalg.det/slogdet give wrong second and higher
    forward-mode derivatives in torch 2.13, the Cholesky route gives correct ones.
    """
    check_phi(phi, layout="packed")
    return _density(phi, _orientation(phi))


def _orientation(phi: torch.Tensor) -> torch.Tensor:
    """sign(det B(phi)) (batch,), piecewise constant, so its value alone is needed (g2's orientation)."""
    with torch.no_grad():
        return g2.metric_data_packed(phi.detach(), check=False).orientation


def _density(phi: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """|det B|^(1/9) = exp((2/9) sum log diag L) with L L^T = sign * B."""
    L = torch.linalg.cholesky(g2.bilinear_B_packed(phi) * sign[..., None, None])
    return torch.exp(torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1) * (2.0 / 9.0))


def third_derivative_jvp(phi: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """D^3 rho(phi)[a, b, c] (batch,) by three nested forward-mode jvps: the reference for `density_cubic_form`
    (exact to round-off, one triplet per call). phi, a, b, c: packed (batch, 35)."""
    sign = _orientation(phi)
    f = lambda p: _density(p, sign)
    f1 = lambda p: jvp(f, (p,), (c,))[1]
    f2 = lambda p: jvp(f1, (p,), (b,))[1]
    return jvp(f2, (phi,), (a,))[1]


@lru_cache(maxsize=None)
def _b_third(device: str) -> torch.Tensor:
    """d^3 B / dphi_I dphi_J dphi_K (35, 35, 35, 7, 7), float64: constant, since B(phi) is a homogeneous cubic.
    By polarisation, d^3B[a, b, c] = B(a+b+c) - B(a+b) - B(a+c) - B(b+c) + B(a) + B(b) + B(c), evaluated
    on basis vectors for I <= J <= K and filled in symmetrically."""
    n = F.n_components(3)
    E = torch.eye(n, dtype=torch.float64, device="cpu")
    B1 = g2.bilinear_B_packed(E)                                                   # B(e_I)
    B2 = g2.bilinear_B_packed((E[:, None] + E[None, :]).reshape(-1, n)).view(n, n, F.DIM, F.DIM)
    idx = torch.combinations(torch.arange(n), 3, with_replacement=True)            # I <= J <= K
    I, J, K = idx.T
    B3 = g2.bilinear_B_packed(E[I] + E[J] + E[K]) - B2[I, J] - B2[I, K] - B2[J, K] + B1[I] + B1[J] + B1[K]
    T = torch.zeros(n, n, n, F.DIM, F.DIM, dtype=torch.float64, device="cpu")
    for p in ((I, J, K), (I, K, J), (J, I, K), (J, K, I), (K, I, J), (K, J, I)):
        T[p] = B3
    return T.to(device)


def density_cubic_form(phi: torch.Tensor) -> torch.Tensor:
    """T (batch, 35, 35, 35): the symmetric third derivative d^3 rho / dphi_I dphi_J dphi_K of the volume
    density rho = |det B|^(1/9) at packed phi (batch, 35), so that D^3 rho[a, b, c] = T_IJK a_I b_J c_K.

    With f = log rho = (1/9) log|det B|, X = B^-1, P_I = X dB/dphi_I, P_IJ = X d^2B/dphi_I dphi_J (B is
    cubic in phi: d^2B = B3 . phi, dB = (1/2) B3 . phi . phi with the constant B3 = d^3B):
      f_I = tr P_I / 9,   f_IJ = (tr P_IJ - tr P_I P_J) / 9,
      f_IJK = (tr X B3_IJK - tr P_I P_JK - tr P_J P_IK - tr P_K P_IJ + tr P_I P_J P_K + tr P_I P_K P_J) / 9,
      T_IJK = rho (f_IJK + f_IJ f_K + f_IK f_J + f_JK f_I + f_I f_J f_K).
    About 1e7 flops per point, whatever the number of directions it is contracted with afterwards."""
    B3 = _b_third(F.device_key(phi.device))
    B = g2.bilinear_B_packed(phi)
    X = torch.linalg.inv(B)
    B2 = torch.einsum("IJKpq,bK->bIJpq", B3, phi)
    P1 = X[:, None] @ (0.5 * torch.einsum("bIJpq,bJ->bIpq", B2, phi))
    P2 = X[:, None, None] @ B2
    f1 = torch.diagonal(P1, dim1=-2, dim2=-1).sum(-1) / 9
    f2 = (torch.diagonal(P2, dim1=-2, dim2=-1).sum(-1) - torch.einsum("bIpq,bJqp->bIJ", P1, P1)) / 9
    A = torch.einsum("bIpq,bJKqp->bIJK", P1, P2)                         # tr P_I P_JK
    Q = torch.einsum("bIpq,bJqr->bIJpr", P1, P1)                         # P_I P_J
    Cy = torch.einsum("bIJpq,bKqp->bIJK", Q, P1)                          # tr P_I P_J P_K
    f3 = (torch.einsum("bqp,IJKpq->bIJK", X, B3) - A - A.permute(0, 2, 1, 3) - A.permute(0, 2, 3, 1)
          + Cy + Cy.permute(0, 1, 3, 2)) / 9
    outer = f2[:, :, :, None] * f1[:, None, None, :]
    T = f3 + outer + outer.permute(0, 1, 3, 2) + outer.permute(0, 3, 1, 2) \
        + f1[:, :, None, None] * f1[:, None, :, None] * f1[:, None, None, :]
    rho = torch.exp(f1.new_tensor(1.0 / 9) * torch.log(torch.linalg.det(B).abs()))
    return rho[:, None, None, None] * T


def _phi_values(phi_field, x):
    out = phi_field(x)
    if out.ndim == 4 and tuple(out.shape[1:]) == (7, 7, 7):
        out = F.pack(out, 3)
    if out.ndim != 2 or out.shape != (x.shape[0], F.n_components(3)):
        raise ValueError(f"phi_field must return packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms, "
                         f"got {tuple(out.shape)}")
    return out.to(torch.float64).contiguous()


def hitchin_volume(phi_field, x: torch.Tensor, weights=None, volume: float = 1.0, *,
                   chunk: int = 4096) -> tuple:
    """V(phi) = int sqrt(det g(phi)) d^7x by Monte Carlo: (value, standard error), float64 tensors.

    phi_field: x (batch, 7) -> packed (batch, 35) (or dense) 3-forms; x, weights, volume as in
    `triple_pairing`. A non-positive phi raises ValueError (g2.metric_data_packed).
    """
    check_field_call(phi_field, x, chunk=chunk)
    weights, volume = _check_sampling(x, weights, volume)
    moments = Moments()
    with torch.no_grad():
        for s in chunks(x.shape[0], chunk):
            phi = _phi_values(phi_field, x[s])
            g2.metric_data_packed(phi, check=True)
            moments.add(weights[s] * _density(phi, _orientation(phi)))
    return moments.integral(volume)


@dataclass(frozen=True)
class HitchinCubic:
    """Hitchin's cubic d^3 V / dt_i dt_j dt_k at t = 0 on chosen triplets, with V and the L2 norms of the directions.

    values, stderr: (m,); V, V_stderr: scalars; norms2: (n,) = int |Phi_a|^2_g vol_g with g = g(phi).
    Normalisation: eps = |D^3 V| / ((28/27) V) * prod_a sqrt(7 V / norms2_a), equal to 1 when all
    three directions are phi itself (|phi|^2_g = 7) and invariant under rescaling each direction.
    """
    triplets: tuple
    values: torch.Tensor
    stderr: torch.Tensor
    V: torch.Tensor
    V_stderr: torch.Tensor
    norms2: torch.Tensor
    n_points: int

    @property
    def normalised(self) -> torch.Tensor:
        t = torch.tensor(self.triplets, dtype=torch.long, device="cpu")
        unit = (7 * self.V / self.norms2).sqrt()
        return self.values.abs() / (float(HITCHIN_CUBIC_FACTOR) * self.V) * unit[t].prod(-1)

    def couplings(self) -> Couplings:
        return Couplings(HITCHIN_KIND, self.triplets, self.values, self.stderr, self.normalised)

    def largest(self, n: int = 8) -> Couplings:
        """The n triplets with the largest normalised |d^3V|, largest first, with their standard errors."""
        order = torch.argsort(self.normalised, descending=True)[:n]
        return Couplings(HITCHIN_KIND, tuple(self.triplets[int(i)] for i in order), self.values[order],
                         self.stderr[order], self.normalised[order])


def hitchin_cubic(phi_field, directions, x: torch.Tensor, weights=None, volume: float = 1.0,
                  triplets=None, *, chunk: int = 64, progress: bool = False) -> HitchinCubic:
    """Hitchin's cubic d^3V: third derivatives of the volume functional along 3-form directions.

    V(t) = int sqrt(det g(phi + sum_a t_a Phi_a)) d^7x (Hitchin, math/0010054);  returns
    d^3 V / dt_i dt_j dt_k at t = 0 = int T_IJK(x) Phi_i^I Phi_j^J Phi_k^K d^7x with T = d^3 rho the packed
    cubic form of the density (`density_cubic_form`), built once per point and contracted with all n
    directions at once; Monte Carlo over x with float64 accumulation and standard errors. This is d^3V,
    not d^3 log V (module docstring). Cost per point: ~1e7 flops for T plus 35^3 n for the contraction.
    phi_field: x (batch, 7) -> packed (batch, 35); directions: x -> (batch, n, 35), e.g. the
    L2_g-orthonormal harmonic 3-forms; triplets: (i, j, k) index triples (default: all i <= j <= k).
    Check: for phi = Phi = phi0 constant, d^3V/dt^3 = (7/3)(4/3)(1/3) V exactly.
    """
    check_field_call(phi_field, x, chunk=chunk)
    weights, volume = _check_sampling(x, weights, volume)
    moments, vmom, nmom = Moments(), Moments(), Moments()
    tidx = None
    with torch.no_grad():
        for s in chunks(x.shape[0], chunk, progress, "Hitchin cubic"):
            xc, wc = x[s], weights[s]
            phi = _phi_values(phi_field, xc)
            D = directions(xc)
            if D.ndim != 3 or D.shape[0] != xc.shape[0] or D.shape[-1] != F.n_components(3):
                raise ValueError(f"directions must return packed 3-forms (batch, n, 35), got {tuple(D.shape)}")
            D = D.to(torch.float64)
            if tidx is None:
                n = D.shape[1]
                if triplets is None:
                    triplets = [(i, j, k) for i in range(n) for j in range(i, n) for k in range(j, n)]
                triplets = _check_triplets(triplets, (n,) * 3)
                tidx = torch.tensor(triplets, dtype=torch.long, device=D.device).T
            m = g2.metric_data_packed(phi, check=True)
            T = density_cubic_form(phi)
            Y = torch.einsum("bIJK,biI->biJK", T, D)
            Y = torch.einsum("biJK,bjJ->bijK", Y, D)
            Y = torch.einsum("bijK,bkK->bijk", Y, D)
            moments.add(wc[:, None] * Y[:, tidx[0], tidx[1], tidx[2]])
            vmom.add(wc * m.det.sqrt())
            nmom.add(wc[:, None] * F.inner_packed(D, D, 3, m.g[:, None], m.ginv[:, None], m.det[:, None])
                     * m.det.sqrt()[:, None])
    vals, se = moments.integral(volume)
    V, V_se = vmom.integral(volume)
    norms2, _ = nmom.integral(volume)
    return HitchinCubic(triplets=triplets, values=vals, stderr=se, V=V, V_stderr=V_se, norms2=norms2,
                        n_points=x.shape[0])

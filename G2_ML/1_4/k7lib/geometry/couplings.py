"""Couplings of the learned geometry, named for what they are.

Two degree-consistent couplings are computed (docs/conventions.md §6):
  (a) the topological triple pairing  Y_ijk = int omega_i ^ omega_j ^ Phi_k  of 2-forms omega and 3-forms
      Phi. For closed forms on a closed 7-manifold it depends only on their cohomology classes (Stokes:
      changing a form by an exact one changes the integrand by an exact 7-form), so it is a cup-product
      pairing H^2 x H^2 x H^3 -> R, fixed by topology and blind to the metric. In M-theory on a G2
      manifold it is the coefficient of the gauge kinetic term of the vector multiplets (Beasley-Witten,
      hep-th/0203061), not a Yukawa coupling. On the chart the integrand is a top form c(x) dx^0..6, so the
      integral is the coordinate integral of c (no metric enters), estimated by Monte Carlo with a
      standard error;
  (b) Hitchin's cubic: the third derivative of the volume functional V(phi) = int sqrt(det g(phi)) d^7x
      (N. Hitchin, "The geometry of three-forms in six and seven dimensions", math/0010054),
      d^3 V / dt_i dt_j dt_k along phi + sum_a t_a Phi_a at t = 0, by nested forward-mode autograd. On
      harmonic 3-forms of a torsion-free G2 structure this is the Yukawa coupling of the moduli
      (Karigiannis-Leung arXiv:0709.2987; Grigorian-Yau arXiv:0802.0723).
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
from torch.func import jvp, vmap

from .. import forms as F
from .. import g2
from ..batches import check_chunk, chunks
from ..inputs import check_field_call, check_phi, check_points
from ..sampling.montecarlo import Moments

TRIPLE_PRODUCT_VANISHES = (
    "The literal integral of phi_i ^ phi_j ^ phi_k of three 3-forms vanishes identically on a "
    "7-manifold, because the integrand is a 9-form and every form of degree above 7 is zero; "
    "the couplings computed here are the topological triple pairing int omega_i ^ omega_j ^ Phi_k "
    "(2 + 2 + 3 = 7) and the cubic derivative of the Hitchin volume functional (the moduli Yukawa)."
)

# d^3/ds^3 s^(7/3) at s = 1: sqrt(det g(s phi)) = s^(7/3) sqrt(det g(phi)) since B(phi) is cubic in phi.
HITCHIN_CUBIC_FACTOR = Fraction(7, 3) * Fraction(4, 3) * Fraction(1, 3)

# The `kind` of each Couplings, as tables and the report print it.
PAIRING_KIND = "topological triple pairing"
HITCHIN_KIND = "Hitchin cubic (moduli Yukawa)"


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
    """Couplings on chosen triplets: values and standard errors (m,), normalised magnitudes eps (m,)."""
    kind: str
    triplets: tuple
    values: torch.Tensor
    stderr: torch.Tensor
    normalised: torch.Tensor

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "kind": self.kind, "triplet": [str(tuple(t)) for t in self.triplets],
            "Y": self.values.tolist(), "Y_stderr": self.stderr.tolist(), "epsilon": self.normalised.tolist()})


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


# ---------------------------------------------------------------- (a) the topological triple pairing
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
    """Y_ijk = int omega_i ^ omega_j ^ Phi_k d^7x, all (n2, n2, n3) float64: a topological pairing.

    For closed forms on a closed manifold Y depends only on the classes [omega_i], [omega_j], [Phi_k]
    (the gauge kinetic term of Beasley-Witten, hep-th/0203061); on the chart, a manifold with
    boundary, it is the coordinate integral of the top form and only its scale-free part is meaningful.

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
    """Monte Carlo Y_ijk = int_chart omega_i ^ omega_j ^ Phi_k, the topological triple pairing (`TriplePairing`).

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


# ---------------------------------------------------------------- (b) Hitchin cubic: the moduli Yukawa
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


def _third_derivative(phi, sign, a, b, c):
    """D^3 rho(phi)[a, b, c] per point by three nested forward-mode jvps."""
    f = lambda p: _density(p, sign)
    f1 = lambda p: jvp(f, (p,), (c,))[1]
    f2 = lambda p: jvp(f1, (p,), (b,))[1]
    return jvp(f2, (phi,), (a,))[1]


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
    """d^3 V / dt_i dt_j dt_k at t = 0 on chosen triplets, with V and the L2 norms of the directions.

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


def hitchin_cubic(phi_field, directions, x: torch.Tensor, weights=None, volume: float = 1.0,
                  triplets=None, *, chunk: int = 512, progress: bool = False) -> HitchinCubic:
    """Cubic derivatives of Hitchin's volume functional along 3-form directions.

    At a torsion-free phi and along harmonic 3-forms these are the moduli Yukawa couplings
    (Karigiannis-Leung arXiv:0709.2987; Grigorian-Yau arXiv:0802.0723); the learned phi has small
    but non-zero torsion, so here they are that coupling's value at a nearby, not torsion-free, point.

    V(t) = int sqrt(det g(phi + sum_a t_a Phi_a)) d^7x;  returns d^3 V / dt_i dt_j dt_k at t = 0
    = int D^3 rho(phi)[Phi_i, Phi_j, Phi_k] d^7x with rho = |det B|^(1/9) (Hitchin 2000), the
    third directional derivative taken per point by three nested torch.func.jvp calls, vmapped
    over triplets; Monte Carlo over x with float64 accumulation and standard errors.
    phi_field: x (batch, 7) -> packed (batch, 35); directions: x -> (batch, n, 35);
    triplets: (i, j, k) index triples into the n directions (default: all i <= j <= k).
    Check: for phi = Phi = phi0 constant, d^3V/dt^3 = (7/3)(4/3)(1/3) V exactly.
    """
    check_field_call(phi_field, x, chunk=chunk)
    weights, volume = _check_sampling(x, weights, volume)
    N = x.shape[0]
    moments, vmom, nmom = Moments(), Moments(), Moments()
    n_dir = None
    for s in chunks(N, chunk, progress, "Hitchin cubic"):
        xc, wc = x[s], weights[s]
        with torch.no_grad():
            phi = _phi_values(phi_field, xc).detach()
            D = directions(xc)
            if D.ndim != 3 or D.shape[0] != xc.shape[0] or D.shape[-1] != F.n_components(3):
                raise ValueError(f"directions must return packed 3-forms (batch, n, 35), got {tuple(D.shape)}")
            D = D.to(torch.float64).detach().contiguous()
            if n_dir is None:
                n_dir = D.shape[1]
                if triplets is None:
                    triplets = [(i, j, k) for i in range(n_dir) for j in range(i, n_dir) for k in range(j, n_dir)]
                triplets = _check_triplets(triplets, (n_dir,) * 3)
                tidx = torch.tensor(triplets, dtype=torch.long, device=D.device)
            m = g2.metric_data_packed(phi, check=True)
            sign = m.orientation
            rho = _density(phi, sign)
            n2 = F.inner_packed(D, D, 3, m.g[:, None], m.ginv[:, None], m.det[:, None])
        Dt = D.movedim(1, 0).contiguous()                                    # (n, batch, 35)
        a, b, c = Dt[tidx[:, 0]], Dt[tidx[:, 1]], Dt[tidx[:, 2]]
        d3 = vmap(_third_derivative, in_dims=(None, None, 0, 0, 0))(phi, sign, a, b, c)   # (m, batch)
        moments.add((wc[None] * d3.detach()).T)
        vmom.add(wc * rho)
        nmom.add(wc[:, None] * n2 * rho[:, None])
    vals, se = moments.integral(volume)
    V, V_se = vmom.integral(volume)
    norms2, _ = nmom.integral(volume)
    return HitchinCubic(triplets=triplets, values=vals, stderr=se, V=V, V_stderr=V_se,
                        norms2=norms2, n_points=N)

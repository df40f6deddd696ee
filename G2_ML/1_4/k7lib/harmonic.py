"""Harmonic extraction: Gram and Dirichlet spectra of candidate 2- and 3-forms with the metric g(phi).

For candidate k-forms w_1..w_n (fixed functions of the chart point x) and a 3-form field phi(x)
with metric g = g(phi) (Bryant/Hitchin, DESIGN §3), two symmetric matrices are estimated by
pointwise Monte Carlo on the chart [-L, L] x T^6 (volume V = 2L):

  Gram       G_ab = int <w_a, w_b>_g vol_g                      ~ V mean_x( r(x) <w_a,w_b>_g sqrt(det g) )
  Dirichlet  E_ab = int (<dw_a, dw_b>_g + <d*w_a, d*w_b>_g) vol_g ~ V mean_x( r(x) (...) sqrt(det g) )

with r(x) the importance weight (uniform density / sampling density; 1 for uniform points), and
d*w = d(*_{g(phi(x))} w(x)). Because * is an isometry, |d*w|^2 = |delta w|^2 and E is the Dirichlet
form (dw, dw) + (delta w, delta w) of the Hodge Laplacian: E(w) = 0 exactly when w is closed and
co-closed. The derivatives are exact: one forward-mode pass (k7lib.derivatives.value_and_jacobian)
through x -> (f(x), g(phi(x))) gives the derivatives of the candidates' profiles f and of the
metric (so the derivative of phi is carried); d(*w) then follows by the product rule with the
derivative of the Hodge-star matrix from that of g (`hodge_matrix_and_d`; checked against forward
mode through x -> *_{g(phi(x))} w in the tests). Inner products use the
Cholesky factor g = C C^T: <a, b>_g = (Lambda^p(C^{-1}) a) . (Lambda^p(C^{-1}) b), so each chunk
adds one matrix product A A^T to a float64 accumulator (memory bounded by the chunk size).

Reading the spectra (DESIGN §6: Gram rank is linear independence, not harmonicity):
  * Normalised Gram spectrum nu: eigenvalues of D^{-1/2} G D^{-1/2}, D = diag G (scale-free:
    every candidate has unit norm, so nu measures how independent the candidates are).
  * Noise: the points are split into `n_batches` equal batches; halves A and B give two
    independent Gram estimates. The sampling noise of nu_i is the larger of its batch-means
    standard error and half the spread |nu_i(A) - nu_i(B)| of the sorted half spectra; nu_i is
    resolved when it exceeds both 3 x its noise and the round-off level 10 n eps nu_max. The
    noise floor is the largest unresolved eigenvalue (the round-off level if all are resolved).
    (Null directions of a positive integrand carry no sampling noise: an exact dependency stays
    at round-off for any sample, while the noise of the others is roughly proportional to nu.)
  * b_eff: of the eigenvalues above the floor, sorted decreasingly and followed by the floor
    itself, b_eff is the position of the largest drop in log nu. A rank loss raises a
    `RankDeficiencyWarning` naming the candidates that dominate each null direction.
  * Standard errors of nu_i by batch means: nu_i = mean_j u_i^T Gn_j u_i exactly (u_i the
    eigenvector of the full estimate, Gn_j the normalised batch estimates), so
    se_i = std_j(u_i^T Gn_j u_i) / sqrt(n_batches).
  * Harmonicity: E v = mu G v solved on the range of G (the b_eff leading eigenvectors of the
    normalised Gram matrix); mu ascending, the columns v are G-orthonormal coefficient vectors
    (the harmonic representatives are sum_a v_a w_a). mu below the round-off floor
    10 n eps max(mu_max, (pi/2L)^2) count as zero ((pi/2L)^2 is the first non-zero Neumann
    eigenvalue of the neck interval). b_harm is the number of mu below the largest jump in
    log max(mu, floor) of the ascending list preceded by the floor (all mu at the floor: b_harm = b_eff).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from . import forms as F
from . import g2
from .derivatives import METHODS, value_and_jacobian
from .inputs import check_sampling
from .torsion import as_packed_field


NOISE_Z = 3.0      # an eigenvalue is resolved when it exceeds NOISE_Z times its own sampling noise


class RankDeficiencyWarning(UserWarning):
    """A candidate set whose Gram matrix has lost rank (some candidates are linearly dependent)."""


# ---------------------------------------------------------------- exterior powers of a matrix
from .forms import exterior_power  # noqa: E402  (Lambda^k of a matrix, used throughout)


@lru_cache(maxsize=None)
def _derivation_table(k: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """T (49, C, C): D^k(X) = sum_ab X_ab T[7a+b], the derivative of Lambda^k at the identity,
    D^k(X) = d/de Lambda^k(I + e X) at e = 0 (X acting on one index at a time).
    Exact from Lambda^k(I + E_ab) - I, since Lambda^k(I + e E_ab) is affine in e."""
    eye = torch.eye(F.DIM, dtype=torch.float64)
    E = torch.zeros(F.DIM * F.DIM, F.DIM, F.DIM, dtype=torch.float64)
    E.view(-1, F.DIM * F.DIM)[torch.arange(F.DIM * F.DIM), torch.arange(F.DIM * F.DIM)] = 1
    T = exterior_power(eye + E, k) - torch.eye(F.n_components(k), dtype=torch.float64)
    return T.to(dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _dx_wedge_table(p: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """W (C(7,p+1), 7 C(7,p)) with W[:, i C(7,p) + J] the matrix of alpha -> dx^i ^ alpha on p-forms."""
    n = F.n_components(p)
    W = torch.zeros(F.n_components(p + 1), F.DIM * n, dtype=torch.float64)
    ck = F.combo_index(p + 1)
    for i in range(F.DIM):
        for j, J in enumerate(F.combos(p)):
            if i not in J:
                W[ck[tuple(sorted((i,) + J))], i * n + j] = F.perm_sign((i,) + J)
    return W.to(dtype=dtype, device=device)


def hodge_matrix_and_d(g: torch.Tensor, dg: torch.Tensor, orientation: torch.Tensor, k: int):
    """S and K for *_g on k-forms from g (batch, 7, 7) and its derivatives dg (batch, 7, 7, 7) = d_i g.

    S (batch, C(7,7-k), C(7,k)) with *w = S w, S = o sqrt(det g) *0 Lambda^k(g^{-1}) (DESIGN §3).
    K (batch, C(7,8-k), C(7,k)) = sum_i dx^i ^ d_i S, so that d(*w) = K w + sum_i dx^i ^ S d_i w.
    With G = g^{-1} and X_i = G^{-1} d_i G = -(d_i g) G:  d_i Lambda^k(G) = Lambda^k(G) D^k(X_i)
    (multiplicativity of Lambda^k) and d_i sqrt(det g) = -(1/2) tr(X_i) sqrt(det g), hence
    d_i S = S (D^k(X_i) - (1/2) tr(X_i)). Only g is differentiated (49 numbers per direction).
    """
    ginv, det = F.metric_data(g)
    S = hodge_matrix(ginv, det, orientation, k)
    X = -torch.einsum("bxyi,byz->bixz", dg, ginv)                          # (batch, 7 directions, 7, 7)
    T = _derivation_table(k, F._dev(g.device), g.dtype)
    n = F.n_components(k)
    D = (X.reshape(-1, F.DIM * F.DIM) @ T.reshape(F.DIM * F.DIM, -1)).reshape(g.shape[0], F.DIM, n, n)
    tr = torch.diagonal(X, dim1=-2, dim2=-1).sum(-1)                         # (batch, 7)
    dS = torch.matmul(S[:, None], D) - 0.5 * tr[:, :, None, None] * S[:, None]   # (batch, 7, C', C) = d_i S
    W = _dx_wedge_table(F.DIM - k, F._dev(g.device), g.dtype)
    K = torch.matmul(W, dS.reshape(g.shape[0], -1, n))                       # sum_i dx^i ^ d_i S
    return S, K


# ---------------------------------------------------------------- profiles and candidates
@dataclass(frozen=True)
class NeckProfiles:
    """Smooth functions of the neck coordinate lambda in [-L, L] (width w = L/4), all (batch,) -> (batch,).

    step(l)  = (1 + tanh(l / w)) / 2                 0 on the left, 1 on the right
    bump(l)  = exp(-l^2 / (2 w^2))                    localised in the neck
    left(l)  = (1 - tanh((l + L/2) / w)) / 2          ~1 deep in the left block, ~0 from the neck on
    right(l) = left(-l)                               the mirror image, ~1 deep in the right block
    The twist of the candidates is the chart's own (chart.twist_angle), not a profile of its own.
    """

    L: float

    def __post_init__(self):
        if not (isinstance(self.L, (int, float)) and math.isfinite(self.L) and self.L > 0):
            raise ValueError(f"neck half-length L must be a positive finite number, got {self.L!r}")

    @property
    def width(self) -> float:
        return self.L / 4

    def step(self, lam):
        return (1 + torch.tanh(lam / self.width)) / 2

    def bump(self, lam):
        return torch.exp(-0.5 * (lam / self.width) ** 2)

    def left(self, lam):
        return (1 - torch.tanh((lam + self.L / 2) / self.width)) / 2

    def right(self, lam):
        return self.left(-lam)


def basis_form(indices, dtype=torch.float64) -> torch.Tensor:
    """Packed dx^{i1} ^ .. ^ dx^{ik} (C(7,k),) for distinct indices in any order (sign included)."""
    k = len(indices)
    out = torch.zeros(F.n_components(k), dtype=dtype)
    s = F.perm_sign(indices)
    if s == 0:
        raise ValueError(f"repeated index in {tuple(indices)}")
    out[F.combo_index(k)[tuple(sorted(indices))]] = s
    return out


@dataclass(frozen=True)
class CandidateBasis:
    """Candidate k-forms in separated form: mode a is w_a(x) = sum_p f_p(x) c_{p a}, with scalar
    profiles f = profiles(x) (batch, n_profiles) and constant packed forms
    coefficients (n_profiles, n_modes, C(7,k)). This covers constant forms (f = 1), profile modes
    f(lambda) dx^I and rotated forms (cos/sin profiles). Calling the basis gives the packed values
    (batch, n_modes, C(7,k)); names[a] labels mode a. The Dirichlet integrals differentiate only the
    profiles (forward mode), so their cost does not grow with the number of constant modes.
    """

    degree: int
    names: tuple
    profiles: Callable
    coefficients: torch.Tensor
    description: str = ""

    def __post_init__(self):
        F._check_degree(self.degree)
        if not 1 <= self.degree <= 6:
            raise ValueError(f"candidate degree must be in 1..6 (d and d* both defined), got {self.degree}")
        if len(self.names) == 0:
            raise ValueError("a candidate basis needs at least one mode")
        if len(set(self.names)) != len(self.names):
            raise ValueError("candidate names must be unique")
        if not callable(self.profiles):
            raise ValueError("candidate profiles must be callable x (batch, 7) -> (batch, n_profiles)")
        c = self.coefficients
        label = self.description or self.names[0]
        if not isinstance(c, torch.Tensor) or c.ndim != 3 or c.shape[1] != len(self.names):
            raise ValueError(f"candidate basis {label!r}: coefficients must have shape (n_profiles, "
                             f"{len(self.names)}, C(7,k)), got {getattr(c, 'shape', type(c).__name__)}")
        if c.shape[2] != F.n_components(self.degree):
            raise ValueError(f"candidate basis {label!r} has forms with {c.shape[2]} components, but a "
                             f"{self.degree}-form has C(7,{self.degree}) = {F.n_components(self.degree)}: wrong degree")

    @property
    def n_modes(self) -> int:
        return len(self.names)

    @property
    def n_profiles(self) -> int:
        return self.coefficients.shape[0]

    def __len__(self) -> int:
        return self.n_modes

    def profile_values(self, x: torch.Tensor) -> torch.Tensor:
        out = self.profiles(x)
        want = (x.shape[0], self.n_profiles)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"candidate basis {self.description or self.names[0]!r}: profiles returned {got}, "
                             f"expected (batch, n_profiles) = {want}")
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        P = self.profile_values(x)
        return torch.einsum("bp,pmc->bmc", P, self.coefficients.to(P.dtype).to(P.device))

    def __add__(self, other: "CandidateBasis") -> "CandidateBasis":
        if not isinstance(other, CandidateBasis) or other.degree != self.degree:
            raise ValueError("only candidate bases of the same degree can be joined")
        c1, c2 = self.coefficients.double(), other.coefficients.double()
        coef = torch.zeros(c1.shape[0] + c2.shape[0], c1.shape[1] + c2.shape[1], c1.shape[2], dtype=torch.float64)
        coef[: c1.shape[0], : c1.shape[1]] = c1
        coef[c1.shape[0]:, c1.shape[1]:] = c2
        p1, p2 = self.profile_values, other.profile_values
        return CandidateBasis(self.degree, tuple(self.names) + tuple(other.names),
                              lambda x: torch.cat([p1(x), p2(x)], dim=-1), coef,
                              " + ".join(d for d in (self.description, other.description) if d))


def _name(I) -> str:
    return "dx" + "".join(str(i) for i in I)


def _ones(x):
    return torch.ones_like(x[:, :1]) + 0 * x[:, :1]          # depends on x formally: zero tangent


def constant_basis(k: int) -> CandidateBasis:
    """The C(7,k) constant forms dx^I (I increasing, packed order), named 'dx012' etc.

    On the flat torus these are exactly the harmonic k-forms (one per de Rham class).
    """
    F._check_degree(k)
    n = F.n_components(k)
    coef = torch.eye(n, dtype=torch.float64)[None]
    return CandidateBasis(k, tuple(_name(I) for I in F.combos(k)), _ones, coef, f"constant {k}-forms")


TCS_PROFILES = ("bump", "left", "right", "cos_theta", "sin_theta", "cos_half", "sin_half")


def tcs_modes(L: float) -> CandidateBasis:
    """The 42 TCS-adapted, position-dependent 3-form candidates (x0 = lambda, x1..x6 = y).

    neck  (15): bump(l) dx0 ^ dx^{ij}, 1 <= i < j <= 6           all fibre 2-forms, neck-localised
    left  (10): left(l) dx1 ^ dx^{jk}, 2 <= j < k <= 6            fibre 3-forms through the left
                                                                   block's external circle y1
    right (10): right(l) dx2 ^ dx^{jk}, j < k in {1,3,4,5,6}      the right block's external circle is
                                                                   y2 (the TCS matching swaps circles)
    twist  (7): the chart's hyper-Kaehler twist R(l) (chart.frame: planes (x3,x6), (x4,x5) turned
                by theta/2, theta = chart.twist_angle(l) rising from 0 to pi/2 across the neck)
                applied to fixed forms: dx_a ^ R^*wI, dx_a ^ R^*wJ for a = 0, 1, 2, with
                wI = dx34 + dx56, wJ = dx35 - dx46, R^*wI = cos theta wI + sin theta wJ,
                R^*wJ = cos theta wJ - sin theta wI, and dx01 ^ R^*dx3 with
                R^*dx3 = cos(theta/2) dx3 + sin(theta/2) dx6.
    Profiles: bump, left, right (NeckProfiles), cos theta, sin theta, cos theta/2, sin theta/2.
    Since these and the constant 1 are linearly independent functions of lambda, no mode (nor any
    combination of modes) is a constant combination of the 35 dx^{ijk}.
    """
    prof = NeckProfiles(float(L))
    names, rows = [], []

    def add(name, *terms):               # terms: (profile name, packed form)
        c = torch.zeros(len(TCS_PROFILES), F.n_components(3), dtype=torch.float64)
        for p, form in terms:
            c[TCS_PROFILES.index(p)] += form
        names.append(name)
        rows.append(c)

    for i, j in F.combos(2):
        if i >= 1:
            add(f"neck*dx0{i}{j}", ("bump", basis_form((0, i, j))))
    for j, k in F.combos(2):
        if j >= 2:
            add(f"left*dx1{j}{k}", ("left", basis_form((1, j, k))))
    for j, k in F.combos(2):
        if 2 not in (j, k) and j >= 1:
            add(f"right*dx2^dx{j}{k}", ("right", basis_form((2, j, k))))
    wI = basis_form((3, 4)) + basis_form((5, 6))
    wJ = basis_form((3, 5)) - basis_form((4, 6))
    for a in (0, 1, 2):
        ea = basis_form((a,))
        AI, AJ = F.wedge_packed(ea, wI, 1, 2), F.wedge_packed(ea, wJ, 1, 2)
        add(f"twist*dx{a}^wI", ("cos_theta", AI), ("sin_theta", AJ))
        add(f"twist*dx{a}^wJ", ("cos_theta", AJ), ("sin_theta", -AI))
    add("twist*dx01^R(dx3)", ("cos_half", basis_form((0, 1, 3))), ("sin_half", basis_form((0, 1, 6))))
    coef = torch.stack(rows, dim=1)                                  # (n_profiles, 42, 35)

    def profiles(x):
        from .chart import twist_angle
        lam = x[:, 0]
        t = twist_angle(lam, prof.L)
        return torch.stack([prof.bump(lam), prof.left(lam), prof.right(lam), torch.cos(t),
                            torch.sin(t), torch.cos(t / 2), torch.sin(t / 2)], dim=-1)
    return CandidateBasis(3, tuple(names), profiles, coef, f"42 TCS-adapted 3-forms (L={float(L):g})")


def candidates_2forms() -> CandidateBasis:
    """The 21 constant 2-forms dx^{ij} (seed 000: 'the 21 coordinate wedge forms')."""
    return constant_basis(2)


def candidates_3forms(L: float) -> CandidateBasis:
    """77 candidates: the 35 constant dx^{ijk} followed by the 42 `tcs_modes(L)`."""
    return constant_basis(3) + tcs_modes(L)


# ---------------------------------------------------------------- points
def sample_chart(n: int, L: float, seed: int = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """n uniform points (n, 7) on the chart: lambda ~ U[-L, L], y ~ U[0, 1)^6 (volume 2L)."""
    from .chart import sample
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n_points must be a positive integer, got {n!r}")
    return sample(n, L, torch.Generator().manual_seed(int(seed)), dtype=dtype, device=device)[0]


# ---------------------------------------------------------------- integrals
@dataclass
class Integrals:
    """Monte Carlo estimates for one candidate set (all float64).

    gram (n, n), dirichlet (n, n) or None: full-sample estimates;
    gram_batches (n_batches, n, n): the estimate from each equal batch of points;
    batch_sizes (n_batches,), n_points, volume.
    """
    gram: torch.Tensor
    dirichlet: torch.Tensor | None
    gram_batches: torch.Tensor
    batch_sizes: torch.Tensor
    n_points: int
    volume: float


def _orthonormal(w: torch.Tensor, p: int, Cinv_powers: dict, Cinv: torch.Tensor) -> torch.Tensor:
    """Components of packed p-forms w (batch, n, C(7,p)) in a g-orthonormal coframe."""
    if p not in Cinv_powers:
        Cinv_powers[p] = exterior_power(Cinv, p)
    return torch.matmul(w, Cinv_powers[p].transpose(-1, -2))


def hodge_matrix(ginv: torch.Tensor, det: torch.Tensor, orientation: torch.Tensor, k: int) -> torch.Tensor:
    """S (batch, C(7,7-k), C(7,k)) with *_g w = S @ w: S = o sqrt(det g) *0 Lambda^k(g^{-1}) (DESIGN §3)."""
    Lk = exterior_power(ginv, k)
    rows = F.star0_packed(Lk.transpose(-1, -2), k).transpose(-1, -2)    # *0 applied to every column
    return (orientation * det.sqrt())[:, None, None] * rows


def _pairs(basis: CandidateBasis):
    """Non-zero (profile, mode) pairs q of the coefficients: profile index (q,), mode index (q,),
    forms c_q (q, C(7,k)) and the tables (q, 7, C(7,k+1)) of dx^i ^ c_q."""
    c = basis.coefficients.double()
    p, m = torch.nonzero(c.ne(0).any(-1), as_tuple=True)
    forms = c[p, m]
    k, n = basis.degree, F.n_components(basis.degree)
    W = _dx_wedge_table(k, "cpu", torch.float64).reshape(-1, F.DIM, n)       # (C(7,k+1), 7, C)
    dx_wedge = torch.einsum("Lic,qc->qiL", W, forms)
    return p, m, forms, dx_wedge


def _chunk_sums(basis: CandidateBasis, phi_field, x, r, dirichlet: bool, method: str, h, pairs):
    """Sums over the chunk of r sqrt(det g) <w_a, w_b> (and the Dirichlet integrand), float64.

    One forward-mode pass through x -> (f(x), S(x), phi(x)) (profiles, Hodge-star matrix of g(phi(x)))
    gives, with w = sum_p f_p c_p:  dw = sum_p df_p ^ c_p  and, by the product rule,
    d(*w) = d(S w) = sum_i dx^i ^ (d_i S) w + sum_p df_p ^ (S c_p); profiles that are constant on
    the chunk (zero derivative) are skipped exactly.
    """
    k = basis.degree
    coef = basis.coefficients.to(x.dtype).to(x.device)
    if dirichlet:
        def fn(y):
            phi = phi_field(y)
            return basis.profile_values(y), g2.metric_data_packed(phi, check=False).g, phi
        (P, g, phi), (jP, jg, _) = value_and_jacobian(fn, x, method, h)
        with torch.no_grad():
            o = g2.metric_data_packed(phi, check=False).orientation
        S, K = hodge_matrix_and_d(g, jg, o, k)
        w = torch.einsum("bp,pmc->bmc", P, coef)
        dstar = torch.einsum("bLc,bmc->bmL", K, w)
        pidx, midx, forms_q, dx_wedge = (t.to(x.device) for t in pairs)
        jq = jP[:, pidx, :]                                                 # (batch, q, 7) = d f_p(q)
        live = jq.ne(0).any(-1).any(0)
        dw = w.new_zeros(*w.shape[:2], F.n_components(k + 1))
        if bool(live.any()):
            jq, cq, mq = jq[:, live], forms_q[live].to(x.dtype), midx[live]
            dw_q = torch.matmul(jq.transpose(0, 1), dx_wedge[live].to(x.dtype)).transpose(0, 1)   # df ^ c_q
            Z = torch.matmul(S, cq.T).transpose(1, 2)                       # (batch, q, C') = S c_q
            W = _dx_wedge_table(F.DIM - k, F._dev(x.device), x.dtype)
            outer = (jq[..., :, None] * Z[..., None, :]).reshape(*Z.shape[:2], -1)
            dstar_q = torch.matmul(outer, W.T)                              # df ^ (S c_q)
            dw = dw.index_add(1, mq, dw_q)
            dstar = dstar.index_add(1, mq, dstar_q)
    else:
        w, phi = basis(x), phi_field(x)
    m = g2.metric_data_packed(phi.detach(), check=True)                    # non-positive phi: ValueError
    C = torch.linalg.cholesky(m.g)
    eye = torch.eye(F.DIM, dtype=C.dtype, device=C.device).expand_as(C)
    Cinv = torch.linalg.solve_triangular(C, eye, upper=False)
    cache = {}
    s = (r * m.det.sqrt()).sqrt().to(torch.float64)[:, None, None]

    def gram_of(parts):
        A = torch.cat(parts, dim=-1).to(torch.float64) * s                 # (batch, n, components)
        A = A.transpose(0, 1).reshape(A.shape[1], -1)
        return A @ A.T

    G = gram_of([_orthonormal(w.detach(), k, cache, Cinv)])
    E = None
    if dirichlet:
        E = gram_of([_orthonormal(dw.detach(), k + 1, cache, Cinv),
                     _orthonormal(dstar.detach(), F.DIM - k + 1, cache, Cinv)])
    return G, E


def integrate(basis: CandidateBasis, phi_field, x: torch.Tensor, volume: float,
              weights: torch.Tensor | None = None, chunk: int = 512, method: str = "autograd",
              h: float | None = None, n_batches: int = 8, dirichlet: bool = True,
              progress: bool = False) -> Integrals:
    """Gram (and Dirichlet) matrices of `basis` with g = g(phi) at points x (N, 7).

    G_ab ~ volume * mean_x( r(x) <w_a, w_b>_g sqrt(det g) ), likewise E (module docstring);
    r = weights (N,) are density ratios (uniform / sampling density), 1 when None.
    Points are cut into `n_batches` contiguous equal batches (for batch means) and each batch into
    chunks of at most `chunk` points; sums are accumulated in float64.
    phi_field: x (batch, 7) -> packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms.
    """
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")
    if not isinstance(basis, CandidateBasis):
        raise ValueError("basis must be a CandidateBasis")
    if x.ndim != 2 or x.shape[1] != F.DIM:
        raise ValueError(f"points x must have shape (N, 7), got {tuple(x.shape)}")
    N = x.shape[0]
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if not isinstance(n_batches, int) or n_batches < 2:
        raise ValueError(f"n_batches must be an integer >= 2 (two independent halves), got {n_batches!r}")
    need = 10 * basis.n_modes
    if N < max(need, n_batches):
        raise ValueError(f"too few points: n_points = {N} for {basis.n_modes} candidate {basis.degree}-forms; "
                         f"need at least 10 per candidate ({need})")
    if not (math.isfinite(volume) and volume > 0):
        raise ValueError(f"volume must be positive, got {volume!r}")
    if weights is None:
        weights = torch.ones(N, dtype=x.dtype, device=x.device)
    elif weights.shape != (N,) or not bool(torch.all(weights >= 0)) or not bool(torch.isfinite(weights).all()):
        raise ValueError(f"weights must be finite, non-negative and of shape ({N},)")
    basis(x[:2])                                                 # shape check before any work
    pairs = _pairs(basis)
    packed = as_packed_field(phi_field)
    field_ = lambda y: packed(y).to(y.dtype)

    n = basis.n_modes
    bounds = np.linspace(0, N, n_batches + 1).round().astype(int)
    Gb = torch.zeros(n_batches, n, n, dtype=torch.float64)
    Esum = torch.zeros(n, n, dtype=torch.float64) if dirichlet else None
    steps = [(b, s, min(s + chunk, bounds[b + 1])) for b in range(n_batches)
             for s in range(bounds[b], bounds[b + 1], chunk)]
    it = steps
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(steps, desc=f"{basis.degree}-form integrals", leave=False)
    for b, s, e in it:
        G, E = _chunk_sums(basis, field_, x[s:e], weights[s:e], dirichlet, method, h, pairs)
        Gb[b] += G.cpu()
        if dirichlet:
            Esum += E.cpu()
    sizes = torch.tensor(np.diff(bounds), dtype=torch.float64)
    gram = volume * Gb.sum(0) / N
    return Integrals(gram=gram, dirichlet=None if Esum is None else volume * Esum / N,
                     gram_batches=volume * Gb / sizes[:, None, None], batch_sizes=sizes,
                     n_points=N, volume=float(volume))


# ---------------------------------------------------------------- spectra
@dataclass
class FormSpectrum:
    """Spectra of one candidate set; eigen-quantities are float64 tensors.

    gram_eigenvalues (n,) normalised, decreasing; gram_se (n,) batch-means standard errors;
    gram_eigenvalues_halves (2, n) from the two independent halves; noise_floor, roundoff_floor;
    b_eff; condition (nu_max / nu_min over all n), condition_eff (over the b_eff retained);
    mu (b_eff,) increasing, mu_floor; b_harm; vectors (n, b_eff): G-orthonormal coefficient
    vectors of the generalised problem, column r belonging to mu[r] (harmonic ones first);
    null_modes: names dominating the null directions when b_eff < n.
    """
    degree: int
    names: tuple
    basis: CandidateBasis
    integrals: Integrals
    gram_eigenvalues: torch.Tensor
    gram_se: torch.Tensor
    gram_eigenvalues_halves: torch.Tensor
    raw_gram_range: tuple
    noise_floor: float
    roundoff_floor: float
    b_eff: int
    gram_threshold: float
    condition: float
    condition_eff: float
    mu: torch.Tensor
    mu_floor: float
    mu_threshold: float
    b_harm: int
    vectors: torch.Tensor
    null_modes: tuple = ()

    @property
    def n_candidates(self) -> int:
        return len(self.names)

    @property
    def near_harmonic(self) -> tuple:
        """(count, gap ratio) of the cluster of smallest mu: the mu below the largest ratio between
        consecutive mu above the round-off floor. A diagnostic of almost-harmonic directions when no
        mu is at round-off (b_harm = 0); it is not a Betti number. With b_harm > 0 it is (b_harm, the
        ratio of the first non-zero mu to the round-off floor or the last zero mu)."""
        if self.b_harm > 0:                      # exact zero modes: the cluster is theirs
            mu = self.mu.double().numpy()
            ratio = mu[self.b_harm] / max(mu[self.b_harm - 1], self.mu_floor) if self.b_harm < len(mu) else float("nan")
            return self.b_harm, float(ratio)
        mu = self.mu.double().numpy()
        mu = mu[mu > self.mu_floor]
        if len(mu) < 2:
            return 0, float("nan")
        ratios = mu[1:] / mu[:-1]
        i = int(np.argmax(ratios))
        return i + 1, float(ratios[i])

    @property
    def harmonic_vectors(self) -> torch.Tensor:
        """(n, b_harm) coefficients of the harmonic representatives over the candidates."""
        return self.vectors[:, : self.b_harm]

    def forms(self, x: torch.Tensor, harmonic_only: bool = True) -> torch.Tensor:
        """Representative forms sum_a v_a w_a(x): (batch, b_harm or b_eff, C(7,k)) packed."""
        V = self.harmonic_vectors if harmonic_only else self.vectors
        w = self.basis(x)
        return torch.einsum("bmc,mr->brc", w, V.to(w.dtype).to(w.device))

    def representatives(self, n: int | None = None):
        """Callable x (batch, 7) -> (batch, m, C(7,k)): the b_harm harmonic representatives (n None),
        or the n with the smallest mu, harmonic ones first (n at most b_eff)."""
        m = self.b_harm if n is None else int(n)
        if not 0 <= m <= self.vectors.shape[1]:
            raise ValueError(f"representatives: n must be in 0..{self.vectors.shape[1]} (b_eff), got {n}")
        V = self.vectors[:, :m]
        return lambda x: torch.einsum("bmc,mr->brc", (w := self.basis(x)), V.to(w.dtype).to(w.device))

    def summary(self) -> dict:
        k = self.degree
        nu, mu = self.gram_eigenvalues, self.mu
        b, bh = self.b_eff, self.b_harm
        clip = lambda v: max(float(v), self.mu_floor)
        return {
            f"b{k}_eff": b, f"b{k}_harm": bh, "n_candidates": self.n_candidates,
            "n_points": self.integrals.n_points,
            "gram_min": float(nu.min()), "gram_max": float(nu.max()),
            "raw_gram_min": self.raw_gram_range[0], "raw_gram_max": self.raw_gram_range[1],
            "condition": self.condition, "condition_eff": self.condition_eff,
            "noise_floor": self.noise_floor, "gram_se_max": float(self.gram_se.max()),
            "gram_gap_ratio": float(nu[b - 1] / (nu[b] if b < len(nu) else self.noise_floor)) if b else float("nan"),
            "mu_min": float(mu.min()) if len(mu) else float("nan"),
            "mu_max": float(mu.max()) if len(mu) else float("nan"),
            "mu_floor": self.mu_floor,
            "mu_gap_ratio": (clip(mu[bh]) / clip(mu[bh - 1])) if 0 < bh < len(mu) else float("nan"),
            "near_harmonic": self.near_harmonic[0], "near_harmonic_gap_ratio": self.near_harmonic[1],
        }


def _largest_log_drop(values: np.ndarray, floor: float) -> int:
    """values decreasing, all > floor: index (count) before the largest drop in log, the floor appended."""
    logs = np.log(np.append(values, floor))
    return int(np.argmax(logs[:-1] - logs[1:])) + 1


def analyse(integrals: Integrals, basis: CandidateBasis, mu_scale: float = 1.0,
            dtype_eps: float | None = None) -> FormSpectrum:
    """Normalised Gram spectrum, noise floor, b_eff, standard errors and the Dirichlet problem
    E v = mu G v for one candidate set (rules in the module docstring).

    mu_scale: reference eigenvalue for the round-off floor of mu (extract passes (pi/2L)^2);
    dtype_eps: machine epsilon of the data (default: float64).
    """
    names = tuple(basis.names)
    n = len(names)
    eps = float(torch.finfo(torch.float64).eps) if dtype_eps is None else float(dtype_eps)
    G = 0.5 * (integrals.gram + integrals.gram.T)
    raw = torch.linalg.eigvalsh(G)
    diag = torch.diagonal(G).clone()
    zero = ~(diag > 0)
    if bool(zero.any()):
        bad = [names[i] for i in torch.nonzero(zero).flatten().tolist()]
        warnings.warn(f"degree-{basis.degree} candidates with zero norm: {', '.join(bad)}", RankDeficiencyWarning)
        diag[zero] = 1.0
    dinv = diag.rsqrt()
    norm = lambda A: dinv[:, None] * (0.5 * (A + A.transpose(-1, -2))) * dinv[None, :]
    Gn = norm(G)
    nu, U = torch.linalg.eigh(Gn)
    nu, U = nu.flip(0), U.flip(1)                                      # decreasing
    Gb = norm(integrals.gram_batches)
    nb = Gb.shape[0]
    proj = torch.einsum("ai,jab,bi->ji", U, Gb, U)                      # (n_batches, n)
    se = proj.std(0, unbiased=True) / math.sqrt(nb)
    w = integrals.batch_sizes
    half = nb // 2
    GA = (Gb[:half] * w[:half, None, None]).sum(0) / w[:half].sum()
    GB = (Gb[half:] * w[half:, None, None]).sum(0) / w[half:].sum()
    halves = torch.stack([torch.linalg.eigvalsh(GA).flip(0), torch.linalg.eigvalsh(GB).flip(0)])
    nu_max = float(nu[0])
    roundoff = 10 * n * eps * max(nu_max, 1e-300)
    noise = torch.maximum(se, (halves[0] - halves[1]).abs() / 2)          # per-eigenvalue sampling noise
    resolved = (nu > roundoff) & (nu > NOISE_Z * noise)
    unresolved = nu[~resolved]
    floor = max(roundoff, float(unresolved.max())) if len(unresolved) else roundoff
    nun = nu.numpy()
    above = nun[nun > floor]
    b_eff = _largest_log_drop(above, floor) if len(above) else 0
    nxt = float(nun[b_eff]) if b_eff < n and nun[b_eff] > floor else floor
    threshold = math.sqrt(float(nun[b_eff - 1]) * nxt) if b_eff else floor
    tiny = lambda v: max(float(v), 1e-300)
    null_modes = ()
    if b_eff < n:
        flagged = []
        for i in range(b_eff, n):
            u = U[:, i].abs()
            flagged += [names[a] for a in torch.nonzero(u >= 0.3 * u.max()).flatten().tolist()]
        null_modes = tuple(dict.fromkeys(flagged))
        warnings.warn(f"degree-{basis.degree} candidates are linearly dependent: Gram rank {b_eff} of {n} "
                      f"(noise floor {floor:.2e}); the null direction(s) are dominated by: "
                      f"{', '.join(null_modes)}", RankDeficiencyWarning)

    # generalised problem on the range of G
    if integrals.dirichlet is not None and b_eff:
        W = U[:, :b_eff] * nu[:b_eff].rsqrt()
        Et = W.T @ norm(integrals.dirichlet) @ W
        mu, Y = torch.linalg.eigh(0.5 * (Et + Et.T))
        V = dinv[:, None] * (W @ Y)
        mu_floor = 10 * n * eps * max(float(mu.max()), float(mu_scale))
        clipped = np.maximum(mu.numpy(), mu_floor)
        if np.all(clipped <= mu_floor):
            b_harm, mu_thr = b_eff, mu_floor
        else:
            logs = np.log(np.insert(clipped, 0, mu_floor))
            j = int(np.argmax(logs[1:] - logs[:-1]))                   # jump between logs[j] and logs[j+1]
            b_harm = j
            mu_thr = math.exp(0.5 * (logs[j] + logs[j + 1]))
    else:
        mu = torch.zeros(0, dtype=torch.float64)
        V = torch.zeros(n, 0, dtype=torch.float64)
        mu_floor, mu_thr, b_harm = float("nan"), float("nan"), 0
    return FormSpectrum(
        degree=basis.degree, names=names, basis=basis, integrals=integrals,
        gram_eigenvalues=nu, gram_se=se, gram_eigenvalues_halves=halves,
        raw_gram_range=(float(raw.min()), float(raw.max())),
        noise_floor=floor, roundoff_floor=roundoff, b_eff=b_eff, gram_threshold=threshold,
        condition=nu_max / tiny(nu[-1]), condition_eff=nu_max / tiny(nu[b_eff - 1]) if b_eff else float("inf"),
        mu=mu, mu_floor=mu_floor, mu_threshold=mu_thr, b_harm=b_harm, vectors=V, null_modes=null_modes,
    )


# ---------------------------------------------------------------- the whole extraction
@dataclass
class HarmonicResult:
    """Harmonic extraction for 2-forms (`two`) and 3-forms (`three`) on the chart [-L, L] x T^6."""
    two: FormSpectrum
    three: FormSpectrum
    L: float
    n_points: int
    seed: int
    method: str

    @property
    def b2_eff(self) -> int:
        return self.two.b_eff

    @property
    def b3_eff(self) -> int:
        return self.three.b_eff

    @property
    def b2_harm(self) -> int:
        return self.two.b_harm

    @property
    def b3_harm(self) -> int:
        return self.three.b_harm

    def summary(self) -> dict:
        """Plain numbers: the four counts, then per-degree spectra statistics."""
        out = {"b2_eff": self.b2_eff, "b3_eff": self.b3_eff, "b2_harm": self.b2_harm,
               "b3_harm": self.b3_harm, "n_points": self.n_points, "L": self.L, "seed": self.seed,
               "method": self.method}
        for tag, s in (("two", self.two), ("three", self.three)):
            for key, val in s.summary().items():
                if not key.startswith(("b2_", "b3_")):
                    out[f"{tag}.{key}"] = val
        return out


def extract(phi_field, n_points: int, L: float, seed: int = 0, chunk: int = 512,
            method: str = "autograd", dtype=torch.float64, progress: bool = False,
            basis2: CandidateBasis | None = None, basis3: CandidateBasis | None = None,
            n_batches: int = 8, h: float | None = None, device=None) -> HarmonicResult:
    """b2_eff, b3_eff (Gram ranks) and b2_harm, b3_harm (Dirichlet zero modes) of phi's metric.

    phi_field: x (batch, 7) -> packed (batch, 35) (or dense) 3-forms, evaluated in `dtype`.
    n_points uniform points on [-L, L] x T^6 from `seed`; candidates default to
    `candidates_2forms()` and `candidates_3forms(L)`; rules for the counts in the module docstring.
    """
    check_sampling(n_points, L, dtype)
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")
    basis2 = candidates_2forms() if basis2 is None else basis2
    basis3 = candidates_3forms(L) if basis3 is None else basis3
    for want, b, label in ((2, basis2, "basis2"), (3, basis3, "basis3")):
        if not isinstance(b, CandidateBasis):
            raise ValueError(f"{label} must be a CandidateBasis")
        if b.degree != want:
            raise ValueError(f"{label} has candidates of degree {b.degree}; expected {want}-forms")
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    x = sample_chart(n_points, L, seed, dtype, device)
    volume = 2.0 * float(L)
    mu_scale = (math.pi / (2 * float(L))) ** 2
    eps = float(torch.finfo(dtype).eps)
    spectra = []
    for b in (basis2, basis3):
        ints = integrate(b, phi_field, x, volume, chunk=chunk, method=method, h=h,
                         n_batches=n_batches, progress=progress)
        spectra.append(analyse(ints, b, mu_scale=mu_scale, dtype_eps=eps))
    return HarmonicResult(two=spectra[0], three=spectra[1], L=float(L), n_points=n_points,
                          seed=seed, method=method)


# ---------------------------------------------------------------- figure
def plot_spectra(result: HarmonicResult):
    """Figure (2 x 2): normalised Gram eigenvalues and Dirichlet eigenvalues mu for 2- and 3-forms,
    log scales, with the noise floor, the b_eff threshold, the mu round-off floor and the b_harm
    threshold drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for row, s in enumerate((result.two, result.three)):
        ax = axes[row, 0]
        nu = s.gram_eigenvalues.numpy()
        idx = np.arange(1, len(nu) + 1)
        shown = np.maximum(nu, s.roundoff_floor * 1e-3)
        ax.errorbar(idx, shown, yerr=s.gram_se.numpy(), fmt="o", ms=3, lw=0.8, label="normalised Gram eigenvalue")
        ax.axhline(s.noise_floor, color="tab:red", ls="--", lw=1, label=f"noise floor {s.noise_floor:.1e}")
        ax.axhline(s.gram_threshold, color="tab:green", ls=":", lw=1.2, label=f"b{s.degree}_eff = {s.b_eff}")
        ax.set_yscale("log")
        ax.set_xlabel("index (decreasing)")
        ax.set_ylabel("eigenvalue of D^-1/2 G D^-1/2")
        ax.set_title(f"{s.degree}-forms: Gram spectrum ({s.n_candidates} candidates)")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        mu = s.mu.numpy()
        if len(mu):
            ax.plot(np.arange(1, len(mu) + 1), np.maximum(mu, s.mu_floor), "o", ms=3, label="mu (clipped at floor)")
            ax.axhline(s.mu_floor, color="tab:red", ls="--", lw=1, label=f"round-off floor {s.mu_floor:.1e}")
            ax.axhline(s.mu_threshold, color="tab:green", ls=":", lw=1.2, label=f"b{s.degree}_harm = {s.b_harm}")
            ax.set_yscale("log")
        ax.set_xlabel("index (increasing)")
        ax.set_ylabel("mu  (E v = mu G v)")
        ax.set_title(f"{s.degree}-forms: Dirichlet spectrum")
        ax.legend(fontsize=8)
    fig.suptitle(f"Harmonic extraction: {result.n_points} points, L = {result.L:g}, {result.method}")
    return fig

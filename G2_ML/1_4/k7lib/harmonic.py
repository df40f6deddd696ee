"""Harmonic forms of the metric g(phi) on the chart [-L, L] x T^6: Gram spectra (b_eff) and the Hodge
projection with absolute boundary conditions (b_harm, harmonic representatives).

Topology. lambda = x^0 is a global function on the chart (not periodic), so dlambda ^ dy^J = d(lambda dy^J)
is exact and the cohomology is that of T^6: (b2, b3) = (15, 20) for every metric, one class per constant
fibre form dy^I (y = x^1..x^6). A periodic T^7 would have (21, 35); that statement holds for T^7 only.

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

Gram spectra (DESIGN §6: Gram rank is linear independence, not harmonicity), on n_points uniform
random points:
  G_ab = int <w_a, w_b>_g vol_g ~ V mean_x( r(x) <w_a,w_b>_g sqrt(det g) )  (V = 2L, r the importance weight)
  * Normalised Gram spectrum nu: eigenvalues of D^{-1/2} G D^{-1/2}, D = diag G.
  * Noise: the points are split into `n_batches` equal batches; halves A and B give two independent
    Gram estimates. The sampling noise of nu_i is the larger of its batch-means standard error and half
    the spread |nu_i(A) - nu_i(B)| of the sorted half spectra; nu_i is resolved when it exceeds both
    3 x its noise and the round-off level 10 n eps nu_max. The noise floor is the largest unresolved
    eigenvalue (the round-off level if all are resolved).
  * b_eff: of the eigenvalues above the floor, sorted decreasingly and followed by the floor itself,
    b_eff is the position of the largest drop in log nu. A rank loss raises a `RankDeficiencyWarning`
    naming the candidates that dominate each null direction.
  * Standard errors of nu_i by batch means: se_i = std_j(u_i^T Gn_j u_i) / sqrt(n_batches).
`integrate` can also estimate the Dirichlet form E_ab = int (<dw_a, dw_b> + <d*w_a, d*w_b>) vol_g with
exact forward-mode derivatives (`hodge_matrix_and_d`); it is a check of closedness and co-closedness,
not a count: on a manifold with boundary closed and co-closed fields without boundary condition are
infinitely many.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Callable

import numpy as np
import torch

from . import forms as F
from . import g2, sampling
from .derivatives import METHODS, value_and_jacobian
from .inputs import check_sampling
from .g2 import as_packed_field


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
    eye = torch.eye(F.DIM, dtype=torch.float64, device="cpu")
    E = torch.zeros(F.DIM * F.DIM, F.DIM, F.DIM, dtype=torch.float64, device="cpu")
    E.view(-1, F.DIM * F.DIM)[torch.arange(F.DIM * F.DIM, device="cpu"), torch.arange(F.DIM * F.DIM, device="cpu")] = 1
    T = exterior_power(eye + E, k) - torch.eye(F.n_components(k), dtype=torch.float64, device="cpu")
    return T.to(dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _dx_wedge_table(p: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """W (C(7,p+1), 7 C(7,p)) with W[:, i C(7,p) + J] the matrix of alpha -> dx^i ^ alpha on p-forms."""
    n = F.n_components(p)
    W = torch.zeros(F.n_components(p + 1), F.DIM * n, dtype=torch.float64, device="cpu")
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
    T = _derivation_table(k, F.device_key(g.device), g.dtype)
    n = F.n_components(k)
    D = (X.reshape(-1, F.DIM * F.DIM) @ T.reshape(F.DIM * F.DIM, -1)).reshape(g.shape[0], F.DIM, n, n)
    tr = torch.diagonal(X, dim1=-2, dim2=-1).sum(-1)                         # (batch, 7)
    dS = torch.matmul(S[:, None], D) - 0.5 * tr[:, :, None, None] * S[:, None]   # (batch, 7, C', C) = d_i S
    W = _dx_wedge_table(F.DIM - k, F.device_key(g.device), g.dtype)
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
    out = torch.zeros(F.n_components(k), dtype=dtype, device="cpu")
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
        F.check_degree(self.degree)
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
        coef = torch.zeros(c1.shape[0] + c2.shape[0], c1.shape[1] + c2.shape[1], c1.shape[2], dtype=torch.float64, device="cpu")
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
    F.check_degree(k)
    n = F.n_components(k)
    coef = torch.eye(n, dtype=torch.float64, device="cpu")[None]
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
        c = torch.zeros(len(TCS_PROFILES), F.n_components(3), dtype=torch.float64, device="cpu")
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
            W = _dx_wedge_table(F.DIM - k, F.device_key(x.device), x.dtype)
            outer = (jq[..., :, None] * Z[..., None, :]).reshape(*Z.shape[:2], -1)
            dstar_q = torch.matmul(outer, W.T)                              # df ^ (S c_q)
            dw = dw.index_add(1, mq, dw_q)
            dstar = dstar.index_add(1, mq, dstar_q)
    else:
        w, phi = basis(x), phi_field(x)
    _check_finite(phi, x)
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
    Gb = torch.zeros(n_batches, n, n, dtype=torch.float64, device="cpu")
    Esum = torch.zeros(n, n, dtype=torch.float64, device="cpu") if dirichlet else None
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
    sizes = torch.tensor(np.diff(bounds), dtype=torch.float64, device="cpu")
    gram = volume * Gb.sum(0) / N
    return Integrals(gram=gram, dirichlet=None if Esum is None else volume * Esum / N,
                     gram_batches=volume * Gb / sizes[:, None, None], batch_sizes=sizes,
                     n_points=N, volume=float(volume))


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


@dataclass
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


# ---------------------------------------------------------------- spectra
@dataclass
class FormSpectrum:
    """Gram spectrum (b_eff) and harmonic projection (b_harm) of one candidate set; float64 tensors.

    Gram (linear independence): gram_eigenvalues (n,) normalised, decreasing; gram_se (n,) batch-means
    standard errors; gram_eigenvalues_halves (2, n); noise_floor, roundoff_floor; b_eff; condition,
    condition_eff; null_modes: names dominating the null directions when b_eff < n.
    Harmonic parts: harmonic_gram (n, n) = <P w_a, P w_b> in candidate order (P the L2_g projection on
    the harmonic fields); harmonic_eigenvalues (n,) of D^-1/2 harmonic_gram D^-1/2 (D = diag of the
    candidates' Gram on the same quadrature), decreasing; harmonic_floor (round-off); b_harm (rank at the
    largest gap); harmonic_gap = ratio across it; projection: the HodgeProjection of the classes.
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
    null_modes: tuple = ()
    harmonic_gram: torch.Tensor | None = None
    harmonic_eigenvalues: torch.Tensor | None = None
    harmonic_floor: float = float("nan")
    harmonic_threshold: float = float("nan")
    b_harm: int = 0
    harmonic_gap: float = float("nan")
    projection: HodgeProjection | None = None

    @property
    def n_candidates(self) -> int:
        return len(self.names)

    def representatives(self, n: int | None = None):
        """Callable x (batch, 7) -> (batch, m, C(7,k)): L2_g-orthonormal harmonic representatives, the
        first n (all b_harm when n is None)."""
        if self.projection is None:
            raise ValueError("no harmonic projection was computed for these candidates")
        m = self.projection.b_classes if n is None else int(n)
        if not 0 <= m <= self.projection.b_classes:
            raise ValueError(f"representatives: n must be in 0..{self.projection.b_classes} (harmonic classes), got {n}")
        rep = self.projection.representatives()
        return lambda x: rep(x)[:, :m]

    def summary(self) -> dict:
        k = self.degree
        nu, b = self.gram_eigenvalues, self.b_eff
        out = {
            f"b{k}_eff": b, f"b{k}_harm": self.b_harm, "n_candidates": self.n_candidates,
            "n_points": self.integrals.n_points,
            "gram_min": float(nu.min()), "gram_max": float(nu.max()),
            "raw_gram_min": self.raw_gram_range[0], "raw_gram_max": self.raw_gram_range[1],
            "condition": self.condition, "condition_eff": self.condition_eff,
            "noise_floor": self.noise_floor, "gram_se_max": float(self.gram_se.max()),
            "gram_gap_ratio": float(nu[b - 1] / (nu[b] if b < len(nu) else self.noise_floor)) if b else float("nan"),
        }
        if self.harmonic_eigenvalues is not None:
            hv, p = self.harmonic_eigenvalues, self.projection
            out.update({
                "harmonic_max": float(hv.max()), "harmonic_last": float(hv[self.b_harm - 1]) if self.b_harm else float("nan"),
                "harmonic_floor": self.harmonic_floor, "harmonic_gap_ratio": self.harmonic_gap,
                "classes": len(p.names), "b_classes": p.b_classes, "class_gap_ratio": p.class_gap,
                "projection_points": p.n_points, "projection_unknowns": p.n_unknowns, "projection_rank": p.rank,
            })
        return out


def _largest_log_drop(values: np.ndarray, floor: float) -> int:
    """values decreasing, all > floor: index (count) before the largest drop in log, the floor appended."""
    logs = np.log(np.append(values, floor))
    return int(np.argmax(logs[:-1] - logs[1:])) + 1


def _rank_at_gap(nu: torch.Tensor, floor: float):
    """(rank, gap ratio, threshold) of a decreasing spectrum: the count above its largest log-drop
    among values above floor (floor appended)."""
    v = nu.numpy()
    above = v[v > floor]
    if not len(above):
        return 0, float("nan"), floor
    b = _largest_log_drop(above, floor)
    nxt = float(v[b]) if b < len(v) and v[b] > floor else floor
    return b, float(v[b - 1]) / nxt, math.sqrt(float(v[b - 1]) * nxt)


def analyse(integrals: Integrals, basis: CandidateBasis, dtype_eps: float | None = None) -> FormSpectrum:
    """Normalised Gram spectrum, noise floor, b_eff and standard errors of one candidate set (module
    docstring); dtype_eps: machine epsilon of the data (default: float64). The harmonic fields are
    added by `extract`."""
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
    nu, U = torch.linalg.eigh(norm(G))
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
    b_eff, _, threshold = _rank_at_gap(nu, floor)
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
    return FormSpectrum(
        degree=basis.degree, names=names, basis=basis, integrals=integrals,
        gram_eigenvalues=nu, gram_se=se, gram_eigenvalues_halves=halves,
        raw_gram_range=(float(raw.min()), float(raw.max())),
        noise_floor=floor, roundoff_floor=roundoff, b_eff=b_eff, gram_threshold=threshold,
        condition=nu_max / tiny(nu[-1]), condition_eff=nu_max / tiny(nu[b_eff - 1]) if b_eff else float("inf"),
        null_modes=null_modes,
    )


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


def project(phi_field, L: float, n_points: int, seed: int = 0, settings: ProjectionSettings | None = None,
            candidates: dict | None = None, progress: bool = False, device=None) -> dict:
    """Hodge projections of the constant k-forms dx^I (k = keys of `candidates`, default 2 and 3) with
    g = g(phi), and the harmonic Gram matrices of the candidate bases (module docstring).

    candidates: {k: CandidateBasis}; returns {k: (HodgeProjection, harmonic_gram (n, n), candidate
    Gram on the quadrature (n, n))}. phi_field: x (batch, 7) -> packed (batch, 35) or dense 3-forms.
    Raises ValueError for a basis the quadrature cannot resolve, non-finite or non-positive phi.
    """
    settings = ProjectionSettings() if settings is None else settings
    candidates = {2: candidates_2forms(), 3: candidates_3forms(L)} if candidates is None else candidates
    n_lambda = settings.nodes()
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    x, wq, n_y = sampling.gauss_sobol(n_points, float(L), n_lambda, seed, device)
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
    starts = range(0, n_q, settings.chunk)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="Hodge projection", leave=False)
    with torch.no_grad():
        for s in starts:
            xc, wc = x[s: s + settings.chunk], wq[s: s + settings.chunk]
            phi = packed(xc.to(_field_dtype(phi_field, xc))).to(torch.float64)
            _check_finite(phi, xc)
            m = g2.metric_data_packed(phi, check=True)                   # non-positive phi: ValueError
            vol = (wc * m.det.sqrt())[:, None, None]
            _, D = sp(xc, float(L))
            for k, basis in candidates.items():
                Gk = exterior_power(m.ginv, k) * vol
                w_const = torch.eye(F.n_components(k), dtype=torch.float64, device=xc.device).expand(xc.shape[0], -1, -1)
                V = torch.cat([w_const, basis(xc).to(torch.float64)], dim=1)
                _accumulate(k, D, support, Gk, V, *acc[k])
    out = {}
    for k, basis in candidates.items():
        out[k] = _finish(k, basis, [t.cpu() for t in acc[k]], settings, float(L), n_q, n_lambda, n_y)
    return out


def _check_finite(phi: torch.Tensor, x: torch.Tensor) -> None:
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
    b_cls, cls_gap, _ = _rank_at_gap(cls_ev, cls_floor)
    frac = torch.diagonal(Ghh) / norms2
    sel = tuple(sorted(torch.argsort(frac, descending=True)[:b_cls].tolist()))
    si = torch.tensor(sel, dtype=torch.long, device="cpu")
    S = Ghh[si][:, si]
    ev, U = torch.linalg.eigh(S)
    T = U @ torch.diag(ev.rsqrt()) @ U.T                                   # S^{-1/2} (Loewdin)
    Hc = Ghc[si]
    H = Hc.T @ torch.linalg.solve(S, Hc)
    H = 0.5 * (H + H.T)
    names = tuple(_name(I) for I in F.combos(k))
    proj = HodgeProjection(
        degree=k, L=L, spectral=sp, names=names, coefficients=coef.reshape(sp.n_profiles, nJ, C),
        class_gram=Ghh, class_norms2=norms2, class_eigenvalues=cls_ev, class_floor=cls_floor,
        b_classes=b_cls, class_gap=cls_gap, selected=sel, orthonormaliser=T, n_unknowns=live, rank=rank,
        n_points=n_q, n_lambda=n_lambda, n_y=n_y)
    return proj, H, G[cand, cand]


def _harmonic_spectrum(spec: FormSpectrum, proj: HodgeProjection, H: torch.Tensor, Gq: torch.Tensor) -> FormSpectrum:
    """Attach the harmonic Gram, its normalised spectrum and b_harm to a Gram spectrum."""
    n = H.shape[0]
    d = torch.diagonal(Gq).clamp_min(1e-300).rsqrt()
    hv = torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).flip(0)
    floor = 10 * n * float(torch.finfo(torch.float64).eps) * max(float(hv[0]), 1e-300)
    b, gap, thr = _rank_at_gap(hv, floor)
    spec.harmonic_gram, spec.harmonic_eigenvalues = H, hv
    spec.harmonic_floor, spec.harmonic_threshold, spec.b_harm, spec.harmonic_gap = floor, thr, b, gap
    spec.projection = proj
    return spec


# ---------------------------------------------------------------- the whole extraction
@dataclass
class HarmonicResult:
    """Gram spectra and harmonic projections for 2-forms (`two`) and 3-forms (`three`) on [-L, L] x T^6."""
    two: FormSpectrum
    three: FormSpectrum
    L: float
    n_points: int
    seed: int
    settings: ProjectionSettings

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
        sp = self.settings.spectral
        out = {"b2_eff": self.b2_eff, "b3_eff": self.b3_eff, "b2_harm": self.b2_harm,
               "b3_harm": self.b3_harm, "n_points": self.n_points, "L": self.L, "seed": self.seed,
               "legendre_degree": sp.legendre_degree, "fourier_degree": sp.fourier_degree,
               "mixed_pairs": sp.mixed_pairs}
        for tag, s in (("two", self.two), ("three", self.three)):
            for key, val in s.summary().items():
                if not key.startswith(("b2_", "b3_")):
                    out[f"{tag}.{key}"] = val
        return out


def extract(phi_field, n_points: int, L: float, seed: int = 0, chunk: int = 512, dtype=torch.float64,
            progress: bool = False, basis2: CandidateBasis | None = None, basis3: CandidateBasis | None = None,
            n_batches: int = 8, device=None, settings: ProjectionSettings | None = None) -> HarmonicResult:
    """b2_eff, b3_eff (Gram ranks) and b2_harm, b3_harm (ranks of the candidates' harmonic parts) of g(phi).

    phi_field: x (batch, 7) -> packed (batch, 35) (or dense) 3-forms. b_eff: n_points uniform points on
    [-L, L] x T^6 from `seed`, evaluated in `dtype` (Gram integrals, chunks of `chunk`). b_harm: the
    Hodge projection on the tensor quadrature of about n_points points (`sampling.gauss_sobol`), with
    `settings` (ProjectionSettings). Candidates default to `candidates_2forms()` and
    `candidates_3forms(L)`; rules for the counts in the module docstring.
    """
    check_sampling(n_points, L, dtype)
    basis2 = candidates_2forms() if basis2 is None else basis2
    basis3 = candidates_3forms(L) if basis3 is None else basis3
    for want, b, label in ((2, basis2, "basis2"), (3, basis3, "basis3")):
        if not isinstance(b, CandidateBasis):
            raise ValueError(f"{label} must be a CandidateBasis")
        if b.degree != want:
            raise ValueError(f"{label} has candidates of degree {b.degree}; expected {want}-forms (wrong degree)")
    settings = ProjectionSettings() if settings is None else settings
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    x = sampling.chart_points(n_points, L, seed, "uniform", dtype, device)
    volume = 2.0 * float(L)
    eps = float(torch.finfo(dtype).eps)
    spectra = []
    for b in (basis2, basis3):
        ints = integrate(b, phi_field, x, volume, chunk=chunk, n_batches=n_batches, dirichlet=False, progress=progress)
        spectra.append(analyse(ints, b, dtype_eps=eps))
    proj = project(phi_field, L, n_points, seed, settings, {2: basis2, 3: basis3}, progress, device)
    for spec, k in zip(spectra, (2, 3)):
        _harmonic_spectrum(spec, *proj[k])
    return HarmonicResult(two=spectra[0], three=spectra[1], L=float(L), n_points=n_points, seed=seed,
                          settings=settings)


# ---------------------------------------------------------------- figure
def plot_spectra(result: HarmonicResult):
    """Figure (2 x 2): for 2- and 3-forms, the normalised Gram spectrum of the candidates (b_eff, noise
    floor) and the normalised spectrum of their harmonic parts (b_harm, round-off floor, the gap), with
    the spectrum of the projected closed constant forms dx^I beside it; log scales."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for row, s in enumerate((result.two, result.three)):
        ax = axes[row, 0]
        nu = s.gram_eigenvalues.numpy()
        idx = np.arange(1, len(nu) + 1)
        ax.errorbar(idx, np.maximum(nu, s.roundoff_floor * 1e-3), yerr=s.gram_se.numpy(), fmt="o", ms=3, lw=0.8,
                    label="normalised Gram eigenvalue")
        ax.axhline(s.noise_floor, color="tab:red", ls="--", lw=1, label=f"noise floor {s.noise_floor:.1e}")
        ax.axhline(s.gram_threshold, color="tab:green", ls=":", lw=1.2, label=f"b{s.degree}_eff = {s.b_eff}")
        ax.set_yscale("log")
        ax.set_xlabel("index (decreasing)")
        ax.set_ylabel("eigenvalue of D^-1/2 G D^-1/2")
        ax.set_title(f"{s.degree}-forms: Gram spectrum ({s.n_candidates} candidates)")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        if s.harmonic_eigenvalues is not None:
            hv, p = s.harmonic_eigenvalues.numpy(), s.projection
            low = s.harmonic_floor * 1e-3
            ax.plot(np.arange(1, len(hv) + 1), np.maximum(hv, low), "o", ms=3,
                    label=f"harmonic parts of the {len(hv)} candidates")
            cv = p.class_eigenvalues.numpy()
            ax.plot(np.arange(1, len(cv) + 1), np.maximum(cv, low), "s", ms=4, mfc="none",
                    label=f"projected dx^I ({len(cv)} closed forms)")
            ax.axhline(s.harmonic_floor, color="tab:red", ls="--", lw=1, label=f"round-off floor {s.harmonic_floor:.1e}")
            ax.axhline(s.harmonic_threshold, color="tab:green", ls=":", lw=1.2,
                       label=f"b{s.degree}_harm = {s.b_harm} (gap x{s.harmonic_gap:.1e})")
            ax.set_yscale("log")
        ax.set_xlabel("index (decreasing)")
        ax.set_ylabel("eigenvalue of the normalised harmonic Gram")
        ax.set_title(f"{s.degree}-forms: Hodge projection (absolute boundary conditions)")
        ax.legend(fontsize=8)
    sp = result.settings.spectral
    fig.suptitle(f"Harmonic extraction: {result.n_points} points, L = {result.L:g}, basis P_{sp.legendre_degree} x "
                 f"Fourier {sp.fourier_degree}{' + pairs' if sp.mixed_pairs else ''}")
    return fig


# ---------------------------------------------------------------- accuracy on an exact fixture
def fixture_errors(proj: HodgeProjection, a: float) -> dict:
    """Errors of one projection against `fixtures.conformal_fibre_field(a)`: the largest relative error of
    ||h_I||^2 over the fibre classes with dy1 ('with_dy1') and without ('without_dy1'), and the largest
    ||h_I||^2 / 2L of the exact dlambda-forms ('exact')."""
    from .fixtures import conformal_fibre_norm2

    n2 = torch.diagonal(proj.class_gram)
    out = {"with_dy1": 0.0, "without_dy1": 0.0, "exact": 0.0}
    for i, I in enumerate(F.combos(proj.degree)):
        ref = conformal_fibre_norm2(I, a, proj.L)
        key = "exact" if 0 in I else "with_dy1" if 1 in I else "without_dy1"
        err = abs(float(n2[i])) / (2 * proj.L) if key == "exact" else abs(float(n2[i]) / ref - 1)
        out[key] = max(out[key], err)
    return out


def convergence_table(settings=((1, 1, 512), (1, 2, 1024), (1, 3, 2048)), a: float = 0.2,
                      L: float = 2.0, seed: int = 0):
    """pandas.DataFrame: accuracy of the projection on the conformal fixture phi = e^{3 a sin(2 pi y1)} phi0
    (exact ||h||^2 = 2L / I0((7-2k) a) with dy1, 2L I0((7-2k) a) without) for each (Legendre degree,
    Fourier degree, points); relative errors of ||h||^2 for 2- and 3-form classes, the exact forms'
    leftover ||h||^2 / 2L, the number of unknowns and the wall time."""
    import time

    import pandas as pd
    from .fixtures import conformal_fibre_field

    rows = []
    for p, M, n in settings:
        st = ProjectionSettings(SpectralBasis(p, M))
        t0 = time.perf_counter()
        out = project(conformal_fibre_field(a), L, n, seed, st, {2: constant_basis(2), 3: constant_basis(3)})
        dt = time.perf_counter() - t0
        e2, e3 = fixture_errors(out[2][0], a), fixture_errors(out[3][0], a)
        rows.append({"Legendre degree": p, "Fourier degree": M, "points": out[3][0].n_points,
                     "unknowns (3-forms)": out[3][0].n_unknowns,
                     "2-forms: rel. error with dy1": e2["with_dy1"], "2-forms: without dy1": e2["without_dy1"],
                     "3-forms: rel. error with dy1": e3["with_dy1"], "3-forms: without dy1": e3["without_dy1"],
                     "exact forms: |h|^2 / 2L": max(e2["exact"], e3["exact"]), "seconds": dt})
    return pd.DataFrame(rows)

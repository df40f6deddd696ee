"""The Hodge projection on the chart [-L, L] x T^6 with absolute boundary conditions: harmonic
representatives of the closed constant forms, the harmonic parts of candidate forms, and the accuracy of
their Gram matrices.

Hodge projection (Hodge-Morrey-Friedrichs decomposition; G. Schwarz, "Hodge Decomposition - A Method for
Solving Boundary Value Problems", Lecture Notes in Mathematics 1607, Springer 1995, Thm 2.4.2 and 2.6.1).
On a compact manifold with boundary, L^2 k-forms split orthogonally into exact forms d alpha (alpha
without boundary condition), co-exact forms with vanishing normal part, and the harmonic fields H^k_N
(dh = 0, delta h = 0, normal part nu _| h = 0: absolute boundary conditions), and dim H^k_N = b_k. For a
closed form w,
    h = w - d alpha,   alpha = argmin ||w - d alpha||^2_g   (over all (k-1)-forms, no boundary condition)
is the harmonic field in its class: at the minimum h is L^2-orthogonal to every exact form, which is
delta h = 0 in the interior and nu _| h = 0 on lambda = +-L. For any form w the same minimisation leaves
r = w - d alpha in (exact forms)^perp = harmonic fields + co-exact forms, so <h_I, w> = <h_I, r>.

Discretisation (`galerkin`). alpha = sum c_{nmJ} P_n(lambda/L) F_m(y) dx^J: Legendre polynomials of degree
<= legendre_degree (13) for the constant fibre mode and <= fibre_legendre_degree (7) for the others,
times fibre modes on the axes and axis pairs along which the metric varies (`resolution.fibre_content`:
Fourier amplitudes on the coordinate planes above mode_threshold), times all constant (k-1)-forms. The
normal equations are assembled on a solve rule (Gauss-Legendre in lambda x a shifted rank-1 lattice on
T^6 sized for the basis, `resolution.fibre_points_for`) and solved for the C(7,k) constant forms
w_I = dx^I and for the candidates w_a. The Gram matrices of the residuals are then summed on an
independent evaluation rule (another lattice shift), whose lambda nodes come from the metric's
variation along the neck (`resolution.lambda_nodes`, at least legendre_degree + 8):
    S_IJ = <h_I, h_J>,   C_Ia = <h_I, r_a>,   harmonic_gram = C^T S^-1 C  over the kept classes,
the Gram matrix of the candidates' harmonic parts P w_a, in candidate order. Both are second order in
the solution's error (Galerkin orthogonality); the evaluation rule's quadrature error enters at first order.

Accuracy. With exact integration and a basis that misses part of alpha, ||h_M||^2 = ||h||^2 +
||d(alpha - alpha_M)||^2 >= ||h||^2. On a quadrature rule that identity does not hold: the discrete least
squares can use the rule's error and return a norm below the true one, so no computed norm is an upper
bound. What is reported instead is an estimate: the whole computation is repeated once with every
resolution raised (Legendre degrees + 4 and + 2, Fourier degree + 1, three more pairs, half as many
lambda nodes again and the next lattice in both rules: `ProjectionSettings.refined`), and
    harmonic_gram_error = 2 ||H - H_refined||_F / ||H_refined||_F + fibre_left_out,
fibre_left_out = sum a_k^2 over the metric's Fourier amplitudes along axes the basis leaves out (alpha's
missing part is of order a_k and enters the Gram matrix squared; 1e-6 for the quick network). When the
refinement at least halves the error, the true relative error e of H satisfies
e <= harmonic_gram_error <= 3 e (tests: the three exact fixtures). Above `tolerance` a
`HarmonicAccuracyWarning` names the estimate and the setting to raise.

What is projected and counted. The constant forms dx^I are projected; the spectrum of their normalised
Gram D^-1/2 S D^-1/2 (D = ||dx^I||^2) has the chart's classes as O(1) eigenvalues and the exact
dlambda-forms at round-off (lambda dy^J is in the span): its rank at the largest gap is b_classes, and
the b_classes forms with the largest fractions ||h_I||^2 / ||w_I||^2 are kept; `representatives()`
returns them L2_g-orthonormalised (S^-1/2, Loewdin).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import forms as F
from ..batches import progress_bar
from ..chart import as_chart
from ..g2 import as_packed_field
from ..sampling.points import fibre_lattice, gauss_nodes
from . import galerkin as GK
from .candidates import CandidateBasis, candidates_2forms, candidates_3forms, form_name
from .resolution import (
    FIBRE_SIZES,
    active_axes,
    fibre_content,
    fibre_points_for,
    field_dtype,
    lambda_nodes,
    left_out,
    node_points,
    phi_at,
)


MIN_TOLERANCE = 1e-12     # below this the estimate (a difference of two float64 Gram matrices) is round-off
REFINABLE = ("spectral", "n_lambda", "fibre_points")     # what `ProjectionSettings.refined` raises
SPECTRAL = "spectral (legendre_degree, fourier_degree, max_pairs) or a lower mode_threshold"
MAX_REFINEMENTS = 6       # each refinement doubles the fibre lattice (FIBRE_SIZES has six rungs)


class HarmonicAccuracyWarning(UserWarning):
    """A harmonic Gram matrix whose estimated relative error exceeds the requested tolerance."""


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class SpectralBasis:
    """Profiles P_n(lambda/L) F_m(y) of the (k-1)-forms alpha of the Hodge projection.

    legendre_degree: n = 0..p for the constant fibre mode; fibre_legendre_degree: n = 0..pF (pF <= p) for
    the other modes (the fibre parts of alpha are as small as the metric's fibre variation); fourier_degree:
    cos / sin(2 pi j y_a), j = 1..M, on each axis in `axes` (fibre axes numbered 1..6 as the coordinates
    x^1..x^6); pairs: cos / sin(2 pi (y_a +- y_b)) for each (a, b) in `pairs`. axes / pairs None: chosen
    from the metric (`fibre_content`), at most max_pairs pairs. P_1 is always present, so lambda dy^I is in
    the span and every dlambda ^ dy^I projects to 0.
    """
    legendre_degree: int = 13
    fibre_legendre_degree: int = 7
    fourier_degree: int = 2
    axes: tuple | None = None
    pairs: tuple | None = None
    max_pairs: int = 3

    def __post_init__(self):
        for name in ("legendre_degree", "fibre_legendre_degree", "fourier_degree", "max_pairs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"SpectralBasis.{name} must be a non-negative integer, got {v!r}")
        if self.legendre_degree < 1:
            raise ValueError("SpectralBasis.legendre_degree must be at least 1 (lambda dy^I must be in the span)")
        if self.fibre_legendre_degree > self.legendre_degree:
            raise ValueError("SpectralBasis.fibre_legendre_degree must not exceed legendre_degree")
        if self.axes is not None and not set(self.axes) <= set(range(1, 7)):
            raise ValueError(f"SpectralBasis.axes must be fibre axes 1..6, got {self.axes!r}")
        if self.pairs is not None and not all(len(q) == 2 and 1 <= q[0] < q[1] <= 6 for q in self.pairs):
            raise ValueError(f"SpectralBasis.pairs must be pairs (a, b) with 1 <= a < b <= 6, got {self.pairs!r}")

    def modes(self, axes, pairs) -> GK.FibreModes:
        """The fibre modes on the given axes and pairs (wave vectors over y1..y6)."""
        vecs = []
        for a in sorted(axes):
            vecs += [tuple(j if b == a else 0 for b in range(1, 7)) for j in range(1, self.fourier_degree + 1)]
        for a, b in sorted(pairs):
            vecs += [tuple(1 if c == a else s if c == b else 0 for c in range(1, 7)) for s in (1, -1)]
        return GK.FibreModes(tuple(vecs))


@dataclass(frozen=True)
class ProjectionSettings:
    """Basis, rules and tolerances of the Hodge projection.

    spectral: SpectralBasis; solve_lambda: Gauss nodes of the solve rule (None: legendre_degree + 8, at
    least 16); n_lambda: Gauss nodes of the evaluation rule (None: the first of LAMBDA_LADDER at which the
    fibre-averaged metric integrals change by less than lambda_tolerance, relative, to the next
    (`lambda_nodes`), and at least legendre_degree + 8); fibre_points: lattice points
    per node in both rules (None: `fibre_points_for` the basis, at least min_fibre_points); mode_threshold: a fibre axis or pair enters the basis when the
    metric's relative Fourier amplitude along it exceeds this; tolerance (in [1e-12, 1)): the projection
    is refined (`refined`: basis, lambda nodes and fibre lattice together) until each degree's estimated
    relative error is at most this, at most max_refinements times; a degree still above it at that cap
    raises a HarmonicAccuracyWarning naming the setting to raise. The settings are those of the first
    level; the projection records the level it reached (HodgeProjection.refinements and its rules).
    """
    spectral: SpectralBasis = SpectralBasis()
    solve_lambda: int | None = None
    n_lambda: int | None = None
    fibre_points: int | None = None
    min_fibre_points: int = 0
    mode_threshold: float = 1e-3
    lambda_tolerance: float = 1e-6
    tolerance: float = 1e-4
    max_refinements: int = 3

    def __post_init__(self):
        if self.fibre_points is not None and self.fibre_points not in FIBRE_SIZES:
            raise ValueError(f"ProjectionSettings.fibre_points must be one of {FIBRE_SIZES}, got {self.fibre_points!r}")
        if self.solve_lambda is not None and (not isinstance(self.solve_lambda, int)
                                              or self.solve_lambda <= self.spectral.legendre_degree):
            raise ValueError(f"ProjectionSettings.solve_lambda must be an integer above the Legendre degree "
                             f"{self.spectral.legendre_degree}, got {self.solve_lambda!r}")
        if self.n_lambda is not None and (not isinstance(self.n_lambda, int) or self.n_lambda < 2):
            raise ValueError(f"ProjectionSettings.n_lambda must be None or an integer >= 2, got {self.n_lambda!r}")
        for name in ("mode_threshold", "lambda_tolerance"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"ProjectionSettings.{name} must lie in (0, 1), got {getattr(self, name)!r}")
        t = self.tolerance
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not MIN_TOLERANCE <= t < 1:
            raise ValueError(f"ProjectionSettings.tolerance must be a finite number in [{MIN_TOLERANCE:g}, 1) "
                             f"(float64 round-off limits the estimate), got {t!r}")
        r = self.max_refinements
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= MAX_REFINEMENTS:
            raise ValueError(f"ProjectionSettings.max_refinements must be an integer in 0..{MAX_REFINEMENTS}, "
                             f"got {r!r}")

    @property
    def solve_nodes(self) -> int:
        return self.solve_lambda or max(16, self.spectral.legendre_degree + 8)

    def refined(self, n_lambda: int, n_y: int, parts: tuple = REFINABLE) -> "ProjectionSettings":
        """The one refinement behind the error estimate (module docstring), from the rules used (n_lambda
        evaluation nodes, n_y fibre points); `parts` (of REFINABLE) raises only those settings and keeps
        the others at the rules used."""
        sp, out = self.spectral, replace(self, n_lambda=n_lambda, fibre_points=None, min_fibre_points=n_y)
        if "spectral" in parts:
            fine = replace(sp, legendre_degree=sp.legendre_degree + 4, fibre_legendre_degree=sp.fibre_legendre_degree + 2,
                           fourier_degree=sp.fourier_degree + 1, max_pairs=sp.max_pairs + 3)
            out = replace(out, spectral=fine, solve_lambda=None)
        if "n_lambda" in parts:
            out = replace(out, n_lambda=(3 * n_lambda + 1) // 2)
        if "fibre_points" in parts:
            out = replace(out, min_fibre_points=FIBRE_SIZES[min(FIBRE_SIZES.index(n_y) + 1, len(FIBRE_SIZES) - 1)])
        return out


# ---------------------------------------------------------------- the result for one degree
@dataclass(frozen=True)
class HodgeProjection:
    """Harmonic fields h_I = w_I - d alpha_I of the closed constant forms w_I = dx^I (one degree k).

    coefficients ((p+1) n_F C(7,k-1), C(7,k)) of alpha_I over the profiles of `modes` (galerkin order);
    class_gram (C, C) = <h_I, h_J> on the evaluation rule; class_norms2 = ||w_I||^2; class_eigenvalues:
    spectrum of the normalised class Gram (decreasing); b_classes: its rank at the largest gap; selected:
    the classes kept (largest fractions ||h_I||^2 / ||w_I||^2); orthonormaliser: S^{-1/2} of their Gram
    (Loewdin). harmonic_gram_error, class_gram_error: estimated relative Frobenius errors (module
    docstring); error_source: the setting whose refinement changed the result most.
    """
    degree: int
    L: float
    legendre_degree: int
    modes: GK.FibreModes
    axes: tuple
    pairs: tuple
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
    n_points: int
    n_lambda: int
    n_y: int
    solve_lambda: int
    fibre_left_out: float = 0.0
    harmonic_gram_error: float = float("nan")
    class_gram_error: float = float("nan")
    error_source: str = ""
    refinements: int = 0

    @property
    def fraction(self) -> torch.Tensor:
        return torch.diagonal(self.class_gram) / self.class_norms2

    def forms(self, x: torch.Tensor) -> torch.Tensor:
        """h_I(x) for all C(7,k) classes: (batch, C(7,k), C(7,k)) packed, [point, class, component]."""
        x = x.to(torch.float64)
        p, k = self.legendre_degree, self.degree
        P, dP = GK.legendre(x[:, 0] / self.L, p)
        Fv, dF = self.modes(x[:, 1:])
        c4 = self.coefficients.view(p + 1, self.modes.n, F.n_components(k - 1), -1).to(x.device)
        lam_d = (dP / self.L)[:, :, None] * Fv[:, None, :]                        # d_0 s (batch, p+1, n_F)
        lam_v = P[:, :, None, None] * dF[:, None, :, :]                           # d_a s (batch, p+1, n_F, 6)
        E = torch.cat([torch.einsum("xnm,nmJv->xJv", lam_d, c4)[:, None],
                       torch.einsum("xnma,nmJv->xaJv", lam_v, c4)], 1)            # (batch, 7, nJ, C)
        idx, sgn = GK.exact_table(k)
        out = x.new_zeros(x.shape[0], F.n_components(k) + 1, E.shape[-1])
        out.index_add_(1, idx.flatten().to(x.device), E.reshape(x.shape[0], -1, E.shape[-1]) * sgn.flatten().to(x)[None, :, None])
        n = F.n_components(k)
        return torch.eye(n, dtype=x.dtype, device=x.device)[None] - out[:, :-1].transpose(1, 2)

    def representatives(self):
        """Callable x (batch, 7) -> (batch, b_classes, C(7,k)): L2_g-orthonormal harmonic fields."""
        sel = torch.tensor(self.selected, dtype=torch.long, device="cpu")
        T = self.orthonormaliser

        def rep(x):
            h = self.forms(x)[:, sel.to(x.device)]
            return torch.einsum("xic,ir->xrc", h, T.to(h))
        return rep


# ---------------------------------------------------------------- one projection at given settings
def _values(k: int, basis: CandidateBasis, x: torch.Tensor) -> torch.Tensor:
    """(n_y, C + n_cand, C): the constant forms dx^I followed by the candidates at x."""
    eye = torch.eye(F.n_components(k), dtype=torch.float64, device=x.device).expand(x.shape[0], -1, -1)
    return torch.cat([eye, basis(x).to(torch.float64)], dim=1)


def _basis(settings: ProjectionSettings, content: dict):
    """(modes, axes, pairs, n_y, left_out): the fibre modes on the axes and pairs the metric varies along (or
    those the settings fix), the lattice size for them, and sum a_k^2 over the metric's Fourier amplitudes
    a_k along axes and pairs the basis leaves out (the size of their effect on a Gram matrix: alpha's
    missing part is of the order of a_k, and enters the Gram matrix squared)."""
    sp = settings.spectral
    axes, pairs = active_axes(content, settings.mode_threshold, sp.max_pairs)
    axes = axes if sp.axes is None else tuple(sp.axes)
    pairs = pairs if sp.pairs is None else tuple(tuple(q) for q in sp.pairs)
    modes = sp.modes(axes, pairs)
    n_y = settings.fibre_points or max(fibre_points_for(modes), settings.min_fibre_points)
    missed = sum(a * a for k, a in content.items() if left_out(k, axes, pairs))
    return modes, axes, pairs, n_y, missed


def _solve_stage(packed, dtype, chart, settings: ProjectionSettings, modes, n_y: int, candidates: dict, seed: int,
                 device, progress) -> dict:
    """{k: (c (n_u, C + n_cand), live unknowns, norms ||w_v||^2 (C + n_cand,))} on the solve rule."""
    lam, w = gauss_nodes(chart, settings.solve_nodes)
    y = fibre_lattice(n_y, seed).to(device)
    p = settings.spectral.legendre_degree
    Fv, dF = modes(y)
    P, dP = GK.legendre(lam.to(y) / chart.L, p)
    pF = settings.spectral.fibre_legendre_degree
    eqs = {k: GK.NormalEquations.zeros(k, p, pF, modes, F.n_components(k) + b.n_modes, y.device)
           for k, b in candidates.items()}
    for j in progress_bar(range(len(lam)), progress, "Hodge projection"):
        x = node_points(lam[j], y)
        G = GK.weighted_metric(phi_at(packed, dtype, x), torch.full_like(x[:, 0], float(w[j]) / n_y), tuple(candidates))
        for k, basis in candidates.items():
            eqs[k].add_node(k, G[k], _values(k, basis, x), modes, Fv, dF, dP[j] / chart.L, P[j])
    out = {}
    for k, ne in eqs.items():
        M, B = ne.matrices()
        c, live = GK.solve(M, B)
        out[k] = (ne.full_coefficients(c, modes.n).reshape(-1, c.shape[1]), live, ne.norms2)
    return out


def _evaluate_stage(packed, dtype, chart, n_lambda: int, fibre_points: int, seed: int, p: int, modes, coefs: dict,
                    candidates: dict, device):
    """{k: (S (C, C), X (C, n_cand), ||dx^I||^2 (C,))}: residual Gram matrices and the constant forms' norms
    summed on the evaluation rule."""
    lam, w = gauss_nodes(chart, n_lambda)
    y = fibre_lattice(fibre_points, seed).to(device)
    Fv, dF = modes(y)
    P, dP = GK.legendre(lam.to(y) / chart.L, p)
    out = {k: [0, 0, 0] for k in candidates}
    c4 = {k: coefs[k].view(p + 1, modes.n, F.n_components(k - 1), -1) for k in candidates}
    for j in range(n_lambda):
        x = node_points(lam[j], y)
        G = GK.weighted_metric(phi_at(packed, dtype, x), torch.full_like(x[:, 0], float(w[j]) / y.shape[0]),
                               tuple(candidates))
        for k, basis in candidates.items():
            R = _values(k, basis, x).transpose(1, 2) - GK.exact_forms_at_node(k, c4[k], modes, Fv, dF,
                                                                            dP[j] / chart.L, P[j])
            S, X = GK.residual_sums(G[k], R, F.n_components(k))
            out[k][0] = out[k][0] + S
            out[k][1] = out[k][1] + X
            out[k][2] = out[k][2] + torch.diagonal(G[k], dim1=-2, dim2=-1).sum(0)      # ||dx^I||^2
    return {k: (0.5 * (S + S.T), X, n) for k, (S, X, n) in out.items()}


def _project_once(packed, dtype, chart, settings: ProjectionSettings, candidates: dict, content: dict, seed: int,
                  device, progress):
    """(n_lambda, n_y, {k: (HodgeProjection without error estimate, harmonic_gram, candidate norms)},
    (modes, coefficients of all right-hand sides)) at one resolution."""
    n_lambda = settings.n_lambda or max(settings.spectral.legendre_degree + 8,
                                        lambda_nodes(packed, dtype, chart, candidates, settings.lambda_tolerance, device))
    n_lambda = max(n_lambda, settings.spectral.legendre_degree + 2)     # the residuals have degree <= p in lambda
    modes, axes, pairs, n_y, left_out = _basis(settings, content)
    solved = _solve_stage(packed, dtype, chart, settings, modes, n_y, candidates, seed, device, progress)
    full = {k: v[0] for k, v in solved.items()}
    p = settings.spectral.legendre_degree
    sums = _evaluate_stage(packed, dtype, chart, n_lambda, n_y, seed + 1, p, modes, full, candidates, device)
    out = {}
    for k in candidates:
        c, live, norms2 = solved[k]
        info = dict(L=chart.L, legendre_degree=p, modes=modes, axes=axes, pairs=pairs, n_unknowns=live,
                    fibre_left_out=left_out,
                    n_points=settings.solve_nodes * n_y, n_lambda=n_lambda, n_y=n_y, solve_lambda=settings.solve_nodes)
        S, X, cls_norms2 = sums[k]
        norms2 = torch.cat([cls_norms2.cpu(), norms2[F.n_components(k):].cpu()])
        out[k] = _finish(k, S, X, c[:, :F.n_components(k)].cpu(), norms2, info)
    return n_lambda, n_y, out, (modes, full)


def _classes(k: int, S: torch.Tensor, norms2: torch.Tensor):
    """(eigenvalues, floor, b_classes, gap, selected) of the normalised class Gram D^-1/2 S D^-1/2."""
    C = F.n_components(k)
    dn = norms2.rsqrt()
    ev = torch.linalg.eigvalsh(dn[:, None] * S * dn[None, :]).flip(0)
    floor = 10 * C * float(torch.finfo(torch.float64).eps) * float(ev[0])
    b, gap, _ = rank_at_gap(ev, floor)
    sel = tuple(sorted(torch.argsort(torch.diagonal(S) / norms2, descending=True)[:b].tolist()))
    return ev, floor, b, gap, sel


def _harmonic(S: torch.Tensor, X: torch.Tensor, selected: tuple):
    """(harmonic_gram = X_s^T S_s^-1 X_s, S_s^-1/2) over the selected classes s."""
    si = torch.tensor(selected, dtype=torch.long, device="cpu")
    Ss, Xs = S[si][:, si], X[si]
    ev, U = torch.linalg.eigh(Ss)
    H = Xs.T @ torch.linalg.solve(Ss, Xs)
    return 0.5 * (H + H.T), U @ torch.diag(ev.rsqrt()) @ U.T


def _finish(k: int, S: torch.Tensor, X: torch.Tensor, coef: torch.Tensor, norms2: torch.Tensor, info: dict):
    """(HodgeProjection, harmonic_gram (n, n), candidate norms (n,)) from the evaluated sums."""
    C = F.n_components(k)
    S, X = S.cpu(), X.cpu()
    ev, floor, b, gap, sel = _classes(k, S, norms2[:C])
    H, T = _harmonic(S, X, sel)
    names = tuple(form_name(I) for I in F.combos(k))
    proj = HodgeProjection(degree=k, names=names, coefficients=coef, class_gram=S, class_norms2=norms2[:C].clone(),
                           class_eigenvalues=ev, class_floor=floor, b_classes=b, class_gap=gap, selected=sel,
                           orthonormaliser=T, **info)
    return proj, H, norms2[C:].clone()


# ---------------------------------------------------------------- the projection with its error estimate
def _relative(A: torch.Tensor, B: torch.Tensor) -> float:
    return float(torch.linalg.norm(A - B) / torch.linalg.norm(B)) if float(torch.linalg.norm(B)) > 0 else 0.0


def _moves(packed, dtype, chart, rules: tuple, candidates: dict, seed: int, device, model, k: int,
           H: torch.Tensor, dH: float, selected: tuple) -> dict:
    """{setting: how far its refinement alone moves H (relative)}: the evaluation nodes, the fibre points
    (the level's coefficients re-evaluated with only the lambda nodes, then only the fibre points,
    refined) and the basis (the rest of the change dH under the whole refinement)."""
    n_lambda, n_y, fine_lambda, fine_y = rules
    modes, full = model
    p = full[k].shape[0] // (modes.n * F.n_components(k - 1)) - 1
    moves = {}
    for label, nl, ny in (("n_lambda", fine_lambda, n_y), ("fibre_points", n_lambda, fine_y)):
        S, X, _ = _evaluate_stage(packed, dtype, chart, nl, ny, seed + 1, p, modes, full, {k: candidates[k]}, device)[k]
        moves[label] = _relative(H, _harmonic(S.cpu(), X.cpu(), selected)[0])
    moves[SPECTRAL] = dH - moves["n_lambda"] - moves["fibre_points"]
    return moves


def _parts(moves: dict) -> set:
    """The settings worth raising at the next level: those that move H by at least half the most."""
    top = max(moves.values())
    return {label.split()[0] for label, v in moves.items() if v >= 0.5 * top}


def _estimates(base: dict, ref: dict) -> dict:
    """{k: (harmonic_gram_error, class_gram_error)}: twice the relative changes under one refinement plus
    the metric's Fourier content the basis leaves out (module docstring)."""
    out = {}
    for k, (proj, H, _) in base.items():
        dH = _relative(H, ref[k][1]) + proj.fibre_left_out / 2
        dS = _relative(proj.class_gram, ref[k][0].class_gram) + proj.fibre_left_out / 2
        out[k] = (2 * dH, 2 * dS)
    return out


def project(phi_field, chart, seed: int = 0, settings: ProjectionSettings | None = None,
            candidates: dict | None = None, progress: bool = False, device=None) -> dict:
    """Hodge projections of the constant k-forms dx^I (k = keys of `candidates`, default 2 and 3) with
    g = g(phi), the harmonic Gram matrices of the candidates and their estimated errors (module docstring).

    Refined to the tolerance: each level is compared with one whole refinement of it (the estimate); while
    a degree's estimate exceeds settings.tolerance, the next level raises the settings that moved it most
    (`_moves`), at most settings.max_refinements times; then a HarmonicAccuracyWarning names the setting.
    phi_field: x (batch, 7) -> packed (batch, 35) or dense 3-forms; chart: a `Chart` (or its L);
    candidates: {k: CandidateBasis}. Returns {k: (HodgeProjection with harmonic_gram_error and refinements,
    harmonic_gram (n, n) float64 in candidate order, candidate norms ||w_a||^2 (n,) on the solve rule)};
    ValueError for non-finite or non-positive phi."""
    chart = as_chart(chart)
    settings = ProjectionSettings() if settings is None else settings
    candidates = {2: candidates_2forms(), 3: candidates_3forms(chart)} if candidates is None else candidates
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    packed, dtype = as_packed_field(phi_field), field_dtype(phi_field)
    args = (packed, dtype, chart)
    content = fibre_content(packed, dtype, chart, seed, device)
    level = (settings, seed, *_project_once(*args, settings, candidates, content, seed, device, progress))
    pending, out = dict(candidates), {}
    for step in range(settings.max_refinements + 1):
        st, s, n_lambda, n_y, base, model = level
        fine = st.refined(n_lambda, n_y)
        # each computation has its own lattice shifts (seed, seed + 1), independent of those it is compared with
        _, fine_y, ref, _ = _project_once(*args, fine, pending, content, s + 2, device, progress)
        parts = set()
        for k, (err, cls_err) in _estimates({k: base[k] for k in pending}, ref).items():
            moves = {} if err <= settings.tolerance else _moves(
                *args, (n_lambda, n_y, fine.n_lambda, fine_y), pending, s, device, model, k, base[k][1], err / 2,
                base[k][0].selected)
            if moves and step < settings.max_refinements:
                parts |= _parts(moves)
                continue
            source = max(moves, key=moves.get) if moves else ""
            out[k] = (replace(base[k][0], harmonic_gram_error=err, class_gram_error=cls_err, error_source=source,
                              refinements=step), *base[k][1:])
            pending.pop(k)
        if not pending:
            break
        # the next level raises only what moved the result (the estimate still compares with a whole refinement)
        nxt = st.refined(n_lambda, n_y, tuple(parts))
        level = (nxt, s + 4, *_project_once(*args, nxt, pending, content, s + 4, device, progress))
    for k, p in ((k, out[k][0]) for k in candidates if out[k][0].error_source):
        warnings.warn(f"degree-{k} harmonic Gram: estimated relative error {p.harmonic_gram_error:.1e} exceeds the "
                      f"tolerance {settings.tolerance:.0e} after {p.refinements} refinement(s) (the cap, max_refinements)"
                      f"; raise ProjectionSettings.{p.error_source}", HarmonicAccuracyWarning, stacklevel=2)
    return {k: out[k] for k in candidates}


# ---------------------------------------------------------------- ranks at a gap
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

"""Harmonic forms of the metric g(phi) on the chart [-L, L] x T^6: Gram spectra (b_eff) and the Hodge
projection with absolute boundary conditions (b_harm, harmonic representatives).

Topology. lambda = x^0 is a global function on the chart (not periodic), so dlambda ^ dy^J = d(lambda dy^J)
is exact and the cohomology is that of T^6: (b2, b3) = (15, 20) for every metric, one class per constant
fibre form dy^I (y = x^1..x^6). A periodic T^7 would have (21, 35); that statement holds for T^7 only.

What b_harm is. b_harm, the rank of the candidates' harmonic Gram matrix, cannot exceed the number of
classes the projection keeps, and that number is b_k of the chart: the count is fixed by topology and
does not test the projection. What the projection computes is the Gram matrix of the candidates'
harmonic parts (`FormSpectrum.harmonic_gram`), reported with its estimated relative error
(`harmonic_gram_error`, `hodge`); the gap across b_harm shows that the exact directions (dlambda-forms,
co-exact parts) project to round-off.

Gram spectra (docs/conventions.md §6: Gram rank is linear independence, not harmonicity), on n_points uniform
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
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import forms as F
from .. import g2
from ..batches import progress_bar
from ..chart import as_chart
from ..derivatives import check_method, value_and_jacobian
from ..g2 import as_packed_field
from ..inputs import check_sampling
from ..sampling import points as sampling
from .candidates import CandidateBasis, candidates_2forms, candidates_3forms
from .hodge import HodgeProjection, ProjectionSettings, project, rank_at_gap
from .resolution import check_finite

NOISE_Z = 3.0      # an eigenvalue is resolved when it exceeds NOISE_Z times its own sampling noise


class RankDeficiencyWarning(UserWarning):
    """A candidate set whose Gram matrix has lost rank (some candidates are linearly dependent)."""


# ---------------------------------------------------------------- integrals
@dataclass(frozen=True)
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
        Cinv_powers[p] = F.exterior_power(Cinv, p)
    return torch.matmul(w, Cinv_powers[p].transpose(-1, -2))


def _pairs(basis: CandidateBasis):
    """Non-zero (profile, mode) pairs q of the coefficients: profile index (q,), mode index (q,),
    forms c_q (q, C(7,k)) and the tables (q, 7, C(7,k+1)) of dx^i ^ c_q."""
    c = basis.coefficients.double()
    p, m = torch.nonzero(c.ne(0).any(-1), as_tuple=True)
    forms = c[p, m]
    k, n = basis.degree, F.n_components(basis.degree)
    W = F.dx_wedge_table(k, "cpu", torch.float64).reshape(-1, F.DIM, n)       # (C(7,k+1), 7, C)
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
        S, K = F.hodge_matrix_and_d(g, jg, o, k)
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
            W = F.dx_wedge_table(F.DIM - k, F.device_key(x.device), x.dtype)
            outer = (jq[..., :, None] * Z[..., None, :]).reshape(*Z.shape[:2], -1)
            dstar_q = torch.matmul(outer, W.T)                              # df ^ (S c_q)
            dw = dw.index_add(1, mq, dw_q)
            dstar = dstar.index_add(1, mq, dstar_q)
    else:
        w, phi = basis(x), phi_field(x)
    check_finite(phi, x)
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
    check_method(method)
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
    for b, s, e in progress_bar(steps, progress, f"{basis.degree}-form integrals"):
        G, E = _chunk_sums(basis, field_, x[s:e], weights[s:e], dirichlet, method, h, pairs)
        Gb[b] += G.cpu()
        if dirichlet:
            Esum += E.cpu()
    sizes = torch.tensor(np.diff(bounds), dtype=torch.float64, device="cpu")
    gram = volume * Gb.sum(0) / N
    return Integrals(gram=gram, dirichlet=None if Esum is None else volume * Esum / N,
                     gram_batches=volume * Gb / sizes[:, None, None], batch_sizes=sizes,
                     n_points=N, volume=float(volume))


# ---------------------------------------------------------------- spectra
@dataclass(frozen=True)
class FormSpectrum:
    """Gram spectrum (b_eff) and harmonic projection (b_harm) of one candidate set; float64 tensors.

    Gram (linear independence): gram_eigenvalues (n,) normalised, decreasing; gram_se (n,) batch-means
    standard errors; gram_eigenvalues_halves (2, n); noise_floor, roundoff_floor; b_eff; condition,
    condition_eff; null_modes: names dominating the null directions when b_eff < n.
    Harmonic parts: harmonic_gram (n, n) = <P w_a, P w_b> in candidate order (P the L2_g projection on
    the harmonic fields), with harmonic_gram_error, its estimated relative Frobenius error (`hodge`:
    twice the change under one refinement of basis and rules); harmonic_eigenvalues (n,) of
    D^-1/2 harmonic_gram D^-1/2 (D = diag of the candidates' Gram on the solve rule), decreasing;
    harmonic_floor (round-off); b_harm (rank at the largest gap: at most the number of classes, which
    the chart's topology fixes); harmonic_gap = ratio across it; projection: the HodgeProjection.
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
    harmonic_gram_error: float = float("nan")
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
                "harmonic_gram_error": self.harmonic_gram_error, "class_gram_error": p.class_gram_error,
                "harmonic_gram_error_source": p.error_source,
                "projection_points": p.n_points, "projection_unknowns": p.n_unknowns,
                "projection_lambda_nodes": p.n_lambda, "projection_solve_lambda_nodes": p.solve_lambda,
                "projection_fibre_points": p.n_y, "projection_legendre_degree": p.legendre_degree,
                "projection_fibre_axes": " ".join(map(str, p.axes)),
                "projection_fibre_pairs": " ".join(f"{a}{b}" for a, b in p.pairs),
            })
        return out


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
    b_eff, _, threshold = rank_at_gap(nu, floor)
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


def _harmonic_spectrum(spec: FormSpectrum, proj: HodgeProjection, H: torch.Tensor, norms2: torch.Tensor) -> FormSpectrum:
    """Attach the harmonic Gram, its error, its normalised spectrum and b_harm to a Gram spectrum."""
    n = H.shape[0]
    d = norms2.clamp_min(1e-300).rsqrt()
    hv = torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).flip(0)
    floor = 10 * n * float(torch.finfo(torch.float64).eps) * max(float(hv[0]), 1e-300)
    b, gap, thr = rank_at_gap(hv, floor)
    return replace(spec, harmonic_gram=H, harmonic_gram_error=proj.harmonic_gram_error, harmonic_eigenvalues=hv, harmonic_floor=floor, harmonic_threshold=thr,
                   b_harm=b, harmonic_gap=gap, projection=proj)


# ---------------------------------------------------------------- the whole extraction
@dataclass(frozen=True)
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

    @property
    def harmonic_gram_error(self) -> dict:
        """{2: ..., 3: ...}: estimated relative Frobenius errors of the two harmonic Gram matrices."""
        return {2: self.two.harmonic_gram_error, 3: self.three.harmonic_gram_error}

    def summary(self) -> dict:
        """Plain numbers: the four counts, the harmonic Gram errors, then per-degree spectra statistics."""
        st = self.settings
        out = {"b2_eff": self.b2_eff, "b3_eff": self.b3_eff, "b2_harm": self.b2_harm,
               "b3_harm": self.b3_harm, "b2_harmonic_gram_error": self.two.harmonic_gram_error,
               "b3_harmonic_gram_error": self.three.harmonic_gram_error, "n_points": self.n_points, "L": self.L,
               "seed": self.seed, "legendre_degree": st.spectral.legendre_degree,
               "fourier_degree": st.spectral.fourier_degree, "harmonic_tolerance": st.tolerance}
        for tag, s in (("two", self.two), ("three", self.three)):
            for key, val in s.summary().items():
                if not key.startswith(("b2_", "b3_")):
                    out[f"{tag}.{key}"] = val
        return out


def extract(phi_field, n_points: int, chart, seed: int = 0, chunk: int = 512, dtype=torch.float64,
            progress: bool = False, basis2: CandidateBasis | None = None, basis3: CandidateBasis | None = None,
            n_batches: int = 8, device=None, settings: ProjectionSettings | None = None) -> HarmonicResult:
    """b2_eff, b3_eff (Gram ranks) and b2_harm, b3_harm (ranks of the candidates' harmonic parts) of g(phi).

    phi_field: x (batch, 7) -> packed (batch, 35) (or dense) 3-forms; chart: a `Chart` (or its L).
    b_eff: n_points uniform points on [-L, L] x T^6 from `seed`, evaluated in `dtype` (Gram integrals,
    chunks of `chunk`). b_harm and the harmonic Gram matrices with their estimated errors: the Hodge
    projection (`hodge.project`) with `settings` (ProjectionSettings; its rules do not depend on
    n_points). Candidates default to `candidates_2forms()` and `candidates_3forms(chart)`; rules for the
    counts in the module docstring. Warns (hodge.HarmonicAccuracyWarning) when an estimated harmonic
    Gram error exceeds settings.tolerance.
    """
    chart = as_chart(chart)
    check_sampling(n_points, chart.L, dtype)
    basis2 = candidates_2forms() if basis2 is None else basis2
    basis3 = candidates_3forms(chart) if basis3 is None else basis3
    for want, b, label in ((2, basis2, "basis2"), (3, basis3, "basis3")):
        if not isinstance(b, CandidateBasis):
            raise ValueError(f"{label} must be a CandidateBasis")
        if b.degree != want:
            raise ValueError(f"{label} has candidates of degree {b.degree}; expected {want}-forms (wrong degree)")
    settings = ProjectionSettings() if settings is None else settings
    if device is None and isinstance(phi_field, torch.nn.Module):
        device = next((q.device for q in phi_field.parameters()), None)   # points where the model lives
    x = sampling.chart_points(n_points, chart, seed, "uniform", dtype, device)
    volume = chart.volume
    eps = float(torch.finfo(dtype).eps)
    spectra = []
    for b in (basis2, basis3):
        ints = integrate(b, phi_field, x, volume, chunk=chunk, n_batches=n_batches, dirichlet=False, progress=progress)
        spectra.append(analyse(ints, b, dtype_eps=eps))
    proj = project(phi_field, chart, seed, settings, {2: basis2, 3: basis3}, progress, device)
    spectra = [_harmonic_spectrum(spec, *proj[k]) for spec, k in zip(spectra, (2, 3))]
    return HarmonicResult(two=spectra[0], three=spectra[1], L=chart.L, n_points=n_points, seed=seed,
                          settings=settings)



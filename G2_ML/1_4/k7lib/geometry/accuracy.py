"""Exact harmonic Gram matrices of three fixtures, and the accuracy of the Hodge projection against them.

For candidate forms that depend on lambda only (the package's candidates do), the exact Gram matrix of
their harmonic parts, H = C^T S^-1 C with S_IJ = <h_I, h_J> and C_Ia = <h_I, w_a> over the fibre classes,
is a one-dimensional integral in lambda (done here with composite Gauss-Legendre panels between the
chart's region breakpoints t = +-1/4, +-3/4, converged to round-off):
  * phi_bg (`Chart.phi_background`): g = s^2 A(lambda)^T A(lambda) with A acting on the fibre only, so
    g has no lambda-y mixing; every dy^I is closed, co-closed (*dy^I = c(lambda) dlambda ^ dy^J) and has
    no normal part: h_I = dy^I, S_IJ = int <dy^I, dy^J>_g vol_g, C_Ia = int <dy^I, w_a>_g vol_g;
  * the conformal fibre field e^{3 a sin(2 pi y1)} phi0 (conventions §6): h = e^{-(7-2k) f} dy^I / I0((7-2k) a)
    for a class with dy1 and dy^I without, so S is diagonal with 2L / I0 and 2L I0, and C_Ia is
    int <dy^I, w_a>_0 dlambda times 1 / I0 and I0 respectively;
  * the shear fixture `fixtures.shear_fibre_field`: h_I = F^* dy^I, S = 2L on the fibre classes, and
    C_Ia = int <dy^I, (F^-1)^* w_a>_0 = int <dy^I, w_a>_0 dlambda: (F^-1)^* replaces dy1 by dy1 - ds, and
    the derivatives of s along y2, y3 average to zero over the fibre. So H is the flat metric's;
  * the same for the POISSON_SHEARS (`fixtures.poisson_shear_field`), whose s has Fourier coefficients
    decaying only like q^n along each of its axes: the first level of the defaults misses the tolerance
    and the projection refines itself (`hodge.project`).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..chart import BLOCK_START, NECK_CORE, as_chart
from ..fixtures import conformal_fibre_field, poisson_shear_field, shear_fibre_field
from .candidates import CandidateBasis, candidates_2forms, candidates_3forms
from .hodge import ProjectionSettings, project

FIXTURES = ("phi_bg", "conformal", "shear")
CONFORMAL_A, SHEAR_EPS = 0.2, 0.05
# shears y1 -> y1 + s with s = eps cos^2(pi lambda / 2L) sum_a r_q(y_a) (`fixtures.poisson_profile`): Fourier
# coefficients q^n, outside any polynomial x Fourier span; (eps, q, axes), sized so that the first level
# of the default settings misses the tolerance 1e-4 (by 2-3x along y2, by 1.3x along y2 and y4)
POISSON_SHEARS = {"poisson y2": (0.006, 0.5, (2,)), "poisson y2 y4": (0.003, 0.5, (2, 4))}
ALL_FIXTURES = FIXTURES + tuple(POISSON_SHEARS)


def lambda_panels(chart, n: int = 200):
    """(lambda, weights): n Gauss-Legendre nodes on each panel between t = -1, -3/4, -1/4, 1/4, 3/4, 1."""
    L = as_chart(chart).L
    cuts = [-1.0, -float(BLOCK_START), -float(NECK_CORE), float(NECK_CORE), float(BLOCK_START), 1.0]
    t, w = np.polynomial.legendre.leggauss(n)
    lam = np.concatenate([L * (a + (b - a) * (t + 1) / 2) for a, b in zip(cuts[:-1], cuts[1:])])
    wts = np.concatenate([L * (b - a) / 2 * w for a, b in zip(cuts[:-1], cuts[1:])])
    return torch.tensor(lam, dtype=torch.float64), torch.tensor(wts, dtype=torch.float64)


def _lambda_only(basis: CandidateBasis, lam: torch.Tensor) -> torch.Tensor:
    """Candidate values (n_lambda, n, C) at y = 0; ValueError when they depend on the fibre."""
    x = torch.zeros(len(lam), F.DIM, dtype=torch.float64)
    x[:, 0] = lam
    y = x.clone()
    y[:, 1:] = 0.37
    W = basis(x).to(torch.float64)
    if not torch.allclose(W, basis(y).to(torch.float64), atol=1e-14):
        raise ValueError("the exact fixture Gram matrices need candidates that depend on lambda only")
    return W


def exact_gram(fixture: str, chart, k: int, basis: CandidateBasis):
    """(H (n, n), S (C, C)): the exact harmonic Gram of the candidates and the class Gram <h_I, h_J> (zero
    on the dlambda-classes) for one of FIXTURES (module docstring), float64."""
    chart = as_chart(chart)
    lam, w = lambda_panels(chart)
    W = _lambda_only(basis, lam)
    fibre = [i for i, I in enumerate(F.combos(k)) if 0 not in I]
    C = F.n_components(k)
    if fixture == "phi_bg":
        x = torch.zeros(len(lam), F.DIM, dtype=torch.float64)
        x[:, 0] = lam
        m = g2.metric_data_packed(chart.phi_background(x))
        G = F.exterior_power(m.ginv, k) * (w * m.det.sqrt())[:, None, None]
        S_f = G[:, fibre][:, :, fibre].sum(0)
        X = torch.einsum("xIc,xac->Ia", G[:, fibre], W)
    elif fixture in ("conformal", "shear") or fixture in POISSON_SHEARS:
        b = float(torch.special.i0(torch.tensor((7 - 2 * k) * CONFORMAL_A, dtype=torch.float64)))
        scale = torch.tensor([(1 / b if 1 in F.combos(k)[i] else b) if fixture == "conformal" else 1.0
                              for i in fibre], dtype=torch.float64)
        S_f = torch.diag(2 * chart.L * scale)
        X = scale[:, None] * torch.einsum("x,xaI->Ia", w, W[:, :, fibre])
    else:
        raise ValueError(f"fixture must be one of {ALL_FIXTURES}, got {fixture!r}")
    H = X.T @ torch.linalg.solve(S_f, X)
    S = torch.zeros(C, C, dtype=torch.float64)
    S[np.ix_(fibre, fibre)] = S_f
    return 0.5 * (H + H.T), S


def fixture_field(fixture: str, chart):
    """The 3-form field of one of FIXTURES: x (batch, 7) -> packed (batch, 35)."""
    if fixture == "phi_bg":
        return as_chart(chart).phi_background
    if fixture == "conformal":
        return conformal_fibre_field(CONFORMAL_A)
    if fixture == "shear":
        return shear_fibre_field(SHEAR_EPS)
    if fixture in POISSON_SHEARS:
        return poisson_shear_field(*POISSON_SHEARS[fixture][:2], as_chart(chart).L, POISSON_SHEARS[fixture][2])
    raise ValueError(f"fixture must be one of {ALL_FIXTURES}, got {fixture!r}")


def relative_error(A: torch.Tensor, B: torch.Tensor) -> float:
    """||A - B||_F / ||B||_F."""
    return float(torch.linalg.norm(A - B) / torch.linalg.norm(B))


def accuracy_table(chart=2.0, fixtures=FIXTURES, settings: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per (fixture, settings label, degree): the true relative Frobenius error of harmonic_gram
    against `exact_gram`, the estimate harmonic_gram_error and their ratio, the class Gram's error, the
    evaluation rule used and the seconds of the projection (both degrees, estimate included).
    settings: {label: ProjectionSettings} (default {"default": ProjectionSettings()})."""
    chart = as_chart(chart)
    settings = {"default": ProjectionSettings()} if settings is None else settings
    cands = {2: candidates_2forms(), 3: candidates_3forms(chart)}
    rows = []
    for fx in fixtures:
        exact = {k: exact_gram(fx, chart, k, cands[k]) for k in cands}
        for label, st in settings.items():
            t0 = time.perf_counter()
            out = project(fixture_field(fx, chart), chart, seed, st, cands)
            dt = time.perf_counter() - t0
            for k, (proj, H, _) in out.items():
                Hx, Sx = exact[k]
                err = relative_error(H, Hx)
                rows.append({"fixture": fx, "settings": label, "degree": k, "true error": err,
                             "estimate": proj.harmonic_gram_error, "estimate / true": proj.harmonic_gram_error / err,
                             "class Gram error": relative_error(proj.class_gram, Sx),
                             "lambda nodes": proj.n_lambda, "fibre points": proj.n_y,
                             "fibre axes": " ".join(map(str, proj.axes)), "unknowns": proj.n_unknowns,
                             "refinements": proj.refinements,
                             "seconds (both degrees)": dt})
    return pd.DataFrame(rows)


def convergence_table(chart=2.0, seed: int = 0) -> pd.DataFrame:
    """`accuracy_table` for the three fixtures at the default settings (refined to their tolerance) and at a
    coarser fixed one (the notebook's accuracy cell)."""
    coarse = ProjectionSettings(n_lambda=16, fibre_points=61, max_refinements=0)      # fixed: no refinement
    return accuracy_table(chart, FIXTURES, {"default": ProjectionSettings(), "16 lambda nodes, 61 fibre points": coarse},
                          seed)

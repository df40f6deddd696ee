"""What the notebook reports about one trained chart run, measured the same way on every ensemble member,
each number with its own error (so that a seed spread can be set against it).

`measure_member(model, config, settings)` returns a `Measurement`: {quantity: value} and {quantity: error}.
The quantity keys are the run metadata's keys where the metadata holds the same number
(kappa_T_measured, det_g_measured, det_g_std, eig_min, anti_flat) and new names otherwise. Every member is
measured on the same points (the settings' seed, not the member's), so the members' Monte Carlo errors
are correlated and a difference between members is a difference of metrics, not of samples.

Where each error comes from:
- the evaluation quantities (learn.evaluate): `batches` independent Sobol scrambles of
  eval_points / batches points each; the value is the mean of the per-scramble values and the error their
  standard deviation over sqrt(batches). For the means <T> and <det g> this is evaluate's own randomised
  QMC error; for the pointwise spread of det g, the smallest eigenvalue of g and the anti-flat measure it
  is the error of the mean of the per-scramble values (a smallest eigenvalue is then the expected
  minimum over eval_points / batches points);
- the curvature statistics (curvature.curvature_scalars): the same on `batches` independent scrambles of
  curvature_points points each: mean, largest and smallest values of |Rm|_g, |Ric|_g and the scalar
  curvature per scramble; value the mean over scrambles, error their spread over sqrt(batches) (for an
  extreme: the expected extreme over curvature_points points, and its standard error);
- lambda1 and lambda1 H* (geometry.spectrum, a deterministic quadrature): the change of lambda1 under the
  last refinement of the basis, the same relative change for lambda1 H*;
- the extremes of the normalised harmonic Gram spectra (geometry.harmonic): the value times the
  projection's estimated relative Gram error (twice its change under one refinement);
- the couplings (apps.pipeline.coupling_study): the largest |Y_ijk| of the triple wedge integral and the
  largest |d^3V| of Hitchin's cubic over all triplets, each with that triplet's Monte Carlo standard error.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .. import g2
from ..chart import as_chart
from ..curvature import curvature_scalars
from ..geometry import harmonic
from ..geometry.spectrum import spectral_gap
from ..inputs import MAX_POINTS, positive_int
from ..learn.evaluate import evaluate
from ..learn.model import float64_copy
from ..sampling import points as sampling
from .explore import ExploreSettings
from .pipeline import coupling_study

CURVATURE_STREAM = 104729     # seed offset of the curvature scrambles (a prime, apart from evaluate's streams)
MAX_BATCHES = 64

# quantity key -> plain-text label, in the order of the table
QUANTITIES = {
    "kappa_T_measured": "<T>",
    "det_g_measured": "<det g>",
    "det_g_std": "std of det g",
    "eig_min": "smallest eigenvalue of g",
    "anti_flat": "anti-flat measure",
    "lambda1": "lambda1",
    "lambda1_Hstar": "lambda1 H*",
    "Rm_mean": "mean |Rm|",
    "Rm_max": "max |Rm|",
    "Ric_mean": "mean |Ric|",
    "Ric_max": "max |Ric|",
    "scalar_min": "min scalar curvature",
    "scalar_mean": "mean scalar curvature",
    "scalar_max": "max scalar curvature",
    "harmonic2_min": "smallest harmonic Gram eigenvalue, 2-forms",
    "harmonic2_max": "largest harmonic Gram eigenvalue, 2-forms",
    "harmonic3_min": "smallest harmonic Gram eigenvalue, 3-forms",
    "harmonic3_max": "largest harmonic Gram eigenvalue, 3-forms",
    "Y_max": "largest |Y_ijk| (triple wedge integral)",
    "hitchin_max": "largest |d3V| (Hitchin's cubic)",
}


@dataclass(frozen=True)
class MemberSettings:
    """Sizes of one member's measurement (module docstring); the defaults keep it well below the quick
    profile's training time on one core. The spectral sizes are explore's defaults."""
    eval_points: int = 4096
    batches: int = 4
    curvature_points: int = 128
    spectral_n_lambda: int = ExploreSettings.spectral_n_lambda
    spectral_n_fourier: int = ExploreSettings.spectral_n_fourier
    spectral_points: int = ExploreSettings.spectral_points
    harmonic_points: int = 2048
    coupling_points: int = 1024
    seed: int = 0

    def validate(self) -> "MemberSettings":
        positive_int(self.batches, "batches", 2, MAX_BATCHES)     # two scrambles at least: a spread
        for name in ("eval_points", "curvature_points", "harmonic_points", "coupling_points"):
            positive_int(getattr(self, name), name, maximum=MAX_POINTS)
        for name in ("spectral_n_lambda", "spectral_n_fourier", "spectral_points"):
            positive_int(getattr(self, name), name)
        positive_int(self.seed, "seed", 0)
        if self.eval_points < 2 * self.batches:
            raise ValueError(f"eval_points: need at least 2 points per batch ({2 * self.batches}), "
                             f"got {self.eval_points}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One member's values and errors by quantity key (QUANTITIES), and the seconds each part took."""
    values: dict
    errors: dict
    seconds: dict = field(default_factory=dict)


def batch_mean(rows: list) -> tuple:
    """({key: mean}, {key: standard error}) of per-batch dicts: the spread over sqrt(number of batches)."""
    values, errors = {}, {}
    for key in rows[0]:
        v = torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)
        values[key] = float(v.mean())
        errors[key] = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else None
    return values, errors


def evaluation_batches(model, chart, s: MemberSettings) -> list:
    """Per-scramble evaluation quantities: learn.evaluate on one scramble of eval_points / batches each."""
    rows = []
    for b in range(s.batches):
        ev = evaluate(model, chart, n_points=s.eval_points // s.batches, seed=s.seed + b, scrambles=1)
        rows.append({"kappa_T_measured": ev.T_mean, "det_g_measured": ev.det_mean, "det_g_std": ev.det_std,
                     "eig_min": ev.eig_min, "anti_flat": ev.anti_flat})
    return rows


def curvature_batches(metric_field, chart, s: MemberSettings) -> list:
    """Per-scramble curvature statistics: mean and extremes of |Rm|_g, |Ric|_g and the scalar curvature."""
    rows = []
    for b in range(s.batches):
        x = sampling.sobol(s.curvature_points, chart, seed=s.seed + CURVATURE_STREAM + b)
        c = curvature_scalars(metric_field, x, chunk=s.curvature_points)
        rows.append({"Rm_mean": c.riemann_norm.mean(), "Rm_max": c.riemann_norm.max(),
                     "Ric_mean": c.ricci_norm.mean(), "Ric_max": c.ricci_norm.max(),
                     "scalar_min": c.scalar.min(), "scalar_mean": c.scalar.mean(), "scalar_max": c.scalar.max()})
    return rows


def spectral_values(metric_field, chart, s: MemberSettings) -> tuple:
    """({lambda1, lambda1_Hstar}, their errors: the last refinement's change of lambda1)."""
    sg = spectral_gap(metric_field, chart, n_fourier=s.spectral_n_fourier, n_lambda=s.spectral_n_lambda,
                      n_points=s.spectral_points)
    rel = sg.to_dict()["relative_change_last_refinement"]
    values = {"lambda1": sg.lambda1, "lambda1_Hstar": sg.lambda1_H_star}
    return values, {k: None if rel is None else abs(v) * rel for k, v in values.items()}


def harmonic_values(H) -> tuple:
    """({harmonic{k}_min, harmonic{k}_max}, errors: value x the estimated relative Gram error) for k = 2, 3."""
    values, errors = {}, {}
    for k, spec in ((2, H.two), (3, H.three)):
        hv = spec.harmonic_eigenvalues[: spec.b_harm]
        for end, v in (("min", float(hv.min())), ("max", float(hv.max()))):
            values[f"harmonic{k}_{end}"] = v
            err = spec.harmonic_gram_error
            errors[f"harmonic{k}_{end}"] = abs(v) * err if math.isfinite(err) else None
    return values, errors


def largest(couplings) -> tuple:
    """(|value|, its standard error) of the triplet with the largest |value|."""
    i = int(couplings.values.abs().argmax())
    return float(couplings.values[i].abs()), float(couplings.stderr[i])


def coupling_values(model, H, chart, s: MemberSettings) -> tuple:
    """({Y_max, hitchin_max}, their standard errors) over every triplet of harmonic directions."""
    W, C, _, _ = coupling_study(model, H, chart, s.coupling_points, s.seed)
    (y, y_se), (c, c_se) = largest(W.couplings()), largest(C.couplings())
    return {"Y_max": y, "hitchin_max": c}, {"Y_max": y_se, "hitchin_max": c_se}


def measure_member(model, config, settings: MemberSettings | None = None) -> Measurement:
    """Every QUANTITIES entry of a trained chart model (x (batch, 7) -> packed phi (batch, 35)), in float64
    on the CPU, with its error (module docstring); config: the run's Config (its chart)."""
    s = (settings or MemberSettings()).validate()
    chart, phi = as_chart(config.L), float64_copy(model)
    metric_field, values, errors, seconds = g2.metric_field_from_phi(phi), {}, {}, {}

    def part(name, fn, *args):
        t0 = time.perf_counter()
        v, e = fn(*args)
        values.update(v)
        errors.update(e)
        seconds[name] = time.perf_counter() - t0

    part("evaluation", lambda: batch_mean(evaluation_batches(phi, chart, s)))
    part("curvature", lambda: batch_mean(curvature_batches(metric_field, chart, s)))
    part("spectrum", spectral_values, metric_field, chart, s)
    t0 = time.perf_counter()
    H = harmonic.extract(phi, s.harmonic_points, chart, seed=s.seed)
    values_h, errors_h = harmonic_values(H)
    values.update(values_h)
    errors.update(errors_h)
    seconds["harmonic"] = time.perf_counter() - t0
    part("couplings", coupling_values, phi, H, chart, s)
    ordered = {q: values[q] for q in QUANTITIES}
    return Measurement(values=ordered, errors={q: errors[q] for q in QUANTITIES}, seconds=seconds)

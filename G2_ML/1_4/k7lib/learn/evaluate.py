"""The final numbers of a chart model: randomised quasi-Monte Carlo on fresh scrambled Sobol points."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..batches import chunks
from ..chart import as_chart
from ..inputs import MAX_POINTS, check_field_call, positive_int
from ..sampling import points as sampling
from ..torsion import torsion_packed
from .losses import metric_lambda_derivative, targets
from .schedule import EVAL_STREAM, epoch_seed


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` returns (float64 on fresh scrambled Sobol points, non-positive points excluded).

    n_points, scrambles: points and independent scrambles; T_mean, det_mean: the means of the torsion
    density T and of det g; T_over_kappa, det_rel_err = det_mean / (65/32) - 1; *_stderr: standard
    errors from the spread of the per-scramble means (nan with one scramble); det_std: pointwise spread
    of det g; eig_min: smallest eigenvalue of g; nonpositive: points where phi is not positive;
    anti_flat: neck-weighted RMS of d g / d lambda.
    """
    n_points: int
    scrambles: int
    T_mean: float
    T_stderr: float
    T_over_kappa: float
    T_over_kappa_stderr: float
    det_mean: float
    det_stderr: float
    det_rel_err: float
    det_rel_err_stderr: float
    det_std: float
    eig_min: float
    nonpositive: int
    anti_flat: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model, chart, n_points: int = 4096, seed: int = 0, dtype: torch.dtype = torch.float64,
             method: str = "autograd", chunk: int = 1024, scrambles: int = 8) -> Evaluation:
    """Final numbers on fresh scrambled Sobol points, in `dtype` (float64 by default), chunked.

    The n_points are `scrambles` independent scrambles (sampling.sobol) of n_points / scrambles
    points each (randomised quasi-Monte Carlo): means are over all points, and the standard
    error of a mean is the spread of the per-scramble means / sqrt(scrambles).
    Returns T_mean, T_stderr, T_over_kappa (<T> / kappa_T), det_mean, det_stderr, det_rel_err
    (<det g> / (65/32) - 1), det_std (pointwise spread), eig_min, nonpositive (points where phi
    is not positive or g not finite; the means are over the others), anti_flat (the measure V of
    losses.anti_flat_measure), n_points, scrambles. g = g(phi) everywhere (no rescaling).
    The model is cast to `dtype` for the evaluation (the points are drawn in it) and returned to
    its own dtype after. ValueError naming the argument for n_points outside [1, MAX_POINTS], a
    dtype other than float32/float64, chunk or scrambles < 1.
    """
    positive_int(n_points, "n_points", maximum=MAX_POINTS)
    positive_int(scrambles, "scrambles")
    check_field_call(model, dtype=dtype, chunk=chunk)
    chart = as_chart(chart)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was = {p: p.dtype for p in model.parameters()}
    scrambles = max(1, min(int(scrambles), n_points // 2))
    sizes = [n_points // scrambles + (s < n_points % scrambles) for s in range(scrambles)]
    try:
        sums, eig_min, nonpos = _scramble_sums(model.to(dtype), chart, sizes, seed, dtype, device, method, chunk)
    finally:
        for p, d in was.items():
            p.data = p.data.to(d)
    return _evaluation(sums, eig_min, nonpos, n_points, scrambles)


def _scramble_sums(model, chart, sizes, seed, dtype, device, method, chunk) -> tuple:
    """(sums (scrambles, 6), eig_min, non-positive count): per scramble the count of good points, sum T,
    sum det, sum det^2 (pointwise spread), neck-weighted |dg|^2 and its weight."""
    sums = torch.zeros(len(sizes), 6, dtype=torch.float64, device="cpu")
    eig_min, nonpos = math.inf, 0
    for s, size in enumerate(sizes):
        x_all = sampling.sobol(size, chart, seed=epoch_seed(seed, EVAL_STREAM + s), dtype=dtype, device=device)
        for part in chunks(size, chunk):
            row, low, bad = _chunk_sums(model, chart, x_all[part], method)
            sums[s] += row
            eig_min, nonpos = min(eig_min, low), nonpos + bad
    return sums, eig_min, nonpos


def _chunk_sums(model, chart, x, method) -> tuple:
    """(the six sums of `_scramble_sums` on one chunk, its smallest eigenvalue of g, its bad points)."""
    with torch.no_grad():             # forward-mode derivatives only; no graph to keep
        t = torsion_packed(model, x, method=method, check=False)
        _, dg = metric_lambda_derivative(t)
    finite = (torch.isfinite(t.metric.g).flatten(1).all(1) & torch.isfinite(t.T)
              & torch.isfinite(dg).flatten(1).all(1))
    eye = torch.eye(7, dtype=x.dtype, device=x.device)
    ev = torch.linalg.eigvalsh(torch.where(finite[:, None, None], t.metric.g, eye))
    good = finite & (t.metric.orientation > 0) & (ev[:, 0] > 0)
    low = float(ev[good, 0].min()) if bool(good.any()) else math.inf
    x, t_T, t_det, dg = x[good], t.T[good], t.metric.det[good], dg[good]
    nw = chart.region_weights(x[:, 0])[:, 1]
    row = torch.stack([good.sum().to(x.dtype), t_T.sum(), t_det.sum(), (t_det ** 2).sum(),
                       (nw * dg.pow(2).sum((-2, -1))).sum(), nw.sum()]).double().detach().cpu()
    return row, low, int((~good).sum())


def _evaluation(sums: torch.Tensor, eig_min: float, nonpos: int, n_points: int, scrambles: int) -> Evaluation:
    kappa_T, det_t = targets()
    total = sums.sum(0)
    counted = float(total[0])
    if counted == 0:
        raise ValueError(f"evaluate: phi is not positive at any of the {n_points} points")
    T_mean, det_mean = float(total[1]) / counted, float(total[2]) / counted
    ok = sums[:, 0] > 0
    per = sums[ok, 1:3] / sums[ok, :1]                          # per-scramble means of T and det g
    se = (per.std(0) / math.sqrt(len(per))).tolist() if len(per) > 1 else [math.nan, math.nan]
    return Evaluation(n_points=n_points, scrambles=scrambles, T_mean=T_mean, T_stderr=se[0],
                      T_over_kappa=T_mean / kappa_T, T_over_kappa_stderr=se[0] / kappa_T,
                      det_mean=det_mean, det_stderr=se[1], det_rel_err=det_mean / det_t - 1,
                      det_rel_err_stderr=se[1] / det_t,
                      det_std=math.sqrt(max(float(total[3]) / counted - det_mean**2, 0.0)),
                      eig_min=eig_min, nonpositive=nonpos,
                      anti_flat=math.sqrt(float(total[4]) / max(float(total[5]), 1e-300)))

"""What the notebook reports, computed once: the exported sample of the metric, the standard errors and
the metadata of a run, gathered into `report.export.Results` for the export and the article (which only
write what they are given).

The exported points are a fresh uniform draw of the chart from the run's seed on its own stream
(EXPORT_STREAM), apart from the training batches, the polish points and the evaluation points.
"""
from __future__ import annotations

import copy
import math

import pandas as pd
import torch

from .. import g2, gift
from ..batches import chunks
from ..geometry import couplings as CP
from ..report.export import Results, build_metadata, harmonic_table
from ..sampling import points as sampling
from ..torsion import torsion_packed

EXPORT_STREAM = 7919        # seed offset of the exported points (a prime, apart from the other streams)
COUPLING_STREAM = 1         # seed offset of the coupling points
HITCHIN_POINTS = 256        # Hitchin's cubic takes third derivatives of V: it runs on the first points only
B_HARM_NOTE = ("b_harm is fixed by the chart's topology: the projection keeps one harmonic field per class of "
               "[-L,L] x T^6, so the count cannot come out otherwise and does not test the projection; what the "
               "projection computes is the Gram matrix of the candidates' harmonic parts, given with its estimated "
               "relative error (b2_harmonic_gram_error, b3_harmonic_gram_error); the gap shows that the exact "
               "directions project to round-off")
HARMONIC_TABLE = "Harmonic extraction per degree: the candidates' Gram spectrum (b_eff) and the Hodge projection (b_harm)"


def coupling_study(model, harmonic, chart, n_points: int, seed: int, device=None) -> tuple:
    """(W, C, Y, notes) on n_points fresh uniform chart points of the coupling stream: W the triple wedge
    integral of the L2-orthonormal harmonic 2- and 3-forms of `harmonic` (geometry.couplings.triple_pairing),
    C Hitchin's cubic d3V on every harmonic 3-form direction (hitchin_cubic, on the first HITCHIN_POINTS),
    and the GIFT ansatz's table Y (None when it does not apply) with its notes (gift.coupling_tables)."""
    xy = sampling.chart_points(n_points, chart, seed=seed + COUPLING_STREAM, method="uniform", device=device)
    metric = lambda x: g2.metric_data_packed(model(x)).g                                   # noqa: E731
    phi3 = harmonic.three.representatives()
    W = CP.triple_pairing(harmonic.two.representatives(), phi3, xy, volume=chart.volume, metric=metric)
    C = CP.hitchin_cubic(model, phi3, xy[:HITCHIN_POINTS], volume=chart.volume)
    Y, notes = gift.coupling_tables(W.couplings(), C.couplings())
    return W, C, Y, notes


def metric_sample(model, chart, n_points: int, seed: int) -> tuple:
    """(x (n, 7), g (n, 7, 7), the float64 model) in float64: fresh uniform chart points of the export
    stream and g(phi(x)).

    model: the trained phi (a float64 copy is evaluated, the caller's model is untouched).
    """
    model = copy.deepcopy(model).double().eval()
    p = next(model.parameters())
    x, _ = sampling.uniform(n_points, chart, torch.Generator().manual_seed(seed + EXPORT_STREAM),
                            dtype=torch.float64, device=p.device)
    with torch.no_grad():
        g = torch.cat([g2.metric_data_packed(model(x[s]), check=True).g for s in chunks(n_points, 2048)])
    return x, g, model


def standard_errors(evaluation: dict, model, x: torch.Tensor, method: str = "autograd") -> dict:
    """Standard errors of <T> and <det g> over the fresh points of `learn` 's evaluation.

    When the evaluation reports them (T_stderr, det_stderr: the spread of the means of independent
    Sobol scrambles over sqrt(scrambles)), they are taken as they are. Otherwise s / sqrt(N):
    N = n_points - nonpositive (the points the means are over). det g: s = evaluation["det_std"],
    the same sample as the mean. T: s = evaluation["T_std"] when evaluate reports it; otherwise the
    sample standard deviation of T at the exported points x (another fresh uniform draw), which
    estimates the same spread. Returns {"T_stderr", "det_g_stderr", "stderr_points", "T_std_source"}.
    """
    if "T_stderr" in evaluation and "det_stderr" in evaluation:      # randomised QMC (evaluate)
        return {"T_stderr": evaluation["T_stderr"], "det_g_stderr": evaluation["det_stderr"],
                "stderr_points": int(evaluation["n_points"]), "stderr_scrambles": int(evaluation["scrambles"]),
                "T_std_source": f"spread of {int(evaluation['scrambles'])} independent Sobol scrambles"}
    n = int(evaluation["n_points"]) - int(evaluation.get("nonpositive", 0))
    out = {"stderr_points": n,
           "det_g_stderr": evaluation["det_std"] / math.sqrt(n) if n > 0 else float("nan")}
    if "T_std" in evaluation:
        s, source = float(evaluation["T_std"]), "evaluation points"
    else:
        with torch.no_grad():
            T = torch.cat([torsion_packed(model, x[s], method=method, check=False).T
                           for s in chunks(x.shape[0], 1024)]).double()
        T = T[torch.isfinite(T)]
        s = float(T.std()) if T.numel() > 1 else float("nan")
        source = f"{T.numel()} exported points"
    out.update({"T_stderr": s / math.sqrt(n) if n > 0 else float("nan"), "T_std_source": source})
    return out


def _run_metadata(result, evaluation, harmonic, errors: dict, topology: dict | None) -> dict:
    """The metadata keys of one run beyond build_metadata's: evaluation, harmonic spectra, rollbacks, topology."""
    history = result.history
    extra = {"det_g_std": evaluation.det_std, "T_mean": evaluation.T_mean, **errors,
             "eig_min": evaluation.eig_min, "nonpositive_points": evaluation.nonpositive,
             "anti_flat": evaluation.anti_flat, "n_eval_points": evaluation.n_points,
             "n_harmonic_points": harmonic.n_points, "run": result.run_dir.name,
             "harmonic_spectrum_2": harmonic.two.harmonic_eigenvalues,
             "harmonic_spectrum_3": harmonic.three.harmonic_eigenvalues,
             "b2_harm_gap": harmonic.two.harmonic_gap, "b3_harm_gap": harmonic.three.harmonic_gap,
             "b2_harmonic_gram_error": harmonic.two.harmonic_gram_error,
             "b3_harmonic_gram_error": harmonic.three.harmonic_gram_error,
             "harmonic_tolerance": harmonic.settings.tolerance, "b_harm_note": B_HARM_NOTE,
             # rollbacks only (the events also hold the polish, early stops and learning-rate changes)
             "rollbacks": int(history["rollbacks"].max()) if "rollbacks" in history and len(history) else 0}
    if topology:
        extra.update({"b2_topology": topology.get("b2"), "b3_topology": topology.get("b3"),
                      "topology_note": topology.get("note", "")})
    return extra


def results_from_run(result, evaluation, harmonic, couplings: pd.DataFrame | None = None, *,
                     n_points: int = 4096, seed: int | None = None, figures: dict | None = None,
                     topology: dict | None = None, known=None) -> Results:
    """Collect a trained run (its TrainResult), its float64 evaluation (Evaluation), the harmonic
    extraction (HarmonicResult) and the coupling table into `report.export.Results`.

    coords are n_points fresh uniform chart points (`metric_sample`) and metric = g(phi(coords)) in
    float64. topology: optional {"b2": .., "b3": .., "note": ..} of what the chart supports; known:
    optional validation on a known G2 metric (learn.known.KnownReport), carried as "known_validation".
    """
    cfg = result.config
    x, g, model = metric_sample(result.model, cfg.chart, n_points, cfg.seed if seed is None else seed)
    errors = standard_errors(evaluation.to_dict(), model, x, cfg.method)
    metadata = build_metadata(cfg.to_dict(), b2_eff=harmonic.b2_eff, b3_eff=harmonic.b3_eff,
                              b2_harm=harmonic.b2_harm, b3_harm=harmonic.b3_harm,
                              kappa_T_measured=evaluation.T_mean, det_g_measured=evaluation.det_mean,
                              extra=_run_metadata(result, evaluation, harmonic, errors, topology))
    if known is not None:
        metadata["known_validation"] = known.summary()
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    return Results(model_state=state, config=cfg.to_dict(), coords=x.double().cpu(), metric=g.double().cpu(),
                   history=result.history, metadata=metadata, couplings=couplings,
                   tables={HARMONIC_TABLE: harmonic_table(harmonic)}, figures=dict(figures or {}))

"""Region statistics of a G2 geometry on the chart: left block, neck and right block.

`region_table` (per-point det g, anisotropy and deviations from the background), `region_statistics`
(its summary), `hotspots` (where the largest values of a field sit) and `refinement_guidance` (where
to sample more). Regions are those of `chart.region_weights` (the largest partition-of-unity weight).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..batches import chunks
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..g2 import as_packed_field
from ..inputs import check_field_call, check_points

REGIONS = ("left", "neck", "right")


def region_labels(lam: torch.Tensor, chart, region_weights=None) -> torch.Tensor:
    """Index 0/1/2 (left/neck/right) of the largest partition-of-unity weight at each lambda (batch,).

    chart: a `Chart` (or its L); region_weights(lam, L) -> (batch, 3) overrides `Chart.region_weights`.
    """
    chart = as_chart(chart)
    w = chart.region_weights(lam) if region_weights is None else region_weights(lam, chart.L)
    if w.shape != (lam.shape[0], 3):
        raise ValueError(f"region_weights must return (batch, 3) left/neck/right weights, got {tuple(w.shape)}")
    return w.argmax(-1)


@dataclass(frozen=True)
class Hotspots:
    """The top `fraction` of points by a value: `count` points at or above `threshold` (largest `max`);
    lambda_mean/lambda_std of their neck coordinate; regions: {name: {points, hotspots,
    hotspot_share_of_region}}; lambda_bins: {edges, all, hotspots} histograms; mask (batch,) bool."""
    fraction: float
    count: int
    threshold: float
    max: float
    lambda_mean: float
    lambda_std: float
    regions: dict
    lambda_bins: dict
    mask: torch.Tensor

    def to_dict(self) -> dict:
        """Every field but the mask (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "mask"}


def hotspots(x: torch.Tensor, values: torch.Tensor, chart, fraction: float = 0.05,
             region_weights=None, n_bins: int = 8) -> "Hotspots":
    """Where the largest values (e.g. |Ric|_g) sit: the top `fraction` of points by value.

    x (batch, 7), values (batch,). Returns `Hotspots`: threshold, count, per-region counts and the
    fraction of each region's points that are hotspots, a lambda histogram of hotspots against all
    points, and the mask (batch,) of the hotspot points.
    """
    check_points(x)
    L = as_chart(chart).L
    if not 0 < fraction < 1:
        raise ValueError(f"hotspot fraction must lie in (0, 1), got {fraction}")
    v = values.detach().double()
    if v.shape != (x.shape[0],):
        raise ValueError(f"values must have shape ({x.shape[0]},), got {tuple(v.shape)}")
    n_hot = max(1, int(math.ceil(fraction * v.numel())))
    idx = torch.topk(v, n_hot).indices
    hot = torch.zeros_like(v, dtype=torch.bool)
    hot[idx] = True
    lam = x[:, 0].detach().double()
    labels = region_labels(lam, chart, region_weights)
    edges = np.linspace(-L, L, n_bins + 1)
    all_hist = np.histogram(lam.numpy(), bins=edges)[0]
    hot_hist = np.histogram(lam[hot].numpy(), bins=edges)[0]
    regions = {}
    for r, name in enumerate(REGIONS):
        in_r = labels == r
        regions[name] = {"points": int(in_r.sum()), "hotspots": int((hot & in_r).sum()),
                         "hotspot_share_of_region": float((hot & in_r).sum() / in_r.sum()) if in_r.any() else None}
    return Hotspots(fraction=fraction, count=n_hot, threshold=float(v[idx].min()), max=float(v.max()),
                    lambda_mean=float(lam[hot].mean()), lambda_std=float(lam[hot].std()) if n_hot > 1 else 0.0,
                    regions=regions, lambda_bins={"edges": edges.tolist(), "all": all_hist.tolist(),
                                                  "hotspots": hot_hist.tolist()}, mask=hot)


def _metric_deviation(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """max_i |log mu_i| over the eigenvalues mu of g_ref^{-1} g (0 iff g = g_ref), (batch,)."""
    Lr = torch.linalg.cholesky(g_ref)
    X = torch.linalg.solve_triangular(Lr, g, upper=False)
    S = torch.linalg.solve_triangular(Lr, X.transpose(-1, -2), upper=False)
    mu = torch.linalg.eigvalsh(0.5 * (S + S.transpose(-1, -2)))
    return mu.log().abs().amax(-1)


def region_table(phi_field, x: torch.Tensor, chart, background=None, region_weights=None,
                 chunk: int = 1024) -> pd.DataFrame:
    """Per-point geometry of phi on the chart: one row per point of x (batch, 7).

    Columns: lam, region (left/neck/right by the largest partition weight), det_g, anisotropy
    (largest / smallest eigenvalue of g), and when a background field x -> phi_bg is given:
    phi_deviation = |phi - phi_bg|_{g_bg} / |phi_bg|_{g_bg} and metric_deviation =
    max |log eig(g_bg^{-1} g)| (both 0 iff phi = phi_bg, resp. g = g_bg).
    """
    check_field_call(phi_field, x, chunk=chunk)
    chart = as_chart(chart)
    field_ = as_packed_field(phi_field)
    rows = {"lam": [], "det_g": [], "anisotropy": [], "phi_deviation": [], "metric_deviation": []}
    with torch.no_grad():
        for sl in chunks(x.shape[0], chunk):
            p = field_(x[sl]).double()
            m = g2.metric_data_packed(p, check=True)
            ev = torch.linalg.eigvalsh(m.g)
            rows["lam"].append(x[sl, 0].double())
            rows["det_g"].append(m.det)
            rows["anisotropy"].append(ev[:, -1] / ev[:, 0])
            if background is not None:
                pb = background(x[sl]).double()
                mb = g2.metric_data_packed(pb, check=True)
                diff = p - pb
                rows["phi_deviation"].append((F.inner_packed(diff, diff, 3, mb.g, mb.ginv, mb.det)
                                              / F.inner_packed(pb, pb, 3, mb.g, mb.ginv, mb.det)).sqrt())
                rows["metric_deviation"].append(_metric_deviation(m.g, mb.g))
    data = {k: torch.cat(v).cpu().numpy() for k, v in rows.items() if v}
    labels = region_labels(torch.as_tensor(data["lam"], device="cpu"), chart, region_weights).numpy()
    df = pd.DataFrame(data)
    df.insert(1, "region", pd.Categorical(np.array(REGIONS)[labels], categories=list(REGIONS)))
    return df


def region_statistics(table: pd.DataFrame) -> dict:
    """Summary of a `region_table`: det g distribution, per-region statistics and neck versus bulk.

    Bulk = left and right blocks together. det g is compared with det_g_target = 65/32
    (`ZeroParamGeometry`), reported as an exact fraction and its float.
    """
    target = ZeroParamGeometry().det_g_target
    det = table["det_g"].to_numpy()
    q = np.quantile(det, [0.01, 0.5, 0.99])
    out = {"det_g": {"target": str(target), "target_float": float(target), "mean": float(det.mean()),
                     "std": float(det.std()), "min": float(det.min()), "max": float(det.max()),
                     "q01": float(q[0]), "median": float(q[1]), "q99": float(q[2]),
                     "mean_relative_deviation": float(np.abs(det / float(target) - 1).mean())}}
    cols = [c for c in ("anisotropy", "phi_deviation", "metric_deviation", "det_g") if c in table]
    regions = {}
    for name in REGIONS:
        sub = table[table["region"] == name]
        regions[name] = {"points": int(len(sub))}
        for c in cols:
            regions[name][c] = ({"mean": float(sub[c].mean()), "max": float(sub[c].max())} if len(sub) else None)
    out["regions"] = regions
    neck = table[table["region"] == "neck"]
    bulk = table[table["region"] != "neck"]
    nvb = {}
    for c in cols:
        if len(neck) and len(bulk):
            nvb[c] = {"neck_mean": float(neck[c].mean()), "bulk_mean": float(bulk[c].mean()),
                      "neck_over_bulk": float(neck[c].mean() / bulk[c].mean()) if bulk[c].mean() != 0 else None}
    out["neck_vs_bulk"] = nvb
    return out


def refinement_guidance(lam: torch.Tensor, ricci_norm: torch.Tensor, torsion_density: torch.Tensor, chart,
                        region_weights=None, n_bins: int = 8) -> dict:
    """Where to refine a mesh or sample more: lambda bins and regions ranked by curvature and torsion.

    score = mean |Ric|_g in the cell / mean over all points + mean T in the cell / mean over all
    (T = sqrt(|d phi|^2 + |d psi|^2)); `share` = score / total score, a suggested split of new
    points. Inputs (batch,) each; returns a JSON-ready dict.
    """
    L = as_chart(chart).L
    lam, ric, tor = (t.detach().double().cpu().contiguous() for t in (lam, ricci_norm, torsion_density))
    if not (lam.shape == ric.shape == tor.shape) or lam.ndim != 1:
        raise ValueError(f"lam, ricci_norm and torsion_density must be (batch,) of equal length, got "
                         f"{tuple(lam.shape)}, {tuple(ric.shape)}, {tuple(tor.shape)}")
    r0, t0 = float(ric.mean()), float(tor.mean())

    def score(mask):
        r = float(ric[mask].mean()) if mask.any() else 0.0
        t = float(tor[mask].mean()) if mask.any() else 0.0
        return r, t, (r / r0 if r0 > 0 else 0.0) + (t / t0 if t0 > 0 else 0.0)

    edges = torch.linspace(-L, L, n_bins + 1, dtype=torch.float64, device="cpu")
    idx = torch.bucketize(lam, edges[1:-1], right=True)
    bins = []
    for b in range(n_bins):
        r, t, s = score(idx == b)
        bins.append({"lambda_lo": float(edges[b]), "lambda_hi": float(edges[b + 1]), "points": int((idx == b).sum()),
                     "mean_ricci_norm": r, "mean_torsion": t, "score": s})
    labels = region_labels(lam, chart, region_weights)
    regs = []
    for k, name in enumerate(REGIONS):
        r, t, s = score(labels == k)
        regs.append({"region": name, "points": int((labels == k).sum()), "mean_ricci_norm": r, "mean_torsion": t,
                     "score": s})
    for group in (bins, regs):
        total = sum(c["score"] for c in group)
        for c in group:
            c["share"] = c["score"] / total if total > 0 else None
        group.sort(key=lambda c: -c["score"])
    return {"method": "score = <|Ric|>_cell/<|Ric|> + <T>_cell/<T>; cells ranked by score",
            "mean_ricci_norm": r0, "mean_torsion": t0, "lambda_bins": bins, "regions": regs}

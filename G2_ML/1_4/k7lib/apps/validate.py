"""G2 identity report on a learned 3-form: the checks of seed 002, with the real torsion.

Per point (float64, g = g(phi), psi = *phi):
  |phi|^2_g = 7,  |psi|^2_g = 7,  (phi ^ psi) / vol_g = 7,  |psi - *phi|_g / |*phi|_g = 0
(Bryant, "Some remarks on G2-structures", 2005, §2; `k7lib.g2.g2_identities`), and the torsion
|d phi|_g, |d psi|_g, T = sqrt(|d phi|^2 + |d psi|^2) with the torsion classes tau0..tau3
(`k7lib.torsion`), together with the split identities
  |d phi|^2 = 7 tau0^2 + 36 |tau1|^2 + |tau3|^2,   |d psi|^2 = 48 |tau1|^2 + |tau2|^2   (docs/conventions.md §3)
whose residuals test the decomposition itself. The model has no separate psi, so the psi
check measures round-off of the Hodge star only; it is reported as such.

Results come as a per-point pandas DataFrame, a summary dict (mean, std, min, max, and the
exact value with the largest deviation where one exists) and histograms in a plots folder.
`validate_run` is the notebook's call and backs `python -m k7lib validate` (`cli`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..batches import chunks
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..g2 import as_packed_field
from ..inputs import check_points, positive_int
from ..learn import runs
from ..learn.model import float64_copy
from ..report import figures
from ..sampling import points as sampling
from ..torsion import torsion_classes_packed, torsion_packed

# Exact value of each per-point quantity where the geometry fixes one (G2 identities,
# consistency residuals); torsion quantities have no exact value.
EXACT = {"norm2_phi": 7.0, "norm2_psi": 7.0, "phi_wedge_psi": 7.0, "psi_error": 0.0,
         "dphi_split_residual": 0.0, "dpsi_split_residual": 0.0}
DESCRIPTION = {
    "lam": "neck coordinate lambda",
    "det_g": "det g(phi) (target 65/32)",
    "norm2_phi": "|phi|^2_g (exact 7)",
    "norm2_psi": "|psi|^2_g (exact 7)",
    "phi_wedge_psi": "(phi ^ psi) / vol_g (exact 7)",
    "psi_error": "|psi - *phi|_g / |*phi|_g, psi = *phi: round-off of the star",
    "norm_dphi": "|d phi|_g",
    "norm_dpsi": "|d psi|_g = |d*phi|_g",
    "T": "sqrt(|d phi|^2 + |d psi|^2) (kappa_T = 1/61 is the training target of its mean)",
    "tau0": "tau0 = (1/7) *(phi ^ d phi)",
    "norm_tau1": "|tau1|_g",
    "norm_tau2": "|tau2|_g",
    "norm_tau3": "|tau3|_g",
    "dphi_split_residual": "(|dphi|^2 - 7 tau0^2 - 36|tau1|^2 - |tau3|^2) / max(|dphi|^2, tiny)",
    "dpsi_split_residual": "(|dpsi|^2 - 48|tau1|^2 - |tau2|^2) / max(|dpsi|^2, tiny)",
}


def identity_table(phi_field, x: torch.Tensor, chunk: int = 256, method: str = "autograd",
                   progress: bool = False) -> pd.DataFrame:
    """Per-point G2 identities and torsion of phi_field at x (batch, 7), in float64; one row per point.

    phi_field: x -> packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms. Columns: see DESCRIPTION.
    A non-positive phi raises ValueError (with the number of failing points).
    """
    check_points(x)
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    field_ = as_packed_field(phi_field)
    x = x.double()
    cols: dict[str, list] = {k: [] for k in DESCRIPTION}
    for sl in chunks(x.shape[0], int(chunk), progress, "G2 identities"):
        xs = x[sl]
        t = torsion_packed(field_, xs, method=method, check=True)
        c = torsion_classes_packed(t)
        m = t.metric
        phi, dphi2, dpsi2 = t.phi.detach(), t.norm2_dphi.detach(), t.norm2_dpsi.detach()
        ident = g2.g2_identities(F.unpack(phi, 3))
        n1 = torch.einsum("zi,zij,zj->z", c.tau1, m.ginv, c.tau1).detach()
        n2 = F.inner_packed(c.tau2, c.tau2, 2, m.g, m.ginv, m.det).detach()
        n3 = F.inner_packed(c.tau3, c.tau3, 3, m.g, m.ginv, m.det).detach()
        tau0 = c.tau0.detach()
        tiny = torch.finfo(torch.float64).tiny
        vals = {
            "lam": xs[:, 0], "det_g": m.det.detach(),
            "norm2_phi": ident.norm2_phi, "norm2_psi": ident.norm2_psi,
            "phi_wedge_psi": ident.phi_wedge_psi, "psi_error": ident.psi_error,
            "norm_dphi": dphi2.clamp_min(0).sqrt(), "norm_dpsi": dpsi2.clamp_min(0).sqrt(),
            "T": (dphi2 + dpsi2).clamp_min(0).sqrt(), "tau0": tau0,
            "norm_tau1": n1.clamp_min(0).sqrt(), "norm_tau2": n2.clamp_min(0).sqrt(), "norm_tau3": n3.clamp_min(0).sqrt(),
            "dphi_split_residual": (dphi2 - 7 * tau0**2 - 36 * n1 - n3) / dphi2.clamp_min(tiny),
            "dpsi_split_residual": (dpsi2 - 48 * n1 - n2) / dpsi2.clamp_min(tiny),
        }
        for k, v in vals.items():
            cols[k].append(v.detach().cpu())
    return pd.DataFrame({k: torch.cat(v).numpy() for k, v in cols.items()})


def identity_summary(table: pd.DataFrame) -> dict:
    """mean, std, min, max of every column; exact value and max |deviation| where one exists; targets."""
    out = {}
    for col in table.columns:
        v = table[col].to_numpy()
        row = {"description": DESCRIPTION.get(col, col), "mean": float(v.mean()), "std": float(v.std()),
               "min": float(v.min()), "max": float(v.max())}
        if col in EXACT:
            row["exact"] = EXACT[col]
            row["max_abs_deviation"] = float(np.abs(v - EXACT[col]).max())
        out[col] = row
    zp = ZeroParamGeometry()
    if "T" in table:
        out["kappa_T_check"] = {"target": str(zp.kappa_T), "target_float": float(zp.kappa_T),
                                "T_mean": float(table["T"].mean()),
                                "relative_deviation": float(table["T"].mean() / float(zp.kappa_T) - 1)}
    if "det_g" in table:
        out["det_g_check"] = {"target": str(zp.det_g_target), "target_float": float(zp.det_g_target),
                              "mean": float(table["det_g"].mean()),
                              "relative_deviation": float(table["det_g"].mean() / float(zp.det_g_target) - 1)}
    return out


def g2_identity_report(phi_field, x: torch.Tensor, chunk: int = 256, method: str = "autograd",
                       progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """(per-point DataFrame, summary dict) of the G2 identities and torsion at points x (batch, 7)."""
    table = identity_table(phi_field, x, chunk=chunk, method=method, progress=progress)
    return table, identity_summary(table)


@dataclass(frozen=True)
class Validation:
    """What `validate_run` measured: per-identity statistics (`identity_summary`) on n_points Sobol points
    of the chart, the time taken and the files written (summary, points, plots)."""
    L: float
    profile: str | None
    n_points: int
    seed: int
    statistics: dict
    time_s: float
    files: dict

    def to_dict(self) -> dict:
        return asdict(self)


def validate_run(model, config, n_points: int = 1024, out_dir=None, seed: int = 0, chunk: int = 256,
                 progress: bool = False) -> Validation:
    """G2 identity report of a trained model on n_points Sobol points of the chart [-L, L] x T^6.

    model: x (batch, 7) -> packed phi (evaluated on a float64 copy); config: has `.L` (the chart's
    half-length). Writes out_dir/g2_validation.json, out_dir/g2_validation_points.csv and histograms in
    out_dir/plots/ (out_dir defaults to G2_ML/1_4/outputs). Returns a `Validation`.
    """
    chart = as_chart(getattr(config, "L", None))
    positive_int(n_points, "n_points")
    out = runs.output_folder(out_dir)
    phi_field = float64_copy(model)
    t0 = time.perf_counter()
    x = sampling.sobol(n_points, chart, seed=seed)
    table, summary = g2_identity_report(phi_field, x, chunk=chunk, progress=progress)
    elapsed = time.perf_counter() - t0
    plots = figures.identity_histograms(table, out / "plots", EXACT, DESCRIPTION)
    table.to_csv(out / "g2_validation_points.csv", index=False)
    result = Validation(L=chart.L, profile=getattr(config, "profile", None), n_points=n_points, seed=seed,
                        statistics=summary, time_s=elapsed,
                        files={"summary": str(out / "g2_validation.json"), "points": str(out / "g2_validation_points.csv"),
                               "plots": [str(p) for p in plots]})
    (out / "g2_validation.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result

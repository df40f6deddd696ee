"""Analysis of the link's G2 structures: the seed's identities (phi ^ psi = 7 vol, d psi = 0,
d phi = omega ^ omega) checked component by component for the analytic fields of `link` and for the
learned fits, as tables.
"""
from __future__ import annotations

import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..derivatives import value_and_jacobian
from .link import (
    TRIU,
    LinkStructure,
    chart_forms,
    check_chart,
    metric_to_vector,
    phi_psi_packed,
    vector_to_metric,
)


def identity_residuals(phi_psi_fn, g_fn, x: torch.Tensor, method: str = "autograd") -> dict:
    """Component-wise residuals of the seed's identities for a field x -> (phi, psi) packed.

    g_fn(x, phi) -> (batch, 7, 7) is the metric used for vol_g. Returns per point:
      phi_wedge_psi (batch,) = (phi ^ psi) / vol_g - 7,
      d_psi (batch, 21)      = components of d psi,
      d_phi_minus_omega2 (batch, 35) = components of d phi - omega ^ omega,
    and the reference scales rms_psi, rms_omega2 (root mean square components over the batch).
    """
    def field(y):
        phi, psi = phi_psi_fn(y)
        return phi, psi, chart_forms(y).omega

    (phi, psi, omega), jac = value_and_jacobian(field, x, method)
    d_phi, d_psi = F.d_from_jacobian(jac[0], 3), F.d_from_jacobian(jac[1], 4)
    om2 = F.wedge_packed(omega, omega, 2, 2)
    g = g_fn(x, phi)
    vol = torch.linalg.det(g).clamp_min(0).sqrt()
    return {
        "phi_wedge_psi": F.wedge_packed(phi, psi, 3, 4)[:, 0] / vol - 7,
        "d_psi": d_psi,
        "d_phi_minus_omega2": d_phi - om2,
        "rms_psi": float(psi.detach().pow(2).mean().sqrt()),
        "rms_omega2": float(om2.detach().pow(2).mean().sqrt()),
    }


def _labels(k: int, prefix: str) -> list[str]:
    return [prefix + "".join(map(str, I)) for I in F.combos(k)]


def _fields(models: dict, structure: LinkStructure, x: torch.Tensor) -> tuple:
    """({name: (x -> (phi, psi), (x, phi) -> g)} of the analytic and learned fields, {check: (error, scale)}
    of the learned fits against the analytic phi and g)."""
    exact = lambda y: phi_psi_packed(y, structure)                 # noqa: E731
    g_of_phi = lambda y, phi: g2.metric_data_packed(phi).g          # noqa: E731

    def star(y):
        phi = exact(y)[0]
        return phi, g2.psi_packed(phi, check=False)

    fields_, fits = {"analytic": (exact, g_of_phi), "analytic_star": (star, g_of_phi)}, {}
    if "3form" not in models:
        return fields_, fits
    net, metric = models["3form"], models.get("metric")

    def learned(y):
        phi = net(y)
        return phi, g2.psi_packed(phi, check=False)

    fields_["learned"] = (learned, g_of_phi if metric is None else (lambda y, phi: vector_to_metric(metric(y))))
    with torch.no_grad():
        phi_true = exact(x)[0]
        fits["phi_fit"] = (net(x) - phi_true, float(phi_true.pow(2).mean().sqrt()))
        if metric is not None:
            g_true = metric_to_vector(g2.metric_data_packed(phi_true).g)
            fits["metric_fit"] = (metric(x) - g_true, float(g_true.pow(2).mean().sqrt()))
    return fields_, fits


def _rows(field: str, check: str, err: torch.Tensor, ref: float, labels) -> tuple:
    """(summary row, component rows) of one check's |error| (batch,) or (batch, n) against its scale."""
    row = {"field": field, "check": check, "mean_abs": float(err.mean()), "max_abs": float(err.max()),
           "reference_scale": ref, "max_relative": float(err.max()) / ref}
    comps = [] if labels is None else [{"field": field, "check": check, "component": lab, "mean_abs": float(col.mean()),
                                        "max_abs": float(col.max())} for lab, col in zip(labels, err.T)]
    return row, comps


def analyse(models: dict, structure: LinkStructure, x: torch.Tensor, method: str = "autograd"):
    """Tables (pandas) comparing the analytic structure with the learned fields at chart points x.

    Fields: 'analytic' (phi, psi = omega^2/2 - eta ^ Im Omega, g = g(phi)), 'analytic_star' (psi = *phi),
    'learned' (phi_NN, psi = *_{g(phi_NN)} phi_NN, g = g_NN when a metric model exists, else g(phi_NN)).
    Returns (summary, components, residuals): summary has one row per (field, check) with mean and max
    of |error| and the error relative to the reference scale; components has one row per (field, check,
    component); residuals holds the raw per-point arrays for plots.
    """
    check_chart(x)
    fields_, fits = _fields(models, structure, x)
    rows, comp_rows, residuals = [], [], {}
    for name, (fn, g_fn) in fields_.items():
        res = residuals[name] = identity_residuals(fn, g_fn, x, method)
        for check, ref, k, prefix in (("phi_wedge_psi", 7.0, None, None), ("d_psi", res["rms_psi"], 5, "dpsi_"),
                                      ("d_phi_minus_omega2", res["rms_omega2"], 4, "dphi-w2_")):
            row, comps = _rows(name, check, res[check].detach().abs(), ref, None if k is None else _labels(k, prefix))
            rows.append(row)
            comp_rows += comps
    for check, (err, ref) in fits.items():
        residuals["learned"][check] = err
        labels = _labels(3, "phi_") if check == "phi_fit" else \
            [f"g_{i}{j}" for i, j in zip(TRIU[0].tolist(), TRIU[1].tolist())]
        row, comps = _rows("learned", check, err.abs(), ref, labels)
        rows.append(row)
        comp_rows += comps
    return pd.DataFrame(rows), pd.DataFrame(comp_rows), residuals

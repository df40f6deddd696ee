"""Figures and tables the notebook shows: the chart, the training history, the summary.

Each function returns a matplotlib Figure (no pyplot state) or a pandas DataFrame.
"""
from __future__ import annotations

import pandas as pd
import torch
from matplotlib.figure import Figure

from . import chart, g2
from .constants import ZeroParamGeometry


def chart_figure(L: float, n: int = 401) -> Figure:
    """Region weights and twist angle along lambda, and the eigenvalues of g(phi_bg)(lambda)."""
    lam = torch.linspace(-L, L, n, dtype=torch.float64)
    w = chart.region_weights(lam, L)
    x = torch.zeros(n, 7, dtype=torch.float64)
    x[:, 0] = lam
    m = g2.metric_data_packed(chart.phi_background(x, L))
    ev = torch.linalg.eigvalsh(m.g)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    for k, name in enumerate(("left", "neck", "right")):
        a.plot(lam, w[:, k], label=name)
    a.set(xlabel="λ", ylabel="weight", title="regions (partition of unity)")
    a.legend()
    b.plot(lam, chart.twist_angle(lam, L))
    b.axhline(torch.pi / 2, ls=":", color="grey")
    b.set(xlabel="λ", ylabel="θ(λ)", title="hyper-Kähler twist angle (0 → π/2)")
    c.plot(lam, ev)
    c.set(xlabel="λ", ylabel="eigenvalues of g(φ_bg)",
          title=f"background metric, det g = {float(m.det.mean()):.6f}")
    return fig


def history_figure(history: pd.DataFrame, config=None) -> Figure:
    """Loss, <T>/kappa_T and <det g>/(65/32) against the global epoch, phase boundaries dashed.

    The final polish (history row with phase_name "polish": its means on the polish points) is a
    marker at the last epoch on the two target panels; its loss is not a training loss and is left out.
    """
    z = ZeroParamGeometry()
    fig = Figure(figsize=(9, 2.8), layout="constrained")         # sized to a page width (results_v1_4.tex)
    a, b, c = fig.subplots(1, 3)
    polished = history["phase_name"] == "polish" if "phase_name" in history else pd.Series(False, index=history.index)
    h, pol = history[~polished], history[polished]
    ep = h["global_epoch"]
    a.semilogy(ep, h["loss"])
    a.set(xlabel="epoch", ylabel="loss", title="total loss")
    b.plot(ep, h["T_mean"] / float(z.kappa_T))
    b.axhline(1, color="k", ls=":")
    b.set(xlabel="epoch", ylabel="<T> / κ_T", title="torsion vs 1/61")
    c.plot(ep, h["det_mean"] / float(z.det_g_target))
    c.axhline(1, color="k", ls=":")
    c.set(xlabel="epoch", ylabel="<det g> / (65/32)", title="det g vs 65/32")
    if len(pol):
        b.plot(pol["global_epoch"], pol["T_mean"] / float(z.kappa_T), "r*", ms=9, label="after the polish")
        c.plot(pol["global_epoch"], pol["det_mean"] / float(z.det_g_target), "r*", ms=9, label="after the polish")
        b.legend(fontsize=7, loc="upper right")
    if "phase" in h:
        starts = h.groupby("phase")["global_epoch"].min()
        for ax in (a, b, c):
            for s in starts.iloc[1:]:
                ax.axvline(s, color="grey", lw=0.6, ls="--")
    return fig


def summary_table(outputs: dict) -> pd.DataFrame:
    """Targets against measured values, read back from the exported metadata (export.read_outputs).

    The column "chart supports" gives the chart's own Betti numbers where the metadata has them.
    """
    md = outputs["metadata"]
    top = {"b2": md.get("b2_topology"), "b3": md.get("b3_topology")}
    rows = [
        ("kappa_T = <T>", md["kappa_T_target"], md["kappa_T_measured"], None),
        ("det g", md["det_g_target"], md["det_g_measured"], None),
        ("b2: Gram rank b2_eff", md["b2_target"], md["b2_eff"], top["b2"]),
        ("b2: harmonic b2_harm (Hodge projection)", md["b2_target"], md["b2_harm"], top["b2"]),
        ("b3: Gram rank b3_eff", md["b3_target"], md["b3_eff"], top["b3"]),
        ("b3: harmonic b3_harm (Hodge projection)", md["b3_target"], md["b3_harm"], top["b3"]),
    ]
    df = pd.DataFrame(rows, columns=["quantity", "target", "reached", "chart supports"]).set_index("quantity")
    df["relative"] = df["reached"] / df["target"].astype(float) - 1
    return df

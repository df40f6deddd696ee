"""Every figure of k7lib: the chart, the training history, the summary, an exploration's six panels,
the G2 identity histograms, the link's residuals and a seed ensemble's members.

Each function returns a matplotlib Figure (no pyplot state) or a pandas DataFrame, or saves a
Figure to the path it is given and returns the path; no other module imports matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .. import g2
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..geometry.regions import REGIONS
from ..geometry.spectrum import SEED_GAP_PRODUCT
from .latex import uncertain_text, value_text


def chart_figure(chart, n: int = 401) -> Figure:
    """Region weights and twist angle along lambda, and the eigenvalues of g(phi_bg)(lambda), of a `Chart` (or L)."""
    chart = as_chart(chart)
    lam = torch.linspace(-chart.L, chart.L, n, dtype=torch.float64)
    w = chart.region_weights(lam)
    x = torch.zeros(n, 7, dtype=torch.float64)
    x[:, 0] = lam
    m = g2.metric_data_packed(chart.phi_background(x))
    ev = torch.linalg.eigvalsh(m.g)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    for k, name in enumerate(("left", "neck", "right")):
        a.plot(lam, w[:, k], label=name)
    a.set(xlabel="λ", ylabel="weight", title="regions (partition of unity)")
    a.legend()
    b.plot(lam, chart.twist_angle(lam))
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
    """Targets against measured values, read back from the exported metadata (export.read_outputs), as text.

    Exact targets are written as fractions (metadata "exact"), measured values with their standard
    errors and the relative deviation reached/target - 1 with its own by `latex.uncertain_text` (two
    significant digits); counts as integers. The column "chart supports" gives the chart's own Betti
    numbers where the metadata has them.
    """
    md = outputs["metadata"]
    exact = md.get("exact") if isinstance(md.get("exact"), dict) else {}
    top = {"b2": md.get("b2_topology"), "b3": md.get("b3_topology")}

    def measured(label, target_key, exact_key, key, se_key):
        target, value, se = md[target_key], md[key], md.get(se_key)
        rel_se = se / abs(target) if se is not None else None
        return (label, value_text(exact.get(exact_key, target)), uncertain_text(value, se),
                uncertain_text(value / target - 1, rel_se), "")

    def count(label, k, kind):
        return (label, value_text(md[f"{k}_target"]), value_text(md[f"{k}_{kind}"]),
                value_text(md[f"{k}_{kind}"] / md[f"{k}_target"] - 1, 3), value_text(top[k]) if top[k] is not None else "")

    rows = [measured("kappa_T = <T>", "kappa_T_target", "kappa_T", "kappa_T_measured", "T_stderr"),
            measured("det g", "det_g_target", "det_g", "det_g_measured", "det_g_stderr"),
            count("b2: Gram rank b2_eff", "b2", "eff"), count("b2: harmonic b2_harm (Hodge projection)", "b2", "harm"),
            count("b3: Gram rank b3_eff", "b3", "eff"), count("b3: harmonic b3_harm (Hodge projection)", "b3", "harm")]
    return pd.DataFrame(rows, columns=["quantity", "target", "reached", "relative", "chart supports"]).set_index("quantity")


def with_uncertainty(table: pd.DataFrame, value: str, stderr: str, name: str | None = None) -> pd.DataFrame:
    """The table with the columns value and stderr replaced by one text column (`latex.uncertain_text`),
    named name (default "value(stderr)"), where value was."""
    out = table.copy()
    col = name or f"{value}({stderr})"
    out.insert(list(out.columns).index(value), col,
               [uncertain_text(v, e) for v, e in zip(table[value].tolist(), table[stderr].tolist())])
    return out.drop(columns=[value, stderr])


def coupling_display(table: pd.DataFrame) -> pd.DataFrame:
    """gift.compact_table for reading: Y with its standard error as text, eps and the mapped ratios to four
    digits, the flag consistent_with_zero as yes/no and "—" (not mapped) in place of every mapped ratio of
    a coupling consistent with zero."""
    out = with_uncertainty(table, "Y", "Y_stderr", "Y(σ_Y)")
    mapped = [c for c in out.columns if f"{c} GIFT" in out.columns]
    flagged = out["consistent_with_zero"].astype(bool) if "consistent_with_zero" in out else pd.Series(False, index=out.index)
    for c in mapped + ["epsilon"]:
        out[c] = [value_text(v, 4) for v in out[c].tolist()]
    out.loc[flagged, mapped] = "—"
    if "consistent_with_zero" in out:
        out["consistent_with_zero"] = flagged.map({True: "yes", False: "no"})
    return out


def hist_range(values, rel: float = 1e-9):
    """Histogram range of values, widened when they (nearly) coincide so the bins stay finite."""
    v = np.asarray(values, dtype=float)
    lo, hi = float(v.min()), float(v.max())
    pad = rel * max(abs(lo), abs(hi), 1e-300) if hi - lo <= rel * max(abs(lo), abs(hi)) else 0.0
    return lo - pad if pad else lo, hi + pad if pad else hi


def six_panel_figure(path, table, x, ricci_norm, hot_mask, sg, geo, geo_t,
                     T: torch.Tensor, kappa_T: float) -> Path:
    """Six panels of an exploration, saved to path: det g, anisotropy, |Ric| with hotspots, spectral
    convergence (sg: spectrum.SpectralGap), geodesic energy drift (geo, geo_t: geodesics.Geodesics), torsion vs lambda."""
    target = float(ZeroParamGeometry().det_g_target)
    lam = x[:, 0].double().numpy()
    fig = Figure(figsize=(15, 9))
    ax = fig.subplots(2, 3)
    a = ax[0, 0]
    a.hist(table["det_g"], bins=40, range=hist_range(table["det_g"]), color="steelblue")
    a.axvline(target, color="r", ls="--", label="65/32")
    a.set(xlabel="det g", ylabel="points", title="det g distribution")
    a.legend()
    a = ax[0, 1]
    for name, colour in zip(REGIONS, ("tab:blue", "tab:orange", "tab:green")):
        sub = table[table["region"] == name]
        a.scatter(sub["lam"], sub["anisotropy"], s=4, color=colour, label=name)
    a.set(xlabel="lambda", ylabel="eig max / eig min of g", title="anisotropy vs lambda")
    a.legend()
    a = ax[0, 2]
    ric = ricci_norm.double().numpy()
    hm = hot_mask.numpy()
    a.scatter(lam[~hm], ric[~hm], s=4, color="gray", label="points")
    a.scatter(lam[hm], ric[hm], s=10, color="r", label="top |Ric| (hotspots)")
    a.set(xlabel="lambda", ylabel="|Ric|_g", title="Ricci curvature vs lambda")
    a.legend()
    a = ax[1, 0]
    conv = sg.convergence
    for f, sub in conv.groupby("n_fourier"):
        a.plot(sub["n_basis"], sub["lambda1_H_star"], "o-", label=f"|k|_1 <= {f}")
    a.axhline(SEED_GAP_PRODUCT, color="r", ls="--", label="13 (seed 001, diagnostic)")
    a.set(xlabel="basis size", ylabel="lambda1 * H*", title="spectral gap (Rayleigh-Ritz)")
    a.legend()
    a = ax[1, 1]
    tt = geo.t.numpy()
    for G, style, name in ((geo, "-", "Levi-Civita"), (geo_t, "--", "torsion flow (S3)")):
        rel = ((G.energy - G.energy[0]).abs() / G.energy[0]).amax(1).numpy()
        a.semilogy(tt[1:], np.maximum(rel[1:], 1e-18), style, label=name)
    a.set(xlabel="t", ylabel="max over geodesics |E(t) - E(0)| / E(0)", title="geodesic energy drift (RK4)")
    a.legend()
    a = ax[1, 2]
    a.scatter(lam, T.double().numpy(), s=4)
    a.axhline(kappa_T, color="r", ls="--", label="kappa_T = 1/61")
    a.set(xlabel="lambda", ylabel="T = sqrt(|dphi|^2 + |dpsi|^2)", title="torsion density vs lambda")
    a.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def identity_histograms(table: pd.DataFrame, folder, exact: dict, descriptions: dict, prefix: str = "g2_validation",
                        bins: int = 40) -> list[Path]:
    """One histogram per column (except lambda) into folder/<prefix>_<column>.png; returns the paths.

    exact: {column: exact value}; descriptions: {column: title} (`validate.EXACT`, `validate.DESCRIPTION`).

    Quantities with an exact value are plotted as deviations from it (on a symmetric-log x axis
    when they span many decades), with the exact value marked.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"plot folder {folder} cannot be created: {err}") from None
    paths = []
    zp = ZeroParamGeometry()
    for col in table.columns:
        if col == "lam":
            continue
        v = table[col].to_numpy()
        fig = Figure(figsize=(5, 3.4))
        ax = fig.subplots()
        if col in exact:
            dev = v - exact[col]
            ax.hist(dev, bins=bins, range=hist_range(dev), color="steelblue")
            ax.axvline(0.0, color="r", ls="--", label=f"exact {exact[col]:g}")
            ax.set_xlabel(f"{col} - {exact[col]:g}")
        else:
            ax.hist(v, bins=bins, range=hist_range(v), color="steelblue")
            if col == "T":
                ax.axvline(float(zp.kappa_T), color="r", ls="--", label="kappa_T = 1/61")
            if col == "det_g":
                ax.axvline(float(zp.det_g_target), color="r", ls="--", label="65/32")
            ax.set_xlabel(col)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_ylabel("points")
        ax.set_title(descriptions.get(col, col), fontsize=8)
        fig.tight_layout()
        path = folder / f"{prefix}_{col}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def link_residuals_figure(residuals: dict, path: str | Path) -> Path:
    """Histograms of log10 pointwise errors (|phi^psi/vol - 7|, max |d psi_I|, max |(d phi - omega^2)_I|)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checks = ("phi_wedge_psi", "d_psi", "d_phi_minus_omega2")
    fig = Figure(figsize=(4.2 * len(checks), 3.4))
    axes = fig.subplots(1, len(checks))
    for ax, check in zip(axes, checks):
        for name, res in residuals.items():
            e = res[check].detach().abs()
            e = e if e.ndim == 1 else e.amax(-1)
            ax.hist(torch.log10(e.clamp_min(1e-18)).numpy(), bins=40, alpha=0.55, label=name)
        ax.set_title(check)
        ax.set_xlabel("log10 |error| per point")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


SPECTRA_WIDTH_IN = 4.8      # printed at 0.72 of an A4 text width (17 cm) the fonts keep their size


def spectra_figure(result) -> Figure:
    """Figure (1 x 2), 4.8 x 2.7 in, fonts 7-8 pt: for 2- and 3-forms the normalised spectrum of the
    candidates' harmonic parts (b_harm at the largest gap above the round-off floor), the projected closed
    forms dx^I, and the raw candidates' Gram spectrum (b_eff, linear independence) in grey; log scale.
    The title of each panel carries the counts and the estimated relative error of the harmonic Gram."""
    fig = Figure(figsize=(SPECTRA_WIDTH_IN, 2.7), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, s in zip(axes, (result.two, result.three)):
        nu = s.gram_eigenvalues.numpy()
        low = s.harmonic_floor * 1e-3 if s.harmonic_eigenvalues is not None else s.roundoff_floor * 1e-3
        ax.plot(np.arange(1, len(nu) + 1), np.maximum(nu, low), ".", ms=2.5, color="0.6", label=r"Gram ($b^{\rm eff}$)")
        if s.harmonic_eigenvalues is not None:
            hv, cv = s.harmonic_eigenvalues.numpy(), s.projection.class_eigenvalues.numpy()
            ax.plot(np.arange(1, len(hv) + 1), np.maximum(hv, low), "o", ms=2.5, color="tab:blue",
                    label="harmonic parts")
            ax.plot(np.arange(1, len(cv) + 1), np.maximum(cv, low), "s", ms=3.5, mfc="none", color="tab:orange",
                    label=r"projected $dx^I$")
            ax.axhline(s.harmonic_floor, color="tab:red", ls="--", lw=0.8, label="round-off floor")
            ax.axhline(s.harmonic_threshold, color="tab:green", ls=":", lw=1.0, label="gap")
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("index (decreasing)", fontsize=8)
        err = f"\nharmonic Gram error {s.harmonic_gram_error:.0e} (est.)" if s.harmonic_gram_error == s.harmonic_gram_error else ""
        ax.set_title(rf"{s.degree}-forms: $b^{{\rm eff}}$ {s.b_eff}, $b^{{\rm harm}}$ {s.b_harm}{err}", fontsize=7.5)
    axes[0].set_ylabel("normalised eigenvalue", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left", handlelength=1.2, borderpad=0.3, labelspacing=0.2)
    return fig


def _ensemble_panel(ax, block: dict, q: str, label: str) -> None:
    """One quantity: the seed members with error bars, their mean +- seed spread as a band, and the
    architecture members apart (orange squares right of a gap)."""
    done = [m for m in block["members"] if m["status"] == "finished"]
    arch = [m for m in block["architecture"] if m["status"] == "finished"]
    for i, m in enumerate(done):
        ax.errorbar(i, m["values"][q], yerr=m["errors"].get(q) or 0, fmt="o", ms=3, color="tab:blue", capsize=2)
    for j, m in enumerate(arch):
        ax.errorbar(len(done) + 1 + j, m["values"][q], yerr=m["errors"].get(q) or 0, fmt="s", ms=3.5,
                    color="tab:orange", capsize=2)
    st = block["quantities"][q]
    if st["mean"] is not None and st["std"] is not None:
        ax.axhspan(st["mean"] - st["std"], st["mean"] + st["std"], color="tab:blue", alpha=0.12, lw=0)
        ax.axhline(st["mean"], color="tab:blue", lw=0.7)
    ticks = [f"s{m['seed']}" for m in done] + [f"w{m['width']}" for m in arch]
    ax.set_xticks(list(range(len(done))) + [len(done) + 1 + j for j in range(len(arch))], ticks, fontsize=6)
    ratio = "" if st["ratio"] is None else f"\nspread/error {st['ratio']:.2g}: {'fixed' if st['fixed'] else 'free'}"
    ax.set_title(label + ratio, fontsize=6.5)
    ax.tick_params(axis="y", labelsize=6)
    ax.yaxis.get_offset_text().set_fontsize(6)


def ensemble_figure(block: dict, labels: dict, columns: int = 5) -> Figure:
    """Per quantity of `labels` ({key: text}) one panel of the ensemble block (apps.ensemble_table's
    metadata block): each finished seed member's value with its error bar (blue), the seed mean and
    spread (band), the architecture members apart (orange); the title gives spread / error and the class."""
    keys = [q for q in labels if q in block["quantities"]]
    rows = max(1, -(-len(keys) // columns))
    fig = Figure(figsize=(2.2 * columns, 1.9 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, q in zip(axes, keys):
        _ensemble_panel(ax, block, q, labels[q])
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return fig

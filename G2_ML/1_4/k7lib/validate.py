"""G2 identity report on a learned 3-form: the checks of seed 002, with the real torsion.

Per point (float64, g = g(phi), psi = *phi):
  |phi|^2_g = 7,  |psi|^2_g = 7,  (phi ^ psi) / vol_g = 7,  |psi - *phi|_g / |*phi|_g = 0
(Bryant, "Some remarks on G2-structures", 2005, §2; `k7lib.g2.g2_identities`), and the torsion
|d phi|_g, |d psi|_g, T = sqrt(|d phi|^2 + |d psi|^2) with the torsion classes tau0..tau3
(`k7lib.torsion`), together with the split identities
  |d phi|^2 = 7 tau0^2 + 36 |tau1|^2 + |tau3|^2,   |d psi|^2 = 48 |tau1|^2 + |tau2|^2   (DESIGN §3)
whose residuals test the decomposition itself. The model has no separate psi, so the psi
check measures round-off of the Hodge star only; it is reported as such.

Results come as a per-point pandas DataFrame, a summary dict (mean, std, min, max, and the
exact value with the largest deviation where one exists) and histograms in a plots folder.
`validate_run` is the notebook's call; `main` backs `python -m k7lib validate`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import forms as F
from . import g2
from .constants import ZeroParamGeometry
from .torsion import as_packed_field, torsion_classes_packed, torsion_packed

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


def _check_points(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[-1] != F.DIM:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"points x must be a tensor of shape (batch, 7), got {shape}")


def identity_table(phi_field, x: torch.Tensor, chunk: int = 256, method: str = "autograd",
                   progress: bool = False) -> pd.DataFrame:
    """Per-point G2 identities and torsion of phi_field at x (batch, 7), in float64; one row per point.

    phi_field: x -> packed (batch, 35) or dense (batch, 7, 7, 7) 3-forms. Columns: see DESCRIPTION.
    A non-positive phi raises ValueError (with the number of failing points).
    """
    _check_points(x)
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    field_ = as_packed_field(phi_field)
    x = x.double()
    cols: dict[str, list] = {k: [] for k in DESCRIPTION}
    it = range(0, x.shape[0], int(chunk))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="G2 identities", leave=False)
    for i in it:
        xs = x[i:i + int(chunk)]
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


def save_histograms(table: pd.DataFrame, folder, prefix: str = "g2_validation", bins: int = 40) -> list[Path]:
    """One histogram per column (except lambda) into folder/<prefix>_<column>.png; returns the paths.

    Quantities with an exact value are plotted as deviations from it (on a symmetric-log x axis
    when they span many decades), with the exact value marked.
    """
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .explore import hist_range
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
        fig, ax = plt.subplots(figsize=(5, 3.4))
        if col in EXACT:
            dev = v - EXACT[col]
            ax.hist(dev, bins=bins, range=hist_range(dev), color="steelblue")
            ax.axvline(0.0, color="r", ls="--", label=f"exact {EXACT[col]:g}")
            ax.set_xlabel(f"{col} - {EXACT[col]:g}")
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
        ax.set_title(DESCRIPTION.get(col, col), fontsize=8)
        fig.tight_layout()
        path = folder / f"{prefix}_{col}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def validate_run(model, config, n_points: int = 1024, out_dir=None, seed: int = 0, chunk: int = 256,
                 progress: bool = False) -> dict:
    """G2 identity report of a trained model on n_points Sobol points of the chart [-L, L] x T^6.

    model: x (batch, 7) -> packed phi (evaluated on a float64 copy); config: has `.L`.
    Writes out_dir/g2_validation.json, out_dir/g2_validation_points.csv and histograms in
    out_dir/plots/ (out_dir defaults to G2_ML/1_4/outputs). Returns the summary dict with the
    file paths and the time taken.
    """
    from .explore import _check_L, _float_model, _out_dir, sample_chart
    L = _check_L(getattr(config, "L", None) if config is not None else None)
    if not (isinstance(n_points, int) and n_points >= 1):
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    out = _out_dir(out_dir)
    phi_field = _float_model(model)
    t0 = time.perf_counter()
    x = sample_chart(n_points, L, seed=seed)
    table, summary = g2_identity_report(phi_field, x, chunk=chunk, progress=progress)
    elapsed = time.perf_counter() - t0
    plots = save_histograms(table, out / "plots")
    table.to_csv(out / "g2_validation_points.csv", index=False)
    result = {"L": L, "profile": getattr(config, "profile", None), "n_points": n_points, "seed": seed,
              "statistics": summary, "time_s": elapsed,
              "files": {"summary": str(out / "g2_validation.json"), "points": str(out / "g2_validation_points.csv"),
                        "plots": [str(p) for p in plots]}}
    (out / "g2_validation.json").write_text(json.dumps(result, indent=2))
    return result


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import add_run_arguments
    p = argparse.ArgumentParser(prog="python -m k7lib validate",
                                description="G2 identities and torsion classes of a trained run.")
    p.add_argument("--points", type=int, default=1024, help="number of Sobol points on the chart")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: G2_ML/1_4/outputs; plots in OUT/plots)")
    add_run_arguments(p)
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    return p


def main(argv=None) -> int:
    """python -m k7lib validate [--run N] [--points P] [--out DIR]; prints the identity table."""
    from .checkpoint import load_from_args
    args = build_parser().parse_args(argv)
    if args.points < 1:
        raise ValueError(f"--points must be a positive integer, got {args.points}")
    model, config = load_from_args(args)
    res = validate_run(model, config, n_points=args.points, out_dir=args.out, seed=args.seed, progress=args.progress)
    stats = res["statistics"]
    print(f"G2 identities on {args.points} points (float64), {res['time_s']:.1f} s:")
    for col, row in stats.items():
        if col in ("lam",) or "mean" not in row or "description" not in row:
            continue
        extra = f"  max|dev| {row['max_abs_deviation']:.2e}" if "max_abs_deviation" in row else ""
        print(f"  {col:20s} mean {row['mean']: .6e}  [{row['min']: .3e}, {row['max']: .3e}]{extra}")
    k, d = stats["kappa_T_check"], stats["det_g_check"]
    print(f"  <T> = {k['T_mean']:.6g} vs kappa_T = {k['target']} = {k['target_float']:.6g}; "
          f"<det g> = {d['mean']:.6g} vs {d['target']} = {d['target_float']:.6g}")
    print(f"wrote {res['files']['summary']} and {len(res['files']['plots'])} histograms")
    return 0

"""One run's exploration of a learned G2 geometry: spectrum, curvature, geodesics, torsion, regions.

`explore_run` evaluates the concept modules (`curvature`, `spectrum`, `geodesics`, `regions`,
`torsion`) on a trained model in float64, writes the six-panel figure (`figures`) and a JSON
summary, and returns the summary; `python -m k7lib explore` (`cli`) runs it on a saved run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import torch

from .. import g2, torsion
from ..batches import chunks
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..curvature import curvature_scalars
from ..geometry import regions
from ..geometry.geodesics import geodesics, initial_velocities
from ..geometry.spectrum import spectral_gap
from ..learn import runs
from ..learn.model import float64_copy
from ..report import figures
from ..sampling import points as sampling


@dataclass(frozen=True)
class ExploreSettings:
    """Sizes of an exploration; defaults are a few minutes on a CPU for the quick profile."""
    n_points: int = 512              # Sobol points for curvature, torsion and region statistics
    spectral_n_lambda: int = 6
    spectral_n_fourier: int = 1
    spectral_points: int = 1021      # lattice points on T^6 per lambda node
    spectral_quad_lambda: int | None = None
    n_geodesics: int = 4
    geodesic_t_max: float = 1.0
    geodesic_steps: int = 20
    hotspot_fraction: float = 0.05
    n_bins: int = 8
    chunk: int = 128
    seed: int = 0

    def validate(self) -> "ExploreSettings":
        for name in ("n_points", "spectral_n_lambda", "spectral_n_fourier", "spectral_points", "n_geodesics",
                     "geodesic_steps", "n_bins", "chunk"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if not (0 < self.hotspot_fraction < 1):
            raise ValueError(f"hotspot_fraction: must lie in (0, 1), got {self.hotspot_fraction!r}")
        if not (self.geodesic_t_max > 0):
            raise ValueError(f"geodesic_t_max: must be > 0, got {self.geodesic_t_max!r}")
        return self


def explore_run(model, config, n_points: int | None = None, out_dir=None, progress: bool = False,
                settings: ExploreSettings | None = None, background=None, region_weights=None) -> dict:
    """Spectral gap, curvature and hotspots, geodesics, torsion and region statistics of a trained phi.

    model: x (batch, 7) -> packed phi (batch, 35) (evaluated on a float64 copy); config: has `.L` (the chart's half-length).
    Writes out_dir/explore_summary.json, out_dir/refinement_guidance.json and the six-panel figure
    out_dir/plots/explore_six_panel.png (out_dir defaults to G2_ML/1_4/outputs). Returns the summary
    dict (every number computed here; timings in seconds under "timings_s").
    """
    s = settings or ExploreSettings()
    if n_points is not None:
        s = ExploreSettings(**{**asdict(s), "n_points": int(n_points)})
    s.validate()
    chart = as_chart(getattr(config, "L", None))
    L = chart.L
    out = runs.output_folder(out_dir)
    background = chart.phi_background if background is None else background
    phi_field = float64_copy(model)
    metric_field = g2.metric_field_from_phi(phi_field)
    timings, summary = {}, {"L": L, "profile": getattr(config, "profile", None), "settings": asdict(s)}

    t0 = time.perf_counter()
    x = sampling.sobol(s.n_points, chart, seed=s.seed)
    table = regions.region_table(phi_field, x, chart, background=background, region_weights=region_weights, chunk=4 * s.chunk)
    summary["regions"] = regions.region_statistics(table)
    timings["regions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tors = []
    for sl in chunks(x.shape[0], s.chunk, progress, "torsion"):
        tp = torsion.torsion_packed(phi_field, x[sl])
        ft = torsion.full_torsion(phi_field, x[sl])
        tors.append(torch.stack([tp.T.detach(), ft.norm, ft.residual], 1))
    tors = torch.cat(tors)
    T, full_norm = tors[:, 0], tors[:, 1]
    kappa = ZeroParamGeometry().kappa_T
    summary["torsion"] = {"T_mean": float(T.mean()), "T_max": float(T.max()), "kappa_T": str(kappa),
                          "kappa_T_float": float(kappa), "T_mean_over_kappa_T": float(T.mean() / float(kappa)),
                          "full_torsion_norm_mean": float(full_norm.mean()),
                          "nabla_phi_reconstruction_residual_max": float(tors[:, 2].max())}
    timings["torsion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    curv = curvature_scalars(metric_field, x, chunk=s.chunk, progress=progress)
    hot = regions.hotspots(x, curv.ricci_norm, chart, s.hotspot_fraction, region_weights, s.n_bins)
    summary["curvature"] = curv.to_dict()
    summary["hotspots_ricci"] = hot.to_dict()
    timings["curvature"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sg = spectral_gap(metric_field, chart, n_fourier=s.spectral_n_fourier, n_lambda=s.spectral_n_lambda,
                      n_points=s.spectral_points, n_quad_lambda=s.spectral_quad_lambda, progress=progress)
    summary["spectral"] = sg.to_dict()
    timings["spectral"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x0 = sampling.sobol(s.n_geodesics, chart, seed=s.seed + 1)
    x0[:, 0] = 0.0                                              # start in the neck
    v0 = initial_velocities(metric_field, x0, s.seed)
    geo = geodesics(metric_field, x0, v0, s.geodesic_t_max, s.geodesic_steps)
    geo_t = geodesics(metric_field, x0, v0, s.geodesic_t_max, s.geodesic_steps, torsion=torsion.g2_torsion_tensor(phi_field))
    g_end = metric_field(geo.x[-1]).detach()
    summary["geodesics"] = {
        "t_max": s.geodesic_t_max, "n_steps": s.geodesic_steps, "start_lambda": 0.0,
        "energy_drift_levi_civita": [float(d) for d in geo.energy_drift],
        "energy_drift_torsion_flow": [float(d) for d in geo_t.energy_drift],
        "endpoint_separation_g": [float(d) for d in torch.einsum(
            "zi,zij,zj->z", geo_t.x[-1] - geo.x[-1], g_end, geo_t.x[-1] - geo.x[-1]).sqrt()],
        "max_force_of_antisymmetric_part_of_T": geo_t.antisymmetric_force,
        "stayed_in_chart": [bool(b) for b in geo.inside_chart(chart).all(0)],
        "torsion_term": ("(1/2) g^{kl} T_ijl x'^i x'^j with T_ijl = T_i^m phi_mjl, T_lm the full torsion tensor "
                         "(nabla phi = T . psi); its totally antisymmetric part contracts to zero"),
    }
    timings["geodesics"] = time.perf_counter() - t0

    guidance = regions.refinement_guidance(x[:, 0], curv.ricci_norm, T, chart, region_weights, s.n_bins)
    summary["timings_s"] = timings
    figure = out / "plots" / "explore_six_panel.png"
    figures.six_panel_figure(figure, table, x, curv.ricci_norm, hot.mask, sg, geo, geo_t, T, float(kappa))
    summary["files"] = {"figure": str(figure), "summary": str(out / "explore_summary.json"),
                        "refinement": str(out / "refinement_guidance.json")}
    (out / "refinement_guidance.json").write_text(json.dumps(guidance, indent=2))
    (out / "explore_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["refinement"] = guidance
    return summary

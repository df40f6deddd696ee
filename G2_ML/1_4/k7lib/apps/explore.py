"""One run's exploration of a learned G2 geometry: spectrum, curvature, geodesics, torsion, regions.

`explore_run` evaluates the concept modules (`curvature`, `spectrum`, `geodesics`, `regions`,
`torsion`) on a trained model in float64, writes the six-panel figure (`figures`) and a JSON
summary, and returns an `Exploration` (frozen; `to_dict()` is the JSON summary);
`python -m k7lib explore` (`cli`) runs it on a saved run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import g2, torsion
from ..batches import chunks
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..curvature import CurvatureScalars, curvature_scalars
from ..geometry import regions
from ..geometry.geodesics import geodesics, initial_velocities
from ..geometry.regions import Hotspots
from ..geometry.spectrum import SpectralGap, spectral_gap
from ..inputs import positive_int
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
            positive_int(getattr(self, name), name)
        if not (0 < self.hotspot_fraction < 1):
            raise ValueError(f"hotspot_fraction: must lie in (0, 1), got {self.hotspot_fraction!r}")
        if not (self.geodesic_t_max > 0):
            raise ValueError(f"geodesic_t_max: must be > 0, got {self.geodesic_t_max!r}")
        return self


@dataclass(frozen=True)
class TorsionSummary:
    """Torsion of phi at the exploration points: <T>, max T against kappa_T = 1/61, the mean norm of the
    full torsion tensor and the largest residual of its reconstruction nabla phi = T . psi."""
    T_mean: float
    T_max: float
    kappa_T: str
    kappa_T_float: float
    T_mean_over_kappa_T: float
    full_torsion_norm_mean: float
    nabla_phi_reconstruction_residual_max: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GeodesicSummary:
    """Geodesics from the neck, Levi-Civita and the torsion-modified flow: energy drifts, endpoint
    separation in g, the force of the antisymmetric part of T (zero: it contracts away), chart exits."""
    t_max: float
    n_steps: int
    start_lambda: float
    energy_drift_levi_civita: list
    energy_drift_torsion_flow: list
    endpoint_separation_g: list
    max_force_of_antisymmetric_part_of_T: float
    stayed_in_chart: list
    torsion_term: str = ("(1/2) g^{kl} T_ijl x'^i x'^j with T_ijl = T_i^m phi_mjl, T_lm the full torsion tensor "
                         "(nabla phi = T . psi); its totally antisymmetric part contracts to zero")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Exploration:
    """What `explore_run` measured, and the files it wrote (figure, summary, refinement)."""
    L: float
    profile: str | None
    settings: ExploreSettings
    regions: dict                   # geometry.regions.region_statistics
    torsion: TorsionSummary
    curvature: CurvatureScalars
    hotspots_ricci: Hotspots
    spectral: SpectralGap
    geodesics: GeodesicSummary
    refinement: dict                # geometry.regions.refinement_guidance
    timings_s: dict
    files: dict

    def to_dict(self, refinement: bool = True) -> dict:
        """The JSON summary (explore_summary.json holds it without the refinement, which has its own file)."""
        out = {"L": self.L, "profile": self.profile, "settings": asdict(self.settings), "regions": self.regions,
               "torsion": self.torsion.to_dict(), "curvature": self.curvature.to_dict(),
               "hotspots_ricci": self.hotspots_ricci.to_dict(), "spectral": self.spectral.to_dict(),
               "geodesics": self.geodesics.to_dict(), "timings_s": self.timings_s, "files": self.files}
        return {**out, "refinement": self.refinement} if refinement else out


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t0
    return out


def torsion_summary(phi_field, x: torch.Tensor, chunk: int, progress: bool) -> tuple:
    """(TorsionSummary, T (batch,)) at points x (batch, 7), chunked."""
    tors = []
    for sl in chunks(x.shape[0], chunk, progress, "torsion"):
        tp = torsion.torsion_packed(phi_field, x[sl])
        ft = torsion.full_torsion(phi_field, x[sl])
        tors.append(torch.stack([tp.T.detach(), ft.norm, ft.residual], 1))
    tors = torch.cat(tors)
    T, kappa = tors[:, 0], ZeroParamGeometry().kappa_T
    return TorsionSummary(T_mean=float(T.mean()), T_max=float(T.max()), kappa_T=str(kappa), kappa_T_float=float(kappa),
                          T_mean_over_kappa_T=float(T.mean() / float(kappa)),
                          full_torsion_norm_mean=float(tors[:, 1].mean()),
                          nabla_phi_reconstruction_residual_max=float(tors[:, 2].max())), T


def geodesic_flows(phi_field, metric_field, chart, s: ExploreSettings) -> tuple:
    """(GeodesicSummary, Levi-Civita geodesics, torsion-flow geodesics) from s.n_geodesics neck points."""
    x0 = sampling.sobol(s.n_geodesics, chart, seed=s.seed + 1)
    x0[:, 0] = 0.0                                              # start in the neck
    v0 = initial_velocities(metric_field, x0, s.seed)
    geo = geodesics(metric_field, x0, v0, s.geodesic_t_max, s.geodesic_steps)
    geo_t = geodesics(metric_field, x0, v0, s.geodesic_t_max, s.geodesic_steps, torsion=torsion.g2_torsion_tensor(phi_field))
    g_end, dx = metric_field(geo.x[-1]).detach(), geo_t.x[-1] - geo.x[-1]
    summary = GeodesicSummary(
        t_max=s.geodesic_t_max, n_steps=s.geodesic_steps, start_lambda=0.0,
        energy_drift_levi_civita=[float(d) for d in geo.energy_drift],
        energy_drift_torsion_flow=[float(d) for d in geo_t.energy_drift],
        endpoint_separation_g=[float(d) for d in torch.einsum("zi,zij,zj->z", dx, g_end, dx).sqrt()],
        max_force_of_antisymmetric_part_of_T=geo_t.antisymmetric_force,
        stayed_in_chart=[bool(b) for b in geo.inside_chart(chart).all(0)])
    return summary, geo, geo_t


def _settings(settings: ExploreSettings | None, n_points: int | None) -> ExploreSettings:
    s = settings or ExploreSettings()
    if n_points is not None:
        s = ExploreSettings(**{**asdict(s), "n_points": int(n_points)})
    return s.validate()


def _write(out: Path, ex: Exploration) -> None:
    (out / "refinement_guidance.json").write_text(json.dumps(ex.refinement, indent=2))
    (out / "explore_summary.json").write_text(json.dumps(ex.to_dict(refinement=False), indent=2, default=str))


def explore_run(model, config, n_points: int | None = None, out_dir=None, progress: bool = False,
                settings: ExploreSettings | None = None, background=None, region_weights=None) -> Exploration:
    """Spectral gap, curvature and hotspots, geodesics, torsion and region statistics of a trained phi.

    model: x (batch, 7) -> packed phi (batch, 35) (evaluated on a float64 copy); config: has `.L` (the
    chart's half-length). Writes out_dir/explore_summary.json, out_dir/refinement_guidance.json and the
    six-panel figure out_dir/plots/explore_six_panel.png (out_dir defaults to G2_ML/1_4/outputs).
    Returns an `Exploration` (every number computed here; timings in seconds).
    """
    s = _settings(settings, n_points)
    chart = as_chart(getattr(config, "L", None))
    out = runs.output_folder(out_dir)
    phi_field = float64_copy(model)
    metric_field, t = g2.metric_field_from_phi(phi_field), {}
    x = sampling.sobol(s.n_points, chart, seed=s.seed)
    table = _timed(t, "regions", regions.region_table, phi_field, x, chart, chunk=4 * s.chunk, region_weights=region_weights,
                   background=chart.phi_background if background is None else background)
    tors, T = _timed(t, "torsion", torsion_summary, phi_field, x, s.chunk, progress)
    curv = _timed(t, "curvature", curvature_scalars, metric_field, x, chunk=s.chunk, progress=progress)
    hot = regions.hotspots(x, curv.ricci_norm, chart, s.hotspot_fraction, region_weights, s.n_bins)
    sg = _timed(t, "spectral", spectral_gap, metric_field, chart, n_fourier=s.spectral_n_fourier,
                n_lambda=s.spectral_n_lambda, n_points=s.spectral_points, n_quad_lambda=s.spectral_quad_lambda,
                progress=progress)
    geo, flow, flow_t = _timed(t, "geodesics", geodesic_flows, phi_field, metric_field, chart, s)
    figure = out / "plots" / "explore_six_panel.png"
    figures.six_panel_figure(figure, table, x, curv.ricci_norm, hot.mask, sg, flow, flow_t, T, tors.kappa_T_float)
    ex = Exploration(
        L=chart.L, profile=getattr(config, "profile", None), settings=s, regions=regions.region_statistics(table),
        torsion=tors, curvature=curv, hotspots_ricci=hot, spectral=sg, geodesics=geo, timings_s=t,
        refinement=regions.refinement_guidance(x[:, 0], curv.ricci_norm, T, chart, region_weights, s.n_bins),
        files={"figure": str(figure), "summary": str(out / "explore_summary.json"),
               "refinement": str(out / "refinement_guidance.json")})
    _write(out, ex)
    return ex

"""Invariants of a G2 structure on a coordinate box, and their comparison between structures on common
points: the measures of the torsion-free learner (issue 21).

A diffeomorphism of D that fixes the boundary leaves these unchanged, while it moves phi's components:
  volume        Vol(D) = int_D sqrt(det g) d^7x                       (the spectrum's tensor Gauss rule)
  rm2           int_D |Rm|^2 vol_g                                    (Monte Carlo, standard error)
  rm2_q*        quantiles of |Rm|^2 under the volume measure           (Monte Carlo, standard error)
  lambda_1..5   the lowest Dirichlet eigenvalues of the Laplacian      (geometry.spectrum.dirichlet_spectrum)
  holonomy      the part of the curvature outside g2 and the rank of the span of curvature operators
                (k7lib.holonomy.holonomy_test)
and, beside them, the L^2 torsion (int_D T^2 vol_g)^(1/2) (conventions §3) and sqrt(int |Ric|^2 / int |Rm|^2).

Monte Carlo: `scrambles` independent scrambles of `n_points` Sobol points each (sampling.box_sobol, seeds
seed + s): a value is the mean over all points and its standard error the spread of the per-scramble values
over sqrt(scrambles). Structures compared with the same settings use the same points, so their differences
are paired: the relative difference of each scramble, averaged, with its own standard error.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..curvature import curvature
from ..exact.box import as_box
from ..holonomy import HolonomyTest, holonomy_test
from ..inputs import MAX_POINTS, positive_int
from ..sampling.points import box_sobol
from ..torsion import torsion_packed
from .spectrum import DirichletSpectrum, dirichlet_spectrum

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# Upper bounds of the settings: the spectrum's quadrature holds nodes^7 points (13^7 = 6.3e7), the Monte
# Carlo counts at most inputs.MAX_POINTS.
MAX_NODES, MAX_SCRAMBLES, MAX_STEPS = 13, 10**4, 10**6
SETTING_BOUNDS = (("n_points", MAX_POINTS), ("scrambles", MAX_SCRAMBLES), ("degree", MAX_NODES - 3),
                  ("holonomy_points", MAX_POINTS), ("holonomy_steps", MAX_STEPS), ("chunk", MAX_POINTS))


@dataclass(frozen=True)
class InvariantSettings:
    """Points and discretisations of `invariants` (the same settings give the same points)."""
    n_points: int = 256            # Monte Carlo points per scramble (curvature, torsion)
    scrambles: int = 8
    seed: int = 7
    degree: int = 2                # Dirichlet basis degree (geometry.spectrum.dirichlet_spectrum)
    n_nodes: int | None = None     # Gauss nodes per axis (volume and spectrum); None: degree + 3
    holonomy_points: int = 128     # the first points of the first scramble
    holonomy_steps: int = 16       # RK4 steps of each parallel transport
    chunk: int = 256

    def __post_init__(self):
        for name, high in SETTING_BOUNDS:
            positive_int(getattr(self, name), name, maximum=high)
        if self.n_nodes is not None:
            positive_int(self.n_nodes, "n_nodes", 2, MAX_NODES)
        if self.nodes > MAX_NODES:
            raise ValueError(f"degree: the default nodes per axis (degree + 3 = {self.nodes}) must be <= {MAX_NODES}")
        if self.scrambles < 2:
            raise ValueError(f"scrambles must be at least 2 (standard errors come from their spread), got {self.scrambles}")

    @property
    def nodes(self) -> int:
        return self.degree + 3 if self.n_nodes is None else self.n_nodes

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Invariants:
    """Result of `invariants`. per_scramble: {name: (scrambles,) values} of the Monte Carlo quantities
    (torsion2 = int T^2 vol, rm2, ricci2 = int |Ric|^2 vol, rm2_q<q>), for paired comparisons; seconds:
    the wall time of each part (torsion, curvature, spectrum, holonomy)."""
    volume: float
    torsion_l2: float
    torsion_l2_stderr: float
    rm2: float
    rm2_stderr: float
    ricci_ratio: float
    quantiles: dict
    quantiles_stderr: dict
    spectrum: DirichletSpectrum
    holonomy: HolonomyTest
    per_scramble: dict
    seconds: dict

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("volume", "torsion_l2", "torsion_l2_stderr", "rm2", "rm2_stderr",
                                             "ricci_ratio", "quantiles", "quantiles_stderr", "seconds")}
        out.update(spectrum=self.spectrum.to_dict(), holonomy=self.holonomy.to_dict(),
                   per_scramble={k: v.tolist() for k, v in self.per_scramble.items()})
        return out


def weighted_quantiles(values: torch.Tensor, weights: torch.Tensor, qs=QUANTILES) -> torch.Tensor:
    """Quantiles of values (n,) under the weights (n,) (the volume measure): the smallest v with
    cumulative weight >= q, for each q in qs -> (len(qs),)."""
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0)
    cum = cum / cum[-1]
    idx = torch.searchsorted(cum, torch.tensor(qs, dtype=cum.dtype, device=cum.device))
    return values[order][idx.clamp_max(len(values) - 1)]


def _scramble_sums(phi_field, x: torch.Tensor, volume: float, chunk: int) -> tuple:
    """({torsion2, rm2, ricci2: Monte Carlo integrals, rm2_q<q>: quantiles of |Rm|^2} at the points x of one
    scramble, (|Rm|^2, sqrt(det g)) per point)."""
    metric_field = g2.metric_field_from_phi(phi_field)
    t2, w, rm2, ric2 = [], [], [], []
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        with torch.no_grad():
            t = torsion_packed(phi_field, xs, check=False)
            c = curvature(metric_field, xs, chunk=chunk)
        t2.append(t.norm2_dphi + t.norm2_dpsi)
        w.append(F.det(c.g).sqrt())
        rm2.append(c.riemann_norm ** 2)
        ric2.append(c.ricci_norm ** 2)
    t2, w, rm2, ric2 = (torch.cat(v) for v in (t2, w, rm2, ric2))
    out = {"torsion2": volume * (t2 * w).mean(), "rm2": volume * (rm2 * w).mean(), "ricci2": volume * (ric2 * w).mean()}
    out.update({f"rm2_q{q:g}": v for q, v in zip(QUANTILES, weighted_quantiles(rm2, w))})
    return out, (rm2, w)


def invariants(phi_field, box, settings: InvariantSettings = InvariantSettings(), progress: bool = False) -> Invariants:
    """The invariants of the module docstring for phi_field: x (batch, 7) -> packed (batch, 35) on box."""
    box = as_box(box)
    seconds, per, pooled = {}, [], []
    t0 = time.perf_counter()
    for s in range(settings.scrambles):
        x = box_sobol(settings.n_points, box, seed=settings.seed + s)
        sums, (rm2, w) = _scramble_sums(phi_field, x, box.volume, settings.chunk)
        per.append(sums)
        pooled.append((rm2, w))
    seconds["torsion_and_curvature"] = time.perf_counter() - t0
    per = {k: torch.stack([p[k] for p in per]).double() for k in per[0]}
    rm2, w = (torch.cat([p[i] for p in pooled]) for i in (0, 1))
    q_all = weighted_quantiles(rm2, w)
    se = {k: float(v.std() / math.sqrt(len(v))) for k, v in per.items()}
    t0 = time.perf_counter()
    spectrum = dirichlet_spectrum(g2.metric_field_from_phi(phi_field), box, degree=settings.degree,
                                  n_nodes=settings.nodes, chunk=settings.chunk)
    seconds["volume_and_spectrum"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xh = box_sobol(settings.n_points, box, seed=settings.seed)[:settings.holonomy_points]
    hol = holonomy_test(phi_field, xh, box.centre, n_steps=settings.holonomy_steps, chunk=settings.chunk)
    seconds["holonomy"] = time.perf_counter() - t0
    torsion2, rm2_int = per["torsion2"].mean(), per["rm2"].mean()
    return Invariants(
        volume=spectrum.volume, torsion_l2=float(torsion2.clamp_min(0).sqrt()),
        torsion_l2_stderr=se["torsion2"] / (2 * max(float(torsion2.clamp_min(0).sqrt()), 1e-300)),
        rm2=float(rm2_int), rm2_stderr=se["rm2"],
        ricci_ratio=float((per["ricci2"].mean() / rm2_int.clamp_min(1e-300)).clamp_min(0).sqrt()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, q_all)},
        quantiles_stderr={f"{q:g}": se[f"rm2_q{q:g}"] for q in QUANTILES},
        spectrum=spectrum, holonomy=hol, per_scramble=per, seconds=seconds)


def scalar_rows(inv: Invariants) -> dict:
    """{row name: (value, standard error or nan, per-scramble values or None)} of the scalar invariants."""
    rows = {"volume": (inv.volume, math.nan, None), "int |Rm|^2": (inv.rm2, inv.rm2_stderr, inv.per_scramble["rm2"])}
    for q in QUANTILES:
        rows[f"|Rm|^2 q{q:g}"] = (inv.quantiles[f"{q:g}"], inv.quantiles_stderr[f"{q:g}"], inv.per_scramble[f"rm2_q{q:g}"])
    for i, v in enumerate(inv.spectrum.eigenvalues.tolist()):
        rows[f"lambda_{i + 1}"] = (v, math.nan, None)
    return rows


@dataclass(frozen=True)
class InvariantTable:
    """Invariants of several structures on common points and their relative differences from a reference.

    table: one row per scalar invariant; columns <name>, <name>_se for every structure and, for each
    other structure, <name>_rel = value / reference - 1 and <name>_rel_se (paired over scrambles; nan where
    the invariant is not Monte Carlo, and both nan where the reference is 0). results: {name: Invariants}.
    """
    table: pd.DataFrame
    results: dict
    reference: str
    settings: InvariantSettings

    def to_dict(self) -> dict:
        return {"table": self.table.reset_index().to_dict(orient="records"), "reference": self.reference,
                "settings": self.settings.to_dict(), "results": {k: v.to_dict() for k, v in self.results.items()}}


def compare(fields: dict, box, settings: InvariantSettings = InvariantSettings(), reference: str = "exact",
            progress: bool = False) -> InvariantTable:
    """`invariants` of every field in fields ({name: phi_field}) on the same points, tabulated against
    fields[reference] (module docstring: paired relative differences)."""
    if reference not in fields:
        raise ValueError(f"reference {reference!r} is not among the fields {list(fields)}")
    results = {name: invariants(f, box, settings, progress) for name, f in fields.items()}
    ref_rows = scalar_rows(results[reference])
    table = {}
    for name, inv in results.items():
        for row, (value, se, per) in scalar_rows(inv).items():
            entry = table.setdefault(row, {})
            entry[name], entry[f"{name}_se"] = value, se
            if name == reference:
                continue
            ref_value, _, ref_per = ref_rows[row]
            entry[f"{name}_rel"] = value / ref_value - 1 if ref_value != 0 else math.nan
            entry[f"{name}_rel_se"] = (float((per / ref_per - 1).std() / math.sqrt(len(per)))
                                       if per is not None and bool((ref_per != 0).all()) else math.nan)
    return InvariantTable(table=pd.DataFrame.from_dict(table, orient="index"), results=results, reference=reference,
                          settings=settings)

"""Loss terms of seed 000 for a 3-form model phi(x) on the TCS chart, with g = g(phi) throughout.

Averages over a batch carry the sampler's importance weights, self-normalised:
<f> = sum(w f) / sum(w) (sampling.uniform), so a constant is averaged exactly whatever the draw.
With T = sqrt(|d phi|^2_g + |d psi|^2_g), psi = *phi (docs/conventions.md §3), kappa_T = 1/61 and
det_g_target = 65/32 from `ZeroParamGeometry`:
  kappa      = ((<T> - kappa_T) / kappa_T)^2          seed's (<T> - kappa_T)^2 over kappa_T^2,
                                                        so its weight is O(1)
  closure    = <|d phi|^2_g>
  coclosure  = <|d*phi|^2_g> = <|d psi|^2_g>
  det        = ((<det g> - d*) / d*)^2 + Var(det g) / d*^2     (d* = 65/32)
  positivity = <relu(m - lmin(B / |det B|^(1/9)))^2> + <relu(m - lmin(g))^2>
               + (1/10) <relu(log cond(g) - log cond_cap)^2>
               (B / |det B|^(1/9) = orientation * g: positive definite iff phi is a positive
                3-form for eps^{0..6} = +1; for such phi both hinges read lmin(g), so the margin
                counts twice, while a phi positive only for the opposite orientation trips the
                first one; m = eig_margin; the condition-number part is the mild one)
  anti_flat  = relu(1 - V / anti_flat_margin)^2, V = sqrt(<n |d g/d lambda|_F^2> / <n>)
               with n(lambda) the neck weight: V is the RMS variation of the metric components
               along the neck coordinate, reported as the anti-flat measure.
total = sum of weight x term. d phi, d psi come from one forward-mode pass
(`torsion.torsion_packed`); d g / d lambda from its jacobian of phi, pushed through g(phi).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.func import jvp

from .. import g2
from ..chart import as_chart
from ..constants import ZeroParamGeometry
from ..torsion import torsion_packed
from .config import ANTI_FLAT_MARGIN, COND_CAP, EIG_MARGIN, LossWeights

TERMS = ("kappa", "closure", "coclosure", "det", "positivity", "anti_flat")
DIAGNOSTICS = ("T_mean", "det_mean", "det_std", "eig_min", "anti_flat", "nonpositive_frac")


def targets() -> tuple[float, float]:
    """(kappa_T, det_g_target) as floats from the exact rationals."""
    z = ZeroParamGeometry()
    return float(z.kappa_T), float(z.det_g_target)


@dataclass(frozen=True)
class LossTerms:
    """Named loss terms (0-dim tensors, attached to the graph), the weighted total, detached diagnostics.

    diagnostics: T_mean = <T>, det_mean = <det g>, det_std, eig_min = smallest eigenvalue of g
    in the batch, anti_flat = the measure V, nonpositive_frac = share of points where phi is
    not a positive 3-form (B not positive definite) or T is not finite.
    """
    terms: dict
    total: torch.Tensor
    diagnostics: dict = field(default_factory=dict)

    def row(self) -> dict:
        """Floats for the history table: loss (total), loss_<term> for each term, and the diagnostics."""
        out = {"loss": float(self.total.detach())}
        out.update({f"loss_{k}": float(v.detach()) for k, v in self.terms.items()})
        out.update(self.diagnostics)
        return out


def metric_lambda_derivative(t) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, d g / d lambda) of g = g(phi(x)) from torsion data t (torsion.TorsionPacked): two (batch, 7, 7).

    d g / d lambda = g'(phi)[d_0 phi], the metric's derivative along phi's own lambda-derivative,
    which t already holds (no second pass through the network).
    """
    return jvp(lambda p: g2.metric_data_packed(p, check=False).g, (t.phi,), (t.jphi[..., 0],))


def anti_flat_measure(dg: torch.Tensor, lam: torch.Tensor, w: torch.Tensor, chart) -> torch.Tensor:
    """V = sqrt(<n |dg|_F^2> / <n>), n = neck weight of lambda on the chart; dg (batch, 7, 7) -> 0-dim."""
    n = as_chart(chart).region_weights(lam)[:, 1] * w
    return ((n * dg.pow(2).sum((-2, -1))).sum() / n.sum().clamp_min(torch.finfo(dg.dtype).tiny)).sqrt()


def compute_losses(model, x: torch.Tensor, w: torch.Tensor, weights: LossWeights, method: str = "autograd",
                   *, chart=None, eig_margin: float = EIG_MARGIN, cond_cap: float = COND_CAP,
                   anti_flat_margin: float = ANTI_FLAT_MARGIN) -> LossTerms:
    """Loss terms of the phi field `model` at points x (batch, 7) with importance weights w (batch,).

    chart defaults to model.chart (for the neck weight). The anti-flat measure is
    computed even when its weight is 0, so the history always shows it. Margins: see module doc.
    """
    if not isinstance(weights, LossWeights):
        raise ValueError(f"weights must be a LossWeights, got {type(weights).__name__}")
    if x.ndim != 2 or x.shape[-1] != 7:
        raise ValueError(f"points x must have shape (batch, 7), got {tuple(x.shape)}")
    if w.shape != x.shape[:1]:
        raise ValueError(f"weights w must have shape ({x.shape[0]},), got {tuple(w.shape)}")
    chart = model.chart if chart is None else chart
    kappa_T, det_target = targets()
    wn = w / w.sum()
    mean = lambda v: (wn * v).sum()

    t = torsion_packed(model, x, method=method, check=False)
    m = t.metric
    T = (t.norm2_dphi + t.norm2_dpsi).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
    T_mean = mean(T)
    det_mean = mean(m.det)
    det_var = mean((m.det - det_mean) ** 2)

    # A non-finite metric (phi far from positive) would stop eigvalsh; zero it so the hinge
    # flags the point while the non-finite loss itself triggers the trainer's rollback.
    finite = torch.isfinite(m.g).flatten(1).all(1)
    ev = torch.linalg.eigvalsh(torch.where(finite[:, None, None], m.g, torch.zeros_like(m.g)))   # ascending
    eig_g = ev[:, 0]
    eig_B = torch.where(m.orientation > 0, ev[:, 0], -ev[:, -1])   # lmin(orientation * g)
    log_cond = torch.log(ev[:, -1].abs().clamp_min(1e-30)) - torch.log(ev[:, 0].abs().clamp_min(1e-30))
    hinge = lambda v: torch.relu(eig_margin - v) ** 2
    positivity = mean(hinge(eig_B)) + mean(hinge(eig_g)) + mean(torch.relu(log_cond - math.log(cond_cap)) ** 2) / 10

    _, dg = metric_lambda_derivative(t)
    V = anti_flat_measure(dg, x[:, 0], w, chart)
    anti_flat = torch.relu(1 - V / anti_flat_margin) ** 2 if anti_flat_margin > 0 else V * 0

    terms = {
        "kappa": ((T_mean - kappa_T) / kappa_T) ** 2,
        "closure": mean(t.norm2_dphi),
        "coclosure": mean(t.norm2_dpsi),
        "det": ((det_mean - det_target) / det_target) ** 2 + det_var / det_target**2,
        "positivity": positivity,
        "anti_flat": anti_flat,
    }
    total = sum(wt * terms[name] for name, wt in weights.items() if wt != 0)
    if not isinstance(total, torch.Tensor):
        total = T_mean * 0
    with torch.no_grad():
        bad = ~(eig_B > 0) | ~torch.isfinite(T)
        diagnostics = {
            "T_mean": float(T_mean), "det_mean": float(det_mean), "det_std": float(det_var.sqrt()),
            "eig_min": float(eig_g.min()), "anti_flat": float(V),
            "nonpositive_frac": float(bad.double().mean()),
        }
    return LossTerms(terms=terms, total=total, diagnostics=diagnostics)

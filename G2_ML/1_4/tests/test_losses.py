import math
from dataclasses import replace

import pytest
import torch

from k7lib import chart, g2
from k7lib.chart import Chart
from k7lib.constants import ZeroParamGeometry
from k7lib.learn.config import Config, LossWeights
from k7lib.learn.losses import (
    DIAGNOSTICS,
    TERMS,
    compute_losses,
    metric_lambda_derivative,
)
from k7lib.learn.model import K7PhiModel
from k7lib.sampling import points as sampling
from k7lib.torsion import torsion_packed

KAPPA = float(ZeroParamGeometry().kappa_T)
DET = float(ZeroParamGeometry().det_g_target)
ALL = LossWeights(kappa=1.0, closure=1.0, coclosure=1.0, det=1.0, positivity=1.0, anti_flat=1.0)


# The tests read loss terms (attached to the graph) as floats on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")

def tiny_model():
    cfg = replace(Config.from_profile("quick"), L=1.0, width=8, depth=2, n_fourier=1, n_chebyshev=3)
    torch.manual_seed(0)
    return K7PhiModel(cfg)


def points(n=48, seed=0, neck=True):
    return sampling.uniform(n, 1.0, torch.Generator().manual_seed(seed), neck_weighted=neck, dtype=torch.float64)


def test_terms_match_direct_formulas_on_the_background(f64):
    model = tiny_model().double()
    x, w = points()
    out = compute_losses(model, x, w, ALL)
    assert set(out.terms) == set(TERMS) and set(out.diagnostics) == set(DIAGNOSTICS)
    t = torsion_packed(lambda p: chart.Chart(1.0).phi_background(p), x)
    wn = w / w.sum()
    T_mean = float((wn * t.T).sum())
    assert out.diagnostics["T_mean"] == pytest.approx(T_mean, rel=1e-12)
    assert float(out.terms["kappa"]) == pytest.approx(((T_mean - KAPPA) / KAPPA) ** 2, rel=1e-10)
    assert float(out.terms["closure"]) == pytest.approx(float((wn * t.norm2_dphi).sum()), rel=1e-12)
    assert float(out.terms["coclosure"]) == pytest.approx(float((wn * t.norm2_dpsi).sum()), rel=1e-12)
    assert float(out.terms["det"]) < 1e-25                 # det g(phi_bg) = 65/32 exactly
    assert out.diagnostics["det_mean"] == pytest.approx(DET, rel=1e-14)
    assert float(out.terms["positivity"]) == 0.0
    assert out.diagnostics["nonpositive_frac"] == 0.0
    total = sum(float(v) for v in out.terms.values())
    assert float(out.total) == pytest.approx(total, rel=1e-12)
    row = out.row()
    assert row["loss"] == float(out.total) and "loss_kappa" in row and row["anti_flat"] > 0


def test_weights_select_terms(f64):
    model = tiny_model().double()
    x, w = points()
    only_det = compute_losses(model, x, w, LossWeights(det=2.0))
    assert float(only_det.total) == pytest.approx(2 * float(only_det.terms["det"]), abs=0)
    none = compute_losses(model, x, w, LossWeights())
    assert float(none.total) == 0.0
    with pytest.raises(ValueError, match="LossWeights"):
        compute_losses(model, x, w, {"kappa": 1.0})
    with pytest.raises(ValueError, match="weights w"):
        compute_losses(model, x, w[:3], ALL)


def test_anti_flat_measure_and_penalty(f64):
    x, w = points()

    class Constant(torch.nn.Module):            # phi = s^3 phi0 everywhere: a flat metric
        chart = Chart(1.0)

        def forward(self, p):
            return chart.scale_s() ** 3 * g2.phi0_packed(p.dtype).expand(p.shape[0], -1)

    flat = compute_losses(Constant(), x, w, ALL)
    assert flat.diagnostics["anti_flat"] == 0.0
    assert float(flat.terms["anti_flat"]) == 1.0          # full penalty for a metric constant in lambda
    assert flat.diagnostics["T_mean"] < 1e-12
    assert flat.diagnostics["det_mean"] == pytest.approx(DET, rel=1e-13)
    bg = compute_losses(tiny_model().double(), x, w, ALL)
    assert bg.diagnostics["anti_flat"] > 0.5 and float(bg.terms["anti_flat"]) == 0.0
    # d g / d lambda by forward mode agrees with central differences.
    model = tiny_model().double()
    g, dg = metric_lambda_derivative(torsion_packed(model, x[:8]))
    h = 1e-6
    e0 = torch.zeros_like(x[:8])
    e0[:, 0] = h
    gp = g2.metric_data_packed(model(x[:8] + e0)).g
    gm = g2.metric_data_packed(model(x[:8] - e0)).g
    assert torch.allclose(dg, (gp - gm) / (2 * h), atol=1e-7)


def test_positivity_penalises_a_non_positive_phi(f64):
    x, w = points(16)

    class Flipped(torch.nn.Module):             # -phi0 is positive for the opposite orientation only
        chart = Chart(1.0)

        def forward(self, p):
            return -g2.phi0_packed(p.dtype).expand(p.shape[0], -1)

    out = compute_losses(Flipped(), x, w, ALL)
    assert out.diagnostics["nonpositive_frac"] == 1.0
    assert float(out.terms["positivity"]) > 0.5


def test_gradients_flow_to_parameters_in_float32():
    model = tiny_model()
    with torch.no_grad():
        model.head.weight.normal_(std=1e-2)
    x, w = sampling.uniform(32, 1.0, torch.Generator().manual_seed(1), neck_weighted=True)
    out = compute_losses(model, x, w, ALL)
    out.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.count_nonzero(model.head.weight.grad) > 0
    assert out.total.dtype == torch.float32 and math.isfinite(float(out.total))


def test_fd_method_agrees_with_autograd(f64):
    model = tiny_model().double()
    x, w = points(24)
    a = compute_losses(model, x, w, ALL, method="autograd")
    b = compute_losses(model, x, w, ALL, method="fd")
    assert b.diagnostics["T_mean"] == pytest.approx(a.diagnostics["T_mean"], rel=1e-6)

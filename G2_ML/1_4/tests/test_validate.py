"""G2 identity report: exact fixtures, split identities of the torsion classes, files and bad input."""
import json
import math

import pytest
import torch

from k7lib import forms as F
from k7lib import g2
from k7lib.apps import validate as V
from k7lib.report import figures
from k7lib.sampling.points import sobol as sample_chart

N = 7


def f_and_df(x):
    f = 0.3 * torch.sin(x[:, 0]) + 0.1 * torch.cos(2 * math.pi * (x[:, 2] - x[:, 5]))
    df = torch.stack([0.3 * torch.cos(x[:, 0]), torch.zeros_like(x[:, 0]),
                      -0.1 * 2 * math.pi * torch.sin(2 * math.pi * (x[:, 2] - x[:, 5])),
                      torch.zeros_like(x[:, 0]), torch.zeros_like(x[:, 0]),
                      0.1 * 2 * math.pi * torch.sin(2 * math.pi * (x[:, 2] - x[:, 5])),
                      torch.zeros_like(x[:, 0])], 1)
    return f, df


def conformal_phi(x):
    f = 0.3 * torch.sin(x[:, 0]) + 0.1 * torch.cos(2 * math.pi * (x[:, 2] - x[:, 5]))
    return torch.exp(3 * f)[:, None] * g2.phi0_packed(x.dtype)


def pullback(A):
    return F.pack(torch.einsum("abc,zai,zbj,zck->zijk", g2.phi0(A.dtype), A, A, A), 3)


def diffeo_phi(x):
    k = torch.tensor([1.0, -0.5, 0.7, 0.3, -0.2, 0.4, 0.6], dtype=x.dtype)
    e = 0.12 * torch.tensor([1.0, 0.5, -0.7, 0.3, 0.2, -0.4, 0.6], dtype=x.dtype)
    ph = torch.cos(x @ k[:, None] + torch.arange(N, dtype=x.dtype))
    return pullback(torch.eye(N, dtype=x.dtype) + (e * ph)[:, :, None] * k)


_M1, _M2 = (0.2 * torch.randn(N, N, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2))


def generic_phi(x):
    a = torch.sin(x[:, 0] + 2 * math.pi * x[:, 2])[:, None, None]
    b = torch.cos(2 * math.pi * (x[:, 1] - x[:, 5]))[:, None, None]
    return pullback(torch.eye(N, dtype=x.dtype) + a * _M1.to(x.dtype) + b * _M2.to(x.dtype))


def test_conformal_fixture_exact(f64):
    x = sample_chart(32, 1.0, seed=1)
    table, summary = V.g2_identity_report(conformal_phi, x, chunk=12)
    f, df = f_and_df(x)
    df2_g = (torch.exp(-2 * f) * (df**2).sum(1)).numpy()         # |df|^2_g with g = e^{2f} I
    assert len(table) == 32
    for col in ("norm2_phi", "norm2_psi", "phi_wedge_psi"):
        assert summary[col]["max_abs_deviation"] < 1e-12
    assert (abs(table["norm_dphi"] ** 2 - 36 * df2_g)).max() < 1e-11
    assert (abs(table["norm_dpsi"] ** 2 - 48 * df2_g)).max() < 1e-11
    assert (abs(table["norm_tau1"] ** 2 - df2_g)).max() < 1e-12          # tau1 = df
    for col in ("tau0", "norm_tau2", "norm_tau3"):
        assert table[col].abs().max() < 1e-6                                 # sqrt of round-off
    assert summary["dphi_split_residual"]["max_abs_deviation"] < 1e-12
    assert summary["dpsi_split_residual"]["max_abs_deviation"] < 1e-12
    assert summary["kappa_T_check"]["target"] == "1/61"
    assert summary["det_g_check"]["target"] == "65/32"
    json.dumps(summary)


def test_pullback_is_torsion_free(f64):
    x = sample_chart(16, 1.0, seed=2)
    table, summary = V.g2_identity_report(diffeo_phi, x)
    assert table["T"].max() < 1e-12
    assert summary["phi_wedge_psi"]["max_abs_deviation"] < 1e-12


def test_generic_field_split_identities_by_finite_differences(f64):
    x = sample_chart(16, 1.0, seed=3)
    table = V.identity_table(generic_phi, x, method="fd")
    assert table["norm_tau2"].min() > 1e-2 and table["norm_tau3"].min() > 1e-2
    assert table["dphi_split_residual"].abs().max() < 1e-8
    assert table["dpsi_split_residual"].abs().max() < 1e-7


def test_generic_field_split_identities_by_autograd(f64):
    x = sample_chart(16, 1.0, seed=3)
    table = V.identity_table(generic_phi, x, method="autograd")
    # catches a wrong forward-mode derivative of g^{-1} (torch 2.13's cholesky_inverse jvp)
    assert table["dphi_split_residual"].abs().max() < 1e-12
    assert table["dpsi_split_residual"].abs().max() < 1e-12


def test_histograms_and_bad_input(f64, tmp_path):
    x = sample_chart(24, 1.0, seed=4)
    table, _ = V.g2_identity_report(conformal_phi, x)
    paths = figures.identity_histograms(table, tmp_path / "plots", V.EXACT, V.DESCRIPTION)
    assert len(paths) == len(table.columns) - 1 and all(p.exists() and p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match=r"\(batch, 7\)"):
        V.identity_table(conformal_phi, torch.zeros(4, 6))
    with pytest.raises(ValueError, match="not positive"):
        V.identity_table(lambda y: torch.zeros(y.shape[0], 35), x)


def test_validate_run_and_command(tmp_path, capsys):
    from k7lib.__main__ import main
    from k7lib.learn.config import Config
    from k7lib.learn.model import K7PhiModel
    cfg = Config.from_profile("quick", width=16, depth=2)
    torch.manual_seed(0)
    model = K7PhiModel(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.01)
    res = V.validate_run(model, cfg, n_points=24, out_dir=tmp_path)
    saved = json.loads((tmp_path / "g2_validation.json").read_text())
    assert saved["statistics"]["norm2_phi"]["max_abs_deviation"] < 1e-10
    assert (tmp_path / "g2_validation_points.csv").exists()
    assert len(res.files["plots"]) == len(V.DESCRIPTION) - 1
    with pytest.raises(ValueError, match="n_points"):
        V.validate_run(model, cfg, n_points=0, out_dir=tmp_path)
    empty = tmp_path / "runs"
    assert main(["validate", "--root", str(empty)]) == 2
    assert "error: no trained run found" in capsys.readouterr().err

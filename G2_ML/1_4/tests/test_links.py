"""The quintic link: sampling, Fubini-Study/contact data, the seed's G2 structure, learning, CLI."""
import json
import math

import pytest
import torch

from k7lib import derivatives as D
from k7lib import forms as F
from k7lib.__main__ import main as k7main
from k7lib.apps import cli
from k7lib.calabi_yau import link as Lk
from k7lib.calabi_yau import link_analysis
from k7lib.calabi_yau import link_chart as LC
from k7lib.calabi_yau import quintic as Qn

TOL = 1e-10


@pytest.fixture(scope="module")
def x32():
    return LC.link_points(32, seed=3)


# ---------------------------------------------------------------- sampling and Q
def test_projection_sampler_reproduces_fs_volume():
    qs = Qn.sample_projections(4000, seed=0)
    est, se = qs.integral()
    exact = Qn.fs_volume_quintic()
    assert exact == pytest.approx(5 * math.pi ** 3 / 6, rel=1e-15)
    assert abs(est - exact) < 3 * se, (est, se, exact)
    assert se / exact < 0.01


def test_line_points_lie_on_q_and_are_fs_distributed():
    lines = Qn.sample_lines(6000, seed=1)
    assert lines.z.shape == (6000, 5)
    assert float(Qn.residual(lines.z).max()) < 1e-12
    assert float(lines.weights.sum()) == pytest.approx(Qn.fs_volume_quintic(), rel=1e-12)
    proj = Qn.sample_projections(3000, seed=2)
    # FS averages of non-constant functions agree between the two independent samplers
    for f in (Qn.omega_ratio, lambda z: (z[:, 0].abs() / z.norm(dim=-1)) ** 4):
        a, sa = lines.integral(f(lines.z))
        b, sb = proj.integral(f(proj.z))
        vb, svb = proj.integral()
        assert abs(a / Qn.fs_volume_quintic() - b / vb) < 4 * math.hypot(sa / Qn.fs_volume_quintic(), sb / vb)
    s_lines, s_proj = Qn.sigma_measure(lines), Qn.sigma_measure(proj)
    assert 0.1 < s_lines < 1 and abs(s_lines - s_proj) < 0.03


def test_omega_ratio_is_patch_independent():
    z = Qn.sample_lines(20, seed=4).z
    z = LC.fundamental_domain(z)      # |z0| largest, |z4| next: patches (0,4), (0,1), (4,0) all valid
    n = len(z)
    full = lambda i: torch.full((n,), i, dtype=torch.long)
    a = Qn.omega_ratio(z, full(0), full(4))
    for s, e in ((0, 1), (4, 0), (1, 4)):
        assert torch.allclose(Qn.omega_ratio(z, full(s), full(e)), a, rtol=1e-10, atol=0)


def test_fundamental_domain_is_a_symmetry():
    z = Qn.sample_lines(50, seed=5).z
    theta = torch.linspace(-3, 3, 50, dtype=torch.float64)
    zf = LC.fundamental_domain(z, theta)
    assert float(Qn.residual(zf).max()) < 1e-12
    assert torch.allclose(Qn.omega_ratio(zf), Qn.omega_ratio(z), rtol=1e-10)
    assert torch.allclose(torch.angle(zf[:, 0]), theta, atol=1e-12)
    assert bool((zf[:, 0].abs() >= zf[:, 1:].abs().amax(-1) - 1e-15).all())


def test_chart_roundtrip():
    x = LC.link_points(40, seed=6)
    assert x.dtype == torch.float64 and x.shape == (40, 7)
    z = LC.sphere_from_chart(x)
    assert float(Qn.residual(z).max()) < 1e-12
    assert torch.allclose(z.norm(dim=-1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(LC.chart_from_sphere(z), x, atol=1e-12)
    assert float(Lk.angle_to_cut(x).min()) > 0.1


# ---------------------------------------------------------------- Kahler and contact data
def test_fs_data_normalisation(x32):
    c = Lk.chart_forms(x32)
    Z, dZ, _ = LC.affine_chart(x32)
    det_h = torch.linalg.det(Qn.fs_hermitian(Z, dZ)).real
    om3 = F.wedge_packed(F.wedge_packed(c.omega, c.omega, 2, 2), c.omega, 4, 2)   # 6-form, (batch, 7)
    base = F.combo_index(6)[(1, 2, 3, 4, 5, 6)]
    # omega^3/3! = det h dx^1..dx^6 and no dtheta leg in omega
    assert torch.allclose(om3[:, base] / 6, det_h, rtol=1e-12)
    assert float(F.interior_basis_packed(c.omega, 2)[:, 0].abs().max()) == 0
    assert torch.allclose(c.eta[:, 0], torch.full_like(c.eta[:, 0], 0.5))     # eta(d/dtheta) = 1/2
    # (i/8) Omega ^ Omegabar = (1/4) Re Omega ^ Im Omega = r^2 omega^3/3!
    vol_ratio = F.wedge_packed(c.re_Omega, c.im_Omega, 3, 3)[:, base] / 4 / det_h
    assert torch.allclose(vol_ratio, c.r ** 2, rtol=1e-12)


def test_closed_structure_exact_derivatives(x32):
    chk = Lk.structure_checks(x32, Lk.LinkStructure())
    for key in ("d_omega", "d_eta_minus_omega", "d_phi_minus_omega2", "d_psi", "metric_vs_closed_form"):
        assert float(chk[key].max()) <= TOL, (key, float(chk[key].max()))
    assert bool((chk["orientation"] == 1).all())
    # phi ^ psi / vol_g = (3 + 4 r^2) / r^{4/3}: 7 only where r = 1; FS data has r varying
    assert torch.allclose(chk["phi_wedge_psi"], chk["phi_wedge_psi_predicted"], rtol=1e-10)
    assert float(chk["r"].max() - chk["r"].min()) > 0.1
    assert float(chk["psi_minus_star_phi"].max()) > 1e-2
    assert float(chk["d_star_phi"].max()) > 1e-2


def test_pointwise_normalisation_trades_closedness_for_psi_star_phi(x32):
    chk = Lk.structure_checks(x32[:12], Lk.LinkStructure(kappa=0.7, normalisation="pointwise"))
    assert float(chk["psi_minus_star_phi"].max()) <= TOL
    assert torch.allclose(chk["phi_wedge_psi"], torch.full_like(chk["r"], 7.0), rtol=1e-12)
    assert float(chk["metric_vs_closed_form"].max()) <= TOL      # g(phi) = g_Q + eta^2
    assert float(chk["d_omega"].max()) <= TOL
    assert float(chk["d_psi"].min()) > 1e-3 and float(chk["d_phi_minus_omega2"].min()) > 1e-3


def test_stable_dense_fields_with_public_d(x32):
    x = x32[:8]
    phi, psi, om = Lk.phi_field(x), Lk.psi_field(x), Lk.omega_field(x)
    assert phi.shape == (8, 7, 7, 7) and psi.shape == (8, 7, 7, 7, 7) and om.shape == (8, 7, 7)
    om2 = F.wedge(om, om, 2, 2)
    dphi = D.d(Lk.phi_field, x)
    assert float((dphi - om2).abs().max()) <= TOL * float(om2.abs().max())
    assert float(D.d(Lk.psi_field, x).abs().max()) <= TOL * float(psi.abs().max())
    assert float(D.d(Lk.omega_field, x).abs().max()) <= TOL * float(om.abs().max())
    # central differences agree with the exact derivative to their O(h^2) accuracy
    assert float((D.d(Lk.phi_field, x, method="fd") - dphi).abs().max()) < 1e-6


# ---------------------------------------------------------------- bad input
def test_bad_input_raises():
    z = LC.sphere_from_chart(LC.link_points(4, seed=7))
    off = z.clone()
    off[:, 1] += 0.1
    with pytest.raises(ValueError, match="off the quintic"):
        LC.chart_from_sphere(off)
    sheet = z.clone()
    sheet[:, 4] *= complex(math.cos(2 * math.pi / 5), math.sin(2 * math.pi / 5))
    with pytest.raises(ValueError, match="another sheet"):
        LC.chart_from_sphere(sheet)
    on_branch = torch.tensor([[1, -1, 0, 0, 0]], dtype=torch.complex128) / math.sqrt(2)   # z4 = 0 on Q
    with pytest.raises(ValueError, match="vanishes"):
        Qn.affine_frame(on_branch, 0, 4)
    w1 = complex(math.cos(math.pi / 5), math.sin(math.pi / 5))                            # 1 + w1^5 = 0
    x = torch.tensor([[0.0, w1.real, w1.imag, 0, 0, 0, 0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="off the patch"):
        Lk.phi_field(x)
    with pytest.raises(ValueError, match="shape"):
        Lk.phi_field(torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="kappa"):
        Lk.LinkStructure(kappa=-1.0)
    with pytest.raises(ValueError, match="normalisation"):
        Lk.LinkStructure(normalisation="mean")
    with pytest.raises(ValueError, match="epochs"):
        Lk.TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="n must be"):
        Qn.sample_lines(0)


# ---------------------------------------------------------------- learning, runs, CLI
def test_train_validate_runs_and_cli(tmp_path):
    root = tmp_path / "runs"
    cfg = Lk.TrainConfig(n_points=256, epochs=3, batch_size=64, width=16, depth=2)
    r1 = Lk.fit_link(cfg, root=root)
    r2 = Lk.fit_link(cfg, root=root)
    assert (r1.name, r2.name) == ("run_1", "run_2")
    saved = Lk.load_run(None, root)
    path, loaded, models = saved.path, saved.config, saved.networks
    assert path == r2 and loaded == cfg and set(models) == {"3form", "metric"}
    assert models["3form"](LC.link_points(3)).shape == (3, 35)
    with pytest.raises(ValueError, match="not found"):
        Lk.load_run(9, root)

    x = LC.link_points(12, seed=11)
    summary, components, _ = link_analysis.analyse(models, cfg.structure, x)
    row = lambda f, c: summary[(summary.field == f) & (summary.check == c)].iloc[0]
    assert row("analytic", "d_psi").max_relative <= TOL
    assert row("analytic", "d_phi_minus_omega2").max_relative <= TOL
    assert row("analytic_star", "phi_wedge_psi").max_abs <= 1e-10
    for c in ("phi_wedge_psi", "d_psi", "d_phi_minus_omega2", "phi_fit", "metric_fit"):
        assert math.isfinite(row("learned", c).max_abs)
    assert row("learned", "d_psi").max_abs > row("analytic", "d_psi").max_abs   # an untrained net is not exact
    assert len(components[(components.field == "learned") & (components.check == "d_psi")]) == 21

    plots = tmp_path / "plots"
    assert cli.main(["links", "validate", "--root", str(root), "--run", "1", "--n", "8", "--plots", str(plots)]) == 0
    assert (plots / "links_identities_run_1.png").is_file()
    assert (r1 / "validation_summary.csv").is_file() and (r1 / "validation_components.csv").is_file()
    assert k7main(["links", "validate", "--root", str(tmp_path / "empty"), "--plots", str(plots)]) == 2


def test_cli_sample(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["links", "sample", "--n", "40", "--volume-draws", "400", "--n-checks", "4", "--out", str(out)]) == 0
    s = json.loads((out / "link_sample_summary.json").read_text())
    assert s["max_d_psi"] <= TOL and s["max_d_phi_minus_omega2"] <= TOL
    assert abs(s["fs_volume_deviation_in_se"]) < 4
    data = torch.load(out / "link_samples.pt", weights_only=True)
    assert data["x"].shape == (40, 7) and data["phi"].shape == (40, 35) and data["g"].shape == (40, 7, 7)

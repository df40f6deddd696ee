"""Learned Ricci-flat Kahler potential on the Fermat quintic and the link's G2 structure built from it."""
import json
import math

import pytest
import torch

from k7lib.__main__ import main as k7main
from k7lib.apps import cli
from k7lib.calabi_yau import link as Lk
from k7lib.calabi_yau import link_chart as LC
from k7lib.calabi_yau import quintic as Qn
from k7lib.calabi_yau import ricci_flat as RF

TOL = 1e-10
TINY = RF.RicciConfig(n_train=500, epochs=10, batch_size=50, width=32, depth=2, lr=3e-3, seed=0)


def log_norm(z):
    return torch.log(z.abs().pow(2).sum(-1))


def random_potential(seed=1, width=16, depth=2):
    """A float64 KahlerPotential with a nonzero last layer (a generic smooth invariant function)."""
    torch.manual_seed(seed)
    m = RF.KahlerPotential(width, depth).double()
    torch.nn.init.normal_(m.net[-1].weight, std=0.5)
    return m.requires_grad_(False)


@pytest.fixture(scope="module")
def trained():
    model, history, info = RF.fit_ricci_flat(TINY)
    return model, history, info


# ---------------------------------------------------------------- d dbar
def test_ddbar_of_log_norm_is_fubini_study_and_gradient_is_connection():
    z = Qn.sample_lines(64, seed=2).z
    scale, elim = Qn.choose_patch(z)
    Z, dZ, _ = Qn.affine_frame(z, scale, elim)
    h, grad = RF.ddbar(log_norm, Z, dZ, with_gradient=True)
    h_fs = Qn.fs_hermitian(Z, dZ)
    assert h.shape == (64, 3, 3) and grad.shape == (64, 3)
    assert float((h - h_fs).abs().max()) <= TOL * float(h_fs.abs().max())
    # d_a log|Z|^2 = <dZ_a, Z>/|Z|^2
    A = (dZ @ Z.conj()[..., None])[..., 0] / Z.abs().pow(2).sum(-1)[:, None]
    assert float((grad - A).abs().max()) <= TOL
    # the potential and its multiples of log|z|^2 shift h by that multiple of h_FS
    kd = RF.kahler_data(z, lambda w: 0.25 * log_norm(w))
    assert torch.allclose(kd.h, 1.25 * kd.h_fs, rtol=1e-12, atol=0)
    assert torch.allclose(kd.volume_ratio, torch.full((64,), 1.25 ** 3, dtype=torch.float64), rtol=1e-12)


def test_ddbar_of_z0_fraction_matches_analytic_pullback():
    """f = |z0|^2/|z|^2: d_i dbar_j f = d_i0 d_j0/N - d_j0 z0 zbar_i/N^2 - d_i0 zbar0 z_j/N^2 - |z0|^2 d_ij/N^2
    + 2 |z0|^2 zbar_i z_j/N^3 (N = |z|^2), pulled back by dZ: h = dZ M dZ^H."""
    z = Qn.sample_lines(40, seed=3).z
    scale, elim = Qn.choose_patch(z)
    Z, dZ, _ = Qn.affine_frame(z, scale, elim)
    h = RF.ddbar(lambda w: w[..., 0].abs().pow(2) / w.abs().pow(2).sum(-1), Z, dZ)
    N = Z.abs().pow(2).sum(-1)[:, None, None]
    e0 = torch.zeros(5, dtype=Z.dtype)
    e0[0] = 1
    z0 = Z[:, 0][:, None, None]
    M = (e0[:, None] * e0[None, :]) / N - e0[None, None, :] * z0 * Z.conj()[:, :, None] / N ** 2 \
        - e0[None, :, None] * z0.conj() * Z[:, None, :] / N ** 2 - z0.abs() ** 2 * torch.eye(5, dtype=Z.dtype) / N ** 2 \
        + 2 * z0.abs() ** 2 * Z.conj()[:, :, None] * Z[:, None, :] / N ** 3
    expected = dZ @ M @ dZ.conj().transpose(-1, -2)
    assert float((h - expected).abs().max()) <= TOL * float(expected.abs().max())
    assert float((h - h.conj().transpose(-1, -2)).abs().max()) <= TOL     # Hermitian


def test_ddbar_agrees_with_real_hessian_through_the_nonlinear_link_chart():
    """Full real Hessian of x -> phi_NN(Z(w(x))) through the chart's root z4(w) (second holomorphic derivatives
    of Z included) gives the same d dbar as the first-order construction of `ddbar`."""
    pot = random_potential(seed=4)
    x = LC.link_points(4, seed=5)
    Z, dZ, _ = LC.affine_chart(x)
    h = RF.ddbar(pot, Z, dZ).detach()
    s, t = [1, 3, 5], [2, 4, 6]
    for n in range(len(x)):
        f = lambda y: pot(LC.affine_chart(y[None])[0])[0]
        H = torch.autograd.functional.hessian(f, x[n])
        H = H.detach()
        ref = 0.25 * torch.complex(H[s][:, s] + H[t][:, t], H[s][:, t] - H[t][:, s])
        assert float((ref - h[n]).abs().max()) <= 1e-9 * max(1.0, float(ref.abs().max()))
    assert float(h.abs().max()) > 1e-3        # a nonzero correction was compared


# ---------------------------------------------------------------- zero potential = Fubini-Study
def test_initial_potential_is_zero_and_sigma_is_fs_sigma_exactly():
    model = RF.KahlerPotential(16, 2).double()
    s = Qn.sample_lines(500, seed=6)
    with torch.no_grad():
        assert float(model(s.z).abs().max()) == 0
    kd = RF.kahler_data(s.z, model)
    assert torch.equal(kd.h, kd.h_fs) and bool((kd.volume_ratio == 1).all())
    assert RF.sigma_measure(s, model) == Qn.sigma_measure(s)
    assert 0.1 < Qn.sigma_measure(s) < 1
    # the float32 module is evaluated in float64 (a copy; the module itself is unchanged)
    m32 = RF.KahlerPotential(16, 2)
    assert RF.sigma_measure(s, m32) == Qn.sigma_measure(s)
    assert next(m32.parameters()).dtype == torch.float32
    # the link structure of omega_FS is exactly the one of `links`
    x = LC.link_points(8, seed=7)
    for corr in (False, True):
        ld = RF.link_data(x, model, kappa=0.8, correct_eta=corr)
        phi, psi = Lk.phi_psi_packed(x, Lk.LinkStructure(kappa=0.8))
        assert torch.equal(ld.phi, phi) and torch.equal(ld.psi, psi)


def test_sigma_volume_ratio_argument_is_scale_free():
    s = Qn.sample_lines(400, seed=8)
    n = len(s.z)
    assert Qn.sigma_measure(s, torch.full((n,), 3.0, dtype=torch.float64)) == pytest.approx(
        Qn.sigma_measure(s), rel=1e-12)
    # the volume ratio that makes omega^3 proportional to Omega ^ Omegabar gives sigma = 0
    assert Qn.sigma_measure(s, Qn.omega_ratio(s.z)) == pytest.approx(0, abs=1e-14)
    with pytest.raises(ValueError, match="shape"):
        Qn.sigma_measure(s, torch.ones(n + 1, dtype=torch.float64))
    bad = torch.ones(n, dtype=torch.float64)
    bad[3] = -1
    with pytest.raises(ValueError, match="positive"):
        Qn.sigma_measure(s, bad)


# ---------------------------------------------------------------- training
def test_short_training_lowers_monge_ampere_and_sigma_on_fresh_samples(trained):
    model, history, info = trained
    assert model.net[0].weight.dtype == torch.float64
    assert info["epochs_run"] == TINY.epochs and len(history) == TINY.epochs
    assert history["monge_ampere"].iloc[-1] < history["monge_ampere"].iloc[0]
    assert 1 < info["volume_ratio_omega_over_kahler"] < 3
    table = RF.sigma_table(model, 1000, seeds=(201, 202))      # samples not used in training
    assert list(table["n_points"]) == [1000, 1000]
    assert bool((table["sigma_nn"] < table["sigma_fs"]).all())
    assert bool((table["ma_nn"] < table["ma_fs"]).all())
    assert bool((table["min_relative_eigenvalue"] > 0).all())   # omega_NN stays positive
    assert table.attrs["sigma_nn"][0] < table.attrs["sigma_fs"][0]


def test_max_seconds_bounds_training():
    cfg = RF.RicciConfig(n_train=100, epochs=1000, batch_size=100, width=4, depth=1, max_seconds=1e-9)
    _, history, info = RF.fit_ricci_flat(cfg)
    assert info["epochs_run"] == 1 and len(history) == 1


# ---------------------------------------------------------------- the link
def test_link_structure_what_is_exact_and_what_is_not():
    pot = random_potential(seed=9)
    x = LC.link_points(6, seed=10)
    plain = RF.link_checks(x, pot, kappa=1.0, correct_eta=False)
    fixed = RF.link_checks(x, pot, kappa=1.0, correct_eta=True)
    for chk in (plain, fixed):
        assert float(chk["d_omega"].max()) <= TOL        # omega_NN closed
        assert float(chk["d_psi"].max()) <= TOL          # omega_FS ^ Omega = 0: d psi = 0 either way
        assert torch.allclose(chk["phi_wedge_psi"], chk["phi_wedge_psi_predicted"], rtol=1e-10)
    # d eta = omega_FS != omega_NN, so d phi = omega_NN ^ omega_FS != omega_NN^2 unless eta is corrected
    assert float(plain["d_eta_minus_omega"].min()) > 1e-3 and float(plain["d_phi_minus_omega2"].min()) > 1e-3
    assert float(fixed["d_eta_minus_omega"].max()) <= TOL and float(fixed["d_phi_minus_omega2"].max()) <= TOL


def test_trained_metric_moves_the_link_towards_psi_star_phi(trained):
    model, _, _ = trained
    kappa, _ = Lk.kappa_volume_matched(2000, seed=11)
    x = LC.link_points(24, seed=12)
    table = RF.link_comparison(x, model, kappa)
    val = lambda m, c: float(table[(table.metric == m) & (table.check == c)].mean_abs.iloc[0])
    for c in ("r", "psi_minus_star_phi", "phi_wedge_psi"):
        assert val("learned", c) < val("fubini_study", c), c
        assert val("learned_eta_corrected", c) < val("fubini_study", c), c
    assert val("learned_eta_corrected", "d_phi_minus_omega2") <= TOL
    assert val("learned", "d_phi_minus_omega2") > 1e-3


# ---------------------------------------------------------------- bad input and CLI
def test_bad_input_raises():
    with pytest.raises(ValueError, match="epochs"):
        RF.RicciConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        RF.RicciConfig(lr=-1.0)
    with pytest.raises(ValueError, match="positivity_floor"):
        RF.RicciConfig(positivity_floor=1.5)
    with pytest.raises(ValueError, match="width"):
        RF.KahlerPotential(width=0)
    z = Qn.sample_lines(4, seed=13).z
    Z, dZ, _ = Qn.affine_frame(z, *Qn.choose_patch(z))
    with pytest.raises(ValueError, match="complex Z"):
        RF.ddbar(log_norm, Z.real, dZ)
    with pytest.raises(ValueError, match="potential must be"):
        RF.kahler_data(z, potential="phi")
    off = z.clone()
    off[:, 0] += 0.1
    with pytest.raises(ValueError, match="off the quintic"):
        RF.kahler_data(off)
    x = LC.link_points(2, seed=14)
    with pytest.raises(ValueError, match="kappa"):
        RF.link_data(x, kappa=0.0)
    with pytest.raises(ValueError, match="derivative method"):
        RF.link_checks(x, method="spectral")
    with pytest.raises(ValueError, match="shape"):
        RF.link_data(torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="sampler"):
        RF.sigma_table(None, 10, method="grid")


def test_cli_ricci_action(tmp_path):
    root = tmp_path / "runs"
    args = ["ricci", "--n-train", "200", "--epochs", "2", "--batch-size", "100", "--width", "8", "--depth", "1",
            "--n-eval", "200", "--eval-seeds", "1", "2", "--n-link", "3", "--kappa-draws", "200", "--root", str(root)]
    assert cli.main(["links", *args]) == 0
    run = root / "run_1"
    for name in ("potential.pt", "config.json", "history.csv", "sigma.csv", "link_checks.csv", "summary.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and math.isfinite(summary["sigma_nn_mean"])
    assert summary["sigma_fs_mean"] > 0.1 and summary["kappa_draws"] == 200
    saved = RF.load_run(None, root)
    path, config, model = saved.path, saved.config, saved.networks["potential"]
    assert path == run and config.width == 8 and model(Qn.sample_lines(3).z).shape == (3,)
    assert k7main(["links", "ricci", "--epochs", "0", "--root", str(root)]) == 2
    with pytest.raises(ValueError, match="not found"):
        RF.load_run(5, root)

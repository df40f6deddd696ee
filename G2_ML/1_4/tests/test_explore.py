"""Exploration: spectral gap, curvature, torsion tensor, geodesics and region statistics on exact cases."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from k7lib import curvature as Cv
from k7lib import forms as F
from k7lib import g2
from k7lib import torsion as Tor
from k7lib.apps import explore as E
from k7lib.geometry import geodesics as Geo
from k7lib.geometry import regions as Rg
from k7lib.geometry import spectrum as Sp
from k7lib.sampling import points as sampling

N = 7


# ----------------------------------------------------------------------------- analytic fields
def conformal_value(x):
    lam, y = x[:, 0], x[:, 1:]
    tp = 2 * math.pi
    return 0.3 * torch.sin(lam) + 0.2 * lam * torch.cos(tp * y[:, 0]) + 0.1 * torch.sin(tp * (y[:, 1] + 2 * y[:, 4]))


def conformal_f(x):
    """f(lambda, y), its gradient and its flat Hessian, written out by hand."""
    lam, y = x[:, 0], x[:, 1:]
    tp = 2 * math.pi
    f = conformal_value(x)
    df = torch.zeros_like(x)
    df[:, 0] = 0.3 * torch.cos(lam) + 0.2 * torch.cos(tp * y[:, 0])
    df[:, 1] = -0.2 * lam * tp * torch.sin(tp * y[:, 0])
    c = 0.1 * tp * torch.cos(tp * (y[:, 1] + 2 * y[:, 4]))
    df[:, 2], df[:, 5] = c, 2 * c
    hess = torch.zeros(x.shape[0], N, N, dtype=x.dtype)
    hess[:, 0, 0] = -0.3 * torch.sin(lam)
    hess[:, 0, 1] = hess[:, 1, 0] = -0.2 * tp * torch.sin(tp * y[:, 0])
    hess[:, 1, 1] = -0.2 * lam * tp**2 * torch.cos(tp * y[:, 0])
    s = -0.1 * tp**2 * torch.sin(tp * (y[:, 1] + 2 * y[:, 4]))
    for (i, j), w in (((2, 2), 1), ((2, 5), 2), ((5, 2), 2), ((5, 5), 4)):
        hess[:, i, j] = w * s
    return f, df, hess


def conformal_metric(x):
    f = conformal_value(x)
    return torch.exp(2 * f)[:, None, None] * torch.eye(N, dtype=x.dtype)


def conformal_phi(x):
    f = conformal_value(x)
    return torch.exp(3 * f)[:, None] * g2.phi0_packed(x.dtype)


def diffeo_jacobian(x):
    """J = DF for F^a(x) = x^a + e_a sin(k.x + a): a diffeomorphism of R^7 (|e| |k| < 1)."""
    k = torch.tensor([1.0, -0.5, 0.7, 0.3, -0.2, 0.4, 0.6], dtype=x.dtype)
    e = 0.12 * torch.tensor([1.0, 0.5, -0.7, 0.3, 0.2, -0.4, 0.6], dtype=x.dtype)
    ph = torch.cos(x @ k[:, None] + torch.arange(N, dtype=x.dtype))
    return torch.eye(N, dtype=x.dtype) + (e * ph)[:, :, None] * k


def pullback_phi(A):
    dense = torch.einsum("abc,zai,zbj,zck->zijk", g2.phi0(A.dtype), A, A, A)
    return F.pack(dense, 3)


def diffeo_metric(x):
    J = diffeo_jacobian(x)
    return J.transpose(-1, -2) @ J


_GEN = torch.Generator().manual_seed(5)
_M1, _M2 = (0.2 * torch.randn(N, N, generator=_GEN, dtype=torch.float64) for _ in range(2))


def generic_phi(x):
    """A non-integrable frame A(x)^* phi0 with all torsion classes non-zero."""
    M1, M2 = _M1.to(x.dtype), _M2.to(x.dtype)
    a = torch.sin(x[:, 0] + 2 * math.pi * x[:, 2])[:, None, None]
    b = torch.cos(2 * math.pi * (x[:, 1] - x[:, 5]))[:, None, None]
    return pullback_phi(torch.eye(N, dtype=x.dtype) + a * M1 + b * M2)


def three_regions(lam, L):
    """A sharp left/neck/right partition for tests (|lambda| < L/2 is the neck)."""
    t = lam / L
    left, right = (t < -0.5).double(), (t > 0.5).double()
    return torch.stack([left, 1 - left - right, right], -1)


# ----------------------------------------------------------------------------- spectrum
def flat_spectrum(L, diag, n_lambda, n_fourier, count):
    """Exact eigenvalues of the basis space for the constant metric diag(d0..d6) on [-L, L] x T^6."""
    ks = [(0,) * 6] + [k for k in sampling.fourier_vectors(n_fourier) for _ in (0, 1)]
    vals = [(m * math.pi / (2 * L)) ** 2 / diag[0] + 4 * math.pi**2 * sum(k[i] ** 2 / diag[i + 1] for i in range(6))
            for m in range(n_lambda) for k in ks]
    return torch.tensor(sorted(vals)[:count], dtype=torch.float64)


@pytest.mark.parametrize("L", [1.0, 0.2])
def test_flat_spectral_gap_is_exact(f64, L):
    flat = lambda x: torch.eye(N).expand(x.shape[0], N, N)      # noqa: E731
    r = Sp.spectral_gap(flat, L, n_fourier=1, n_lambda=4, n_points=251)
    assert r.lambda1 == pytest.approx(min((math.pi / (2 * L)) ** 2, (2 * math.pi) ** 2), rel=1e-12)
    assert abs(float(r.eigenvalues[0])) < 1e-10
    assert torch.allclose(r.eigenvalues, flat_spectrum(L, [1.0] * N, 4, 1, r.eigenvalues.numel()), rtol=1e-11)
    assert r.lambda1_H_star == pytest.approx(r.lambda1 * 99)
    json.dumps(r.to_dict())


def test_constant_anisotropic_metric_spectrum(f64):
    d = [1.5, 0.7, 1.2, 1.0, 0.8, 1.3, 0.9]
    metric = lambda x: torch.diag(torch.tensor(d)).expand(x.shape[0], N, N)   # noqa: E731
    r = Sp.spectral_gap(metric, 1.0, n_fourier=2, n_lambda=3, n_points=251, n_eigs=14, ladder=[(2, 1)])
    assert torch.allclose(r.eigenvalues, flat_spectrum(1.0, d, 3, 2, 14), rtol=1e-10)


def sturm_liouville_lambda1(f_lam, L, n=4000):
    """First non-zero eigenvalue of -(e^{5f} u')' = mu e^{7f} u, u'(+-L) = 0, by linear finite elements.

    An independent reference: piecewise-linear elements on a uniform mesh, element integrals by
    two-point Gauss, sparse generalised eigenproblem (shift-invert about a small negative shift).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import eigsh
    nodes = np.linspace(-L, L, n + 1)
    h = nodes[1] - nodes[0]
    mid = 0.5 * (nodes[1:] + nodes[:-1])
    gp = np.stack([mid - h / (2 * math.sqrt(3)), mid + h / (2 * math.sqrt(3))])       # (2, n)
    a = np.exp(5 * f_lam(gp)).mean(0) / h                                             # stiffness per element
    shape = np.stack([(nodes[1:] - gp) / h, (gp - nodes[:-1]) / h])                   # (2 fns, 2 pts, n)
    wm = np.exp(7 * f_lam(gp)) * h / 2
    mloc = np.einsum("agn,bgn,gn->abn", shape, shape, wm)
    kloc = np.array([[1.0, -1.0], [-1.0, 1.0]])[:, :, None] * a
    idx = np.stack([np.arange(n), np.arange(n) + 1])
    rows = np.broadcast_to(idx[:, None, :], (2, 2, n)).ravel()
    cols = np.broadcast_to(idx[None, :, :], (2, 2, n)).ravel()
    K = coo_matrix((kloc.ravel(), (rows, cols)), shape=(n + 1, n + 1)).tocsc()
    M = coo_matrix((mloc.ravel(), (rows, cols)), shape=(n + 1, n + 1)).tocsc()
    vals = np.sort(eigsh(K, k=2, M=M, sigma=-0.1, which="LM", return_eigenvectors=False))
    return vals[1]


def test_conformal_lambda_metric_against_fine_basis_and_fem(f64):
    f_lam = lambda lam: 0.3 * np.sin(1.3 * lam) + 0.15 * np.cos(2.0 * lam)              # noqa: E731
    metric = lambda x: torch.exp(2 * (0.3 * torch.sin(1.3 * x[:, 0]) + 0.15 * torch.cos(2.0 * x[:, 0])))[
        :, None, None] * torch.eye(N)                                                        # noqa: E731
    coarse = Sp.spectral_gap(metric, 1.0, n_fourier=1, n_lambda=6, n_points=127, n_quad_lambda=60)
    fine = Sp.spectral_gap(metric, 1.0, n_fourier=1, n_lambda=24, n_points=127, n_quad_lambda=60,
                          ladder=[(12, 1)])
    ref = sturm_liouville_lambda1(f_lam, 1.0)
    assert fine.lambda1 == pytest.approx(ref, rel=1e-6)
    assert coarse.lambda1 >= fine.lambda1 - 1e-12             # min-max: a smaller basis bounds from above
    assert coarse.lambda1 == pytest.approx(fine.lambda1, rel=1e-3)
    assert abs(fine.lambda1 - (math.pi / 2) ** 2) > 1e-2      # the conformal factor does move lambda1


def test_ritz_values_decrease_along_nested_bases(f64):
    r = Sp.spectral_gap(conformal_metric, 1.0, n_fourier=1, n_lambda=6, n_points=251,
                       ladder=[(2, 1), (3, 1), (4, 1), (6, 1)])
    vals = r.convergence.sort_values("n_basis")["lambda1"].to_numpy()
    assert np.all(np.diff(vals) <= 1e-12 * vals[0])
    assert vals[0] - vals[-1] > 1e-6                          # the refinement matters for this metric


def test_spectral_bad_input(f64):
    flat = lambda x: torch.eye(N).expand(x.shape[0], N, N)     # noqa: E731
    with pytest.raises(ValueError, match="basis too small"):
        Sp.spectral_gap(flat, 1.0, n_fourier=1, n_lambda=1)
    with pytest.raises(ValueError, match="basis too small"):
        Sp.spectral_gap(flat, 1.0, n_fourier=0, n_lambda=4)
    with pytest.raises(ValueError, match="basis too small for the requested"):
        Sp.spectral_gap(flat, 1.0, n_fourier=1, n_lambda=2, n_eigs=100)
    with pytest.raises(ValueError, match="n_points"):
        Sp.spectral_gap(flat, 1.0, n_fourier=1, n_lambda=2, n_points=5)
    with pytest.raises(ValueError, match="L must be a positive finite number"):
        Sp.spectral_gap(flat, 0.0)


# ----------------------------------------------------------------------------- curvature
def test_flat_metrics_have_zero_curvature(f64):
    x = sampling.sobol(24, 1.0, seed=2)
    A = torch.eye(N) + 0.3 * torch.randn(N, N, generator=torch.Generator().manual_seed(1))
    const = lambda y: (A.T @ A).expand(y.shape[0], N, N)        # noqa: E731
    c = Cv.curvature(const, x)
    assert c.riemann.abs().max() < 1e-13 and c.christoffel.abs().max() < 1e-13
    # flat metric in curvilinear coordinates: non-zero Christoffels, zero curvature
    c = Cv.curvature(diffeo_metric, x)
    assert c.christoffel.abs().max() > 1e-2
    assert c.riemann.abs().max() < 1e-12 and c.scalar.abs().max() < 1e-12


def test_conformal_scalar_and_ricci_curvature_exact(f64):
    x = sampling.sobol(48, 1.5, seed=1)
    c = Cv.curvature(conformal_metric, x, chunk=20)
    f, df, hess = conformal_f(x)
    lap, df2 = hess.diagonal(dim1=1, dim2=2).sum(-1), (df**2).sum(-1)
    # Besse, Einstein Manifolds, Thm 1.159 (Besse's Laplacian is -sum d_i^2): for g = e^{2f} delta
    R = -torch.exp(-2 * f) * (2 * (N - 1) * lap + (N - 2) * (N - 1) * df2)
    Ric = -(N - 2) * (hess - df[:, :, None] * df[:, None, :]) - (lap + (N - 2) * df2)[:, None, None] * torch.eye(N)
    assert R.abs().max() > 10
    assert (c.scalar - R).abs().max() < 1e-12 * R.abs().max()
    assert (c.ricci - Ric).abs().max() < 1e-12 * Ric.abs().max()
    low = torch.einsum("zqr,zrsij->zqsij", c.g, c.riemann)
    assert (low + low.transpose(1, 2)).abs().max() < 1e-11                       # R_qsij = -R_sqij
    assert (low - low.permute(0, 3, 4, 1, 2)).abs().max() < 1e-11                # pair symmetry
    bianchi = low + low.permute(0, 1, 3, 4, 2) + low.permute(0, 1, 4, 2, 3)      # R_q[sij] = 0
    assert bianchi.abs().max() < 1e-11


def test_round_sphere_chart_curvature(f64):
    """Stereographic metric 4/(1+|x|^2)^2 delta of the unit 7-sphere: Ric = 6 g, R = 42."""
    metric = lambda x: (4 / (1 + (x**2).sum(-1)) ** 2)[:, None, None] * torch.eye(N)   # noqa: E731
    x = 0.5 * torch.randn(10, N, generator=torch.Generator().manual_seed(0))
    c = Cv.curvature(metric, x)
    assert torch.allclose(c.scalar, torch.full_like(c.scalar, N * (N - 1)), atol=1e-11)
    assert torch.allclose(c.ricci, (N - 1) * c.g, atol=1e-11)


def test_hotspots_and_refinement(f64):
    L = 1.0
    x = sampling.sobol(400, L, seed=3)
    val = torch.exp(-10 * x[:, 0] ** 2)                       # peaked in the neck
    h = Rg.hotspots(x, val, L, fraction=0.05, region_weights=three_regions)
    assert h.count == 20 and h.mask.sum() == 20
    assert h.regions["neck"]["hotspots"] == 20
    assert sum(r["points"] for r in h.regions.values()) == 400
    assert sum(h.lambda_bins["hotspots"]) == 20
    json.dumps(h.to_dict())
    g = Rg.refinement_guidance(x[:, 0], val, torch.ones(400), L, region_weights=three_regions, n_bins=4)
    assert g["regions"][0]["region"] == "neck"
    assert {g["lambda_bins"][0]["lambda_lo"], g["lambda_bins"][1]["lambda_lo"]} == {-0.5, 0.0}
    assert sum(b["share"] for b in g["lambda_bins"]) == pytest.approx(1.0)
    json.dumps(g)
    with pytest.raises(ValueError, match="fraction"):
        Rg.hotspots(x, val, L, fraction=1.5, region_weights=three_regions)


# ----------------------------------------------------------------------------- torsion tensor
def test_full_torsion_exact_cases(f64):
    x = sampling.sobol(16, 1.0, seed=4)
    ft = Tor.full_torsion(generic_phi, x)
    assert ft.residual.max() < 1e-12 and ft.norm.min() > 1e-2      # nabla phi = T . psi
    ft = Tor.full_torsion(lambda y: pullback_phi(diffeo_jacobian(y)), x)
    assert ft.T.abs().max() < 1e-12                                  # F^* phi0 is torsion-free
    ft = Tor.full_torsion(conformal_phi, x)
    _, df, _ = conformal_f(x)
    expect = -torch.einsum("zn,znp,zplm->zlm", df, ft.g_inv, ft.phi)   # T = -(df)^# ⌟ phi
    assert (ft.T - expect).abs().max() < 1e-12 * expect.abs().max()


# ----------------------------------------------------------------------------- geodesics
def test_flat_geodesics_are_straight_lines(f64):
    A = torch.eye(N) + 0.2 * torch.randn(N, N, generator=torch.Generator().manual_seed(3))
    metric = lambda y: (A.T @ A).expand(y.shape[0], N, N)       # noqa: E731
    x0, v0 = sampling.sobol(3, 1.0, seed=5), torch.randn(3, N, generator=torch.Generator().manual_seed(4))
    geo = Geo.geodesics(metric, x0, v0, t_max=2.0, n_steps=8)
    line = x0 + geo.t[:, None, None] * v0
    assert (geo.x - line).abs().max() < 1e-13 and geo.energy_drift.max() < 1e-14


def test_geodesic_energy_conservation_rk4_order(f64):
    x0 = sampling.sobol(3, 1.0, seed=6)
    v0 = torch.randn(3, N, generator=torch.Generator().manual_seed(7))
    v0 = v0 / v0.norm(dim=1, keepdim=True)
    drift = [Geo.geodesics(conformal_metric, x0, v0, 1.0, n).energy_drift.max() for n in (10, 20)]
    assert drift[0] < 1e-3
    assert drift[0] / drift[1] > 10                            # fourth order: about 16


def test_torsion_modified_geodesics(f64):
    x0 = sampling.sobol(2, 1.0, seed=8)
    v0 = torch.randn(2, N, generator=torch.Generator().manual_seed(9))
    v0 = v0 / v0.norm(dim=1, keepdim=True)
    T = Tor.g2_torsion_tensor(conformal_phi)
    g_lc = Geo.geodesics(conformal_metric, x0, v0, 0.4, 4)
    g_t = Geo.geodesics(conformal_metric, x0, v0, 0.4, 4, torsion=T)
    g_t2 = Geo.geodesics(conformal_metric, x0, v0, 0.4, 8, torsion=T)
    assert g_t.flow.startswith("torsion") and g_lc.flow == "levi-civita"
    assert (g_t.x[-1] - g_lc.x[-1]).abs().max() > 1e-3          # the S3 term is not zero here
    assert g_t.antisymmetric_force < 1e-13                       # a 3-form part would drop out
    assert g_t.energy_drift.max() < 1e-3
    assert g_t.energy_drift.max() / g_t2.energy_drift.max() > 8


def test_geodesics_bad_input(f64):
    x0 = torch.zeros(2, N)
    with pytest.raises(ValueError, match="same shape"):
        Geo.geodesics(conformal_metric, x0, torch.zeros(3, N), 1.0, 4)
    with pytest.raises(ValueError, match="t_max"):
        Geo.geodesics(conformal_metric, x0, x0, -1.0, 4)
    with pytest.raises(ValueError, match=r"\(batch, 7\)"):
        Geo.geodesics(conformal_metric, torch.zeros(2, 6), torch.zeros(2, 6), 1.0, 4)


# ----------------------------------------------------------------------------- regions
def test_region_table_exact_deviations(f64):
    from k7lib import chart
    L, c = 1.0, 1.3
    bg = lambda y: chart.Chart(L).phi_background(y)                   # noqa: E731
    x = sampling.sobol(64, L, seed=9)
    t = Rg.region_table(lambda y: c * bg(y), x, L, background=bg, region_weights=three_regions)
    assert np.allclose(t["phi_deviation"], c - 1, atol=1e-12)
    assert np.allclose(t["metric_deviation"], (2 / 3) * math.log(c), atol=1e-12)     # g(c phi) = c^(2/3) g
    stats = Rg.region_statistics(Rg.region_table(bg, x, L, background=bg, region_weights=three_regions))
    assert stats["det_g"]["mean"] == pytest.approx(65 / 32, rel=1e-12)
    assert stats["regions"]["neck"]["points"] + stats["regions"]["left"]["points"] + \
        stats["regions"]["right"]["points"] == 64
    assert stats["regions"]["neck"]["phi_deviation"]["max"] < 1e-12
    assert stats["neck_vs_bulk"]["anisotropy"]["neck_over_bulk"] < 1          # blocks are warped, the neck not
    json.dumps(stats)


# ----------------------------------------------------------------------------- a run
def test_explore_run_end_to_end(tmp_path):
    from k7lib.learn.config import Config
    from k7lib.learn.model import K7PhiModel
    cfg = Config.from_profile("quick", width=16, depth=2)
    torch.manual_seed(0)
    model = K7PhiModel(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.01)
    s = E.ExploreSettings(n_points=16, spectral_n_lambda=2, spectral_points=127, n_geodesics=1,
                          geodesic_steps=1, chunk=16)
    out = E.explore_run(model, cfg, out_dir=tmp_path, settings=s)
    assert model.head.weight.dtype == torch.float32               # the caller's model is untouched
    for key in ("figure", "summary", "refinement"):
        path = Path(out.files[key])
        assert path.exists() and tmp_path in path.parents
    saved = json.loads((tmp_path / "explore_summary.json").read_text())
    assert saved["spectral"]["lambda1_H_star"] == pytest.approx(saved["spectral"]["lambda1"] * 99)
    assert saved["torsion"]["nabla_phi_reconstruction_residual_max"] < 1e-10
    assert max(saved["geodesics"]["energy_drift_levi_civita"]) < 1e-2
    assert set(saved["hotspots_ricci"]["regions"]) == {"left", "neck", "right"}


def test_explore_command_errors(tmp_path, capsys):
    from k7lib.__main__ import main
    assert main(["explore", "--root", str(tmp_path)]) == 2
    assert "error: no trained run found" in capsys.readouterr().err
    (tmp_path / "run_1").mkdir()
    assert main(["explore", "--root", str(tmp_path), "--run", "7"]) == 2
    assert "error: run '7' not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_points"):
        E.ExploreSettings(n_points=0).validate()


def test_lambda1_is_the_neck_mode_set_by_the_length_of_the_chart():
    """Background metric: g_ll = s^2 = (65/32)^(1/7) everywhere and sqrt(det g) constant, so the neck mode
    cos(pi (l + L) / 2L) is an exact eigenfunction in the basis: lambda1 = (pi / 2L)^2 / s^2 at every L,
    lambda1 H* scales as 1/L^2, and lambda1 Vol^(2/7) (scale-invariant) still depends on L."""
    table = Sp.length_dependence((1.0, 2.0, 4.0), n_points=257)
    s2 = (65 / 32) ** (1 / 7)
    assert np.allclose(table["ratio"], 1 / s2, rtol=1e-10, atol=0)
    assert np.allclose(table["neck_mode"], (math.pi / (2 * table["L"])) ** 2, rtol=1e-14)
    assert np.allclose(table["volume"], 2 * table["L"] * math.sqrt(65 / 32), rtol=1e-12)
    assert table["lambda1_H_star"].iloc[0] / table["lambda1_H_star"].iloc[2] == pytest.approx(16, rel=1e-10)
    v = table["lambda1_volume_2_7"].to_numpy()
    assert np.allclose(v, table["lambda1"] * table["volume"] ** (2 / 7), rtol=1e-14) and v[0] > 3 * v[2]
    with pytest.raises(ValueError, match="L must be a positive finite number"):
        Sp.length_dependence((0.0,))

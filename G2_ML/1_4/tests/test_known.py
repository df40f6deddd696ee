"""The torsion-free learner with boundary data (learn.torsion_free, learn.known), the invariants
(geometry.invariants, geometry.spectrum.dirichlet_spectrum) and the `known` command: tiny sizes."""
import math
from dataclasses import replace

import pytest
import torch
from torch.func import jvp, vmap

from k7lib import forms as F
from k7lib import g2
from k7lib.apps.cli import main
from k7lib.derivatives import value_and_jacobian
from k7lib.exact import FIXTURES, Box
from k7lib.geometry.invariants import InvariantSettings, compare, weighted_quantiles
from k7lib.geometry.spectrum import dirichlet_spectrum
from k7lib.learn import checkpoint as C
from k7lib.learn import torsion_free as TF
from k7lib.learn.known import gauss_newton, known_report, train_known
from k7lib.torsion import torsion_packed

BS = FIXTURES["bryant-salamon"]
TINY = TF.KnownConfig(width=12, n_points=96, epochs=2, iterations=4, checkpoint_every=1, polish=0)


def test_start_has_relative_size_eps_matches_phi_E_on_the_boundary_and_is_the_same_for_every_width():
    xc, P = TF.check_problem(BS.phi, BS.box, TINY)
    start = TF.learned_field(BS.phi, BS.box, P)
    m = g2.metric_data_packed(BS.phi(xc))
    d = start(xc) - BS.phi(xc)
    rel = (F.inner_packed(d, d, 3, m.g, m.ginv, m.det) / 7).sqrt()
    assert abs(float(rel.max().detach()) - TINY.eps) <= 1e-12 * TINY.eps            # sup-norm size eps, by construction
    wide = TF.embed(P, 24, torch.Generator().manual_seed(3))
    assert float((wide(xc) - P(xc)).abs().max().detach()) <= 1e-13                # every width starts from the same phi
    face = xc.clone()
    face[:, 3] = BS.box.hi[3]                                             # points on the boundary face x^3 = hi
    assert float((TF.learned_field(BS.phi, BS.box, wide)(face) - BS.phi(face)).abs().max().detach()) == 0.0
    control = TF.build(BS.phi, BS.box, TF.KnownConfig(**{**TINY.to_dict(), "boundary": False}))[2]
    ctrl = TF.learned_field(BS.phi, BS.box, control, boundary=False)
    assert float((ctrl(xc) - start(xc)).abs().max().detach()) <= 1e-14   # the control starts from the same phi
    with torch.no_grad():
        control.free.head.bias.fill_(1e-3)                                 # ... but its free part is not held
    assert float((ctrl(face) - BS.phi(face)).abs().max().detach()) > 1e-4   # on the boundary


def test_the_loss_on_cached_jets_is_the_torsion_of_the_field():
    """torsion_loss (phi_E's jet computed once, the network's per call) = Vol mean(T^2 sqrt det g) of the field
    itself through torsion_packed, with and without boundary data."""
    for boundary in (True, False):
        box, P, model, J = TF.build(BS.phi, BS.box, TF.KnownConfig(**{**TINY.to_dict(), "boundary": boundary}))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
        t = torsion_packed(TF.learned_field(BS.phi, box, model, boundary), J.x)
        direct = box.volume * float(((t.norm2_dphi + t.norm2_dpsi) * t.metric.det.sqrt()).mean().detach())
        assert abs(float(TF.torsion_loss(model, J, box.volume, boundary).detach()) / direct - 1) <= 1e-12


def test_training_lowers_the_torsion_writes_checkpoints_and_resumes(tmp_path):
    run = train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "run_1", label="bs")
    assert run.history["loss_ratio"].iloc[-1] < 0.2
    assert [e for e, _ in C.list_checkpoints(tmp_path / "run_1")] == [1, 2]
    more = train_known(BS.phi, BS.box, TINY.__class__(**{**TINY.to_dict(), "epochs": 3}), run_dir=tmp_path / "run_1",
                       resume=True, label="bs")
    assert list(more.history["epoch"]) == [0, 1, 2]
    assert more.history["loss"].iloc[-1] <= run.history["loss"].iloc[-1]
    with pytest.raises(ValueError, match="other settings"):
        train_known(BS.phi, BS.box, TINY.__class__(**{**TINY.to_dict(), "width": 16}), run_dir=tmp_path / "run_1",
                    resume=True, label="bs")


def test_a_checkpoint_with_bad_values_is_named_and_skipped_for_the_one_before(tmp_path):
    """The learner's checkpoints are validated by value, like a chart run's: NaN weights, a non-finite
    L-BFGS state or a chart run's file are named in a warning and skipped for the previous checkpoint."""
    from k7lib.learn.known import known_problem
    train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "run_1", label="bs")
    path = C.checkpoint_path(tmp_path / "run_1", 2)
    good = torch.load(path, weights_only=True)
    assert known_problem(good, path.name) is None
    bad_model = {**good, "model": {k: v * float("nan") for k, v in good["model"].items()}}
    bad_opt = {**good, "optimizer": {**good["optimizer"], "param_groups": [{**good["optimizer"]["param_groups"][0],
                                                                              "lr": float("inf")}]}}
    assert "NaN" in known_problem(bad_model, path.name) and "L-BFGS" in known_problem(bad_opt, path.name)
    assert "not a k7lib-known" in known_problem({**good, "format": "k7lib-checkpoint-1"}, path.name)
    for bad in (bad_model, bad_opt):
        torch.save(bad, path)
        with pytest.warns(RuntimeWarning, match="ckpt_0000002.pt is invalid"):
            more = train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "run_1", resume=True, label="bs")
        assert list(more.history["epoch"]) == [0, 1]           # resumed from checkpoint 1, trained epoch 2 again


def test_gauss_newton_jacobian_is_the_forward_mode_one_and_the_polish_lowers_the_loss():
    for boundary in (True, False):
        box, P, model, J = TF.build(BS.phi, BS.box, TF.KnownConfig(**{**TINY.to_dict(), "boundary": boundary}))
        J6 = TF.jets_at(J, slice(0, 6))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
            n, dn = value_and_jacobian(model, J6.x)
            r, R = TF.residual_jacobian(J6, n, dn, 0.1, boundary)
            out = n.shape[1]
            basis = torch.eye(out * 8, dtype=n.dtype).reshape(out * 8, 1, out, 8).expand(-1, 6, -1, -1)
            full = vmap(lambda t: jvp(lambda a, da: TF.torsion_residual(J6, a, da, 0.1, boundary), (n, dn),
                                      (t[..., 0], t[..., 1:]))[1])(basis)
        assert float((R - full.reshape(out, 8, 6, 56).permute(2, 3, 0, 1)).abs().max()) <= 1e-13
        assert abs(float((r ** 2).sum()) / float(TF.torsion_loss(model, J6, 0.1 * 6, boundary).detach()) - 1) <= 1e-12
    with torch.no_grad():
        before = float(TF.torsion_loss(model, J, box.volume, False))
    losses = gauss_newton(model, J, box.volume, False, steps=1)
    assert losses and losses[0][0] < before


def test_dirichlet_spectrum_of_a_flat_box_and_the_scaling_of_the_invariants():
    box = Box((0,) * 7, (1, 1.2, 0.9, 1, 1.1, 1, 1.3))
    sides = torch.tensor([1, 1.2, 0.9, 1, 1.1, 1, 1.3], dtype=torch.float64)
    exact = math.pi ** 2 * float((1 / sides ** 2).sum())
    eye = lambda x: torch.eye(7, dtype=x.dtype).expand(x.shape[0], 7, 7)
    sp = dirichlet_spectrum(eye, box, degree=2, n_eigs=1)
    high, low = float(sp.eigenvalues[0]), float(sp.lower_degree[0])
    assert exact <= high <= low and high <= exact * (1 + 2e-4)          # upper bounds, converging in the degree
    s = 1.3                                                     # phi = s^3 phi0: g = s^2 I, Vol * s^7, lambda / s^2
    flat = FIXTURES["flat"].phi
    settings = InvariantSettings(n_points=16, scrambles=2, holonomy_points=4, holonomy_steps=1, degree=2, n_nodes=3)
    t = compare({"exact": flat, "scaled": lambda x: s ** 3 * flat(x)}, box, settings)
    assert abs(t.table.loc["volume", "scaled_rel"] - (s ** 7 - 1)) <= 1e-12
    assert abs(t.table.loc["lambda_1", "scaled_rel"] - (s ** -2 - 1)) <= 1e-10
    assert t.table.loc["int |Rm|^2", "exact"] == 0.0 and math.isnan(t.table.loc["int |Rm|^2", "scaled_rel"])
    assert t.results["scaled"].holonomy.rank == 0


def test_weighted_quantiles():
    v = torch.arange(1.0, 11.0, dtype=torch.float64)
    w = torch.ones(10, dtype=torch.float64)
    assert weighted_quantiles(v, w, (0.1, 0.5, 1.0)).tolist() == [1.0, 5.0, 10.0]
    w[-1] = 91.0                                                # the last value holds 91% of the measure
    assert weighted_quantiles(v, w, (0.05, 0.5)).tolist() == [5.0, 10.0]


BAD = [
    (["--lo", "1.3", "0.8", "0", "0", "0.8", "0", "0", "--hi", "2.3", "0.8", "1", "1", "1.8", "1", "1"],
     "box: empty in coordinate x^1"),
    (["--lo", "2.5", "0.8", "0", "0", "0.8", "0", "0"], "box: inverted in coordinate x^0"),
    (["--lo", "1.3", "0.8", "0", "0", "0.8", "0"], "7 numbers"),
    (["--lo", "0.6", "0.8", "0", "0", "0.8", "0", "0"], "the exact field phi_E is not a positive 3-form at x = ("),
    (["--eps", "0"], "eps: must be a finite number > 0"),
    (["--eps", "-0.1"], "eps: must be a finite number > 0"),
    (["--eps", "40"], "the start phi_E + perturbation (eps = 40; lower eps) is not a positive 3-form at x = ("),
    (["--fixture", "taub-nut"], "unknown fixture 'taub-nut'"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_known_command_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    root = tmp_path / "runs"
    assert main(["known", "--root", str(root), "--no-progress"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not root.exists()


def test_known_command_runs_a_fixture_and_writes_its_report(tmp_path, capsys):
    root = tmp_path / "runs"
    argv = ["known", "--fixture", "flat", "--eps", "0.05", "--width", "8", "--points", "32", "--epochs", "1",
            "--iterations", "2", "--invariant-points", "8", "--degree", "2", "--nodes", "3", "--root", str(root),
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lambda_1" in out and "L2 torsion fall" in out
    assert (root / "run_1" / "known.json").is_file() and C.list_checkpoints(root / "run_1")


def test_the_control_comparison_reads_the_invariant_table():
    flat = FIXTURES["flat"]
    cfg = TF.KnownConfig(eps=0.05, width=8, n_points=32, epochs=1, iterations=2, polish=0)
    inv = InvariantSettings(n_points=8, scrambles=2, holonomy_points=8, degree=2, n_nodes=3)
    rep = known_report(flat.phi, flat.box, cfg, inv, control=True)
    cmp, t, res = rep.control_comparison(), rep.invariants.table, rep.invariants.results
    assert list(cmp.columns) == ["learned", "control"]
    pinned = ["volume"] + [f"lambda_{k}" for k in range(1, 6)]
    for name in cmp.columns:
        assert cmp.loc["L2 torsion fall", name] == pytest.approx(res["start"].torsion_l2 / res[name].torsion_l2)
        assert cmp.loc["max |rel| of Vol, lambda_1-5", name] == pytest.approx(t.loc[pinned, f"{name}_rel"].abs().max())
    assert cmp.loc["L2 torsion fall", "learned"] > 1
    assert replace(rep, control=None).control_comparison().empty

"""Levenberg-Marquardt on every weight of the torsion-free learner (learn.levenberg_marquardt, learn.known with
solver="lm"): tiny sizes in float64."""
import math

import pytest
import torch

from k7lib.exact import FIXTURES
from k7lib.learn import checkpoint as C
from k7lib.learn import levenberg_marquardt as LM
from k7lib.learn import torsion_free as TF
from k7lib.learn.known import known_problem, train_known

BS = FIXTURES["bryant-salamon"]
TINY = TF.KnownConfig(width=8, n_points=40, epochs=0, solver="lm", lm_steps=3, checkpoint_every=1)
SETTINGS = LM.LMSettings(steps=3, chunk=16)


def tiny():
    return TF.build(BS.phi, BS.box, TINY)


def times():
    return dict.fromkeys(("residual_jacobian", "parameter_jacobian", "normal_matrix", "solve", "loss"), 0.0)


def test_the_normal_equations_give_the_autograd_gradient_and_the_loss():
    """b = J^T r is half the gradient of |r|^2 = torsion_loss, so J (all weights, chunked) is the true Jacobian;
    A is symmetric positive semi-definite."""
    box, _, model, J = tiny()
    params = LM.trainable(model)
    A, b, loss = LM.normal_equations(model, params, J, box.volume, True, 16, times())
    L = TF.torsion_loss(model, J, box.volume)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, list(params.values()))])
    assert float((2 * b - grad).abs().max()) <= 1e-12 * float(grad.abs().max())
    assert abs(loss / float(L.detach()) - 1) <= 1e-12
    assert float((A - A.T).abs().max()) <= 1e-13 * float(A.abs().max()) and float(torch.linalg.eigvalsh(A).min()) >= -1e-12 * float(A.diagonal().max())


def test_steps_lower_the_loss_and_the_damping_follows_nielsens_rule():
    box, _, model, J = tiny()
    state, losses = LM.LMState(SETTINGS.mu0), []
    for _ in range(3):
        step, new = LM.lm_step(model, J, box.volume, True, SETTINGS, state)
        assert step.accepted and step.loss < step.loss_before and step.rho > 0
        factor = max(1 / 3, 1 - (2 * step.rho - 1) ** 3)
        assert new.mu == pytest.approx(state.mu * factor, rel=1e-12) and new.nu == 2.0 and new.step == state.step + 1
        state = new
        losses.append(step.loss)
    assert losses[0] > losses[1] > losses[2]


def test_a_step_that_leaves_the_positive_forms_is_a_failed_step_and_moves_no_weight(monkeypatch):
    """Every trial refused (as when phi stops being positive at a training point): the weights stay, mu is
    multiplied by nu = 2, 4, 8 ... and the step ends at mu_max; a far field is reported as not positive."""
    box, _, model, J = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    monkeypatch.setattr(LM, "loss_and_positive", lambda *a: (math.inf, False))
    settings = LM.LMSettings(steps=1, mu0=1e-3, mu_max=1e-1, trials=20)
    step, state = LM.lm_step(model, J, box.volume, True, settings, LM.LMState(1e-3))
    assert not step.accepted and step.loss == step.loss_before and step.trials == 5
    assert state.mu == settings.mu_max and state.nu == 32.0     # mu: 1e-3, 2e-3, 8e-3, 6.4e-2, then mu_max
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    monkeypatch.undo()
    with torch.no_grad():
        model.head.bias.fill_(50.0)
    assert LM.loss_and_positive(model, J, box.volume, True) == (math.inf, False)


def test_a_singular_or_non_finite_normal_matrix_never_moves_the_weights():
    assert LM.damped_solve(-torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 1.0) is None
    delta, predicted = LM.damped_solve(torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 1.0)
    assert torch.allclose(delta, -0.5 * torch.ones(3, dtype=torch.float64)) and predicted == pytest.approx(2.25)   # -2 b.d - d.A.d
    box, _, model, J = tiny()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="normal matrix or the gradient is not finite"):
        LM.lm_step(model, J, box.volume, True, SETTINGS, LM.LMState(1e-3))
    assert all(torch.allclose(p, q, rtol=0, atol=0, equal_nan=True) for p, q in zip(model.parameters(), before))


def test_resumed_solver_state_continues_exactly_like_a_straight_run(tmp_path):
    """Checkpoints hold mu, nu and the step count; 2 steps + resume to 3 = 3 straight steps, and the history
    carries the loss on fresh points beside the training loss."""
    straight = train_known(BS.phi, BS.box, TINY)
    half = TF.KnownConfig(**{**TINY.to_dict(), "lm_steps": 2})
    train_known(BS.phi, BS.box, half, run_dir=tmp_path / "r")
    state = torch.load(C.checkpoint_path(tmp_path / "r", 2), weights_only=True)
    assert state["solver"]["step"] == 2 and known_problem(state) is None
    resumed = train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "r", resume=True)
    for col in ("loss", "fresh_loss"):
        assert resumed.history[col].tolist() == pytest.approx(straight.history[col].tolist(), rel=1e-10)
    h = straight.history
    assert list(h["stage"]) == ["lm"] * 3 and h["loss_ratio"].iloc[-1] < 1e-2
    assert (h["fresh_loss"] / h["loss"]).between(0.5, 2).all()


def test_a_bad_solver_state_is_named_and_skipped(tmp_path):
    train_known(BS.phi, BS.box, TF.KnownConfig(**{**TINY.to_dict(), "lm_steps": 2}), run_dir=tmp_path / "r")
    good = torch.load(C.checkpoint_path(tmp_path / "r", 2), weights_only=True)
    for change, message in (({"mu": float("nan")}, "solver mu"), ({"mu": 1e30}, "solver mu"),
                            ({"nu": 1.0}, "solver nu"), ({"step": 5}, "solver step")):
        assert message in known_problem({**good, "solver": {**good["solver"], **change}}, "ckpt")
    torch.save({**good, "solver": {**good["solver"], "mu": float("nan")}}, C.checkpoint_path(tmp_path / "r", 2))
    with pytest.warns(RuntimeWarning, match="ckpt_0000002.pt is invalid"):
        more = train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "r", resume=True)
    assert len(more.history) == 3


@pytest.mark.parametrize("change,message", [({"solver": "adam"}, "solver must be one of"),
                                            ({"lm_steps": -1}, "lm_steps"), ({"lm_steps": 10**9}, "lm_steps"), ({"lm_mu0": 0.0}, "lm_mu0"),
                                            ({"lm_mu0": 1e12}, "lm_mu_min <= lm_mu0 <= lm_mu_max"),
                                            ({"solver": "lbfgs", "epochs": 0}, "epochs")])
def test_lm_settings_are_validated_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        TF.KnownConfig(**{**TINY.to_dict(), **change})

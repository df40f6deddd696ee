"""Levenberg-Marquardt on the torsion residual of `learn.torsion_free`, over any chosen set of the network's
weights (all of them, or the output layers: the polish `learn.known.gauss_newton`).

The residual r (points, 56) = torsion_residual(J, n, dn) depends on the weights theta only through the
network's output n and its jet dn at each point, so its Jacobian is the product
    dr/dtheta = dr/d(n, dn) (residual_jacobian, (56, out, 8) per point) . d(n, dn)/dtheta (out, 8, P),
the second factor by torch.func (jacrev of the per-point jet, vmapped over the points of a chunk). The normal
equations A = J^T J, b = J^T r are accumulated chunk by chunk (A.addmm_), so no matrix of every row is held.
A step solves (A + mu diag A) delta = -b by Cholesky; mu follows Nielsen's rule (Madsen, Nielsen & Tingleff,
"Methods for non-linear least squares problems", 2004, §3.2): with rho = actual / predicted fall, an
accepted step (rho > 0) multiplies mu by max(1/3, 1 - (2 rho - 1)^3) and resets nu = 2, a failed one
multiplies mu by nu and doubles nu. A trial fails when the loss does not fall, is not finite, when the
Cholesky factorisation fails, or when phi stops being a positive 3-form at any training point (there the
loss is no longer a sum of squares of a G2 structure's torsion). A non-finite normal matrix raises
ValueError before any weight moves.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.func import functional_call, jacfwd, jacrev, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .. import g2
from ..batches import chunks
from ..derivatives import value_and_jacobian
from ..inputs import positive_int, positive_number
from . import checkpoint_checks as CC
from .torsion_free import Jets, LMSettings, jets_at, phi_jet, residual_jacobian, torsion_residual


@dataclass(frozen=True)
class LMState:
    """The solver's state between steps (it goes into the checkpoints): mu, nu of Nielsen's rule and the
    number of steps taken."""
    mu: float
    nu: float = 2.0
    step: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def state_problem(state, settings: LMSettings, steps_in_history: int) -> str | None:
    """Why a stored solver state cannot be resumed, or None: the scalars' types by
    checkpoint_checks.solver_state_problem, then mu within the settings' bounds, nu >= 2 and step equal to the
    history's count of LM steps (validated by value)."""
    if not isinstance(state, dict) or set(state) != {"mu", "nu", "step"}:
        return "solver state is not a dict of mu, nu and step"
    problem = CC.solver_state_problem(state, mu="positive", nu="positive", step="count")
    if problem:
        return f"solver {problem}"
    mu, nu, step = state["mu"], state["nu"], state["step"]
    if not (isinstance(mu, float) and settings.mu_min <= mu <= settings.mu_max):
        return f"solver mu {mu!r} is not a number within [{settings.mu_min:g}, {settings.mu_max:g}]"
    if not (isinstance(nu, float) and nu >= 2.0):
        return f"solver nu {nu!r} is not a finite number >= 2"
    if step != steps_in_history:
        return f"solver step {step!r} is not the history's {steps_in_history} LM steps"
    return None


@dataclass(frozen=True)
class LMStep:
    """One outer step: the loss before and after (after == before when no trial was accepted), accepted,
    damping trials, rho of the accepted trial (nan otherwise), and seconds of its parts (residual Jacobian,
    parameter Jacobian, J^T J, solves, trial losses)."""
    loss_before: float
    loss: float
    accepted: bool
    trials: int
    rho: float
    seconds: dict


def trainable(model: torch.nn.Module, names=None) -> dict:
    """{name: parameter} of the model's trainable parameters (or of those named), in the model's order."""
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    return params if names is None else {k: params[k] for k in names}


def _point_jet(model, params: dict, rest: dict):
    """theta -> x -> (n (out,), dn (out, 7)) at one point x (7,), the other weights fixed."""
    def value(prm, x):
        return functional_call(model, {**rest, **prm}, (x[None],))[0]
    return lambda prm, x: (value(prm, x), jacfwd(value, argnums=1)(prm, x))


def chunk_rows(model, params: dict, Jc: Jets, weight: float, boundary: bool, times: dict):
    """(r (m * 56,), Jm (m * 56, P)) on the chunk Jc: the residual and its Jacobian in the weights `params`
    (module docstring), P their total size in `parameters_to_vector` order."""
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    rest.update(dict(model.named_buffers()))
    t0 = time.perf_counter()
    with torch.no_grad():
        n, dn = value_and_jacobian(model, Jc.x)
        r, R = residual_jacobian(Jc, n, dn, weight, boundary)
    t1 = time.perf_counter()
    detached = {k: p.detach() for k, p in params.items()}
    Dv, Dj = vmap(jacrev(_point_jet(model, params, rest)), in_dims=(None, 0))(detached, Jc.x)
    m = Jc.x.shape[0]
    D = torch.cat([torch.cat([Dv[k][:, :, None], Dj[k]], 2).reshape(m, R.shape[2], 8, -1) for k in params], -1)
    Jm = torch.einsum("mraq,maqp->mrp", R, D).reshape(m * R.shape[1], -1)
    times["residual_jacobian"] += t1 - t0
    times["parameter_jacobian"] += time.perf_counter() - t1
    return r.reshape(-1), Jm


def normal_equations(model, params: dict, J: Jets, volume: float, boundary: bool, chunk: int, times: dict):
    """(A = J^T J (P, P), b = J^T r (P,), loss = |r|^2) over the training jets J, chunk points at a time."""
    weight, P = volume / J.x.shape[0], sum(p.numel() for p in params.values())
    A = torch.zeros(P, P, dtype=torch.float64)
    b, loss = torch.zeros(P, dtype=torch.float64), 0.0
    for sl in chunks(J.x.shape[0], chunk):
        r, Jm = chunk_rows(model, params, jets_at(J, sl), weight, boundary, times)
        t0 = time.perf_counter()
        A.addmm_(Jm.T, Jm)
        b.addmv_(Jm.T, r)
        loss += float(r @ r)
        times["normal_matrix"] += time.perf_counter() - t0
    return A, b, loss


def loss_and_positive(model, J: Jets, volume: float, boundary: bool) -> tuple[float, bool]:
    """(|r|^2 = the training loss, phi a positive 3-form with finite B at every training point)."""
    with torch.no_grad():
        n, dn = value_and_jacobian(model, J.x)
        phi, _ = phi_jet(J, n, dn, boundary)
        B = g2.bilinear_B_packed(phi)
        finite = bool(torch.isfinite(B).all())
        positive = finite and bool((torch.linalg.cholesky_ex(B).info == 0).all())
        if not positive:
            return math.inf, False
        r = torsion_residual(J, n, dn, volume / J.x.shape[0], boundary)
    loss = float((r ** 2).sum())
    return loss, math.isfinite(loss)


def damped_solve(A: torch.Tensor, b: torch.Tensor, mu: float):
    """delta of (A + mu diag A) delta = -b, and the predicted fall -b.delta + mu delta.(diag A) delta of |r|^2
    (Gauss-Newton model); None when the Cholesky factorisation fails."""
    d = A.diagonal().clamp_min(1e-300)
    L, info = torch.linalg.cholesky_ex(A + mu * torch.diag(d))
    if int(info) != 0:
        return None
    delta = -torch.cholesky_solve(b[:, None], L)[:, 0]
    predicted = float(-b @ delta + mu * (delta * d * delta).sum())
    return delta, predicted


def lm_step(model, J: Jets, volume: float, boundary: bool, settings: LMSettings, state: LMState,
            names=None) -> tuple[LMStep, LMState]:
    """One outer step of the module docstring on the weights `names` (None: every trainable weight). The
    weights move only on an accepted trial; a failed step leaves them as they were."""
    params = trainable(model, names)
    times = dict.fromkeys(("residual_jacobian", "parameter_jacobian", "normal_matrix", "solve", "loss"), 0.0)
    try:
        A, b, loss = normal_equations(model, params, J, volume, boundary, settings.chunk, times)
    except torch.linalg.LinAlgError:          # g(phi) not positive at a point: non-finite or degenerate weights
        A, loss = None, math.nan
    if not (math.isfinite(loss) and bool(torch.isfinite(A).all()) and bool(torch.isfinite(b).all())):
        raise ValueError("Levenberg-Marquardt: the normal matrix or the gradient is not finite "
                         "(the weights are left unchanged); restart from an earlier checkpoint")
    theta = parameters_to_vector(params.values()).detach().clone()
    mu, nu = state.mu, state.nu
    for trial in range(1, settings.trials + 1):
        t0 = time.perf_counter()
        solved = damped_solve(A, b, mu)
        t1 = time.perf_counter()
        times["solve"] += t1 - t0
        if solved is not None:
            delta, predicted = solved
            with torch.no_grad():
                vector_to_parameters(theta + delta, params.values())
            new, positive = loss_and_positive(model, J, volume, boundary)
            times["loss"] += time.perf_counter() - t1
            rho = (loss - new) / predicted if predicted > 0 else -math.inf
            if positive and new < loss and rho > 0:
                mu = min(max(mu * max(1 / 3, 1 - (2 * rho - 1) ** 3), settings.mu_min), settings.mu_max)
                return (LMStep(loss, new, True, trial, rho, times), LMState(mu, 2.0, state.step + 1))
            with torch.no_grad():
                vector_to_parameters(theta, params.values())
        if mu >= settings.mu_max:
            break
        mu, nu = min(mu * nu, settings.mu_max), nu * 2
    return LMStep(loss, loss, False, trial, math.nan, times), LMState(mu, nu, state.step + 1)

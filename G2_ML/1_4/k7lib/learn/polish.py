"""The final Gauss-Newton polish of a trained chart model: <T> and <det g> put on their targets.

With r = (<T>/kappa_T - 1, <det g>/(65/32) - 1) on a fixed set of scrambled Sobol points and
J = dr/dtheta (2 x P, from two chunked backward passes), each step is theta -= J^T (J J^T)^{-1} r,
the smallest change of the weights that zeroes the linearised residuals, backtracked (a full step,
then halves) until the largest residual falls. In float64; g = g(phi) throughout (only phi's weights
move). A step that makes phi non-positive anywhere on the points, or the smallest eigenvalue of g
fall below eig_margin, is refused and the weights restored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..batches import chunks
from ..inputs import check_field_call
from ..sampling import points as sampling
from ..torsion import torsion_packed
from .config import Config
from .losses import targets
from .schedule import POLISH_STREAM, epoch_seed

BACKTRACK = (1.0, 0.5, 0.25, 0.125)     # step fractions tried before the polish gives up
NOT_ATTEMPTED = "not attempted: phi is below the eigenvalue margin (or not positive) before the polish"


@dataclass(frozen=True)
class Polish:
    """What `polish` returns. before / after: the residuals r = (<T>/kappa_T - 1, <det g>/(65/32) - 1) on
    its n_points Sobol points before and after; iters: Gauss-Newton steps taken; accepted: False when
    the step was refused (weights restored); eig_min, nonpositive: smallest eigenvalue of g and count of
    non-positive points after; note: why no step was possible, or ""."""
    iters: int
    before: list
    after: list
    accepted: bool
    n_points: int
    eig_min: float
    nonpositive: int
    note: str

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the run's events."""
        return (f"polish: {self.iters} Gauss-Newton step(s) on {self.n_points} Sobol points, <T>/kappa_T - 1 "
                f"{self.before[0]:+.2e} -> {self.after[0]:+.2e}, <det g>/(65/32) - 1 {self.before[1]:+.2e} -> "
                f"{self.after[1]:+.2e}" + (f"; {self.note}" if self.note else "" if self.accepted
                                           else "; refused (phi would lose positivity)"))

    def history_row(self, global_epoch: int, phase: int, rollbacks: int) -> dict:
        """The history's polish row: the means after it, and its own objective (the squared relative
        residuals on its points) as the loss."""
        kappa_T, det_t = targets()
        return {"phase": phase, "phase_name": "polish", "epoch": 0, "global_epoch": global_epoch,
                "T_mean": kappa_T * (1 + self.after[0]), "det_mean": det_t * (1 + self.after[1]),
                "eig_min": self.eig_min, "lr": 0.0, "rollbacks": rollbacks, "skipped": 0,
                "loss": self.after[0] ** 2 + self.after[1] ** 2,
                "loss_kappa": self.after[0] ** 2, "loss_det": self.after[1] ** 2}


@dataclass(frozen=True)
class _Residuals:
    """r (2,) on the polish points, J (2, P) when asked for, smallest eigenvalue of g, bad points."""
    r: torch.Tensor
    J: torch.Tensor | None
    eig_min: float
    bad: int

    def largest(self) -> float:
        return float(self.r.abs().max())

    def sound(self, margin: float) -> bool:
        return not (self.bad or self.eig_min < margin or not bool(torch.isfinite(self.r).all()))


def _flat_grads(model, outputs) -> list:
    """Gradients of each 0-dim output w.r.t. all parameters, flattened: list of (P,) vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i, o in enumerate(outputs):
        g = torch.autograd.grad(o, params, retain_graph=i + 1 < len(outputs), allow_unused=True)
        out.append(torch.cat([(q if q is not None else torch.zeros_like(p)).reshape(-1) for q, p in zip(g, params)]))
    return out


def _residuals(model, x: torch.Tensor, method: str, chunk: int, need_grad: bool) -> _Residuals:
    kappa_T, det_t = targets()
    n = x.shape[0]
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    grads = [0.0, 0.0]
    eig_min, bad = math.inf, 0
    for s in chunks(n, chunk):
        with torch.set_grad_enabled(need_grad):
            t = torsion_packed(model, x[s], method=method, check=False)
            sT, sD = t.T.sum() / (n * kappa_T), t.metric.det.sum() / (n * det_t)
        with torch.no_grad():
            g = t.metric.g.detach()
            finite = torch.isfinite(g).flatten(1).all(1) & torch.isfinite(t.T)
            ev = torch.linalg.eigvalsh(torch.where(finite[:, None, None], g, torch.zeros_like(g)))[:, 0]
            bad += int(((t.metric.orientation <= 0) | ~(ev > 0) | ~finite).sum())
            eig_min = min(eig_min, float(ev.min()))
        sums += torch.stack([sT.detach(), sD.detach()])
        if need_grad:
            gT, gD = _flat_grads(model, [sT, sD])
            grads = [grads[0] + gT, grads[1] + gD]
    return _Residuals(sums - 1, torch.stack(grads) if need_grad else None, eig_min, bad)


def _shift(model, step: torch.Tensor, scale: float) -> None:
    with torch.no_grad():
        k = 0
        for p in model.parameters():
            p += scale * step[k:k + p.numel()].view_as(p)
            k += p.numel()


def _backtrack(model, step, now: _Residuals, x, config: Config, chunk: int) -> _Residuals | None:
    """The residuals after the largest fraction of `step` that lowers the largest residual and keeps
    phi positive above the margin (the step is then applied), or None (weights unchanged): far from
    the targets the linearisation can overshoot."""
    for scale in BACKTRACK:
        _shift(model, step, scale)
        new = _residuals(model, x, config.method, chunk, False)
        if new.largest() < now.largest() and new.bad == 0 and new.eig_min >= config.eig_margin:
            return new
        _shift(model, step, -scale)
    return None


def polish(model, config: Config, chunk: int = 1024) -> Polish:
    """Put <T> and <det g> on kappa_T and 65/32 on config.polish_points scrambled Sobol points
    (module doc): up to polish_iters Gauss-Newton steps, or until max |r| < polish_tol. The model is
    polished in float64 and returned to its own dtype. Returns `Polish`."""
    check_field_call(model, chunk=chunk)
    param = next(model.parameters())
    dtype0, device = param.dtype, param.device
    model.double()
    x = sampling.sobol(config.polish_points, model.chart, seed=epoch_seed(config.seed, POLISH_STREAM), device=device)
    saved = [p.detach().clone() for p in model.parameters()]
    now = _residuals(model, x, config.method, chunk, True)
    before, iters = now.r.tolist(), 0
    note = "" if now.sound(config.eig_margin) and bool(torch.isfinite(now.J).all()) else NOT_ATTEMPTED
    while not note and iters < config.polish_iters and now.largest() >= config.polish_tol:
        step = -now.J.T @ (torch.linalg.pinv(now.J @ now.J.T) @ now.r)
        new = _backtrack(model, step, now, x, config, chunk)
        if new is None:
            break                              # no step helps: keep what we have
        iters, now = iters + 1, new
        if iters < config.polish_iters and now.largest() >= config.polish_tol:
            now = _residuals(model, x, config.method, chunk, True)
    accepted = not note and now.sound(config.eig_margin)
    after = now.r
    if not accepted:
        with torch.no_grad():
            for p, q in zip(model.parameters(), saved):
                p.copy_(q)
        after = torch.tensor(before, dtype=torch.float64)
    model.to(dtype0)
    return Polish(iters=iters, before=list(before), after=after.tolist(), accepted=accepted, n_points=x.shape[0],
                  eig_min=now.eig_min, nonpositive=now.bad, note=note)

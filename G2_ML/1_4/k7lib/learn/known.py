"""Training the torsion-free problem of `learn.torsion_free` on a known G2 metric, with numbered
checkpoints, and the measures of issue 21: the invariants of exact / start / learned, the control
without boundary data, the targets and the convergence in width and point count.

Optimiser: L-BFGS with a strong-Wolfe line search on the whole (fixed) training set, float64
(`fit.closure_step`). The loss is a smooth deterministic least-squares functional, where L-BFGS reduces
it by orders of magnitude more than Adam in the same time; it then stalls (the loss ratio stays near
6e-7 whatever the width or the number of points), and a few Levenberg-Marquardt steps on the output
layers (`gauss_newton`, the hidden layers fixed) take it further. An epoch is one L-BFGS call of
config.iterations iterations; checkpoints (learn.checkpoint, atomic, weights_only) every
config.checkpoint_every epochs and after the polish hold the model, the L-BFGS state and the history in
their own format (KNOWN_FORMAT), validated by value on reading (`known_problem`), so a run resumes where it
stopped and a damaged file is named and skipped for the previous one.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ..batches import chunks, progress_bar
from ..derivatives import value_and_jacobian
from ..exact.box import Box, as_box
from ..geometry.invariants import InvariantSettings, InvariantTable, compare
from . import checkpoint as C
from . import checkpoint_checks as CC
from . import runs
from .fit import closure_step
from .torsion_free import (
    Jets,
    KnownConfig,
    build,
    heads,
    jets_at,
    learned_field,
    residual_jacobian,
    start_copy,
    torsion_loss,
)

KNOWN_ROOT = runs.DEFAULT_ROOT / "known"
TORSION_FALL = 1e3            # target: the L^2 torsion falls by this factor from the start
REL_TOL, CLOSER = 1e-3, 30.0  # target: |rel| <= min(REL_TOL, |start rel| / CLOSER) for every invariant
OUTSIDE_TOL = 1e-3            # target: the curvature's part outside g2
CLEAR_GAP = 10.0              # target: the rank's last singular value over the next (or the noise floor)


@dataclass(frozen=True)
class KnownRun:
    """A trained run: config, box, the trained model and the start's network P (BoxNets), the history (one row
    per L-BFGS epoch, then per Gauss-Newton step: epoch, loss = int T^2 vol on the training points,
    loss_ratio = loss / start loss, seconds, stage "lbfgs" | "gauss-newton"), the start's loss, the run
    folder (None without checkpoints) and the training's wall time."""
    config: KnownConfig
    box: Box
    model: torch.nn.Module
    start: torch.nn.Module
    history: pd.DataFrame
    start_loss: float
    run_dir: Path | None
    seconds: float
    label: str = ""                 # the exact field's name (e.g. the fixture's)

    def fields(self, phi_field) -> dict:
        """{"exact", "start", "learned"} 3-form fields on the box for this run's exact field phi_field."""
        return {"exact": phi_field, "start": learned_field(phi_field, self.box, start_copy(self.start)),
                "learned": learned_field(phi_field, self.box, self.model, self.config.boundary)}

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "box": self.box.to_dict(), "start_loss": self.start_loss,
                "history": self.history.to_dict(orient="records"), "run_dir": str(self.run_dir) if self.run_dir else None,
                "seconds": self.seconds}


KNOWN_FORMAT = "k7lib-known-checkpoint-1"
KNOWN_REQUIRED = ("format", "global_epoch", "model", "optimizer", "history", "config")


def _state(run_config: dict, model, opt, epoch: int, history: dict) -> dict:
    """A checkpoint of the L-BFGS run (its own format: model, L-BFGS state, history, settings; no random
    state: L-BFGS on fixed points draws nothing, and every start is built from explicit seeds)."""
    return {"format": KNOWN_FORMAT, "global_epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "history": history, "config": run_config}


def known_problem(state: dict, name: str | None = None, expect=None) -> str | None:
    """Why a loaded checkpoint of this learner cannot be resumed, or None (checkpoint_checks.known_problem:
    head, settings, model tensors, L-BFGS state and settings, history; expect a checkpoint_checks.Expected)."""
    return CC.known_problem(state, name, expect, KNOWN_FORMAT, KNOWN_REQUIRED)


def _resume(run_dir: Path, run_config: dict, model, opt, empty: dict) -> tuple[int, dict]:
    """Load the latest valid checkpoint of run_dir into model and opt: (L-BFGS epochs done, history);
    (0, empty) with a warning when run_dir holds no checkpoint yet (stopped before the first)."""
    C.remove_stale_temporaries(run_dir)
    if not C.list_checkpoints(run_dir):
        warnings.warn(f"resume: {run_dir} holds no checkpoint yet (stopped before the first); starting it afresh",
                      RuntimeWarning, stacklevel=3)
        return 0, empty
    state = C.load_checkpoint(run_dir, "latest", expect=CC.expected_of(model, opt, run_config), problem=known_problem)
    if not CC.same_run(state["config"], run_config):
        raise ValueError(f"resume: {run_dir} holds a run with other settings ({state['config']}); "
                         "start a new run instead")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    history = state["history"]
    return history["stage"].count("lbfgs"), history


def _normal_equations(model, J: Jets, volume: float, boundary: bool, chunk: int):
    """(A = J^T J, b = J^T r, loss = |r|^2) of the torsion residual (torsion_free.torsion_residual) over the
    parameters of the output layers (torsion_free.heads; per layer the (out, width + 1) matrix [weight, bias]
    row by row). The output is linear in those parameters with coefficients the 1-jets of the hidden
    features, so J = dr/d(jet of the output) (torsion_free.residual_jacobian) . jet(features)."""
    hs, weight = heads(model), volume / J.x.shape[0]
    n_par = sum(h.weight.numel() + h.bias.numel() for h, _, _ in hs)
    A = torch.zeros(n_par, n_par, dtype=torch.float64)
    b, loss = torch.zeros(n_par, dtype=torch.float64), 0.0
    for sl in chunks(J.x.shape[0], chunk):
        Jc = jets_at(J, sl)
        with torch.no_grad():
            n, dn = value_and_jacobian(model, Jc.x)
            r, R = residual_jacobian(Jc, n, dn, weight, boundary)
            cols = []
            for head, features, s in hs:
                h, dh = value_and_jacobian(features, Jc.x)
                H = torch.cat([torch.cat([h, torch.ones_like(h[:, :1])], 1)[..., None],
                               torch.cat([dh, torch.zeros_like(dh[:, :1])], 1)], -1)      # (m, width + 1, 8)
                cols.append(torch.einsum("mraq,mjq->mraj", R[:, :, s], H).reshape(r.numel(), -1))
            Jm = torch.cat(cols, -1)
        A += Jm.T @ Jm
        b += Jm.T @ r.reshape(-1)
        loss += float((r ** 2).sum())
    return A, b, loss


def gauss_newton(model, J: Jets, volume: float, boundary: bool = True, steps: int = 4, chunk: int = 64) -> list:
    """Levenberg-Marquardt steps on the output layers' parameters, the hidden layers fixed: with A, b of
    `_normal_equations`, delta = -(A + mu diag A)^-1 b; a step that does not lower the loss is undone and
    mu raised tenfold (at most 8 times), an accepted one lowers it tenfold. Returns (loss, seconds since the
    call) after each accepted step (the polish ends early when none is accepted). The hidden layers stay as L-BFGS left them:
    in the output layers the residual is linear for d phi and nearly so for d psi, which the line search of
    L-BFGS on all weights resolves slowly."""
    params = [p for h, _, _ in heads(model) for p in (h.weight, h.bias)]
    mu, losses, t0 = 1e-6, [], time.perf_counter()
    for _ in range(steps):
        A, b, loss = _normal_equations(model, J, volume, boundary, chunk)
        saved = [p.detach().clone() for p in params]
        for _ in range(8):
            delta = -torch.linalg.solve(A + mu * torch.diag(A.diagonal().clamp_min(1e-300)), b)
            _add_to_heads(model, delta)
            with torch.no_grad():
                new = float(torsion_loss(model, J, volume, boundary))
            if math.isfinite(new) and new < loss:
                mu = max(mu / 10, 1e-12)
                losses.append((new, time.perf_counter() - t0))
                break
            with torch.no_grad():
                for p, q in zip(params, saved):
                    p.copy_(q)
            mu *= 10
        else:
            break
    return losses


def _add_to_heads(model, delta: torch.Tensor) -> None:
    """Add delta (the stacked [weight, bias] rows of every output layer) to the layers' parameters."""
    k = 0
    with torch.no_grad():
        for head, _, _ in heads(model):
            out, width = head.weight.shape
            step = delta[k:k + out * (width + 1)].reshape(out, width + 1)
            head.weight += step[:, :width]
            head.bias += step[:, width]
            k += out * (width + 1)


def train_known(phi_field, box, config: KnownConfig = KnownConfig(), run_dir=None, resume: bool = False,
                label: str = "", progress: bool = False) -> KnownRun:
    """Minimise the torsion of phi = phi_E + chi Lambda^3(L) N on the box from the start of `config`
    (`learn.torsion_free`); phi_field = phi_E: x (batch, 7) -> packed (batch, 35), box a `Box` or (lo, hi).

    Every check (`torsion_free.check_problem`: box, positivity of phi_E and of the start) runs before
    anything is written. run_dir: a folder for numbered checkpoints (created; None: none are written);
    resume=True continues the latest checkpoint there (same settings and label). label names the exact
    field in the checkpoints (e.g. the fixture's name). A non-finite loss raises ValueError.
    """
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir whose checkpoints it continues")
    box, P, model, J = build(phi_field, as_box(box), config)
    run_config = {"known": config.to_dict(), "box": box.to_dict(), "label": label}
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=config.iterations, history_size=config.history,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    loss_fn = lambda: torsion_loss(model, J, box.volume, config.boundary)
    with torch.no_grad():
        start_loss = float(loss_fn())
    done, history = 0, {"epoch": [], "loss": [], "loss_ratio": [], "seconds": [], "stage": []}
    if run_dir is not None:
        run_dir = runs.writable_folder(run_dir, "run_dir")
        if resume:
            done, history = _resume(run_dir, run_config, model, opt, history)
    t0 = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)
    bar = progress_bar(range(min(done, config.epochs), config.epochs), progress, f"known {label}".strip(), leave=True)
    for epoch in bar:
        closure_step(opt, loss_fn)
        with torch.no_grad():
            loss = float(loss_fn())
        if not math.isfinite(loss):
            raise ValueError(f"torsion-free training diverged at epoch {epoch} (non-finite loss); lower eps")
        for k, v in zip(history, (epoch, loss, loss / start_loss, time.perf_counter() - t0, "lbfgs")):
            history[k].append(v)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss_ratio=f"{loss / start_loss:.2e}")
        if run_dir is not None and ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs):
            C.save_checkpoint(run_dir, _state(run_config, model, opt, epoch + 1, history), KNOWN_REQUIRED)
    polished = history["stage"].count("gauss-newton")
    if config.polish > polished:
        t1 = time.perf_counter() - t0
        for loss, dt in gauss_newton(model, J, box.volume, config.boundary, config.polish - polished):
            for k, v in zip(history, (len(history["epoch"]), loss, loss / start_loss, t1 + dt, "gauss-newton")):
                history[k].append(v)
        if run_dir is not None:
            C.save_checkpoint(run_dir, _state(run_config, model, opt, len(history["epoch"]), history),
                              KNOWN_REQUIRED)
    model.eval()
    return KnownRun(config=config, box=box, model=model, start=P, history=pd.DataFrame(history),
                    start_loss=start_loss, run_dir=Path(run_dir) if run_dir is not None else None,
                    seconds=history["seconds"][-1] if history["seconds"] else 0.0, label=label)


def target_rows(table: InvariantTable, learned: str = "learned", start: str = "start") -> pd.DataFrame:
    """Issue 21's targets against the table: per invariant the tolerance min(REL_TOL, |start rel| / CLOSER),
    the learned |rel| and whether it is within; then the torsion fall (>= TORSION_FALL), the part outside
    g2 (<= OUTSIDE_TOL), the holonomy rank (the exact one's) and its gap (>= CLEAR_GAP: the rank's last
    singular value over the next one, or over the noise floor outside g2 at rank 14)."""
    t = table.table
    rows = []
    for name in t.index:
        tol = min(REL_TOL, abs(t.loc[name, f"{start}_rel"]) / CLOSER)
        err = abs(t.loc[name, f"{learned}_rel"])
        rows.append({"target": name, "required": f"|rel| <= {tol:.2e}", "measured": err, "met": bool(err <= tol)})
    res = table.results
    fall = res[start].torsion_l2 / max(res[learned].torsion_l2, 1e-300)
    hol = res[learned].holonomy
    rows += [{"target": "L2 torsion fall", "required": f">= {TORSION_FALL:g}", "measured": fall,
              "met": bool(fall >= TORSION_FALL)},
             {"target": "outside g2", "required": f"<= {OUTSIDE_TOL:g}", "measured": hol.outside_g2,
              "met": bool(hol.outside_g2 <= OUTSIDE_TOL)},
             {"target": "holonomy rank", "required": f"= {res[table.reference].holonomy.rank} (exact)",
              "measured": hol.rank, "met": bool(hol.rank == res[table.reference].holonomy.rank)},
             {"target": "holonomy gap", "required": f">= {CLEAR_GAP:g}", "measured": hol.gap,
              "met": bool(hol.rank == 0 or hol.gap >= CLEAR_GAP)}]
    return pd.DataFrame(rows).set_index("target")


@dataclass(frozen=True)
class KnownReport:
    """A constrained run, optionally its control (same loss and start, no boundary data), the invariant
    table of exact / start / learned (/ control) on common points and the targets. to_dict keys:
    run, control, invariants (InvariantTable.to_dict), targets (records), seconds."""
    run: KnownRun
    control: KnownRun | None
    invariants: InvariantTable
    targets: pd.DataFrame
    seconds: dict

    def summary(self) -> dict:
        """The JSON-ready digest the export and the article carry: settings, per invariant the exact value
        and the start's, learned's (with its paired standard error) and control's relative differences,
        per structure the L2 torsion and the holonomy test, and how many targets were met."""
        t, res = self.invariants.table, self.invariants.results
        cols = [c for c in ("exact", "start_rel", "learned_rel", "learned_rel_se", "control_rel") if c in t]
        rows = [{"invariant": name, **{c: float(t.loc[name, c]) for c in cols}} for name in t.index]
        structures = {name: {"torsion_l2": r.torsion_l2, "outside_g2": r.holonomy.outside_g2,
                             "rank": r.holonomy.rank, "gap": r.holonomy.gap} for name, r in res.items()}
        return {"fixture": self.run.label, "eps": self.run.config.eps, "width": self.run.config.width,
                "n_points": self.run.config.n_points, "rows": rows, "structures": structures,
                "targets_met": int(self.targets["met"].sum()), "targets": int(len(self.targets)),
                "seconds": self.seconds}

    def control_comparison(self) -> pd.DataFrame:
        """Where the constrained run and the control end, one column each: the L2 torsion's fall from the
        start, the largest |rel| of Vol(D) and the Dirichlet eigenvalues (quantities the boundary data pin),
        the rel of int |Rm|^2 and the curvature's part outside g2. Empty without a control."""
        if self.control is None:
            return pd.DataFrame()
        t, res = self.invariants.table, self.invariants.results
        pinned = [name for name in t.index if name == "volume" or name.startswith("lambda")]
        return pd.DataFrame({name: {"L2 torsion fall": res["start"].torsion_l2 / max(res[name].torsion_l2, 1e-300),
                                    "max |rel| of Vol, lambda_1-5": float(t.loc[pinned, f"{name}_rel"].abs().max()),
                                    "rel of int |Rm|^2": float(t.loc["int |Rm|^2", f"{name}_rel"]),
                                    "outside g2": res[name].holonomy.outside_g2} for name in ("learned", "control")})

    def to_dict(self) -> dict:
        return {"run": self.run.to_dict(), "control": self.control.to_dict() if self.control else None,
                "invariants": self.invariants.to_dict(), "targets": self.targets.reset_index().to_dict(orient="records"),
                "seconds": self.seconds}


def known_report(phi_field, box, config: KnownConfig = KnownConfig(), settings: InvariantSettings = InvariantSettings(),
                 control: bool = True, run_dir=None, label: str = "", progress: bool = False,
                 resume: bool = False) -> KnownReport:
    """Train (and the control, if asked: in run_dir/control, which must resolve inside run_dir), then compare
    the invariants on common points. resume: continue both from their latest checkpoints in run_dir (`train_known`)."""
    ctrl_dir = None if run_dir is None or not control else runs.inside_root(Path(run_dir) / "control", run_dir)
    t0 = time.perf_counter()
    run = train_known(phi_field, box, config, run_dir=run_dir, resume=resume, label=label, progress=progress)
    ctrl = None
    if control:
        ctrl = train_known(phi_field, box, replace(config, boundary=False), run_dir=ctrl_dir,
                           resume=resume and ctrl_dir is not None and ctrl_dir.is_dir(),
                           label=f"{label} control".strip(), progress=progress)
    t1 = time.perf_counter()
    fields = run.fields(phi_field)
    if ctrl is not None:
        fields["control"] = ctrl.fields(phi_field)["learned"]
    table = compare(fields, run.box, settings, progress=progress)
    return KnownReport(run=run, control=ctrl, invariants=table, targets=target_rows(table),
                       seconds={"training": t1 - t0, "invariants": time.perf_counter() - t1})

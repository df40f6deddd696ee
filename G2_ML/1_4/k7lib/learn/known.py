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

from ..batches import progress_bar
from ..exact.box import Box, as_box
from ..geometry.invariants import InvariantSettings, InvariantTable, compare
from . import checkpoint as C
from . import checkpoint_checks as CC
from . import runs
from ..sampling.points import box_sobol
from .fit import closure_step
from .levenberg_marquardt import LMState, lm_step, state_problem
from .torsion_free import (
    FRESH_STREAM,
    Jets,
    KnownConfig,
    LMSettings,
    build,
    heads,
    jets,
    learned_field,
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


KNOWN_FORMAT = "k7lib-known-checkpoint-2"
KNOWN_REQUIRED = ("format", "global_epoch", "model", "optimizer", "solver", "history", "config")
HISTORY = CC.KNOWN_COLUMNS     # the history columns, in the order _append writes them (checked on resume)


def _state(run_config: dict, model, opt, epoch: int, history: dict, solver: LMState) -> dict:
    """A checkpoint of the run (its own format: model, L-BFGS state, the Levenberg-Marquardt state, history,
    settings; no random state: both solvers on fixed points draw nothing, and every start is built from
    explicit seeds)."""
    return {"format": KNOWN_FORMAT, "global_epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "solver": solver.to_dict(), "history": history, "config": run_config}


def known_problem(state: dict, name: str | None = None, expect=None) -> str | None:
    """Why a loaded checkpoint of this learner cannot be resumed, or None (checkpoint_checks.known_problem:
    head, settings, model tensors, L-BFGS state and settings, history; expect a checkpoint_checks.Expected),
    then the Levenberg-Marquardt state (levenberg_marquardt.state_problem: mu in its bounds, nu, the step count
    equal to the history's "lm" rows)."""
    problem = CC.known_problem(state, name, expect, KNOWN_FORMAT, KNOWN_REQUIRED)
    if problem:
        return problem
    settings = KnownConfig(**state["config"]["known"]).lm_settings()
    return state_problem(state["solver"], settings, list(state["history"]["stage"]).count("lm"))


def _resume(run_dir: Path, run_config: dict, model, opt, empty: dict) -> tuple[int, dict, LMState | None]:
    """Load the latest valid checkpoint of run_dir into model and opt: (L-BFGS epochs done, history, solver
    state); (0, empty, None) with a warning when run_dir holds no checkpoint yet (stopped before the first)."""
    C.remove_stale_temporaries(run_dir)
    if not C.list_checkpoints(run_dir):
        warnings.warn(f"resume: {run_dir} holds no checkpoint yet (stopped before the first); starting it afresh",
                      RuntimeWarning, stacklevel=3)
        return 0, empty, None
    state = C.load_checkpoint(run_dir, "latest", expect=CC.expected_of(model, opt, run_config), problem=known_problem)
    if not CC.same_run(state["config"], run_config):
        raise ValueError(f"resume: {run_dir} holds a run with other settings ({state['config']}); "
                         "start a new run instead")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    history = state["history"]
    return history["stage"].count("lbfgs"), history, LMState(**state["solver"])


def gauss_newton(model, J: Jets, volume: float, boundary: bool = True, steps: int = 4, chunk: int = 64) -> list:
    """Levenberg-Marquardt steps (`levenberg_marquardt.lm_step`) on the output layers' parameters
    (torsion_free.heads), the hidden layers fixed, from mu = 1e-6. Returns (loss, seconds since the call) after
    each accepted step (the polish ends at the first step no damping trial can make). In the output layers the
    residual is linear for d phi and nearly so for d psi, which the line search of L-BFGS resolves slowly."""
    names = {id(p): k for k, p in model.named_parameters()}
    heads_names = [names[id(p)] for h, _, _ in heads(model) for p in (h.weight, h.bias)]
    settings, state = LMSettings(steps=steps, mu0=1e-6, chunk=chunk), LMState(1e-6)
    losses, t0 = [], time.perf_counter()
    for _ in range(steps):
        step, state = lm_step(model, J, volume, boundary, settings, state, heads_names)
        if not step.accepted:
            break
        losses.append((step.loss, time.perf_counter() - t0))
    return losses


def _fresh_loss(model, fresh: Jets, volume: float, boundary: bool) -> float:
    """The loss on the fresh points (never trained on)."""
    with torch.no_grad():
        return float(torsion_loss(model, fresh, volume, boundary))


def _lm_phase(model, J: Jets, fresh: Jets, box, config: KnownConfig, state: LMState, history: dict,
              clock: tuple, save, progress: bool, label: str) -> LMState:
    """config.lm_steps Levenberg-Marquardt steps on every weight from state (the steps already taken are in
    history): one history row per step (stage "lm", training and fresh loss), a checkpoint after each (save).
    Ends early when a step finds no damping within the bounds that lowers the loss."""
    settings, (t0, start_loss) = config.lm_settings(), clock
    bar = progress_bar(range(state.step, settings.steps), progress, f"LM {label}".strip(), leave=True)
    for _ in bar:
        step, state = lm_step(model, J, box.volume, config.boundary, settings, state)
        fresh_loss = _fresh_loss(model, fresh, box.volume, config.boundary)
        _append(history, len(history["epoch"]), step.loss, fresh_loss, time.perf_counter() - t0, "lm", start_loss)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{step.loss / start_loss:.2e}", fresh=f"{fresh_loss / start_loss:.2e}",
                            mu=f"{state.mu:.1e}")
        save(state)
        if not step.accepted and state.mu >= settings.mu_max:
            break
    return state


def _append(history: dict, epoch: int, loss: float, fresh: float, seconds: float, stage: str, start: float) -> None:
    """One history row: training and fresh loss with their ratios to the start's training loss."""
    for k, v in zip(HISTORY, (epoch, loss, fresh, loss / start, fresh / start, seconds, stage)):
        history[k].append(v)


def train_known(phi_field, box, config: KnownConfig = KnownConfig(), run_dir=None, resume: bool = False,
                label: str = "", progress: bool = False) -> KnownRun:
    """Minimise the torsion of phi = phi_E + chi Lambda^3(L) N on the box from the start of `config`
    (`learn.torsion_free`); phi_field = phi_E: x (batch, 7) -> packed (batch, 35), box a `Box` or (lo, hi).
    L-BFGS for config.epochs epochs, the output-layer polish, then (solver "lm") Levenberg-Marquardt on every
    weight; every history row carries the loss on the training points and on fresh ones (FRESH_STREAM).

    Every check (`torsion_free.check_problem`: box, positivity of phi_E and of the start; the settings in
    KnownConfig) runs before anything is written. run_dir: a folder for numbered checkpoints (created; None:
    none are written); resume=True continues the latest checkpoint there (same settings and label). label
    names the exact field in the checkpoints (e.g. the fixture's name). A non-finite loss raises ValueError.
    """
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir whose checkpoints it continues")
    box, P, model, J = build(phi_field, as_box(box), config)
    fresh = jets(phi_field, box, box_sobol(config.n_points, box, seed=config.seed + FRESH_STREAM))
    run_config = {"known": config.to_dict(), "box": box.to_dict(), "label": label}
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=config.iterations, history_size=config.history,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    loss_fn = lambda: torsion_loss(model, J, box.volume, config.boundary)
    with torch.no_grad():
        start_loss = float(loss_fn())
    done, history, lm = 0, {k: [] for k in HISTORY}, LMState(config.lm_mu0)
    if run_dir is not None:
        run_dir = runs.writable_folder(run_dir, "run_dir")
        if resume:
            done, history, resumed = _resume(run_dir, run_config, model, opt, history)
            lm = resumed or lm
    t0 = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)
    save = lambda state: run_dir is None or C.save_checkpoint(
        run_dir, _state(run_config, model, opt, len(history["epoch"]), history, state), KNOWN_REQUIRED)
    bar = progress_bar(range(min(done, config.epochs), config.epochs), progress, f"known {label}".strip(), leave=True)
    for epoch in bar:
        closure_step(opt, loss_fn)
        with torch.no_grad():
            loss = float(loss_fn())
        if not math.isfinite(loss):
            raise ValueError(f"torsion-free training diverged at epoch {epoch} (non-finite loss); lower eps")
        _append(history, epoch, loss, _fresh_loss(model, fresh, box.volume, config.boundary),
                time.perf_counter() - t0, "lbfgs", start_loss)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss_ratio=f"{loss / start_loss:.2e}")
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            save(lm)
    polished = history["stage"].count("gauss-newton")
    if config.polish > polished:
        t1 = time.perf_counter() - t0
        for loss, dt in gauss_newton(model, J, box.volume, config.boundary, config.polish - polished):
            _append(history, len(history["epoch"]), loss, _fresh_loss(model, fresh, box.volume, config.boundary),
                    t1 + dt, "gauss-newton", start_loss)
        save(lm)
    if config.solver == "lm":
        lm = _lm_phase(model, J, fresh, box, config, lm, history, (t0, start_loss), save, progress, label)
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

"""Phased training of the K7 3-form model with numbered checkpoints, exact resume and rollback.

Each epoch is one Adam step on a fresh batch of chart points. The batch of global epoch n
is drawn by a generator seeded with (seed << 32) + n, so sampling is a function of
(seed, global epoch) alone and a resumed run replays exactly what a straight run does.
The learning rate of epoch e of a phase with E epochs and peak lr is
  lr = lr_scale * peak * (e + 1) / n_warm                                   for e < n_warm,
  lr = lr_scale * peak * (f + (1 - f) (1 + cos(pi (e - n_warm) / (E - n_warm))) / 2)   after,
with n_warm = floor(warmup_frac * E) and f = lr_floor; lr_scale = user_scale x rollback_scale:
user_scale is the user's factor (`train(..., lr_scale=X)`: X itself, not X times what a checkpoint
had, so running the same resume twice gives the same rate; None keeps the checkpoint's), and
rollback_scale halves at each rollback. Gradients are clipped to grad_clip (global norm).

Divergence: a NaN/Inf loss or gradient rolls the run back to its last good checkpoint with
lr_scale halved and records the event. A finite loss above spike_factor x the median of the
last spike_window losses of the phase (checkpoint.divergence_reason) is first taken for what it
usually is, one heavy-tailed batch (<T> over a batch with a few points of large torsion): the
step is skipped (no update; history column `skipped`) and only spike_patience such batches in a
row count as a divergence and roll back. Rolling back for a single such batch cannot help: the
batch of an epoch is a function of (seed, epoch), so the same batch comes back after the
rollback. After max_rollbacks rollbacks the next divergence stops training with
TrainingDiverged, whose message is the recipe to continue (resume_command).
"""
from __future__ import annotations

import bisect
import math
import os
import shlex
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..batches import chunks
from ..chart import as_chart
from ..sampling import points as sampling
from ..torsion import torsion_packed
from . import checkpoint as ck
from . import fit, runs
from .config import Config
from .losses import compute_losses, metric_lambda_derivative, targets
from .model import K7PhiModel

ARCHITECTURE = ("L", "width", "depth", "n_fourier", "n_chebyshev")
EVAL_STREAM = 1 << 31        # sampler stream of the evaluation points (training uses epochs < 2^31)


class TrainingDiverged(RuntimeError):
    """Raised when training diverges again after max_rollbacks rollbacks.

    Attributes: epoch (global epoch of the divergence), reason, run (run folder name),
    checkpoint (global epoch of the last good checkpoint at or before `epoch`, or None),
    command (the command line that resumes from it at half the lowest rate the rollbacks tried),
    settings (the notebook parameters that do the same). str(err) is the whole recipe;
    `markdown()` is the same as Markdown for a notebook.
    """

    def __init__(self, epoch: int, reason: str, rollbacks: int, run: str, checkpoint: int | None,
                 command: str, settings: dict):
        self.epoch, self.reason, self.rollbacks, self.run = epoch, reason, rollbacks, run
        self.checkpoint, self.command, self.settings = checkpoint, command, settings
        super().__init__(self._text())

    def _text(self) -> str:
        head = f"training diverged at epoch {self.epoch} ({self.reason}) after {self.rollbacks} rollbacks"
        if self.checkpoint is None:
            return head + "; no good checkpoint to resume from: start a new run with a smaller learning rate"
        notebook = ", ".join(f"{k} = {v!r}" for k, v in self.settings.items())
        return (f"{head}. Last good checkpoint: {self.checkpoint} in {self.run}. Continue from it at half the "
                f"lowest rate the rollbacks tried:\n  command line: {self.command}\n  notebook: set {notebook} "
                "and run all cells")

    def markdown(self) -> str:
        head = f"**Training diverged** at epoch {self.epoch} ({self.reason}) after {self.rollbacks} rollbacks."
        if self.checkpoint is None:
            return head + " No good checkpoint exists: start a new run with a smaller learning rate."
        notebook = ", ".join(f"`{k} = {v!r}`" for k, v in self.settings.items())
        return (f"{head}\n\nLast good checkpoint: **{self.checkpoint}** of `{self.run}`. Continue from it at "
                f"half the lowest rate the rollbacks tried:\n\n- notebook: set {notebook} in the parameters cell and run all cells;"
                f"\n- command line: `{self.command}`")

    def _render_traceback_(self):           # IPython: the recipe instead of a traceback
        return [f"error: {self}"]


def check_lr_scale(lr_scale) -> float:
    """lr_scale as a float; ValueError naming the field unless it is a finite number > 0."""
    ok = isinstance(lr_scale, (int, float)) and not isinstance(lr_scale, bool) and math.isfinite(lr_scale) and lr_scale > 0
    if not ok:
        raise ValueError(f"lr_scale: must be a finite number > 0, got {lr_scale!r}")
    return float(lr_scale)


def resume_command(config: Config, run: str, root: str | Path, epoch: int, lr_scale: float = 0.5) -> str:
    """The `python -m k7lib train` line that continues `run` from checkpoint `epoch` with `lr_scale`.

    It spells out what the command line can set (profile, seed, device, epochs scale, root); other
    fields a notebook or script changed are not options of the command line, and a resume checks
    only the architecture against the checkpoint."""
    parts = ["python -m k7lib train", f"--profile {config.profile}"]
    base = Config.from_profile(config.profile)
    if config.seed != base.seed:
        parts.append(f"--seed {config.seed}")
    if config.device != base.device:
        parts.append(f"--device {config.device}")
    if [p.epochs for p in config.phases] != [p.epochs for p in base.phases]:
        parts.append(f"--epochs-scale {config.phases[0].epochs / base.phases[0].epochs:g}")
    if Path(root).resolve() != Path(runs.DEFAULT_ROOT).resolve():
        parts.append(f"--root {shlex.quote(str(root))}")
    parts += [f"--run {run}", f"--resume {epoch}", f"--lr-scale {lr_scale:g}"]
    return " ".join(parts)


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns: the model (train dtype), the history table, the run folder, the config."""
    model: K7PhiModel
    history: pd.DataFrame
    run_dir: Path
    config: Config
    events: list = field(default_factory=list)      # rollbacks: dicts with epoch, reason, restored_to, lr_scale

    def summary(self) -> str:
        last = self.history.iloc[-1] if len(self.history) else None
        if last is None:
            return f"{self.run_dir.name}: no epochs trained"
        kappa, det_t = targets()
        polished = "phase_name" in self.history and last.phase_name == "polish"
        epochs = int((self.history.phase_name != "polish").sum()) if "phase_name" in self.history else len(self.history)
        return (f"{self.run_dir.name}: {epochs} epochs{' + polish' if polished else ''}, loss {last.loss:.4g}, "
                f"<T>/kappa_T {last.T_mean / kappa:.4f}, <det g> {last.det_mean:.5f} (target {det_t:.5f}), "
                f"rollbacks {int(last.rollbacks)}")


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


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` returns (float64 on fresh scrambled Sobol points, non-positive points excluded).

    n_points, scrambles: points and independent scrambles; T_mean, det_mean: the means of the torsion
    density T and of det g; T_over_kappa, det_rel_err = det_mean / (65/32) - 1; *_stderr: standard
    errors from the spread of the per-scramble means (nan with one scramble); det_std: pointwise spread
    of det g; eig_min: smallest eigenvalue of g; nonpositive: points where phi is not positive;
    anti_flat: neck-weighted RMS of d g / d lambda.
    """
    n_points: int
    scrambles: int
    T_mean: float
    T_stderr: float
    T_over_kappa: float
    T_over_kappa_stderr: float
    det_mean: float
    det_stderr: float
    det_rel_err: float
    det_rel_err_stderr: float
    det_std: float
    eig_min: float
    nonpositive: int
    anti_flat: float

    def to_dict(self) -> dict:
        return asdict(self)


class PhaseScheduler:
    """Learning rate per (phase, epoch): linear warm-up then cosine decay to lr_floor x peak (module doc)."""

    def __init__(self, config: Config):
        self.config = config
        self.user_scale = 1.0          # the user's --lr-scale / LR_SCALE in force
        self.rollback_scale = 1.0      # halved by each rollback

    @property
    def lr_scale(self) -> float:
        return self.user_scale * self.rollback_scale

    def lr(self, phase: int, epoch: int) -> float:
        p = self.config.phases[phase]
        n_warm = int(self.config.warmup_frac * p.epochs)
        if epoch < n_warm:
            shape = (epoch + 1) / n_warm
        else:
            span = max(p.epochs - n_warm, 1)
            f = self.config.lr_floor
            shape = f + (1 - f) * 0.5 * (1 + math.cos(math.pi * (epoch - n_warm) / span))
        return self.lr_scale * p.lr * shape

    def state_dict(self) -> dict:
        return {"lr_scale": float(self.lr_scale), "user_scale": float(self.user_scale),
                "rollback_scale": float(self.rollback_scale)}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints before the split hold the product only: it was all rollback halvings
        self.user_scale = float(state.get("user_scale", 1.0))
        self.rollback_scale = float(state.get("rollback_scale", float(state["lr_scale"]) / self.user_scale))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but CUDA is not available")
    return torch.device(name)


def epoch_seed(seed: int, global_epoch: int) -> int:
    """Seed of the sampler for one epoch: (seed << 32) + global_epoch."""
    return (int(seed) << 32) + int(global_epoch)


def _phase_of(config: Config, global_epoch: int) -> tuple[int, int]:
    starts = config.phase_starts()
    p = bisect.bisect_right(starts, global_epoch) - 1
    return p, global_epoch - starts[p]


def _read_warm_start(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"warm_start: file not found: {path}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"warm_start: cannot read {path} as tensors ({type(err).__name__}: {err})") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]                    # a checkpoint of ours, or a {"model": state_dict} bundle
    if not isinstance(sd, dict):
        raise ValueError(f"warm_start: {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def _new_run_dir(run, root: Path) -> Path:
    """Folder for a new run; ValueError (nothing written) if it cannot be made or already holds checkpoints."""
    try:
        if run is None:
            return runs.new_run(root)
        path = root / runs.run_name(run)          # one plain folder name: the run stays inside root
        ck.remove_stale_temporaries(path)
        if ck.list_checkpoints(path):
            raise ValueError(f"run: {path} already holds checkpoints; resume it (resume='latest') "
                             "or choose another run name")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"root: cannot create a run folder under {root} ({type(err).__name__}: {err})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"run: folder {path} is not writable")
    return path


def _append_row(history: dict, row: dict) -> None:
    """Append one row to the column lists: a column new to the history (a run resumed from an older
    checkpoint) is back-filled, a column the row lacks gets NaN, so every column keeps one value per row."""
    n = len(next(iter(history.values()), []))
    for k in row:
        if k not in history:
            history[k] = [0 if k == "skipped" else math.nan] * n
    for k, col in history.items():
        col.append(row.get(k, math.nan))


def _targets_held(history: dict, config: Config, phase: int, epoch: int) -> bool:
    """True when the means of <T> and <det g> over the last early_stop_window epochs of this phase
    are within early_stop_T of kappa_T and early_stop_det of 65/32 (relative)."""
    w = config.early_stop_window
    if epoch + 1 < w:
        return False
    kappa_T, det_t = targets()
    T = sum(history["T_mean"][-w:]) / w
    det = sum(history["det_mean"][-w:]) / w
    return abs(T / kappa_T - 1) <= config.early_stop_T and abs(det / det_t - 1) <= config.early_stop_det


def targets_met(history: pd.DataFrame, tol_T: float = 0.01, tol_det: float = 2e-4, window: int = 50) -> dict:
    """First global epoch at which each target holds for the window mean of the training batches.

    Returns {"kappa_T": epoch or None, "det_g": epoch or None, "both": epoch or None}: the epoch
    ending the first window of `window` epochs whose mean <T>/kappa_T is within tol_T of 1 (and
    likewise <det g>/(65/32) within tol_det). The polish row (if any) is left out.
    """
    kappa_T, det_t = targets()
    h = history[history.phase_name != "polish"] if "phase_name" in history else history
    rT = (h.T_mean.rolling(window).mean() / kappa_T - 1).abs() <= tol_T
    rD = (h.det_mean.rolling(window).mean() / det_t - 1).abs() <= tol_det
    first = lambda ok: int(h.global_epoch[ok].iloc[0]) if bool(ok.any()) else None
    return {"kappa_T": first(rT), "det_g": first(rD), "both": first(rT & rD)}


def _diverged(config: Config, run_dir: Path, root, epoch: int, reason: str, rollbacks: int,
              tried_scale: float) -> TrainingDiverged:
    """TrainingDiverged naming the newest readable checkpoint at or before `epoch` and the recipe.

    The suggested lr_scale (the user factor of the resume) halves the smallest rate the rollbacks
    tried, given that checkpoint's own rollback scale (a resume at a rate already tried would replay
    the same divergence: the batches are a function of (seed, epoch))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            state = ck.load_checkpoint(run_dir, epoch, exact=False, expect="resume")
            sched = PhaseScheduler(config)
            sched.load_state_dict(state["scheduler"])
            good, stored = int(state["global_epoch"]), sched.rollback_scale
        except (ValueError, KeyError, TypeError):
            good, stored = None, 1.0
    scale = float(f"{min(0.5, 0.5 * tried_scale / stored):.3g}")
    command = resume_command(config, run_dir.name, root, good if good is not None else 0, scale)
    settings = {"RUN": run_dir.name, "RESUME": good, "LR_SCALE": scale}
    return TrainingDiverged(epoch, reason, rollbacks, run_dir.name, good, command, settings)


def _check_compatible(config: Config, stored: Config) -> None:
    for name in ARCHITECTURE:
        if getattr(config, name) != getattr(stored, name):
            raise ValueError(f"{name}: the checkpoint was trained with {name}={getattr(stored, name)!r}, "
                             f"the configuration asks for {getattr(config, name)!r}")
    if config.seed != stored.seed:       # allowed, but the continuation replays neither seed's straight run
        warnings.warn(f"seed: resuming a run trained with seed={stored.seed} under seed={config.seed}; "
                      f"the epochs after the checkpoint draw their points from seed {config.seed}",
                      RuntimeWarning, stacklevel=4)


def train(config: Config, run: int | str | None = None, root: str | Path = runs.DEFAULT_ROOT,
          resume: str | int | None = None, progress: bool = True, step_hook=None,
          lr_scale: float | None = None) -> TrainResult:
    """Train (or resume) a run through all phases of `config`; returns a TrainResult.

    run: None -> a new numbered run (runs.new_run); a name or number -> that folder.
    resume: None -> fresh start; "latest" or a global epoch N -> continue from that checkpoint
      of `run` (None = the latest run); the configuration's architecture must match.
    step_hook(global_epoch, loss) -> loss is applied to each step's loss before the divergence
      check and backward (used to test rollback).
    lr_scale: None keeps the checkpoint's factor (1 for a new run); a number X > 0 sets the user's
      factor on the peak learning rate of every remaining phase to X (on top of the rollbacks'
      halvings); a change is recorded in the events and shows in the history's lr column. It is
      not part of the configuration, so a run can be resumed with a lower rate after a divergence,
      and resuming twice with the same X gives the same rate.
    Raises ValueError (before any file is written) for a bad configuration or lr_scale, a
    warm-start file that matches nothing, an unwritable or already used run folder; raises
    TrainingDiverged with the recipe to continue when rollbacks cannot stop a divergence.
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a Config, got {type(config).__name__}")
    config.validate()
    lr_scale = None if lr_scale is None else check_lr_scale(lr_scale)
    threads = torch.get_num_threads()
    if config.cpu_threads and resolve_device(config.device).type == "cpu":
        # Small batches: one thread avoids intra-op synchronisation that costs more than it gains.
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, run, root, resume, progress, step_hook, lr_scale)
    finally:
        torch.set_num_threads(threads)


def _train(config: Config, run, root, resume, progress, step_hook, lr_scale) -> TrainResult:
    root = Path(root)
    device = resolve_device(config.device)
    dtype = getattr(torch, config.train_dtype)

    # Everything that can fail on input is checked before the first write.
    torch.manual_seed(config.seed)
    with torch.device("cpu"):             # the same initial weights on every device, then moved
        model = K7PhiModel(config)
    state = None
    if resume is not None:
        run_dir = runs.resolve_run(run, root)
        state = ck.load_checkpoint(run_dir, resume, expect="resume")
        _check_compatible(config, Config.from_dict(state["config"]))
        model.load_state_dict(state["model"])
    elif config.warm_start is not None:
        model.load_compatible(_read_warm_start(config.warm_start), verbose=progress)
    model = model.to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.phases[0].lr)
    scheduler = PhaseScheduler(config)
    sampler = torch.Generator()
    if state is None:
        run_dir = _new_run_dir(run, root)
        history, events, rollbacks, recent, start, streak = {}, [], 0, [], 0, 0
    else:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ck.set_rng_state(state["rng"], sampler)
        history, events = state["history"], list(state["events"])
        rollbacks, recent, start = int(state["rollbacks"]), list(state["recent_losses"]), int(state["global_epoch"])
        streak = int(state.get("spike_streak", 0))
    if lr_scale is not None and lr_scale != scheduler.user_scale:
        scheduler.user_scale = lr_scale
        events.append({"global_epoch": start, "reason": f"learning rate scaled by {lr_scale:g} by the user"
                       + (f" on resuming from checkpoint {start}" if state is not None else ""),
                       "restored_to": start, "lr_scale": scheduler.lr_scale, "rollback": rollbacks})

    def snapshot(global_epoch: int) -> dict:
        phase, epoch = _phase_of(config, min(global_epoch, config.total_epochs - 1))
        return {"format": ck.FORMAT, "global_epoch": global_epoch, "phase": phase, "epoch": epoch,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": {k: list(v) for k, v in history.items()}, "events": [dict(e) for e in events],
                "rollbacks": rollbacks, "recent_losses": list(recent), "spike_streak": streak,
                "rng": ck.rng_state(sampler), "config": config.to_dict()}

    if state is None:
        ck.save_checkpoint(run_dir, snapshot(0))       # rollback target before the first interval

    total = config.total_epochs
    ge, bar, bar_phase = start, None, None
    kappa_T, _ = targets()
    while ge < total:
        phase, epoch = _phase_of(config, ge)
        spec = config.phases[phase]
        if epoch == 0:
            recent = []
            if phase > 0:
                # a new phase is a new objective: Adam's moment estimates belong to the old weights, and
                # carried over they make the first steps of a re-weighted loss up to w_new / w_old times
                # too long (the full profile's kappa weight goes 0.01 -> 1 at phase 2)
                optimizer.state.clear()
        if progress and bar_phase != phase:
            if bar is not None:
                bar.close()
            bar = tqdm(total=spec.epochs, initial=epoch, desc=f"phase {phase + 1} {spec.name}", leave=True)
            bar_phase = phase
        lr = scheduler.lr(phase, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.manual_seed(epoch_seed(config.seed, ge))
        x, w = sampling.uniform(config.batch, model.chart, sampler, config.neck_weighted, dtype=dtype, device=device)
        terms = compute_losses(model, x, w, spec.weights, config.method, chart=model.chart, eig_margin=config.eig_margin,
                               cond_cap=config.cond_cap, anti_flat_margin=config.anti_flat_margin)
        loss = terms.total if step_hook is None else step_hook(ge, terms.total)
        reason = ck.divergence_reason(float(loss.detach()), recent[-config.spike_window:], config.spike_factor)
        skip = reason is not None and reason.startswith("loss spike") and streak + 1 < config.spike_patience
        streak = streak + 1 if reason is not None and reason.startswith("loss spike") else 0
        if reason is None:             # the update is applied unless the gradient norm is not finite
            gnorm = fit.step(model, optimizer, loss, config.grad_clip)
            if not math.isfinite(gnorm):
                reason = f"non-finite gradient norm ({gnorm})"
        if reason is not None and not skip:
            rollbacks += 1
            streak = 0
            if rollbacks > config.max_rollbacks:
                if bar is not None:
                    bar.close()
                raise _diverged(config, run_dir, root, ge, reason, rollbacks - 1, scheduler.lr_scale)
            # at or before this epoch: after a resume from an earlier checkpoint, later files
            # on disk belong to the abandoned continuation
            back = ck.load_checkpoint(run_dir, ge, exact=False, expect="resume")
            model.load_state_dict(back["model"])
            optimizer.load_state_dict(back["optimizer"])
            in_force, user = scheduler.rollback_scale, scheduler.user_scale
            scheduler.load_state_dict(back["scheduler"])
            # half the rate in force, not the checkpoint's: repeated rollbacks to one checkpoint compound;
            # the user's factor in force stays (the checkpoint may predate the resume that set it)
            scheduler.rollback_scale = 0.5 * min(in_force, scheduler.rollback_scale)
            scheduler.user_scale = user
            ck.set_rng_state(back["rng"], sampler)
            history, recent = back["history"], list(back["recent_losses"])
            streak = int(back.get("spike_streak", 0))
            events.append({"global_epoch": ge, "reason": reason, "restored_to": int(back["global_epoch"]),
                           "lr_scale": scheduler.lr_scale, "rollback": rollbacks})
            msg = f"rollback {rollbacks}: {reason} at epoch {ge}; back to epoch {back['global_epoch']}, lr x{scheduler.lr_scale:g}"
            (tqdm.write if progress else (lambda s: None))(msg)
            if bar is not None:
                bar.close()
            ge, bar, bar_phase = int(back["global_epoch"]), None, None
            continue
        row = {"phase": phase + 1, "phase_name": spec.name, "epoch": epoch, "global_epoch": ge}
        row.update(terms.row())
        row.update({"lr": lr, "rollbacks": rollbacks, "skipped": int(skip)})
        _append_row(history, row)
        if skip:               # a heavy-tailed batch: no update, and kept out of the spike median
            (tqdm.write if progress else (lambda m: None))(f"epoch {ge}: {reason}; step skipped")
        else:
            recent.append(row["loss"])
            recent = recent[-config.spike_window:]
        ge += 1
        met = _targets_held(history, config, phase, epoch) if config.early_stop_window else False
        nxt = (config.phase_starts() + [total])[phase + 1]           # start of the next phase
        if met and nxt > ge:
            events.append({"global_epoch": ge, "reason": f"early stop: phase {phase + 1} ({spec.name}) met both "
                           f"targets over its last {config.early_stop_window} epochs; skipping to epoch {nxt}",
                           "restored_to": nxt, "lr_scale": scheduler.lr_scale, "rollback": rollbacks})
            (tqdm.write if progress else (lambda m: None))(events[-1]["reason"])
            ge = nxt
            ck.save_checkpoint(run_dir, snapshot(ge))      # the jump is a state of its own: resumable
            if bar is not None:
                bar.close()
            bar, bar_phase = None, None
            continue
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3g}", T61=f"{row['T_mean'] / kappa_T:.3f}",
                            det=f"{row['det_mean']:.4f}")
        if ge % config.checkpoint_every == 0 or ge == total:
            ck.save_checkpoint(run_dir, snapshot(ge))
    if bar is not None:
        bar.close()
    if config.polish_points and ge == total:
        # the polish is the run's last step: its checkpoint is numbered total + 1, so a resume
        # from `total` repeats it and a resume from the latest file finds the run complete
        info = polish(model, config)
        row = {"phase": len(config.phases) + 1, "phase_name": "polish", "epoch": 0, "global_epoch": total}
        kappa_T, det_t = targets()
        row.update({"T_mean": kappa_T * (1 + info.after[0]), "det_mean": det_t * (1 + info.after[1]),
                    "eig_min": info.eig_min, "lr": 0.0, "rollbacks": rollbacks, "skipped": 0,
                    # the polish's own objective: the squared relative residuals on its points
                    "loss": info.after[0] ** 2 + info.after[1] ** 2,
                    "loss_kappa": info.after[0] ** 2, "loss_det": info.after[1] ** 2})
        _append_row(history, row)
        events.append({"global_epoch": total, "reason": (
            f"polish: {info.iters} Gauss-Newton step(s) on {info.n_points} Sobol points, <T>/kappa_T - 1 "
            f"{info.before[0]:+.2e} -> {info.after[0]:+.2e}, <det g>/(65/32) - 1 {info.before[1]:+.2e} -> "
            f"{info.after[1]:+.2e}" + (f"; {info.note}" if info.note else "" if info.accepted
                                          else "; refused (phi would lose positivity)")),
            "restored_to": total, "lr_scale": scheduler.lr_scale, "rollback": rollbacks})
        (tqdm.write if progress else (lambda m: None))(events[-1]["reason"])
        ge = total + 1
        ck.save_checkpoint(run_dir, snapshot(ge))
    return TrainResult(model=model, history=pd.DataFrame(history), run_dir=run_dir, config=config, events=events)


POLISH_STREAM = 1 << 30      # scramble seeds of the polish points (evaluation uses EVAL_STREAM)


def _flat_grads(model, outputs) -> list:
    """Gradients of each 0-dim output w.r.t. all parameters, flattened: list of (P,) vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i, o in enumerate(outputs):
        g = torch.autograd.grad(o, params, retain_graph=i + 1 < len(outputs), allow_unused=True)
        out.append(torch.cat([(q if q is not None else torch.zeros_like(p)).reshape(-1) for q, p in zip(g, params)]))
    return out


def polish(model, config: Config, chunk: int = 1024) -> Polish:
    """Put <T> and <det g> on kappa_T and 65/32 on a fixed set of scrambled Sobol points.

    Gauss-Newton with the minimum-norm step: with r = (<T>/kappa_T - 1, <det g>/(65/32) - 1) and
    J = dr/dtheta (2 x P, from two chunked backward passes), theta -= J^T (J J^T)^{-1} r: the
    smallest change of the weights that zeroes the linearised residuals. Repeated up to
    polish_iters times or until max |r| < polish_tol; in float64; g = g(phi) throughout (only
    phi's weights move). The step is refused (weights restored) if it makes phi non-positive
    anywhere on the points or the smallest eigenvalue of g fall below eig_margin.
    Returns `Polish`.
    """
    kappa_T, det_t = targets()
    param = next(model.parameters())
    dtype0, device = param.dtype, param.device
    model.double()
    x = sampling.sobol(config.polish_points, model.chart, seed=epoch_seed(config.seed, POLISH_STREAM), device=device)
    n = x.shape[0]

    def residual_and_jacobian(need_grad: bool):
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        grads = [0.0, 0.0]
        eig_min, bad = math.inf, 0
        for s in chunks(n, chunk):
            with torch.set_grad_enabled(need_grad):
                t = torsion_packed(model, x[s], method=config.method, check=False)
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
        r = sums - 1
        return r, (torch.stack(grads) if need_grad else None), eig_min, bad

    def shift(step, scale):
        with torch.no_grad():
            k = 0
            for p in model.parameters():
                p += scale * step[k:k + p.numel()].view_as(p)
                k += p.numel()

    saved = [p.detach().clone() for p in model.parameters()]
    r, J, eig_min, bad = residual_and_jacobian(True)
    before, iters = r.tolist(), 0
    note = ""
    if bad or eig_min < config.eig_margin or not bool(torch.isfinite(J).all() and torch.isfinite(r).all()):
        note = "not attempted: phi is below the eigenvalue margin (or not positive) before the polish"
    while not note and iters < config.polish_iters and float(r.abs().max()) >= config.polish_tol:
        step = -J.T @ (torch.linalg.pinv(J @ J.T) @ r)
        # backtracking: a full step, then halves, until the residual falls (far from the targets the
        # linearisation can overshoot)
        for scale in (1.0, 0.5, 0.25, 0.125):
            shift(step, scale)
            r_new, _, eig_new, bad_new = residual_and_jacobian(False)
            if float(r_new.abs().max()) < float(r.abs().max()) and bad_new == 0 and eig_new >= config.eig_margin:
                break
            shift(step, -scale)
        else:
            break                              # no step helps: keep what we have
        iters += 1
        r, eig_min, bad = r_new, eig_new, bad_new
        if iters < config.polish_iters and float(r.abs().max()) >= config.polish_tol:
            r, J, eig_min, bad = residual_and_jacobian(True)
    accepted = not note and not (bad or eig_min < config.eig_margin or not bool(torch.isfinite(r).all()))
    if not accepted:
        with torch.no_grad():
            for p, q in zip(model.parameters(), saved):
                p.copy_(q)
        r = torch.tensor(before, dtype=torch.float64)
    model.to(dtype0)
    return Polish(iters=iters, before=list(before), after=r.tolist(), accepted=accepted, n_points=n, eig_min=eig_min,
                  nonpositive=bad, note=note)


def evaluate(model, chart, n_points: int = 4096, seed: int = 0, dtype: torch.dtype = torch.float64,
             method: str = "autograd", chunk: int = 1024, scrambles: int = 8) -> Evaluation:
    """Final numbers on fresh scrambled Sobol points, in `dtype` (float64 by default), chunked.

    The n_points are `scrambles` independent scrambles (sampling.sobol) of n_points / scrambles
    points each (randomised quasi-Monte Carlo): means are over all points, and the standard
    error of a mean is the spread of the per-scramble means / sqrt(scrambles).
    Returns T_mean, T_stderr, T_over_kappa (<T> / kappa_T), det_mean, det_stderr, det_rel_err
    (<det g> / (65/32) - 1), det_std (pointwise spread), eig_min, nonpositive (points where phi
    is not positive or g not finite; the means are over the others), anti_flat (the measure V of
    losses.anti_flat_measure), n_points, scrambles. g = g(phi) everywhere (no rescaling).
    """
    if not (isinstance(n_points, int) and n_points >= 1):
        raise ValueError(f"n_points: must be a positive integer, got {n_points!r}")
    chart = as_chart(chart)
    kappa_T, det_t = targets()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was = {p: p.dtype for p in model.parameters()}
    model = model.to(dtype)
    scrambles = max(1, min(int(scrambles), n_points // 2))
    sizes = [n_points // scrambles + (s < n_points % scrambles) for s in range(scrambles)]
    # per scramble: count, sum T, sum det, sum det^2 (pointwise spread), neck-weighted |dg|^2 and its weight
    sums = torch.zeros(scrambles, 6, dtype=torch.float64, device="cpu")
    eig_min, nonpos = math.inf, 0
    for s, size in enumerate(sizes):
        x_all = sampling.sobol(size, chart, seed=epoch_seed(seed, EVAL_STREAM + s), dtype=dtype, device=device)
        for part in chunks(size, chunk):
            x = x_all[part]
            with torch.no_grad():             # forward-mode derivatives only; no graph to keep
                t = torsion_packed(model, x, method=method, check=False)
                _, dg = metric_lambda_derivative(t)
            finite = (torch.isfinite(t.metric.g).flatten(1).all(1) & torch.isfinite(t.T)
                      & torch.isfinite(dg).flatten(1).all(1))
            eye = torch.eye(7, dtype=dtype, device=device)
            ev = torch.linalg.eigvalsh(torch.where(finite[:, None, None], t.metric.g, eye))
            good = finite & (t.metric.orientation > 0) & (ev[:, 0] > 0)
            nonpos += int((~good).sum())
            if bool(good.any()):
                eig_min = min(eig_min, float(ev[good, 0].min()))
            x, t_T, t_det, dg = x[good], t.T[good], t.metric.det[good], dg[good]
            nw = chart.region_weights(x[:, 0])[:, 1]
            sums[s] += torch.stack([good.sum().to(dtype), t_T.sum(), t_det.sum(), (t_det ** 2).sum(),
                                    (nw * dg.pow(2).sum((-2, -1))).sum(), nw.sum()]).double().detach().cpu()
    for p, d in was.items():
        p.data = p.data.to(d)
    total = sums.sum(0)
    counted = float(total[0])
    if counted == 0:
        raise ValueError(f"evaluate: phi is not positive at any of the {n_points} points")
    T_mean, det_mean = float(total[1]) / counted, float(total[2]) / counted
    ok = sums[:, 0] > 0
    per = sums[ok, 1:3] / sums[ok, :1]                          # per-scramble means of T and det g
    se = (per.std(0) / math.sqrt(len(per))).tolist() if len(per) > 1 else [math.nan, math.nan]
    return Evaluation(n_points=n_points, scrambles=scrambles, T_mean=T_mean, T_stderr=se[0],
                      T_over_kappa=T_mean / kappa_T, T_over_kappa_stderr=se[0] / kappa_T,
                      det_mean=det_mean, det_stderr=se[1], det_rel_err=det_mean / det_t - 1,
                      det_rel_err_stderr=se[1] / det_t,
                      det_std=math.sqrt(max(float(total[3]) / counted - det_mean**2, 0.0)),
                      eig_min=eig_min, nonpositive=nonpos,
                      anti_flat=math.sqrt(float(total[4]) / max(float(total[5]), 1e-300)))

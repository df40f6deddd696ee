"""Phased training of the K7 3-form model on its chart, with numbered checkpoints, exact resume and rollback.

Each epoch is one Adam step on a fresh batch of chart points, drawn from (seed, global epoch) alone
(schedule.epoch_seed), at the rate of schedule.PhaseScheduler; gradients are clipped to grad_clip
(global norm). Every step's loss and gradient are judged by divergence.check_loss / check_gradient:
a NonFinite step rolls the run back to its last good checkpoint with the rate halved (the event is
recorded), a lone Spike skips its step (history column `skipped`) and spike_patience in a row roll
back; after max_rollbacks rollbacks the next divergence raises divergence.TrainingDiverged with the
recipe to continue. Optionally a phase ends early once its batch means hold both targets
(early_stop_window). The run ends with the Gauss-Newton polish (polish.polish), whose checkpoint is
numbered total + 1: resuming from it with the same schedule finds the run complete, and a longer
schedule continues from the last training checkpoint instead (checkpoint.load_for_training).

One writer per run: the run folder's lock (runs.run_lock) is held from before the first checkpoint
is read or written to the end, so a second process on the same run stops with one line naming the
holder and writes nothing.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..sampling import points as sampling
from . import checkpoint as ck
from . import fit, runs
from .config import Config
from .divergence import Ok, Spike, check_gradient, check_loss, recipe
from .history import append_row, targets_held
from .losses import compute_losses, targets
from .model import K7PhiModel
from .polish import polish
from .schedule import PhaseScheduler, check_lr_scale, epoch_seed, phase_of

ARCHITECTURE = ("L", "width", "depth", "n_fourier", "n_chebyshev")


@dataclass(frozen=True)
class TrainResult:
    """What `train_chart` returns: the model (train dtype), the history table, the run folder, the config."""
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but CUDA is not available")
    return torch.device(name)


def train_chart(config: Config, run: int | str | None = None, root: str | Path = runs.DEFAULT_ROOT,
                resume: str | int | None = None, progress: bool = True, step_hook=None,
                lr_scale: float | None = None) -> TrainResult:
    """Train (or resume) a chart run through all phases of `config`; returns a TrainResult.

    run: None -> a new numbered run (runs.new_run); a name or number -> that folder (inside root,
      symbolic links resolved).
    resume: None -> fresh start; "latest" or a global epoch N -> continue from that checkpoint
      of `run` (None = the latest run); the configuration's architecture must match.
    step_hook(global_epoch, loss) -> loss is applied to each step's loss before the divergence
      check and backward (used to test rollback).
    lr_scale: None keeps the checkpoint's factor (1 for a new run); a number X in (0, 10] sets the
      user's factor on the peak learning rate of every remaining phase to X (on top of the rollbacks'
      halvings); a change is recorded in the events and shows in the history's lr column. It is
      not part of the configuration, so a run can be resumed with a lower rate after a divergence,
      and resuming twice with the same X gives the same rate.
    Raises ValueError (before any file is written) for a bad configuration or lr_scale, a
    warm-start file that matches nothing, an unwritable or already used run folder; runs.RunInUse
    when another process is training the run; TrainingDiverged with the recipe to continue when
    rollbacks cannot stop a divergence.
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
        return _train(config, run, Path(root), resume, progress, step_hook, lr_scale)
    finally:
        torch.set_num_threads(threads)


def _train(config: Config, run, root: Path, resume, progress, step_hook, lr_scale) -> TrainResult:
    # Everything that can fail on input is checked before the first write.
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    with torch.device("cpu"):             # the same initial weights on every device, then moved
        model = K7PhiModel(config)
    if resume is None and config.warm_start is not None:
        model.load_compatible(_read_warm_start(config.warm_start), verbose=progress)
    run_dir = runs.resolve_run(run, root) if resume is not None else _new_run_dir(run, root)
    with runs.run_lock(run_dir):
        state = None
        if resume is None:
            ck.remove_stale_temporaries(run_dir)
            _check_unused(run_dir)        # again under the lock: another writer may have begun
        else:
            state = ck.load_for_training(run_dir, resume, config)
            _check_compatible(config, Config.from_dict(state["config"]))
        loop = _Loop(config, model, run_dir, root, device, progress, step_hook, state)
        loop.set_user_scale(lr_scale, resumed=state is not None)
        if state is None:
            loop.save()                   # rollback target before the first interval
        return loop.run()


def _read_warm_start(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"warm_start: file not found: {path}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:                # a pickle of code (weights_only refuses it), a torn file, ...
        cause = (str(err).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"warm_start: cannot read {path} as tensors only ({type(err).__name__}: {cause})") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]                    # a checkpoint of ours, or a {"model": state_dict} bundle
    if not isinstance(sd, dict):
        raise ValueError(f"warm_start: {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def _check_unused(path: Path) -> None:
    if ck.list_checkpoints(path):
        raise ValueError(f"run: {path} already holds checkpoints; resume it (resume='latest') "
                         "or choose another run name")


def _new_run_dir(run, root: Path) -> Path:
    """Folder for a new run; ValueError (nothing written) if it cannot be made, lies outside the root
    or already holds checkpoints."""
    try:
        if run is None:
            return runs.new_run(root)
        path = runs.run_path(run, root)       # one plain folder name, inside the root once resolved
        _check_unused(path)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"root: cannot create a run folder under {root} ({type(err).__name__}: {err})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"run: folder {path} is not writable")
    return path


def _check_compatible(config: Config, stored: Config) -> None:
    for name in ARCHITECTURE:
        if getattr(config, name) != getattr(stored, name):
            raise ValueError(f"{name}: the checkpoint was trained with {name}={getattr(stored, name)!r}, "
                             f"the configuration asks for {getattr(config, name)!r}")
    if config.seed != stored.seed:       # allowed, but the continuation replays neither seed's straight run
        warnings.warn(f"seed: resuming a run trained with seed={stored.seed} under seed={config.seed}; "
                      f"the epochs after the checkpoint draw their points from seed {config.seed}",
                      RuntimeWarning, stacklevel=4)


class _PhaseBar:
    """One tqdm bar per phase when progress is on, closed on a rollback, a jump and at the end."""

    def __init__(self, progress: bool):
        self.progress, self.bar, self.phase = progress, None, None

    def show(self, phase: int, name: str, epochs: int, epoch: int) -> None:
        if self.progress and self.phase != phase:
            self.close()
            self.bar = tqdm(total=epochs, initial=epoch, desc=f"phase {phase + 1} {name}", leave=True)
            self.phase = phase

    def step(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['loss']:.3g}", T61=f"{row['T_mean'] / targets()[0]:.3f}",
                                 det=f"{row['det_mean']:.4f}")

    def say(self, message: str) -> None:
        if self.progress:
            tqdm.write(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None


class _Loop:
    """The training state of one run (model, optimizer, schedule, sampler, history, counters) and
    the epoch loop over it; `state`, when given, is the checkpoint it resumes from."""

    def __init__(self, config: Config, model, run_dir: Path, root: Path, device, progress, step_hook, state):
        self.config, self.run_dir, self.root, self.step_hook = config, run_dir, root, step_hook
        self.dtype, self.device, self.bars = getattr(torch, config.train_dtype), device, _PhaseBar(progress)
        if state is not None:
            model.load_state_dict(state["model"])
        self.model = model.to(device=device, dtype=self.dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.phases[0].lr)
        self.scheduler = PhaseScheduler(config)
        self.sampler = torch.Generator()
        self.history, self.events, self.rollbacks, self.recent, self.ge, self.streak = {}, [], 0, [], 0, 0
        if state is not None:
            self._restore(state, keep_scales=False)
            self.events = list(state["events"])
            self.rollbacks = int(state["rollbacks"])

    def _restore(self, state: dict, keep_scales: bool) -> None:
        """Weights, optimizer, schedule, sampler, history and counters of a checkpoint. keep_scales (a
        rollback): half the rollback scale in force, not the checkpoint's, so repeated rollbacks to one
        checkpoint compound; and the user's factor in force stays (the checkpoint may predate it)."""
        if keep_scales:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        in_force, user = self.scheduler.rollback_scale, self.scheduler.user_scale
        self.scheduler.load_state_dict(state["scheduler"])
        if keep_scales:
            self.scheduler.rollback_scale = 0.5 * min(in_force, self.scheduler.rollback_scale)
            self.scheduler.user_scale = user
        ck.set_rng_state(state["rng"], self.sampler)
        self.history, self.recent = state["history"], list(state["recent_losses"])
        self.streak, self.ge = int(state.get("spike_streak", 0)), int(state["global_epoch"])

    def set_user_scale(self, lr_scale: float | None, resumed: bool) -> None:
        if lr_scale is None or lr_scale == self.scheduler.user_scale:
            return
        self.scheduler.user_scale = lr_scale
        self._event(self.ge, f"learning rate scaled by {lr_scale:g} by the user"
                    + (f" on resuming from checkpoint {self.ge}" if resumed else ""), self.ge)

    def _event(self, epoch: int, reason: str, restored_to: int) -> None:
        self.events.append({"global_epoch": epoch, "reason": reason, "restored_to": restored_to,
                            "lr_scale": self.scheduler.lr_scale, "rollback": self.rollbacks})

    def snapshot(self) -> dict:
        phase, epoch = phase_of(self.config, min(self.ge, self.config.total_epochs - 1))
        return {"format": ck.FORMAT, "global_epoch": self.ge, "phase": phase, "epoch": epoch,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "history": {k: list(v) for k, v in self.history.items()}, "events": [dict(e) for e in self.events],
                "rollbacks": self.rollbacks, "recent_losses": list(self.recent), "spike_streak": self.streak,
                "rng": ck.rng_state(self.sampler), "config": self.config.to_dict()}

    def save(self) -> None:
        ck.save_checkpoint(self.run_dir, self.snapshot())

    def run(self) -> TrainResult:
        total = self.config.total_epochs
        while self.ge < total:
            self._epoch()
        self.bars.close()
        if self.config.polish_points and self.ge == total:
            self._polish()
        return TrainResult(model=self.model, history=pd.DataFrame(self.history), run_dir=self.run_dir,
                           config=self.config, events=self.events)

    def _epoch(self) -> None:
        config = self.config
        phase, epoch = phase_of(config, self.ge)
        spec = config.phases[phase]
        if epoch == 0:
            self.recent = []
            if phase > 0:
                # a new phase is a new objective: Adam's moment estimates belong to the old weights, and
                # carried over they make the first steps of a re-weighted loss up to w_new / w_old times
                # too long (the full profile's kappa weight goes 0.01 -> 1 at phase 2)
                self.optimizer.state.clear()
        self.bars.show(phase, spec.name, spec.epochs, epoch)
        lr = self.scheduler.lr(phase, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.sampler.manual_seed(epoch_seed(config.seed, self.ge))
        x, w = sampling.uniform(config.batch, self.model.chart, self.sampler, config.neck_weighted,
                                dtype=self.dtype, device=self.device)
        terms = compute_losses(self.model, x, w, spec.weights, config.method, chart=self.model.chart,
                               eig_margin=config.eig_margin, cond_cap=config.cond_cap,
                               anti_flat_margin=config.anti_flat_margin)
        event, skip = self._judge_and_step(terms.total)
        if not isinstance(event, Ok) and not skip:
            self._rollback(event)
            return
        row = {"phase": phase + 1, "phase_name": spec.name, "epoch": epoch, "global_epoch": self.ge}
        row.update(terms.row())
        row.update({"lr": lr, "rollbacks": self.rollbacks, "skipped": int(skip)})
        self._record(row, event, skip, phase, epoch)

    def _judge_and_step(self, loss: torch.Tensor) -> tuple:
        """(event, skip): the step's divergence event, and whether a lone spike skips its update; the
        update is applied when the loss is sound (and then the gradient norm is judged)."""
        config = self.config
        loss = loss if self.step_hook is None else self.step_hook(self.ge, loss)
        event = check_loss(float(loss.detach()), self.recent[-config.spike_window:], config.spike_factor)
        spike = isinstance(event, Spike)
        skip = spike and self.streak + 1 < config.spike_patience
        self.streak = self.streak + 1 if spike else 0
        if isinstance(event, Ok):
            event = check_gradient(fit.step(self.model, self.optimizer, loss, config.grad_clip))
        return event, skip

    def _rollback(self, event) -> None:
        self.rollbacks += 1
        self.streak = 0
        if self.rollbacks > self.config.max_rollbacks:
            self.bars.close()
            raise recipe(self.config, self.run_dir, self.root, self.ge, event, self.rollbacks - 1,
                         self.scheduler.lr_scale)
        # at or before this epoch: after a resume from an earlier checkpoint, later files on disk belong
        # to the abandoned continuation
        epoch = self.ge
        back = ck.load_for_training(self.run_dir, epoch, self.config, exact=False)
        self._restore(back, keep_scales=True)
        self._event(epoch, str(event), self.ge)
        self.bars.say(f"rollback {self.rollbacks}: {event} at epoch {epoch}; back to epoch {self.ge}, "
                      f"lr x{self.scheduler.lr_scale:g}")
        self.bars.close()

    def _record(self, row: dict, event, skip: bool, phase: int, epoch: int) -> None:
        append_row(self.history, row)
        if skip:               # a heavy-tailed batch: no update, and kept out of the spike median
            self.bars.say(f"epoch {self.ge}: {event}; step skipped")
        else:
            self.recent.append(row["loss"])
            self.recent = self.recent[-self.config.spike_window:]
        self.ge += 1
        if self._early_stop(phase, epoch):
            return
        self.bars.step(row)
        if self.ge % self.config.checkpoint_every == 0 or self.ge == self.config.total_epochs:
            self.save()

    def _early_stop(self, phase: int, epoch: int) -> bool:
        """Jump to the next phase when this one's batch means hold both targets (early_stop_window)."""
        config = self.config
        met = targets_held(self.history, config, epoch) if config.early_stop_window else False
        nxt = (config.phase_starts() + [config.total_epochs])[phase + 1]           # start of the next phase
        if not (met and nxt > self.ge):
            return False
        self._event(self.ge, f"early stop: phase {phase + 1} ({config.phases[phase].name}) met both targets "
                    f"over its last {config.early_stop_window} epochs; skipping to epoch {nxt}", nxt)
        self.bars.say(self.events[-1]["reason"])
        self.ge = nxt
        self.save()                       # the jump is a state of its own: resumable
        self.bars.close()
        return True

    def _polish(self) -> None:
        """The run's last step; its checkpoint is numbered total + 1 (module doc)."""
        total = self.config.total_epochs
        info = polish(self.model, self.config)
        append_row(self.history, info.history_row(total, len(self.config.phases) + 1, self.rollbacks))
        self._event(total, info.summary(), total)
        self.bars.say(self.events[-1]["reason"])
        self.ge = total + 1
        self.save()

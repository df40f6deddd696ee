"""When a training step counts as divergent, as a value, and the recipe when rollbacks cannot help.

`check_loss` and `check_gradient` return one of three frozen values: `Ok`, `Spike` (a finite loss
above spike_factor x the median of the phase's recent losses) or `NonFinite` (a NaN/Inf loss or
gradient norm). Training decides on the type; the text of the history's events is rendered from
the value (`str(event)`), so rewording a message never changes what training does.

A NonFinite step rolls the run back to its last good checkpoint with the rate halved. A Spike is
first taken for what it usually is, one heavy-tailed batch (<T> over a batch with a few points of
large torsion): its step is skipped, and only spike_patience spikes in a row roll back (rolling back
for a single one cannot help: the batch of an epoch is a function of (seed, epoch), so the same batch
comes back). After max_rollbacks rollbacks the next divergence ends training with TrainingDiverged,
whose message is the recipe to continue (`recipe`, `resume_command`).
"""
from __future__ import annotations

import math
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as ck
from . import runs
from .config import Config
from .schedule import PhaseScheduler

MIN_HISTORY = 10     # losses of the phase needed before a spike is judged (its early descent is fast)


@dataclass(frozen=True)
class Ok:
    """The step is sound."""

    def __str__(self) -> str:
        return "ok"


@dataclass(frozen=True)
class Spike:
    """A finite loss above factor x the median of the last `count` losses of the phase."""
    loss: float
    factor: float
    median: float
    count: int

    def __str__(self) -> str:
        return (f"loss spike {self.loss:.4g} > {self.factor:g} x median {self.median:.4g} "
                f"of the last {self.count} losses")


@dataclass(frozen=True)
class NonFinite:
    """A NaN or Inf `what` ("loss" or "gradient norm")."""
    what: str
    value: float

    def __str__(self) -> str:
        return f"non-finite {self.what} ({self.value})"


def check_loss(loss: float, recent: list[float], spike_factor: float,
               min_history: int = MIN_HISTORY) -> Ok | Spike | NonFinite:
    """NonFinite for a NaN/Inf loss; Spike above spike_factor x the median of `recent` (judged once
    at least min_history of them exist); Ok otherwise."""
    if not math.isfinite(loss):
        return NonFinite("loss", loss)
    if len(recent) >= min_history:
        med = float(np.median(recent))
        if med > 0 and loss > spike_factor * med:
            return Spike(loss, spike_factor, med, len(recent))
    return Ok()


def check_gradient(gnorm: float) -> Ok | NonFinite:
    """NonFinite for a NaN/Inf gradient norm (the update was not applied), Ok otherwise."""
    return Ok() if math.isfinite(gnorm) else NonFinite("gradient norm", gnorm)


class TrainingDiverged(RuntimeError):
    """Raised when training diverges again after max_rollbacks rollbacks.

    Attributes: epoch (global epoch of the divergence), reason (the event's text), run (run folder
    name), checkpoint (global epoch of the last good checkpoint at or before `epoch`, or None),
    command (the command line that resumes from it at half the lowest rate the rollbacks tried),
    settings (the notebook parameters that do the same). str(err) is the whole recipe; `markdown()`
    is the same as Markdown for a notebook.
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


def recipe(config: Config, run_dir: Path, root, epoch: int, event, rollbacks: int,
           tried_scale: float) -> TrainingDiverged:
    """TrainingDiverged naming the newest checkpoint at or before `epoch` that training can continue
    from (checkpoint.load_for_training: valid by value, not a polish of a shorter schedule).

    The suggested lr_scale (the user factor of the resume) halves the smallest rate the rollbacks
    tried, given that checkpoint's own rollback scale (a resume at a rate already tried would replay
    the same divergence: the batches are a function of (seed, epoch))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            state = ck.load_for_training(run_dir, epoch, config, exact=False)
            sched = PhaseScheduler(config)
            sched.load_state_dict(state["scheduler"])
            good, stored = int(state["global_epoch"]), sched.rollback_scale
        except (ValueError, KeyError, TypeError):
            good, stored = None, 1.0
    scale = float(f"{min(0.5, 0.5 * tried_scale / stored):.3g}")
    command = resume_command(config, run_dir.name, root, good if good is not None else 0, scale)
    settings = {"RUN": run_dir.name, "RESUME": good, "LR_SCALE": scale}
    return TrainingDiverged(epoch, str(event), rollbacks, run_dir.name, good, command, settings)

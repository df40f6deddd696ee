"""One place that checks a notebook's (or a script's) inputs before any work starts.

`configure` turns the parameters cell (profile, run, resume, folders) into a validated frozen
`Session`; anything wrong raises `InputError` naming the field, which IPython shows as one line
("error: ...") instead of a traceback, so nothing is trained or overwritten on bad input.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..inputs import positive_int
from ..learn import chart_training, runs
from ..learn.checkpoint import list_checkpoints, load_quietly
from ..learn.config import MAX_THREADS, Config
from ..learn.divergence import TrainingDiverged
from ..learn.schedule import check_lr_scale


class InputError(ValueError):
    """A bad notebook parameter; rendered by IPython as a single line."""

    def _render_traceback_(self):           # IPython hook: replaces the traceback display
        return [f"error: {self}"]


@dataclass(frozen=True)
class Session:
    config: Config
    run: str | None            # run folder name (None: a new numbered run)
    root: Path                 # folder of the runs (checkpoints)
    resume: str | int | None   # None, "latest" or a checkpoint's global epoch
    out_dir: Path              # exported results
    device: str
    lr_scale: float | None = None   # the user's factor on every remaining phase's peak rate (None: keep the run's)
    cpu_threads: int | None = None  # torch's CPU threads for the session (None: torch's own setting)

    def describe(self) -> str:
        c = self.config
        return (f"profile {c.profile} on {self.device}: {len(c.phases)} phases x "
                f"{'/'.join(str(p.epochs) for p in c.phases)} epochs, batch {c.batch}, network "
                f"{c.depth} x {c.width}, checkpoint every {c.checkpoint_every} epochs under {self.root}"
                + (f", resuming {self.run or 'the latest run'} from {self.resume}" if self.resume is not None else "")
                + (f", learning rate x{self.lr_scale:g}" if self.lr_scale is not None else "")
                + (f", {self.cpu_threads} CPU thread(s)" if self.cpu_threads is not None else ""))

    def use_threads(self) -> int:
        """Apply cpu_threads to torch (intra-op threads, and inter-op threads while torch still allows
        setting them: before its first parallel work); returns the intra-op thread count in force."""
        if self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
            try:
                torch.set_num_interop_threads(self.cpu_threads)
            except RuntimeError:            # already fixed by earlier parallel work in this process
                pass
        return torch.get_num_threads()


def _writable(path: Path, field: str) -> Path:
    try:
        return runs.writable_folder(path, field)
    except ValueError as err:
        raise InputError(str(err)) from None


def _auto_resume(config: Config, run_name: str | None, root: Path):
    """("latest", run) when that run (default: the latest numbered one) has a readable checkpoint
    written with this very configuration; (None, run_name) otherwise: a new run starts."""
    try:
        run_dir = runs.resolve_run(run_name, root)
        stored = load_quietly(run_dir)["config"]
    except ValueError:
        return None, run_name
    return ("latest", run_dir.name) if stored == config.to_dict() else (None, run_name)


def configure(profile: str = "auto", run: str | int | None = None, resume: str | int | None = "auto",
              checkpoint_root: str | Path | None = None, output_dir: str | Path | None = None,
              epochs_scale: float | None = None, lr_scale: float | None = None, cpu_threads: int | None = None,
              **overrides) -> Session:
    """Validate the parameters cell; returns a Session or raises InputError naming the field.

    resume: "auto" (default) continues the latest run when it was started with this same
    configuration and otherwise starts a new numbered run; None always starts a new run;
    "latest" or a checkpoint number continues `run` (default: the latest run) from there.
    lr_scale: None (keep the run's own factor) or a number in (0, 10]: the factor on every remaining
    phase's peak learning rate (the recipe after a divergence: resume from checkpoint N with
    LR_SCALE = 0.5); the same value again on a re-run gives the same rate, it does not compound.
    cpu_threads: None (leave torch's setting) or a positive integer: torch's CPU threads for everything
    after the setup cell (`use_threads`); a training loop on the CPU follows its profile's own
    `cpu_threads` where that is set (quick: 1). It is not part of the run's configuration, so a run
    resumes whatever the thread count.
    """
    try:
        cpu_threads = None if cpu_threads is None else positive_int(cpu_threads, "cpu_threads", maximum=MAX_THREADS)
    except ValueError as err:
        raise InputError(str(err)) from None
    if resume not in ("auto", None):
        _check_resume(resume)
    try:
        lr_scale = None if lr_scale is None else check_lr_scale(lr_scale)
        config = Config.from_profile(profile, **overrides)
        if epochs_scale is not None:
            config = config.scaled(epochs_scale)
    except ValueError as err:
        raise InputError(str(err)) from None
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise InputError("device: 'cuda' requested but this runtime has no CUDA GPU; use device 'auto' or 'cpu'")
    if profile == "full" and not cuda and config.device != "cpu":
        raise InputError("profile: 'full' is sized for a GPU and this runtime has none (about an hour on two CPU "
                         "cores); use PROFILE = 'auto' or 'quick' here, or `python -m k7lib train --profile full` "
                         "in a terminal")
    root = _writable(runs.DEFAULT_ROOT if checkpoint_root is None else checkpoint_root, "checkpoint_root")
    out_dir = _writable(runs.OUTPUTS if output_dir is None else output_dir, "output_dir")
    try:
        run_name = None if run is None else runs.run_path(run, root).name
    except ValueError as err:
        raise InputError(str(err)) from None
    if resume == "auto":
        resume, run_name = _auto_resume(config, run_name, root)
    if resume is not None:
        try:
            run_dir = runs.resolve_run(run_name, root)
        except ValueError as err:
            raise InputError(f"resume: {err}") from None
        numbers = [n for n, _ in list_checkpoints(run_dir)]
        if not numbers or (resume != "latest" and resume not in numbers):
            raise InputError(f"resume: checkpoint {resume!r} not found in {run_dir} "
                             f"(available: {', '.join(map(str, numbers)) or 'none'})")
        run_name = run_dir.name
    device = "cuda" if (config.device in ("auto", "cuda") and cuda) else "cpu"
    return Session(config=config, run=run_name, root=root, resume=resume, out_dir=out_dir, device=device,
                   lr_scale=lr_scale, cpu_threads=cpu_threads)


def _check_resume(resume) -> None:
    try:
        if resume != "latest":
            positive_int(resume, "resume", minimum=0)
    except ValueError:
        raise InputError(f"resume: expected 'auto', None, 'latest' or a checkpoint number, got {resume!r}") from None


class TrainingStopped(RuntimeError):
    """Training diverged in a notebook: the recipe was shown as Markdown; IPython prints one line."""

    def _render_traceback_(self):
        return [f"stopped: {self}"]


def train_session(s: Session, progress: bool = True):
    """Train (or resume) the session's run: chart_training.train_chart with the session's settings.

    On a divergence the recipe to continue (checkpoint, command, notebook settings) is displayed
    as Markdown and TrainingStopped ends the cell without a traceback.
    """
    try:
        return chart_training.train_chart(s.config, run=s.run, root=s.root, resume=s.resume, progress=progress,
                                          lr_scale=s.lr_scale)
    except TrainingDiverged as err:
        try:
            from IPython.display import Markdown, display
            display(Markdown(err.markdown()))
        except ImportError:
            print(err)
        raise TrainingStopped(f"training diverged at epoch {err.epoch}; continue from checkpoint "
                              f"{err.checkpoint} as shown above") from None


def environment() -> dict:
    """Interpreter, library and accelerator facts for the notebook's setup cell and the metadata."""
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "colab": "google.colab" in sys.modules,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

"""Numbered training checkpoints (docs/conventions.md §8): one file per save, atomic, loaded as data only.

A checkpoint is `ckpt_{global_epoch:07d}.pt` in the run folder (runs.py), global_epoch being
the number of completed epochs. It is a dict of tensors and plain Python types only:
  format, global_epoch, phase, epoch, model, optimizer, scheduler, history (column -> list),
  events (list of dicts), rollbacks, recent_losses, rng {torch, numpy, python, sampler}, config
so `torch.load(path, weights_only=True)` reads it: a checkpoint is data, never code.

Writes go to a temporary file `.ckpt_N.pt.<pid>.tmp` in the same folder, which is flushed,
fsync'ed and renamed over the final name with os.replace (atomic on POSIX and Windows), so a
crash leaves either the old state or the complete new file, never a torn one under a checkpoint
name; temporaries of killed writers are removed when the run is next opened
(`remove_stale_temporaries`). A failed write (disk full, unwritable folder, torch's writer
error) raises runs.StorageError naming the file and the cause; older checkpoints are untouched.

Reading validates by value before anything is applied (checkpoint_checks.checkpoint_problem, which
lists the checks): a file that parses but fails is named in a warning and skipped for the previous
one, exactly like a truncated file. `load_for_training` also skips the polish checkpoint of a shorter
schedule (its docstring).
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from . import runs
from .checkpoint_checks import (  # noqa: F401  (FORMAT and the value checks: other learners read them here)
    CHECKPOINT_NAME,
    FORMAT,
    REQUIRED,
    checkpoint_problem,
    head_problem,
    history_problem,
    rng_problem,
    tensors_problem,
)
from .config import Config
from .model import K7PhiModel

TEMPORARIES = ".ckpt_*.tmp"


def checkpoint_path(run_dir: str | Path, global_epoch: int) -> Path:
    """Path of the checkpoint after `global_epoch` completed epochs."""
    return Path(run_dir) / f"ckpt_{int(global_epoch):07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Checkpoint files of a run as (global_epoch, path), increasing; unreadable files included."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_file() and (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | Path, state: dict, required=REQUIRED) -> Path:
    """Write `state` atomically as ckpt_{state['global_epoch']:07d}.pt; returns the path.

    required: the keys the state must hold (a chart run's by default; other learners pass theirs)."""
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    final = checkpoint_path(run_dir, state["global_epoch"])
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as err:         # disk full, read-only folder, torch's zip writer
        raise runs.storage_error(final, err, "write checkpoint") from err
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
    runs.fsync_dir(final.parent)
    return final


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove `.ckpt_*.tmp` files left by writers that are no longer running; returns them."""
    return runs.remove_stale(run_dir, TEMPORARIES)


def read_checkpoint(path: str | Path, expect: str | None = None, problem=checkpoint_problem) -> dict:
    """Load one checkpoint file with weights_only=True and validate it: problem(state, name, expect) ->
    reason or None (a chart run's `checkpoint_problem` by default; other learners pass theirs).

    ValueError naming the file if it is unreadable, incomplete or invalid.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:                      # truncated zip, bad pickle, I/O error, ...
        raise ValueError(f"checkpoint {path.name} is unreadable ({type(err).__name__}: {err})") from None
    why = problem(state, path.name, expect)
    if why:
        raise ValueError(f"checkpoint {path.name} is invalid: {why}")
    state["path"] = str(path)
    return state


def load_checkpoint(run_dir: str | Path, which: str | int = "latest", exact: bool = True,
                    expect: str | None = None, unusable=None, problem=checkpoint_problem) -> dict:
    """The newest valid checkpoint at or before `which` ("latest" or a global epoch N).

    exact=True: a number must name an existing checkpoint (a user's resume request);
    exact=False: any epoch, e.g. the current one for a rollback. A truncated, corrupt or invalid
    file (read_checkpoint; expect and problem as there) is reported by name with warnings.warn and skipped for
    the previous one; so is a valid one for which unusable(state) returns a reason. Raises
    ValueError when there is none (one line naming the run). Temporaries of killed writers in the
    run folder are removed first.
    """
    run_dir = Path(run_dir)
    remove_stale_temporaries(run_dir)
    found = list_checkpoints(run_dir)
    if which == "latest" or which is None:
        candidates = found
    else:
        try:
            n = int(which)
        except (TypeError, ValueError):
            raise ValueError(f"resume: expected 'latest' or a checkpoint epoch number, got {which!r}") from None
        if exact and n not in {e for e, _ in found}:
            have = ", ".join(str(e) for e, _ in found) or "none"
            raise ValueError(f"resume: no checkpoint for epoch {n} in {run_dir} (epochs present: {have})")
        candidates = [(e, p) for e, p in found if e <= n]
    for _, path in reversed(candidates):
        try:
            state = read_checkpoint(path, expect, problem)
        except ValueError as err:
            warnings.warn(f"{err}; skipping {path.name} for the previous checkpoint", RuntimeWarning, stacklevel=2)
            continue
        why = unusable(state) if unusable is not None else None
        if not why:
            return state
        warnings.warn(f"checkpoint {path.name} {why}; skipping it for the previous checkpoint", RuntimeWarning,
                      stacklevel=2)
    raise ValueError(f"resume: no readable checkpoint in {run_dir}"
                     + (f" at or before epoch {which}" if candidates != found else "")
                     + (f" ({len(candidates)} file(s) tried, none valid)" if candidates else ""))


def load_quietly(run_dir: str | Path, which: str | int = "latest", **kw) -> dict:
    """load_checkpoint without its warnings about skipped files: a look-up of what a run holds (auto-resume,
    ensemble members), not a resume, so the caller decides what a ValueError means."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_checkpoint(run_dir, which, **kw)


def polish_of(state: dict) -> int | None:
    """The length of the schedule whose polish a valid checkpoint holds (numbered total + 1), or None."""
    total = Config.from_dict(state["config"]).total_epochs
    return total if state["global_epoch"] > total else None


def load_for_training(run_dir: str | Path, which: str | int, config: Config, exact: bool = True) -> dict:
    """The newest checkpoint at or before `which` that training under `config` continues from:
    valid for resuming (expect="resume"), and not the polish of a shorter schedule. The polish is a
    run's last step, numbered total + 1 of its own schedule, so a longer schedule resumed from it
    would skip epoch `total`: such a file is skipped, with a warning that says so, for the training
    checkpoints before it (the polish itself is redone at the end of the longer schedule). A checkpoint
    that has seen more epochs than `config`'s schedule is taken as it is, with a warning that says so."""
    def unusable(state):
        own = polish_of(state)
        if own is not None and config.total_epochs > own:
            return (f"holds the polish of a {own}-epoch schedule; the {config.total_epochs}-epoch schedule "
                    f"continues from the last training checkpoint (epoch {own} or before)")
        return None
    state = load_checkpoint(run_dir, which, exact, expect="resume", unusable=unusable)
    seen, total = state["global_epoch"], config.total_epochs
    if seen > total and polish_of(state) != total:
        warnings.warn(f"resume: checkpoint {Path(state['path']).name} has seen {seen} epochs, more than the "
                      f"{total} of this schedule; it is taken as it is: no epoch is trained and no polish is done "
                      "(resume with the checkpoint's own schedule to continue it, or start a new run)",
                      RuntimeWarning, stacklevel=2)
    return state


# ---------------------------------------------------------------- random number generators
def rng_state(sampler: torch.Generator) -> dict:
    """States of torch (CPU and CUDA), numpy, python random and the sampler generator, as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "sampler": sampler.get_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict, sampler: torch.Generator) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    sampler.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- analyses
def load_trained(run: int | str | None = None, root: str | Path = runs.DEFAULT_ROOT, which: str | int = "latest",
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
    """(model, config) of a trained chart run for analyses (`runs.load_run` on checkpoint `which`):
    the model in eval mode, in `dtype` (float64 default) on `device`."""

    def read(path):
        state = load_checkpoint(path, which, expect="model")
        return Config.from_dict(state["config"]), {"phi": state["model"]}

    saved = runs.load_run(run, root, read=read, build=lambda config: {"phi": K7PhiModel(config)}, dtype=dtype,
                          device=device)
    return saved.networks["phi"], saved.config

"""Numbered training checkpoints (DESIGN §8): one file per save, atomic, loaded as data only.

A checkpoint is `ckpt_{global_epoch:07d}.pt` in the run folder (runs.py), global_epoch being
the number of completed epochs. It is a dict of tensors and plain Python types only:
  format, global_epoch, phase, epoch, model, optimizer, scheduler, history (column -> list),
  events (list of dicts), rollbacks, recent_losses, rng {torch, numpy, python, sampler}, config
so `torch.load(path, weights_only=True)` reads it: a checkpoint is data, never code.

Writes go to a temporary file in the same folder, which is flushed, fsync'ed and renamed over
the final name with os.replace (atomic on POSIX and Windows), so a crash leaves either the
old state or the complete new file, never a torn one under a checkpoint name.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from . import runs

FORMAT = "k7lib-checkpoint-1"
_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "global_epoch", "phase", "epoch", "model", "optimizer", "scheduler", "history",
            "events", "rollbacks", "recent_losses", "rng", "config")


def checkpoint_path(run_dir: str | Path, global_epoch: int) -> Path:
    """Path of the checkpoint after `global_epoch` completed epochs."""
    return Path(run_dir) / f"ckpt_{int(global_epoch):07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Checkpoint files of a run as (global_epoch, path), increasing; unreadable files included."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_file() and (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | Path, state: dict) -> Path:
    """Write `state` atomically as ckpt_{state['global_epoch']:07d}.pt; returns the path."""
    missing = [k for k in REQUIRED if k not in state]
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
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(final.parent)
    return final


def _fsync_dir(path: Path) -> None:
    """Make the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> dict:
    """Load one checkpoint file with weights_only=True; ValueError if it is unreadable or incomplete."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:                      # truncated zip, bad pickle, I/O error, ...
        raise ValueError(f"checkpoint {path.name} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path.name} is not a {FORMAT} file")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint {path.name} is incomplete (missing {missing})")
    state["path"] = str(path)
    return state


def load_checkpoint(run_dir: str | Path, which: str | int = "latest", exact: bool = True) -> dict:
    """The newest readable checkpoint at or before `which` ("latest" or a global epoch N).

    exact=True: a number must name an existing checkpoint (a user's resume request);
    exact=False: any epoch, e.g. the current one for a rollback. A truncated or corrupt file is
    reported by name with warnings.warn and skipped for the previous one. Raises ValueError when
    there is none (naming the run and what exists).
    """
    run_dir = Path(run_dir)
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
            return read_checkpoint(path)
        except ValueError as err:
            warnings.warn(f"{err}; skipping {path.name} for the previous checkpoint", RuntimeWarning, stacklevel=2)
    raise ValueError(f"resume: no readable checkpoint in {run_dir}"
                     + (f" at or before epoch {which}" if candidates != found else ""))


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


# ---------------------------------------------------------------- divergence
def divergence_reason(loss: float, recent: list[float], spike_factor: float, min_history: int = 10) -> str | None:
    """Why a step counts as divergent, or None.

    Divergent when the loss is NaN/Inf, or when it exceeds spike_factor x the median of the
    recent losses of the same phase (only once at least `min_history` of them exist, so the
    fast early descent of a phase is never mistaken for a spike).
    """
    if not np.isfinite(loss):
        return f"non-finite loss ({loss})"
    if len(recent) >= min_history:
        med = float(np.median(recent))
        if med > 0 and loss > spike_factor * med:
            return f"loss spike {loss:.4g} > {spike_factor:g} x median {med:.4g} of the last {len(recent)} losses"
    return None


# ---------------------------------------------------------------- analyses
def load_trained(run: int | str | None = None, root: str | Path = runs.DEFAULT_ROOT, which: str | int = "latest",
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
    """(model, config) of a trained run for analyses: the model in eval mode, in `dtype` (float64 default)."""
    from .config import Config
    from .model import K7PhiModel

    run_dir = runs.resolve_run(run, root)
    state = load_checkpoint(run_dir, which)
    config = Config.from_dict(state["config"])
    model = K7PhiModel(config)
    model.load_state_dict(state["model"])
    return model.to(device=device, dtype=dtype).eval(), config


def add_run_arguments(parser) -> None:
    """--run, --root, --which and --threads: the options of every command that reads a trained run."""
    parser.add_argument("--run", default=None, help="run number or name (default: the latest run)")
    parser.add_argument("--root", default=str(runs.DEFAULT_ROOT), help="folder holding run_N folders")
    parser.add_argument("--which", default="latest", help="checkpoint of the run to load (default: latest)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own; 1 is fastest on busy shared cores)")


def load_from_args(args):
    """(model, config) of the run named by add_run_arguments' options; ValueError naming what is missing."""
    runs.resolve_run(args.run, args.root)          # a missing run is a clear error before any loading
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    which = int(args.which) if str(args.which).isdigit() else args.which
    return load_trained(run=args.run, root=args.root, which=which)

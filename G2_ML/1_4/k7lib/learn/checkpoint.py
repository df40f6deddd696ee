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

Reading validates before anything is applied (`checkpoint_problem`): the counters are
non-negative integers (global_epoch equal to the file's number), optimizer, scheduler, history
and events have their structure, every rng state loads into a scratch generator; with expect="model" every model
tensor has the shape and dtype of the model its own config builds, and with expect="resume"
the optimizer also covers exactly that model's parameters with moments of their shapes. A file that fails is named and skipped for
the previous one, exactly like a truncated file.
"""
from __future__ import annotations

import math
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from . import runs
from .config import Config
from .model import K7PhiModel

FORMAT = "k7lib-checkpoint-1"
_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "global_epoch", "phase", "epoch", "model", "optimizer", "scheduler", "history",
            "events", "rollbacks", "recent_losses", "rng", "config")
COUNTERS = ("global_epoch", "phase", "epoch", "rollbacks")
TEMPORARIES = ".ckpt_*.tmp"


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expected_model(config: dict) -> tuple[dict, list]:
    """({name: (shape, dtype)} of the state dict, [parameter shapes in order]) of the model `config` builds."""
    cfg = Config.from_dict(config)               # ValueError naming the field if the config is bad
    with torch.device("meta"):                   # shapes only: no memory, no random numbers drawn
        model = K7PhiModel(cfg)
    dtype = getattr(torch, cfg.train_dtype)
    spec = {k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype) for k, v in model.state_dict().items()}
    return spec, [tuple(p.shape) for p in model.parameters()]


def _rng_problem(rng) -> str | None:
    """Why the rng states would not load, found by loading them into scratch generators."""
    if not isinstance(rng, dict):
        return f"rng is a {type(rng).__name__}, not a dict"
    missing = [k for k in ("torch", "numpy", "python", "sampler") if k not in rng]
    if missing:
        return f"rng lacks {missing}"
    try:
        for key in ("torch", "sampler"):
            t = rng[key]
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
                return f"rng.{key} is not a torch ByteTensor"
            torch.Generator().set_state(t)
        npst = rng["numpy"]
        if not isinstance(npst, dict) or not isinstance(npst.get("keys"), torch.Tensor):
            return "rng.numpy is not a dict with a 'keys' tensor"
        np.random.RandomState().set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                                           npst["has_gauss"], npst["cached"]))
        py = rng["python"]
        if not isinstance(py, dict) or not isinstance(py.get("internal"), (list, tuple)):
            return "rng.python is not a dict with an 'internal' list"
        random.Random().setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        if "cuda" in rng and not (isinstance(rng["cuda"], (list, tuple)) and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])):
            return "rng.cuda is not a list of torch ByteTensors"
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, IndexError) as err:
        return f"rng state does not load ({type(err).__name__}: {err})"
    return None


def checkpoint_problem(state: dict, name: str | None = None, expect: str | None = None) -> str | None:
    """What is wrong with a loaded checkpoint dict, or None (module doc lists the checks).

    name: the file name (its number must equal global_epoch); expect="model": also compare the
    model tensors with the model that the checkpoint's own config builds (what analyses load);
    expect="resume": the optimizer state too (what training continues from).
    """
    if expect not in (None, "model", "resume"):
        raise ValueError(f"expect: None, 'model' or 'resume', got {expect!r}")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return f"not a {FORMAT} file"
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        return f"incomplete (missing {missing})"
    for key in COUNTERS:
        if not _is_int(state[key]) or state[key] < 0:
            return f"{key} is {state[key]!r}, not a non-negative integer"
    m = _NAME.match(name or "")
    if m and int(m.group(1)) != state["global_epoch"]:
        return f"global_epoch {state['global_epoch']} differs from the file's number {int(m.group(1))}"
    if not isinstance(state["config"], dict):
        return "config is not a dict"
    phases = state["config"].get("phases")
    if isinstance(phases, list) and phases and state["phase"] >= len(phases):
        return f"phase {state['phase']} is past the {len(phases)} phases of its config"
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        return "model is not a state dict (name -> tensor)"
    opt = state["optimizer"]
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(map(_is_int, g["params"]))
                    for g in opt["param_groups"])
            and all(isinstance(v, dict) for v in opt["state"].values())):
        return "optimizer is not an optimizer state dict (state, param_groups with integer params)"
    sched = state["scheduler"]
    if not (isinstance(sched, dict) and _is_number(sched.get("lr_scale")) and math.isfinite(sched["lr_scale"])
            and sched["lr_scale"] > 0):
        return "scheduler is not a dict with a positive finite lr_scale"
    hist = state["history"]
    if not (isinstance(hist, dict) and all(isinstance(k, str) and isinstance(v, list) for k, v in hist.items())
            and len({len(v) for v in hist.values()}) <= 1):
        return "history is not a dict of equally long lists"
    if not (isinstance(state["events"], list) and all(isinstance(e, dict) for e in state["events"])):
        return "events is not a list of dicts"
    if not (isinstance(state["recent_losses"], list) and all(map(_is_number, state["recent_losses"]))):
        return "recent_losses is not a list of numbers"
    streak = state.get("spike_streak", 0)             # absent in checkpoints written before it existed
    if not (isinstance(streak, int) and not isinstance(streak, bool) and streak >= 0):
        return f"spike_streak is not a non-negative integer ({streak!r})"
    problem = _rng_problem(state["rng"])
    if problem:
        return problem
    if expect is not None:
        try:
            spec, params = _expected_model(state["config"])
        except (ValueError, TypeError, KeyError) as err:
            return f"its config does not build a model ({err})"
        if set(model) != set(spec):
            return (f"model tensors {sorted(set(model) ^ set(spec))[:4]} differ from those of the model "
                    "its config builds")
        for k, (shape, dtype) in spec.items():
            if tuple(model[k].shape) != shape or model[k].dtype != dtype:
                return (f"model tensor {k} is {str(model[k].dtype).replace('torch.', '')} {tuple(model[k].shape)}, "
                        f"the model needs {str(dtype).replace('torch.', '')} {shape}")
    if expect == "resume":
        ids = [i for g in opt["param_groups"] for i in g["params"]]
        if sorted(ids) != list(range(len(params))):
            return f"optimizer covers parameters {ids[:8]}, the model has {len(params)}"
        for i, entry in opt["state"].items():
            if not (_is_int(i) and 0 <= i < len(params)):
                return f"optimizer state for an unknown parameter {i!r}"
            for key, v in entry.items():
                if isinstance(v, torch.Tensor) and v.ndim > 0 and tuple(v.shape) != params[i]:
                    return f"optimizer {key} of parameter {i} has shape {tuple(v.shape)}, the parameter {params[i]}"
    return None


def read_checkpoint(path: str | Path, expect: str | None = None) -> dict:
    """Load one checkpoint file with weights_only=True and validate it (checkpoint_problem).

    ValueError naming the file if it is unreadable, incomplete or invalid.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:                      # truncated zip, bad pickle, I/O error, ...
        raise ValueError(f"checkpoint {path.name} is unreadable ({type(err).__name__}: {err})") from None
    problem = checkpoint_problem(state, path.name, expect)
    if problem:
        raise ValueError(f"checkpoint {path.name} is invalid: {problem}")
    state["path"] = str(path)
    return state


def load_checkpoint(run_dir: str | Path, which: str | int = "latest", exact: bool = True,
                    expect: str | None = None) -> dict:
    """The newest valid checkpoint at or before `which` ("latest" or a global epoch N).

    exact=True: a number must name an existing checkpoint (a user's resume request);
    exact=False: any epoch, e.g. the current one for a rollback. A truncated, corrupt or invalid
    file (read_checkpoint; expect as there) is reported by name with warnings.warn and skipped for
    the previous one. Raises ValueError when there is none (one line naming the run). Temporaries
    of killed writers in the run folder are removed first.
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
            return read_checkpoint(path, expect)
        except ValueError as err:
            warnings.warn(f"{err}; skipping {path.name} for the previous checkpoint", RuntimeWarning, stacklevel=2)
    raise ValueError(f"resume: no readable checkpoint in {run_dir}"
                     + (f" at or before epoch {which}" if candidates != found else "")
                     + (f" ({len(candidates)} file(s) tried, none valid)" if candidates else ""))


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
    """(model, config) of a trained chart run for analyses (`runs.load_run` on checkpoint `which`):
    the model in eval mode, in `dtype` (float64 default) on `device`."""

    def read(path):
        state = load_checkpoint(path, which, expect="model")
        return Config.from_dict(state["config"]), {"phi": state["model"]}

    saved = runs.load_run(run, root, read=read, build=lambda config: {"phi": K7PhiModel(config)}, dtype=dtype,
                          device=device)
    return saved.networks["phi"], saved.config

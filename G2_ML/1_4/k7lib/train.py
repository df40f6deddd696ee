"""Phased training of the K7 3-form model with numbered checkpoints, exact resume and rollback.

Each epoch is one Adam step on a fresh batch of chart points. The batch of global epoch n
is drawn by a generator seeded with (seed << 32) + n, so sampling is a function of
(seed, global epoch) alone and a resumed run replays exactly what a straight run does.
The learning rate of epoch e of a phase with E epochs and peak lr is
  lr = lr_scale * peak * (e + 1) / n_warm                                   for e < n_warm,
  lr = lr_scale * peak * (f + (1 - f) (1 + cos(pi (e - n_warm) / (E - n_warm))) / 2)   after,
with n_warm = floor(warmup_frac * E) and f = lr_floor; lr_scale starts at 1 and halves at each
rollback. Gradients are clipped to grad_clip (global norm).

Divergence (checkpoint.divergence_reason: NaN/Inf loss or gradient, or a loss above
spike_factor x the median of the last spike_window losses of the phase) rolls the run back to
its last good checkpoint with lr_scale halved and records the event; after max_rollbacks
rollbacks the next divergence stops training with TrainingDiverged.
"""
from __future__ import annotations

import argparse
import bisect
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import chart, runs
from . import checkpoint as ck
from .config import Config
from .losses import compute_losses, targets
from .model import K7PhiModel
from .torsion import torsion_packed

ARCHITECTURE = ("L", "width", "depth", "n_fourier", "n_chebyshev")
EVAL_STREAM = 1 << 31        # sampler stream of the evaluation points (training uses epochs < 2^31)


class TrainingDiverged(RuntimeError):
    """Raised when training diverges again after max_rollbacks rollbacks."""


@dataclass
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
        return (f"{self.run_dir.name}: {int(last.global_epoch) + 1} epochs, loss {last.loss:.4g}, "
                f"<T>/kappa_T {last.T_mean / kappa:.4f}, <det g> {last.det_mean:.5f} (target {det_t:.5f}), "
                f"rollbacks {int(last.rollbacks)}")


class PhaseScheduler:
    """Learning rate per (phase, epoch): linear warm-up then cosine decay to lr_floor x peak (module doc)."""

    def __init__(self, config: Config):
        self.config = config
        self.lr_scale = 1.0

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
        return {"lr_scale": float(self.lr_scale)}

    def load_state_dict(self, state: dict) -> None:
        self.lr_scale = float(state["lr_scale"])


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
          resume: str | int | None = None, progress: bool = True, step_hook=None) -> TrainResult:
    """Train (or resume) a run through all phases of `config`; returns a TrainResult.

    run: None -> a new numbered run (runs.new_run); a name or number -> that folder.
    resume: None -> fresh start; "latest" or a global epoch N -> continue from that checkpoint
      of `run` (None = the latest run); the configuration's architecture must match.
    step_hook(global_epoch, loss) -> loss is applied to each step's loss before the divergence
      check and backward (used to test rollback).
    Raises ValueError (before any file is written) for a bad configuration, a warm-start file
    that matches nothing, an unwritable or already used run folder.
    """
    if not isinstance(config, Config):
        raise ValueError(f"config: expected a Config, got {type(config).__name__}")
    config.validate()
    threads = torch.get_num_threads()
    if config.cpu_threads and resolve_device(config.device).type == "cpu":
        # Small batches: one thread avoids intra-op synchronisation that costs more than it gains.
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, run, root, resume, progress, step_hook)
    finally:
        torch.set_num_threads(threads)


def _train(config: Config, run, root, resume, progress, step_hook) -> TrainResult:
    root = Path(root)
    device = resolve_device(config.device)
    dtype = getattr(torch, config.train_dtype)

    # Everything that can fail on input is checked before the first write.
    torch.manual_seed(config.seed)
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
        history, events, rollbacks, recent, start = {}, [], 0, [], 0
    else:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ck.set_rng_state(state["rng"], sampler)
        history, events = state["history"], list(state["events"])
        rollbacks, recent, start = int(state["rollbacks"]), list(state["recent_losses"]), int(state["global_epoch"])

    def snapshot(global_epoch: int) -> dict:
        phase, epoch = _phase_of(config, min(global_epoch, config.total_epochs - 1))
        return {"format": ck.FORMAT, "global_epoch": global_epoch, "phase": phase, "epoch": epoch,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": {k: list(v) for k, v in history.items()}, "events": [dict(e) for e in events],
                "rollbacks": rollbacks, "recent_losses": list(recent), "rng": ck.rng_state(sampler),
                "config": config.to_dict()}

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
        if progress and bar_phase != phase:
            if bar is not None:
                bar.close()
            bar = tqdm(total=spec.epochs, initial=epoch, desc=f"phase {phase + 1} {spec.name}", leave=True)
            bar_phase = phase
        lr = scheduler.lr(phase, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.manual_seed(epoch_seed(config.seed, ge))
        x, w = chart.sample(config.batch, config.L, sampler, config.neck_weighted, dtype=dtype, device=device)
        terms = compute_losses(model, x, w, spec.weights, config.method, L=config.L, eig_margin=config.eig_margin,
                               cond_cap=config.cond_cap, anti_flat_margin=config.anti_flat_margin)
        loss = terms.total if step_hook is None else step_hook(ge, terms.total)
        reason = ck.divergence_reason(float(loss.detach()), recent[-config.spike_window:], config.spike_factor)
        if reason is None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if not torch.isfinite(gnorm):
                reason = f"non-finite gradient norm ({float(gnorm)})"
        if reason is not None:
            rollbacks += 1
            if rollbacks > config.max_rollbacks:
                if bar is not None:
                    bar.close()
                last = ck.list_checkpoints(run_dir)
                raise TrainingDiverged(
                    f"training diverged at epoch {ge} ({reason}) after {config.max_rollbacks} rollbacks; "
                    f"last good checkpoint: {last[-1][1] if last else 'none'}. Resume from an earlier one "
                    "with a smaller learning rate.")
            # at or before this epoch: after a resume from an earlier checkpoint, later files
            # on disk belong to the abandoned continuation
            back = ck.load_checkpoint(run_dir, ge, exact=False, expect="resume")
            model.load_state_dict(back["model"])
            optimizer.load_state_dict(back["optimizer"])
            scheduler.load_state_dict(back["scheduler"])
            scheduler.lr_scale *= 0.5
            ck.set_rng_state(back["rng"], sampler)
            history, recent = back["history"], list(back["recent_losses"])
            events.append({"global_epoch": ge, "reason": reason, "restored_to": int(back["global_epoch"]),
                           "lr_scale": scheduler.lr_scale, "rollback": rollbacks})
            msg = f"rollback {rollbacks}: {reason} at epoch {ge}; back to epoch {back['global_epoch']}, lr x{scheduler.lr_scale:g}"
            (tqdm.write if progress else (lambda s: None))(msg)
            if bar is not None:
                bar.close()
            ge, bar, bar_phase = int(back["global_epoch"]), None, None
            continue
        optimizer.step()
        row = {"phase": phase + 1, "phase_name": spec.name, "epoch": epoch, "global_epoch": ge}
        row.update(terms.row())
        row.update({"lr": lr, "rollbacks": rollbacks})
        for k, v in row.items():
            history.setdefault(k, []).append(v)
        recent.append(row["loss"])
        recent = recent[-config.spike_window:]
        ge += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3g}", T61=f"{row['T_mean'] / kappa_T:.3f}",
                            det=f"{row['det_mean']:.4f}")
        if ge % config.checkpoint_every == 0 or ge == total:
            ck.save_checkpoint(run_dir, snapshot(ge))
    if bar is not None:
        bar.close()
    return TrainResult(model=model, history=pd.DataFrame(history), run_dir=run_dir, config=config, events=events)


def evaluate(model, L: float, n_points: int = 4096, seed: int = 0, dtype: torch.dtype = torch.float64,
             method: str = "autograd", chunk: int = 1024) -> dict:
    """Final numbers on fresh uniform points, in `dtype` (float64 by default), chunked.

    Returns T_mean, T_over_kappa (<T> / kappa_T), det_mean, det_rel_err (<det g> / (65/32) - 1),
    det_std, eig_min, nonpositive (points where phi is not positive or g not finite; the means
    are over the others), anti_flat (the measure V of losses.anti_flat_measure), n_points.
    g = g(phi) everywhere (no rescaling).
    """
    from .losses import metric_lambda_derivative

    kappa_T, det_t = targets()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was = {p: p.dtype for p in model.parameters()}
    model = model.to(dtype)
    gen = torch.Generator().manual_seed(epoch_seed(seed, EVAL_STREAM))
    x_all, _ = chart.sample(n_points, L, gen, neck_weighted=False, dtype=dtype, device=device)   # uniform: weights 1
    sums = torch.zeros(4, dtype=torch.float64)       # T, det, det^2, neck-weighted |dg|^2
    eig_min, nonpos, neck, counted = math.inf, 0, 0.0, 0
    for i in range(0, n_points, chunk):
        x = x_all[i:i + chunk]
        with torch.no_grad():             # forward-mode derivatives only; no graph to keep
            t = torsion_packed(model, x, method=method, check=False)
            _, dg = metric_lambda_derivative(t)
        finite = torch.isfinite(t.metric.g).flatten(1).all(1) & torch.isfinite(t.T) & torch.isfinite(dg).flatten(1).all(1)
        ev = torch.linalg.eigvalsh(torch.where(finite[:, None, None], t.metric.g, torch.eye(7, dtype=dtype, device=device)))
        good = finite & (t.metric.orientation > 0) & (ev[:, 0] > 0)
        nonpos += int((~good).sum())
        if bool(good.any()):
            eig_min = min(eig_min, float(ev[good, 0].min()))
        x, t_T, t_det, dg = x[good], t.T[good], t.metric.det[good], dg[good]
        n = chart.region_weights(x[:, 0], L)[:, 1]
        sums += torch.stack([t_T.sum(), t_det.sum(), (t_det ** 2).sum(),
                             (n * dg.pow(2).sum((-2, -1))).sum()]).double().detach().cpu()
        counted += int(good.sum())
        neck += float(n.sum())
    for p, d in was.items():
        p.data = p.data.to(d)
    if counted == 0:
        raise ValueError(f"evaluate: phi is not positive at any of the {n_points} points")
    T_mean, det_mean = float(sums[0]) / counted, float(sums[1]) / counted
    return {"n_points": n_points, "T_mean": T_mean, "T_over_kappa": T_mean / kappa_T,
            "det_mean": det_mean, "det_rel_err": det_mean / det_t - 1,
            "det_std": math.sqrt(max(float(sums[2]) / counted - det_mean**2, 0.0)),
            "eig_min": eig_min, "nonpositive": nonpos, "anti_flat": math.sqrt(float(sums[3]) / max(neck, 1e-300))}


def main(argv=None) -> int:
    """python -m k7lib train --profile quick [--run NAME] [--resume latest|N] [--epochs-scale F] ..."""
    ap = argparse.ArgumentParser(prog="python -m k7lib train", description="phased training with numbered checkpoints")
    ap.add_argument("--profile", default="auto", help="quick | full | auto (full when CUDA is available)")
    ap.add_argument("--run", default=None, help="run name or number (default: a new numbered run)")
    ap.add_argument("--root", default=str(runs.DEFAULT_ROOT), help="folder of the runs")
    ap.add_argument("--resume", default=None, help="'latest' or a checkpoint epoch of --run")
    ap.add_argument("--epochs-scale", type=float, default=None, help="multiply every phase's epochs")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default=None, help="auto | cpu | cuda")
    ap.add_argument("--warm-start", default=None, help="state dict to load compatible weights from")
    ap.add_argument("--eval-points", type=int, default=4096, help="fresh points for the final float64 numbers")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.eval_points < 1:              # checked before any training or writing
        raise ValueError(f"--eval-points must be a positive integer, got {args.eval_points}")
    overrides = {k: v for k, v in (("seed", args.seed), ("device", args.device), ("warm_start", args.warm_start))
                 if v is not None}
    config = Config.from_profile(args.profile, **overrides)
    if args.epochs_scale is not None:
        config = config.scaled(args.epochs_scale)
    if args.resume is not None and args.resume != "latest" and not args.resume.isdigit():
        raise ValueError(f"--resume: expected 'latest' or a checkpoint epoch number, got {args.resume!r}")
    resume = None if args.resume is None else (args.resume if args.resume == "latest" else int(args.resume))
    try:
        result = train(config, run=args.run, root=args.root, resume=resume, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"error: {err}")
        return 1
    ev = evaluate(result.model, config.L, n_points=args.eval_points, seed=config.seed,
                  dtype=getattr(torch, config.eval_dtype))
    print(f"{result.summary()}\n"
          f"float64 on {ev['n_points']} fresh points: <T>/kappa_T = {ev['T_over_kappa']:.4f}, "
          f"<det g> = {ev['det_mean']:.6f} (rel. err {ev['det_rel_err']:+.2e}), min eig g = {ev['eig_min']:.4f}, "
          f"non-positive points = {ev['nonpositive']}, anti-flat = {ev['anti_flat']:.4f}; run folder {result.run_dir}")
    return 0

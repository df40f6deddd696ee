"""The fit loop of k7lib: one optimiser step (or one closure step, for L-BFGS), and minibatch epochs over a
fixed point set.

`step` is the update every learned object takes (zero the gradients, backward, optional
gradient clipping, a non-finite gradient norm reported instead of applied). `fit` runs Adam
with a cosine learning rate over shuffled minibatches of a fixed training set and serves the
fits of the Calabi-Yau link family (`calabi_yau.link.fit_link`, `calabi_yau.ricci_flat.fit_ricci_flat`).

The chart training (`chart_training.train_chart`) uses `step` inside its own epoch loop, for a reason of the
data, not of the optimiser: each of its epochs draws one fresh batch from (seed, epoch), so that
any numbered checkpoint replays bit for bit after a rollback; its phases re-weight the loss, and
a divergence rolls back to a checkpoint instead of stopping. A fixed training set shuffled per
epoch, as here, has none of those needs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ..batches import progress_bar


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
         grad_clip: float | None = None) -> float | None:
    """Backward and update; returns the gradient norm before clipping (None without grad_clip).

    With grad_clip the gradients are clipped to that total norm first; a non-finite norm is
    returned and the update is not applied, so the caller can roll back.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = None
    if grad_clip is not None:
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        if not math.isfinite(gnorm):
            return gnorm
    optimizer.step()
    return gnorm


def closure_step(optimizer: torch.optim.Optimizer, loss_fn) -> float:
    """One step of an optimiser that evaluates the loss itself, several times per step (L-BFGS with a line
    search): its closure zeroes the gradients, computes loss_fn() and back-propagates. Returns the loss
    at the start of the step (what torch's LBFGS.step returns)."""
    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss
    return float(torch.as_tensor(optimizer.step(closure)).detach())


@dataclass(frozen=True)
class FitResult:
    """history: one row per epoch (epoch, the point-weighted mean of every loss term, seconds, and
    what `after_epoch` added); epochs_run; seconds of the whole fit."""
    history: pd.DataFrame
    epochs_run: int
    seconds: float

    def to_dict(self) -> dict:
        return {"history": self.history.to_dict(orient="records"), "epochs_run": self.epochs_run,
                "seconds": self.seconds}


def fit(model: torch.nn.Module, loss_fn, index: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        generator: torch.Generator, name: str = "training", progress: bool = False, after_epoch=None,
        max_seconds: float = 0.0) -> FitResult:
    """Adam with a cosine learning rate (T_max = epochs) over shuffled minibatches of `index`.

    loss_fn(idx) -> dict of scalar tensors: "loss" is minimised, every entry is logged as the
    point-weighted epoch mean. index (n,): the training points' indices, reshuffled each epoch by
    `generator` (drawn on the CPU). after_epoch(epoch, row) may add entries to the epoch's row
    (e.g. a validation loss). A non-finite epoch loss raises ValueError("<name> diverged at epoch
    ..."); max_seconds > 0 stops after that much wall-clock time.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    n, rows, start, epoch = len(index), [], time.perf_counter(), -1
    for epoch in progress_bar(range(epochs), progress, name, leave=True):
        order = index[torch.randperm(n, generator=generator, device="cpu").to(index.device)]
        sums: dict = {}
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            terms = loss_fn(idx)
            step(model, opt, terms["loss"])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
        sched.step()
        row = {"epoch": epoch, **{k: v / n for k, v in sums.items()}}
        if after_epoch is not None:
            after_epoch(epoch, row)
        if not math.isfinite(row["loss"]):
            raise ValueError(f"{name} diverged at epoch {epoch} (non-finite loss); lower lr")
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if max_seconds and row["seconds"] > max_seconds:
            break
    return FitResult(history=pd.DataFrame(rows), epochs_run=epoch + 1, seconds=time.perf_counter() - start)

"""The history table of a chart run: one row per trained epoch (and the polish), as column lists.

The columns are lists so a checkpoint holds plain data; `append_row` keeps them equally long, and
the early stop and `targets_met` read the window means of <T> and <det g> from them.
"""
from __future__ import annotations

import math

import pandas as pd

from .config import Config
from .losses import targets


def append_row(history: dict, row: dict) -> None:
    """Append one row to the column lists: a column new to the history (a run resumed from an older
    checkpoint) is back-filled, a column the row lacks gets NaN, so every column keeps one value per row."""
    n = len(next(iter(history.values()), []))
    for k in row:
        if k not in history:
            history[k] = [0 if k == "skipped" else math.nan] * n
    for k, col in history.items():
        col.append(row.get(k, math.nan))


def targets_held(history: dict, config: Config, epoch: int) -> bool:
    """True when the means of <T> and <det g> over the last early_stop_window epochs of this phase
    (`epoch` is the epoch within the phase just trained) are within early_stop_T of kappa_T and
    early_stop_det of 65/32 (relative)."""
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

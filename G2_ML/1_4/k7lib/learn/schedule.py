"""The learning-rate schedule of chart training, and the seeds of its points.

The learning rate of epoch e of a phase with E epochs and peak lr is
  lr = lr_scale * peak * (e + 1) / n_warm                                   for e < n_warm,
  lr = lr_scale * peak * (f + (1 - f) (1 + cos(pi (e - n_warm) / (E - n_warm))) / 2)   after,
with n_warm = floor(warmup_frac * E) and f = lr_floor; lr_scale = user_scale x rollback_scale:
user_scale is the user's factor (`train_chart(..., lr_scale=X)`: X itself, not X times what a
checkpoint had, so running the same resume twice gives the same rate; None keeps the checkpoint's),
and rollback_scale halves at each rollback.

The batch of global epoch n is drawn by a generator seeded with (seed << 32) + n, so sampling is a
function of (seed, global epoch) alone and a resumed run replays exactly what a straight run does;
the polish and the evaluation draw from streams of their own (POLISH_STREAM, EVAL_STREAM).
"""
from __future__ import annotations

import bisect
import math

from ..inputs import positive_number
from .config import Config

EVAL_STREAM = 1 << 31        # sampler stream of the evaluation points (training uses epochs < 2^31)
POLISH_STREAM = 1 << 30      # scramble seeds of the polish points
LR_SCALE_MAX = 10.0          # a larger factor on the peak rate is a typing error, not a recipe


def check_lr_scale(lr_scale) -> float:
    """lr_scale as a float; ValueError naming the field unless it is a finite number in (0, LR_SCALE_MAX]."""
    return positive_number(lr_scale, "lr_scale", maximum=LR_SCALE_MAX)


def epoch_seed(seed: int, global_epoch: int) -> int:
    """Seed of the sampler for one epoch: (seed << 32) + global_epoch."""
    return (int(seed) << 32) + int(global_epoch)


def phase_of(config: Config, global_epoch: int) -> tuple[int, int]:
    """(phase, epoch within the phase) of a global epoch."""
    starts = config.phase_starts()
    p = bisect.bisect_right(starts, global_epoch) - 1
    return p, global_epoch - starts[p]


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

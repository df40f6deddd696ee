"""Monte Carlo moments: every Monte Carlo mean with a standard error in k7lib accumulates through `Moments`
(the chunked loops that feed it are `k7lib.batches.chunks`).
"""
from __future__ import annotations

import torch


class Moments:
    """Running sums of f - K and (f - K)^2 (float64) for Monte Carlo means and standard errors.

    The shift K (the first chunk's mean) keeps the variance free of cancellation when the
    integrand is nearly constant. `add(f)` takes f (batch, ...) = w(x) * integrand(x).
    """

    def __init__(self):
        self.s1 = self.s2 = self.shift = None
        self.n = 0

    def add(self, f: torch.Tensor):
        f = f.to(torch.float64)
        if self.shift is None:
            self.shift = f.mean(0)
        f = f - self.shift
        s1, s2 = f.sum(0), (f * f).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += f.shape[0]

    def integral(self, volume: float):
        """(volume * mean f, volume * std(f) / sqrt(n))."""
        mean = self.s1 / self.n
        var = ((self.s2 - self.n * mean * mean) / (self.n - 1)).clamp_min(0)
        return volume * (mean + self.shift), volume * (var / self.n).sqrt()

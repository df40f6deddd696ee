"""Chunked evaluation over points, with a progress bar, and Monte Carlo moments.

Every integral and per-point table in k7lib walks its points in chunks (memory stays flat in the
number of points) through `chunks`, and every Monte Carlo mean with a standard error accumulates
through `Moments`.
"""
from __future__ import annotations


import torch


def check_chunk(chunk) -> int:
    """chunk itself if it is a positive integer; ValueError otherwise."""
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return chunk


def chunks(n: int, size: int, progress: bool = False, desc: str = "", leave: bool = False):
    """Slices covering range(n) in consecutive pieces of at most `size` (a tqdm bar when progress)."""
    size = max(1, int(size))
    return progress_bar([slice(i, min(i + size, n)) for i in range(0, n, size)], progress, desc, leave)


def progress_bar(items, progress: bool, desc: str, leave: bool = False):
    """items with a tqdm bar when progress, else items unchanged."""
    if not progress:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, leave=leave)


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

"""Chunked loops over points, with a progress bar.

Every integral and per-point table in k7lib walks its points in chunks through `chunks`, so memory
stays flat in the number of points on any device; long loops show a tqdm bar when asked.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from .inputs import positive_int


def check_chunk(chunk) -> int:
    """chunk itself if it is a positive integer; ValueError naming `chunk` otherwise."""
    return positive_int(chunk, "chunk")


def chunks(n: int, size: int, progress: bool = False, desc: str = "", leave: bool = False):
    """Slices covering range(n) in consecutive pieces of at most `size` (a tqdm bar when progress)."""
    size = max(1, int(size))
    return progress_bar([slice(i, min(i + size, n)) for i in range(0, n, size)], progress, desc, leave)


def progress_bar(items, progress: bool, desc: str, leave: bool = False):
    """items with a tqdm bar when progress, else items unchanged."""
    return tqdm(items, desc=desc, leave=leave) if progress else items

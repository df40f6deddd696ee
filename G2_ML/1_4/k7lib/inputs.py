"""The one check of tensors handed to k7lib's public functions (points and 3-forms).

Each public entry calls one of these once, at the top, so a bad argument fails with a
ValueError naming the argument, what was expected and what was given, instead of a raw
RuntimeError/IndexError deep inside a contraction:
  check_points(x)    points of the chart, shape (batch, 7), batch >= 1;
  check_phi(phi)     3-forms, packed (*batch, 35) or dense (*batch, 7, 7, 7), at least one form;
  check_sampling(n_points, L, dtype)   what a function that draws its own points is given;
  positive_int(v, name), positive_number(v, name)   every count and every scale of a setting.
All require a floating dtype float32 or float64 and finite values (checking finiteness costs
one reduction and, on a GPU, one synchronisation per call: negligible beside the work that follows).
"""
from __future__ import annotations

import math

import torch

from .constants import DIM

N_PACKED3 = 35                    # C(7, 3) packed components of a 3-form
DTYPES = (torch.float32, torch.float64)


def _shape(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {str(v.dtype).replace('torch.', '')} tensor of shape {tuple(v.shape)}"
    return f"a {type(v).__name__}"


def positive_int(value, name: str, minimum: int = 1) -> int:
    """value itself if it is an int (not a bool) >= minimum; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def positive_number(value, name: str) -> float:
    """value as a float if it is a finite real number > 0 (not a bool); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_length(L) -> float:
    """The chart's half-length L as a float, if it is positive and finite; ValueError otherwise."""
    try:
        L = float(L)
    except (TypeError, ValueError):
        raise ValueError(f"chart half-length L must be a positive finite number, got {L!r}") from None
    if not (L > 0 and math.isfinite(L)):
        raise ValueError(f"chart half-length L must be a positive finite number, got {L}")
    return L


def check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """dtype itself, if it is torch.float32 or torch.float64; ValueError naming `name` otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _check_values(t: torch.Tensor, name: str, expected: str, noun: str) -> torch.Tensor:
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} must be float32 or float64 {expected}, got {_shape(t)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one {noun} ({expected}), got {_shape(t)}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.reshape(t.shape[0], -1).any(-1) if t.ndim > 1 else bad
        raise ValueError(f"{name} must be finite: {int(rows.sum())} of {rows.numel()} entries hold NaN or Inf")
    return t


def check_points(x, name: str = "x", values: bool = True) -> torch.Tensor:
    """x itself if it is a float32/float64 tensor of shape (batch, 7), batch >= 1, all finite.

    values=False checks the shape only (inside traced derivatives, where reading values is not possible).
    """
    expected = "of shape (batch, 7) with batch >= 1"
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[-1] != DIM:
        raise ValueError(f"{name} must be a tensor {expected}, got {_shape(x)}")
    return _check_values(x, name, expected, "point") if values else x


def check_phi(phi, name: str = "phi", layout: str = "any") -> torch.Tensor:
    """phi itself if it is a float32/float64 3-form with at least one form, all finite.

    layout: "dense" (*batch, 7, 7, 7), "packed" (*batch, 35) or "any" (either).
    """
    dense = isinstance(phi, torch.Tensor) and phi.ndim >= 3 and tuple(phi.shape[-3:]) == (DIM,) * 3
    packed = isinstance(phi, torch.Tensor) and phi.ndim >= 1 and phi.shape[-1] == N_PACKED3
    ok = {"dense": dense, "packed": packed, "any": dense or packed}[layout]
    expected = {"dense": "of shape (*batch, 7, 7, 7)", "packed": "of shape (*batch, 35)",
                "any": "of shape (*batch, 35) (packed) or (*batch, 7, 7, 7) (dense)"}[layout]
    if not ok:
        raise ValueError(f"{name} must be a tensor {expected}, got {_shape(phi)}")
    return _check_values(phi, name, expected, "form")


def check_sampling(n_points, L, dtype=torch.float64) -> None:
    """n_points a positive integer, L a positive finite number, dtype float32 or float64."""
    positive_int(n_points, "n_points")
    check_length(L)
    check_dtype(dtype)

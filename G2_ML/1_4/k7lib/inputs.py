"""The one check of tensors handed to k7lib's public functions (points and 3-forms).

Each public entry calls one of these once, at the top, so a bad argument fails with a
ValueError naming the argument, what was expected and what was given, instead of a raw
RuntimeError/IndexError deep inside a contraction:
  check_points(x)    points of the chart, shape (batch, 7), batch >= 1;
  check_phi(phi)     3-forms, packed (*batch, 35) or dense (*batch, 7, 7, 7), at least one form;
  check_sampling(n_points, L, dtype)   what a function that draws its own points is given;
  check_field_call(field, x, dtype, chunk)   a field run on points: dtypes agree, chunk > 0;
  positive_int, finite_number, positive_number   every count and every scale of a setting, with
    bounds (MAX_POINTS for point counts); booleans never pass as numbers.
All require a floating dtype float32 or float64 and finite values (checking finiteness costs
one reduction and, on a GPU, one synchronisation per call: negligible beside the work that follows).
"""
from __future__ import annotations

import math

import torch

from .constants import DIM

N_PACKED3 = 35                    # C(7, 3) packed components of a 3-form
DTYPES = (torch.float32, torch.float64)
MAX_POINTS = 10**8                # the most points any count may ask for (float64 points: 5.6 GB)


def _shape(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {str(v.dtype).replace('torch.', '')} tensor of shape {tuple(v.shape)}"
    return f"a {type(v).__name__}"


def positive_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """value itself if it is an int (not a bool) in [minimum, maximum]; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        what += f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name}: must be {what}, got {value!r}")
    return value


def finite_number(value, name: str, minimum: float | None = None, maximum: float | None = None, *,
                  open_below: bool = False, open_above: bool = False) -> float:
    """value as a float if it is a finite real number (not a bool) within the bounds given; ValueError
    naming `name` otherwise. open_below / open_above exclude the bound itself."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if open_below else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if open_above else value <= maximum
    if not ok:
        bounds = ([f"{'>' if open_below else '>='} {minimum:g}"] if minimum is not None else []) + (
            [f"{'<' if open_above else '<='} {maximum:g}"] if maximum is not None else [])
        raise ValueError(f"{name}: must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, "
                         f"got {value!r}")
    return float(value)


def positive_number(value, name: str, maximum: float | None = None) -> float:
    """value as a float if it is a finite real number > 0 (and <= maximum when given), not a bool."""
    return finite_number(value, name, 0.0, maximum, open_below=True)


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


def _check_values(t: torch.Tensor, name: str, expected: str, noun: str, finite: bool = True) -> torch.Tensor:
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} must be float32 or float64 {expected}, got {_shape(t)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one {noun} ({expected}), got {_shape(t)}")
    if not finite:
        return t
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


def check_phi(phi, name: str = "phi", layout: str = "any", finite: bool = True) -> torch.Tensor:
    """phi itself if it is a float32/float64 3-form with at least one form, all finite.

    layout: "dense" (*batch, 7, 7, 7), "packed" (*batch, 35) or "any" (either). finite=False leaves
    the values unread (traced tensors; callers that count non-finite forms themselves).
    """
    dense = isinstance(phi, torch.Tensor) and phi.ndim >= 3 and tuple(phi.shape[-3:]) == (DIM,) * 3
    packed = isinstance(phi, torch.Tensor) and phi.ndim >= 1 and phi.shape[-1] == N_PACKED3
    ok = {"dense": dense, "packed": packed, "any": dense or packed}[layout]
    expected = {"dense": "of shape (*batch, 7, 7, 7)", "packed": "of shape (*batch, 35)",
                "any": "of shape (*batch, 35) (packed) or (*batch, 7, 7, 7) (dense)"}[layout]
    if not ok:
        raise ValueError(f"{name} must be a tensor {expected}, got {_shape(phi)}")
    return _check_values(phi, name, expected, "form", finite)


def check_sampling(n_points, L, dtype=torch.float64) -> None:
    """n_points a positive integer up to MAX_POINTS, L a positive finite number, dtype float32 or float64."""
    positive_int(n_points, "n_points", maximum=MAX_POINTS)
    check_length(L)
    check_dtype(dtype)


def _field_dtype(field) -> torch.dtype | None:
    """The floating dtype of a torch module's parameters (None for a plain callable or no parameters)."""
    if not isinstance(field, torch.nn.Module):
        return None
    return next((p.dtype for p in field.parameters() if p.is_floating_point()), None)


def check_field_call(field, x=None, *, dtype=None, chunk=None, name: str = "x") -> None:
    """What a public function that runs a field (a model, or any callable) is handed, checked at once.

    x (if given): points as in check_points; dtype (if given): float32 or float64; chunk (if given):
    a positive integer. A module's parameters must be float32 or float64 and, with x, of x's dtype:
    a float64 point given to a float32 network (or the reverse) is refused, not silently cast.
    """
    if x is not None:
        check_points(x, name)
    if dtype is not None:
        check_dtype(dtype)
    if chunk is not None:
        positive_int(chunk, "chunk")
    own = _field_dtype(field)
    if own is not None and own not in DTYPES:
        raise ValueError(f"model: parameters must be float32 or float64, got {str(own).replace('torch.', '')}")
    if own is not None and x is not None and x.dtype != own:
        raise ValueError(f"{name}: {str(x.dtype).replace('torch.', '')} points given to a "
                         f"{str(own).replace('torch.', '')} model; cast one to the other's dtype "
                         "(model.to(x.dtype) or x.to(model's dtype))")

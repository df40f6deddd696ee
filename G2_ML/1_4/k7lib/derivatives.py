"""Exterior derivatives of form fields x -> omega(x), by forward-mode autograd or central differences.

A *field* is a callable mapping points x of shape (batch, 7) to a form at each point, either
dense (batch, 7, ..., 7) or packed (batch, C(7,k)). The field must act pointwise (row n of
the output depends on row n of x only), which every network and chart field here does.

method="autograd": torch.func.jvp along the 7 coordinate directions, batched with vmap:
  exact derivatives at the cost of about one forward pass per direction (docs/conventions.md §7).
method="fd": central differences d_m w ~ (w(x + h e_m) - w(x - h e_m)) / 2h, 14 extra
  evaluations, truncation error O(h^2) (h^2/6 * third derivative), round-off O(eps/h).
"""
from __future__ import annotations

import torch
from torch.func import jvp, vmap

from . import forms as F
from .inputs import check_points

METHODS = ("autograd", "fd")


def check_method(method) -> str:
    """method itself if it names a derivative method of METHODS; ValueError naming the choices otherwise."""
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")
    return method


def default_step(dtype: torch.dtype) -> float:
    """h ~ eps^(1/3): balances O(h^2) truncation against O(eps/h) round-off."""
    return float(torch.finfo(dtype).eps) ** (1.0 / 3.0)


def value_and_jacobian(field, x: torch.Tensor, method: str = "autograd", h: float | None = None):
    """(field(x), J) with J[..., m] = d field / d x^m; output shape (*out, 7) for field(x) of shape out.

    `field` may return a tensor or a tuple of tensors (then both values are tuples).
    """
    check_points(x, values=False)
    if method == "autograd":
        basis = torch.eye(F.DIM, dtype=x.dtype, device=x.device)[:, None, :].expand(F.DIM, *x.shape)
        value, tangents = vmap(lambda v: jvp(field, (x,), (v,)), out_dims=(None, 0))(basis)
        move = lambda t: torch.movedim(t, 0, -1)
        jac = tuple(map(move, tangents)) if isinstance(tangents, tuple) else move(tangents)
        return value, jac
    if method == "fd":
        h = default_step(x.dtype) if h is None else float(h)
        if not h > 0:
            raise ValueError(f"finite-difference step h must be positive, got {h}")
        n = x.shape[0]
        shifts = torch.eye(F.DIM, dtype=x.dtype, device=x.device) * h
        xs = torch.cat([x, (x[None] + shifts[:, None]).reshape(-1, F.DIM),
                        (x[None] - shifts[:, None]).reshape(-1, F.DIM)])
        out = field(xs)

        def split(t):
            plus = t[n: n + F.DIM * n].reshape(F.DIM, n, *t.shape[1:])
            minus = t[n + F.DIM * n:].reshape(F.DIM, n, *t.shape[1:])
            return t[:n], torch.movedim((plus - minus) / (2 * h), 0, -1)

        if isinstance(out, tuple):
            pairs = [split(t) for t in out]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        return split(out)
    raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")


def d_packed(field, x: torch.Tensor, k: int, method: str = "autograd", h: float | None = None):
    """(omega, d omega) for a packed k-form field: (batch, C(7,k)) -> packed (batch, C(7,k+1))."""
    F.check_degree(k)
    value, jac = value_and_jacobian(field, x, method, h)
    if value.shape != (x.shape[0], F.n_components(k)):
        raise ValueError(f"field should return a packed {k}-form of shape ({x.shape[0]}, "
                         f"{F.n_components(k)}), got {tuple(value.shape)}")
    return value, F.d_from_jacobian(jac, k)


def d(field, x: torch.Tensor, method: str = "autograd", h: float | None = None) -> torch.Tensor:
    """Exterior derivative of a dense k-form field: x (batch, 7) -> dense (k+1)-form (batch, 7^(k+1)).

    (d omega)_{m i1..ik} = (k+1) d_[m omega_{i1..ik]} (docs/conventions.md §3), computed in packed form as
    (d omega)_L = sum_{m in L} sign(m, L\\m) d_m omega_{L\\m}.
    """
    check_method(method)
    check_points(x, values=False)
    probe = field(x[:1])
    k = probe.ndim - 1
    if k < 0 or any(s != F.DIM for s in probe.shape[1:]):
        raise ValueError(f"field must return a dense form of shape (batch, 7, ..., 7), got {tuple(probe.shape)}")
    F.pack(probe, k, check=True)
    _, dw = d_packed(lambda y: F.pack(field(y), k), x, k, method, h)
    return F.unpack(dw, k + 1)

"""How fine the Hodge projection must be for a given metric: the lambda rule from the metric's variation
along the neck, the fibre axes and axis pairs from its Fourier content, the fibre lattice for a basis.

  lambda_nodes      the first Gauss rule of LAMBDA_LADDER whose fibre-averaged metric integrals agree with
                    the next rung's to a tolerance;
  fibre_content     the metric's relative Fourier amplitudes along every coordinate plane of the fibre;
  active_axes       the axes and pairs above a threshold; left_out the wave vectors a basis misses;
  fibre_points_for  the smallest lattice (FIBRE_SIZES) that integrates products of two basis modes exactly.
"""
from __future__ import annotations

from itertools import combinations

import torch

from ..sampling.points import gauss_nodes, projection_lattice
from . import galerkin as GK

FIBRE_SIZES = (31, 61, 127, 257, 509, 1021)      # lattice sizes; a refinement takes the next one
LAMBDA_LADDER = (16, 24, 32, 48, 64, 96, 128, 192)


def check_finite(phi: torch.Tensor, x: torch.Tensor) -> None:
    bad = ~torch.isfinite(phi.detach()).all(-1)
    if bool(bad.any()):
        raise ValueError(f"phi_field returned non-finite values (NaN or inf) at {int(bad.sum())} of "
                         f"{phi.shape[0]} points (first at x = {x[bad][0].tolist()}): no count is possible")


def field_dtype(phi_field):
    """The dtype a field's parameters use (a float32 network is evaluated in float32), else float64."""
    if isinstance(phi_field, torch.nn.Module):
        p = next(phi_field.parameters(), None)
        if p is not None:
            return p.dtype
    return torch.float64


def node_points(lam: float, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full((y.shape[0], 1), float(lam), dtype=y.dtype, device=y.device), y], dim=1)


def phi_at(packed, dtype, x):
    with torch.no_grad():
        phi = packed(x.to(dtype)).to(torch.float64)
    check_finite(phi, x)
    return phi


def lambda_nodes(packed, dtype, chart, candidates: dict, tolerance: float, device=None) -> int:
    """The first n of LAMBDA_LADDER at which the fibre-averaged integrals int Lambda^k(g^-1) vol_g dlambda and
    int <w_a, w_a>_g vol_g dlambda change by less than `tolerance` (relative Frobenius) to the next rung."""
    # the same 8 fibre points on every rung, so that only the lambda rule changes between rungs
    y = torch.rand(8, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64, device="cpu").to(device)
    prev = None
    for n in LAMBDA_LADDER:
        lam, w = gauss_nodes(chart, n)
        x = torch.cat([lam.to(y).repeat_interleave(y.shape[0])[:, None], y.repeat(n, 1)], dim=1)
        wx = w.to(y).repeat_interleave(y.shape[0]) / y.shape[0]
        G = GK.weighted_metric(phi_at(packed, dtype, x), wx, tuple(candidates))
        parts = []
        for k, basis in candidates.items():
            V = basis(x).to(torch.float64)
            parts += [G[k].sum(0).flatten(), torch.einsum("xvc,xcd,xvd->v", V, G[k], V)]
        cur = torch.cat(parts)
        if prev is not None and float((cur - prev[1]).norm() / cur.norm()) <= tolerance:
            return prev[0]
        prev = (n, cur)
    return LAMBDA_LADDER[-1]


GRID = 8          # points per axis of the fibre probe grids: modes up to degree 3 resolved on each plane


def fibre_content(packed, dtype, chart, seed: int = 0, device=None) -> dict:
    """{wave vector k (6 ints): relative amplitude} of the metric's fibre Fourier coefficients along each
    coordinate plane (y_a, y_b): g is sampled on a GRID x GRID grid of the plane through a random base
    point, at 4 values of lambda, and |g_k| / |mean g| (Frobenius over the entries, largest over the
    samples) is read off its two-dimensional discrete Fourier transform (|k_a|, |k_b| <= GRID / 2 - 1).
    A rank-1 lattice cannot tell such modes apart (its aliases are low-degree), a plane grid can."""
    gen = torch.Generator().manual_seed(int(seed) + 11)
    base = torch.rand(6, generator=gen, dtype=torch.float64, device="cpu")
    t = torch.arange(GRID, dtype=torch.float64, device="cpu") / GRID
    ta, tb = torch.meshgrid(t, t, indexing="ij")
    amp, top = {}, GRID // 2 - 1
    for lam in (-0.6, -0.2, 0.2, 0.6):
        for a, b in combinations(range(6), 2):
            y = base.repeat(GRID * GRID, 1)
            y[:, a], y[:, b] = (base[a] + ta.flatten()) % 1, (base[b] + tb.flatten()) % 1
            x = node_points(lam * chart.L, y).to(device)
            g = GK.metric_of(phi_at(packed, dtype, x)).reshape(GRID, GRID, -1).cpu()
            c = torch.fft.fft2(g, dim=(0, 1)) / GRID ** 2
            rel = 2 * c.abs().pow(2).sum(-1).sqrt() / c[0, 0].abs().norm()
            for ka in range(-top, top + 1):
                for kb in range(0, top + 1):
                    if (ka, kb) > (0, 0) or kb > 0:
                        k = tuple(ka if i == a else kb if i == b else 0 for i in range(6))
                        k = k if next(v for v in k if v) > 0 else tuple(-v for v in k)
                        amp[k] = max(amp.get(k, 0.0), float(rel[ka % GRID, kb]))
    return amp


def fibre_points_for(modes: GK.FibreModes) -> int:
    """The smallest lattice of FIBRE_SIZES that integrates products of two basis modes with a constant
    metric exactly: 31 without modes; on one or two axes pair_degree > 2 max|k|_1 + 2; otherwise the
    six-dimensional degree > 2 max|k|_1 (capped at 5, the best `projection_lattice` offers)."""
    if not modes.vectors:
        return FIBRE_SIZES[0]
    touched = {i for k in modes.vectors for i, c in enumerate(k) if c}
    top = max(sum(map(abs, k)) for k in modes.vectors)
    for n in FIBRE_SIZES:
        _, degree, pair_degree = projection_lattice(n)
        if (len(touched) <= 2 and pair_degree > 2 * top + 2) or (degree > min(2 * top, 4) and pair_degree > 2 * top + 2):
            return n
    return FIBRE_SIZES[-1]


def active_axes(content: dict, threshold: float, max_pairs: int):
    """(axes, pairs) along which the metric varies above threshold, fibre axes numbered 1..6."""
    axes, pair_amp = set(), {}
    for k, a in content.items():
        nz = [i + 1 for i, c in enumerate(k) if c]
        if a > threshold:
            axes.update(nz)
        if len(nz) == 2:
            pair_amp[tuple(nz)] = max(pair_amp.get(tuple(nz), 0.0), a)
    pairs = sorted((q for q, a in pair_amp.items() if a > threshold), key=lambda q: -pair_amp[q])[:max_pairs]
    return tuple(sorted(axes)), tuple(sorted(pairs))


def left_out(k: tuple, axes: tuple, pairs: tuple) -> bool:
    """A wave vector (over y1..y6) along an axis outside the basis, or mixing two axes whose pair is not in it
    (higher degrees on the basis' axes are the refinement's business)."""
    support = tuple(i + 1 for i, c in enumerate(k) if c)
    return not set(support) <= set(axes) or (len(support) == 2 and support not in pairs)

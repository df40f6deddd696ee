"""The point generators of the TCS chart: uniform, scrambled Sobol and tensor quadrature rules.

Chart points are x (n, 7): x[:, 0] = lambda in [-L, L], x[:, 1:] = y in [0, 1)^6 (conventions §5).
  uniform       i.i.d. points with importance weights (training batches; optional neck weighting);
  sobol         scrambled Sobol points (randomised QMC: evaluation, polish, exploration, validation);
  chart_points  either of the two by name, the points alone;
  gauss_nodes   Gauss-Legendre nodes and weights in lambda;
  fibre_lattice a shifted rank-1 lattice on T^6 with good two-dimensional projections (the Hodge
                projection's fibre rule, `projection_lattice`);
  gauss_lattice Gauss-Legendre in lambda x rank-1 lattice rule in y (the spectral quadrature);
  box_sobol     scrambled Sobol points of a coordinate box (the exact fixtures and the torsion-free learner);
  box_gauss     the tensor Gauss-Legendre rule of a coordinate box (its Dirichlet spectrum);
(The quintic link's points are drawn by `calabi_yau.link_chart.link_points`.) Every generator draws on the CPU in float64 from its seed, so a seed gives the same points on
every device, then casts and moves them.
"""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from itertools import product

import numpy as np
import torch

from ..chart import as_chart
from ..constants import DIM
from ..exact.box import as_box

SAMPLERS = ("sobol", "uniform")          # the point generators chart_points can name


def _check_n(n) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"number of points n must be a positive integer, got {n}")
    return int(n)


def uniform(n: int, chart, generator: torch.Generator | None = None, neck_weighted: bool = False,
           dtype=torch.float32, device=None):
    """n points of the chart and importance weights: (x (n, 7), w (n,)).

    chart: a `Chart` (or its half-length L). lambda has density p(lambda); w = (1/(2L)) / p(lambda), so
    mean(w f(x)) is an unbiased estimate of the chart average and mean(w f(x)) * chart.volume of the
    integral of f.
    neck_weighted=False: p uniform on [-L, L] (w = 1). neck_weighted=True: the mixture
    p = 1/2 U[-L, L] + 1/2 U[-L/2, L/2], i.e. three times the density on |lambda| < L/2
    (where the twist turns) as outside.
    y is uniform on [0, 1)^6 in both cases.
    """
    L = as_chart(chart).L
    n = _check_n(n)
    # drawn where the generator lives (the CPU by default), so a seed gives the same points on every device
    at = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, DIM, generator=generator, dtype=torch.float64, device=at)
    lam = (2 * u[:, 0] - 1) * L
    w = torch.ones(n, dtype=torch.float64, device=at)
    if neck_weighted:
        pick = torch.rand(n, generator=generator, dtype=torch.float64, device=at) < 0.5
        lam = torch.where(pick, lam / 2, lam)
        density = 0.5 / (2 * L) + 0.5 * (lam.abs() < L / 2).double() / L
        w = (1 / (2 * L)) / density
    x = torch.cat([lam[:, None], u[:, 1:]], dim=1)
    return x.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device)


def sobol(n: int, chart, seed: int = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """n scrambled Sobol points of the chart (a `Chart` or its L), (n, 7): lambda uniform on [-L, L], y on [0, 1)^6.

    Randomised quasi-Monte Carlo (torch.quasirandom.SobolEngine: a random linear matrix scramble and a
    digital shift): each seed is an
    independent scramble, so the spread of a mean over a few seeds is its standard error, while each
    mean converges faster than with uniform points for smooth integrands. Drawn on the CPU in
    float64 (the same points on every device), then moved.
    """
    L = as_chart(chart).L
    u = unit_sobol(n, seed)
    x = torch.cat([(2 * u[:, :1] - 1) * L, u[:, 1:]], dim=1)
    return x.to(dtype=dtype, device=device)


def unit_sobol(n: int, seed: int = 0) -> torch.Tensor:
    """n scrambled Sobol points of the unit cube [0, 1)^7 (n, 7), float64 on the CPU; one scramble per seed."""
    n = _check_n(n)
    # the engine keeps 32 bits of its seed: hash the whole integer so (seed, stream) pairs stay distinct
    seed32 = int.from_bytes(hashlib.blake2b(str(int(seed)).encode(), digest_size=4).digest(), "little")
    with torch.device("cpu"):             # SobolEngine builds its tables on the default device
        return torch.quasirandom.SobolEngine(DIM, scramble=True, seed=seed32).draw(int(n), dtype=torch.float64)


def box_sobol(n: int, box, seed: int = 0, dtype=torch.float64, device=None) -> torch.Tensor:
    """n scrambled Sobol points (n, 7) of a coordinate box (`exact.Box` or a pair (lo, hi)), uniform in it;
    each seed an independent scramble (randomised QMC, as `sobol`)."""
    return as_box(box).from_unit(unit_sobol(n, seed)).to(dtype=dtype, device=device)


def box_gauss(box, n_nodes: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor Gauss-Legendre rule on a box: (x (n_nodes^7, 7), weights (n_nodes^7,)), the weights summing to
    the box's volume; exact for polynomials of degree < 2 n_nodes in each coordinate. On the CPU."""
    box = as_box(box)
    nodes, w = np.polynomial.legendre.leggauss(int(n_nodes))
    u = torch.tensor((nodes + 1) / 2, dtype=torch.float64)
    grid = torch.cartesian_prod(*([u] * DIM))
    wt = torch.tensor(w / 2, dtype=torch.float64)
    weights = torch.cartesian_prod(*([wt] * DIM)).prod(-1) * box.volume
    return box.from_unit(grid).to(dtype), weights.to(dtype)


def chart_points(n: int, chart, seed: int = 0, method: str = "sobol", dtype=torch.float64,
                 device=None) -> torch.Tensor:
    """n chart points (n, 7) from `seed`: method "sobol" (`sobol`) or "uniform" (`uniform`, no neck weighting)."""
    if method == "sobol":
        return sobol(n, chart, seed=seed, dtype=dtype, device=device)
    if method == "uniform":
        return uniform(n, chart, torch.Generator().manual_seed(int(seed)), dtype=dtype, device=device)[0]
    raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")


def _gauss_product(L: float, n_lambda: int, y: torch.Tensor):
    """n_lambda Gauss-Legendre nodes in lambda times the fibre points y (n_y, 6), on the CPU in y's dtype:
    (x (n_lambda n_y, 7), node by node; weights (n_lambda n_y,), the node weight over n_y, summing to 2L)."""
    nodes, w = np.polynomial.legendre.leggauss(n_lambda)
    lam = torch.tensor(L * nodes, dtype=y.dtype, device="cpu")
    w_lam = torch.tensor(L * w, dtype=y.dtype, device="cpu")
    n_y = y.shape[0]
    x = torch.cat([lam.repeat_interleave(n_y)[:, None], y.repeat(n_lambda, 1)], dim=1)
    return x, (w_lam / n_y).repeat_interleave(n_y)


@lru_cache(maxsize=None)
def fourier_vectors(n_fourier: int) -> tuple:
    """Wave vectors k in Z^6 with 0 < |k|_1 <= n_fourier, one of each pair +-k (first non-zero entry > 0)."""
    out = []
    for k in product(range(-n_fourier, n_fourier + 1), repeat=DIM - 1):
        if 0 < sum(map(abs, k)) <= n_fourier and next(c for c in k if c) > 0:
            out.append(k)
    return tuple(sorted(out, key=lambda k: (sum(map(abs, k)), tuple(-c for c in k))))


@lru_cache(maxsize=None)
def _dual_vectors(radius: int) -> np.ndarray:
    """All k in Z^6 with 0 < |k|_1 <= radius (one of each +-pair), sorted by |k|_1, as (n, 6) int64."""
    return np.array(fourier_vectors(radius), dtype=np.int64).reshape(-1, DIM - 1)


@lru_cache(maxsize=None)
def korobov_generator(n_points: int, min_degree: int) -> tuple:
    """Generator z = (1, a, a^2, ..., a^5) mod N of a rank-1 lattice rule y_j = frac(j z / N) on T^6.

    The rule (1/N) sum_j f(y_j) integrates exp(2 pi i k.y) exactly unless k.z = 0 mod N, so it is
    exact for every trigonometric polynomial with |k|_1 < degree, degree = the smallest |k|_1 of a
    non-zero k with k.z = 0 mod N (Sloan & Joe, Lattice Methods for Multiple Integration, 1994).
    Returns (z, degree) for the a that maximises degree (searched up to min_degree + 2);
    raises ValueError if no a reaches min_degree + 1.
    """
    N = int(n_points)
    radius = min_degree + 2
    K = _dual_vectors(radius)
    norms = np.abs(K).sum(1)
    best = (-1, None)
    a_all = np.arange(1, N, dtype=np.int64)
    for start in range(0, a_all.size, 256):
        a = a_all[start:start + 256]
        Z = np.ones((a.size, DIM - 1), dtype=np.int64)
        for j in range(1, DIM - 1):
            Z[:, j] = (Z[:, j - 1] * a) % N
        hit = (K @ Z.T) % N == 0                                     # (n_k, n_a)
        first = np.where(hit.any(0), norms[hit.argmax(0)], radius + 1)
        i = int(first.argmax())
        if first[i] > best[0]:
            best = (int(first[i]), tuple(int(c) for c in Z[i]))
        if best[0] == radius + 1:
            break
    if best[0] <= min_degree:
        raise ValueError(f"n_points={N} is too small for a lattice rule exact to |k|_1 <= {min_degree} on T^6; "
                         "increase n_points")
    return best[1], best[0]


def gauss_lattice(chart, n_lambda: int, n_points: int, min_degree: int, dtype=torch.float64):
    """Tensor rule on [-L, L] x T^6: (x (n_lambda n_points, 7), weights, degree), sum(weights) = 2L.

    lambda: n_lambda Gauss-Legendre nodes; y: the rank-1 lattice y_j = frac(j z / N) of
    `korobov_generator(n_points, min_degree)`, exact for trigonometric polynomials with
    |k|_1 < degree. Points are ordered node by node (n_points consecutive rows per node).
    """
    z, degree = korobov_generator(n_points, min_degree)
    j = torch.arange(n_points, dtype=torch.float64, device="cpu")[:, None]
    y = torch.remainder(j * torch.tensor(z, dtype=torch.float64, device="cpu") / n_points, 1.0).to(dtype)
    x, w = _gauss_product(as_chart(chart).L, n_lambda, y)
    return x, w, degree


def gauss_nodes(chart, n_lambda: int, dtype=torch.float64):
    """(lambda (n,), weights (n,)): n Gauss-Legendre nodes on [-L, L], exact for polynomials of degree < 2n."""
    if not isinstance(n_lambda, int) or isinstance(n_lambda, bool) or n_lambda < 2:
        raise ValueError(f"n_lambda must be an integer >= 2, got {n_lambda!r}")
    L = as_chart(chart).L
    nodes, w = np.polynomial.legendre.leggauss(n_lambda)
    return (torch.tensor(L * nodes, dtype=dtype, device="cpu"), torch.tensor(L * w, dtype=dtype, device="cpu"))


def _pair_degree(z: np.ndarray, N: int, radius: int = 40) -> int:
    """Smallest |k_a| + |k_b| > 0 with k_a z_a + k_b z_b = 0 mod N over all axis pairs (a, b)."""
    ka, kb = np.meshgrid(np.arange(-radius, radius + 1), np.arange(0, radius + 1), indexing="ij")
    keep = (kb > 0) | (ka > 0)
    ka, kb = ka[keep], kb[keep]
    norm = np.abs(ka) + np.abs(kb)
    best = 2 * radius
    for a in range(DIM - 1):
        for b in range(a + 1, DIM - 1):
            hit = (ka * z[a] + kb * z[b]) % N == 0
            if hit.any():
                best = min(best, int(norm[hit].min()))
    return best


@lru_cache(maxsize=None)
def _small_vectors(radius: int) -> np.ndarray:
    """All k in Z^6 with 0 < |k|_1 <= radius, (n, 6) int64 (both signs)."""
    r = np.arange(-radius, radius + 1)
    K = np.stack(np.meshgrid(*([r] * (DIM - 1)), indexing="ij"), -1).reshape(-1, DIM - 1)
    n = np.abs(K).sum(1)
    return K[(n > 0) & (n <= radius)]


@lru_cache(maxsize=None)
def projection_lattice(n_points: int) -> tuple:
    """(z, degree, pair_degree) of a Korobov lattice y_j = frac(j z / N), z = (1, a, ..., a^5) mod N, on T^6.

    A rank-1 lattice rule integrates exp(2 pi i k.y) exactly unless k.z = 0 mod N (Sloan & Joe, Lattice
    Methods for Multiple Integration, 1994). The Hodge projection's integrands are products of fibre modes
    and of a metric that varies mostly along one or two fibre axes, so `a` is chosen to maximise first the
    six-dimensional degree (the smallest |k|_1 of an aliased k, capped at 5: exact for products of two
    modes of |k|_1 <= 2) and then pair_degree, the same on every two-axis projection. With all z_a prime to
    N every one-axis projection is the equispaced N-point grid (exact below degree N).
    """
    N = int(n_points)
    if N < 31:
        raise ValueError(f"fibre lattice: n_points must be at least 31, got {n_points!r}")
    K = _small_vectors(4)
    norms = np.abs(K).sum(1)
    best = None
    for a in range(2, N):
        z = np.array([pow(a, j, N) for j in range(DIM - 1)], dtype=np.int64)
        if any(math.gcd(int(v), N) != 1 for v in z):
            continue
        hit = (K @ z) % N == 0
        degree = int(norms[hit].min()) if hit.any() else 5
        score = (min(degree, 5), _pair_degree(z, N))
        if best is None or score > best[0]:
            best = (score, tuple(int(v) for v in z), degree)
    if best is None:
        raise ValueError(f"fibre lattice: no Korobov generator for n_points = {N}; use a prime")
    return best[1], best[2], best[0][1]


def fibre_lattice(n_points: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """(n_points, 6) fibre points frac(j z / N + shift) of `projection_lattice(n_points)`, with one random
    shift drawn from seed (a shifted lattice keeps the rule's exactness and moves its aliasing)."""
    z, _, _ = projection_lattice(n_points)
    shift = torch.rand(DIM - 1, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64,
                       device="cpu")
    j = torch.arange(n_points, dtype=torch.float64, device="cpu")[:, None]
    return torch.remainder(j * torch.tensor(z, dtype=torch.float64, device="cpu") / n_points + shift, 1.0).to(dtype)

"""The Fermat quintic Q = {p(z) = z0^5 + ... + z4^5 = 0} in CP^4: points, patches, Fubini-Study data.

Normalisation. omega_FS = (i/2) d dbar log|z|^2 on CP^4, so a projective line has area pi and
vol(CP^n) = pi^n / n!; in affine coordinates w, omega = (i/2) h_{ab} dw^a ^ dwbar^b with
h_{ab} = d_a dbar_b log|Z(w)|^2 and omega^n/n! = det(h) d^{2n}x. Q has degree 5 (Poincare dual to
5 hyperplanes), hence vol(Q) = int_Q omega^3/3! = 5 vol(CP^3) = 5 pi^3/3!.

Patches (as in cymetric, Larfors-Lukas-Ruehle-Schneider, arXiv:2111.01436): scale z so that one
coordinate z_s = 1 (s = argmax |z_i|), solve another coordinate z_e from p = 0 where |dp/dz_e| is
largest among the rest; the remaining three are the complex coordinates w of Q, and
dZ/dw_a = e_{c_a} - (d_{c_a} p / d_e p) e_e. The holomorphic volume form in that patch is the
Poincare residue Omega = dw1 ^ dw2 ^ dw3 / (dp/dz_e) (patch independent up to sign).

Sampling.
* `sample_lines`: intersect random lines {p + t q} (p, q Gaussian in C^5, i.e. unitarily
  invariant) with Q: the 5 roots of sum_i (p_i + t q_i)^5. The intersection points are distributed
  by the Fubini-Study measure omega^3/3! restricted to Q (Crofton formula on CP^4; Shiffman and
  Zelditch, Commun. Math. Phys. 200 (1999); used for CY metrics by Douglas, Karp, Lukic and
  Reinbacher, hep-th/0612075, and by cymetric), so every point has the same weight vol(Q)/N.
* `sample_projections`: an importance sampler with explicit weights that assumes nothing about
  the distribution of Q's points: draw j uniform in 0..4, a FS-uniform point u of CP^3 (the other
  four coordinates), and the 5 roots z_j of p = 0. The expected number of points per unit FS
  volume of Q is rho(z) = (1/(5 vol(CP^3))) sum_j det h^(j) / det h, where h^(j) is the FS form of
  CP^3 pulled back by the projection that drops z_j; the weight of a point is 1/(n rho(z)), finite
  everywhere because the five projections are never all branched at once. Its volume estimate
  checks the pulled-back FS density on Q against 5 pi^3/3!.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

DEGREE = 5          # degree of the Fermat polynomial
N_HOMOG = 5         # homogeneous coordinates of CP^4
DIM_C = 3           # complex dimension of Q
ON_Q_TOL = 1e-8     # |p(z)| / |z|^5 above this: the point is not on Q
DERIV_TOL = 1e-6    # |dp/dz_e| / |grad p| below this: the patch cannot solve for z_e


def fs_volume_projective(n: int) -> float:
    """vol(CP^n) = pi^n / n! for omega_FS = (i/2) d dbar log|z|^2 (a line has area pi)."""
    return math.pi ** n / math.factorial(n)


def fs_volume_quintic() -> float:
    """vol(Q) = int_Q omega^3/3! = deg(Q) vol(CP^3) = 5 pi^3 / 3!."""
    return DEGREE * fs_volume_projective(DIM_C)


def polynomial(z: torch.Tensor) -> torch.Tensor:
    """p(z) = sum_i z_i^5: z (*batch, 5) complex -> (*batch,)."""
    return (z ** DEGREE).sum(-1)


def gradient(z: torch.Tensor) -> torch.Tensor:
    """dp/dz_i = 5 z_i^4: (*batch, 5)."""
    return DEGREE * z ** (DEGREE - 1)


def residual(z: torch.Tensor) -> torch.Tensor:
    """Scale-free distance from Q: |p(z)| / |z|^5, (*batch,)."""
    return polynomial(z).abs() / z.abs().pow(2).sum(-1).sqrt() ** DEGREE


def check_on_quintic(z: torch.Tensor, tol: float = ON_Q_TOL) -> None:
    """ValueError unless z is (batch, 5) complex, nonzero and on Q within tol."""
    if not torch.is_complex(z) or z.ndim != 2 or z.shape[-1] != N_HOMOG:
        raise ValueError(f"points of CP^4 must be complex of shape (batch, 5), got {z.dtype} {tuple(z.shape)}")
    if bool((z.abs().amax(-1) == 0).any()):
        raise ValueError("the zero vector is not a point of CP^4")
    bad = ~(residual(z) <= tol)
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of {len(z)} points are off the quintic "
                         f"(|p(z)|/|z|^5 up to {float(residual(z).max()):.2e} > {tol:.0e})")


# ---------------------------------------------------------------- patches
@lru_cache(maxsize=None)
def _coords_table(device: str) -> torch.Tensor:
    """(5, 5, 3): the three indices left when scale s and eliminated e are removed (s != e)."""
    t = torch.zeros(N_HOMOG, N_HOMOG, DIM_C, dtype=torch.long, device="cpu")
    for s in range(N_HOMOG):
        for e in range(N_HOMOG):
            if s != e:
                t[s, e] = torch.tensor([i for i in range(N_HOMOG) if i not in (s, e)], device="cpu")
    return t.to(device)


def choose_patch(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point (scale, elim): scale = argmax |z_i|, elim = argmax |dp/dz_e| over e != scale."""
    scale = z.abs().argmax(-1)
    grad = gradient(z).abs()
    grad = grad.scatter(-1, scale[:, None], -1.0)
    return scale, grad.argmax(-1)


def affine_frame(z: torch.Tensor, scale, elim, check: bool = True):
    """Affine point and holomorphic frame of Q in the patch (scale, elim).

    z (batch, 5) complex on Q; scale, elim: ints or (batch,) long tensors with scale != elim.
    Returns Z = z / z_scale (batch, 5), dZ (batch, 3, 5) with dZ[a] = dZ/dw_a for the affine
    coordinates w_a = Z_{c_a} (c = the other three indices, increasing), and dp/dz_e at Z (batch,).
    ValueError when z_scale = 0 or dp/dz_e vanishes (relative to |grad p|) at some point.
    """
    n = z.shape[0]
    scale = torch.as_tensor(scale, device=z.device).expand(n) if not torch.is_tensor(scale) or scale.ndim == 0 \
        else scale
    elim = torch.as_tensor(elim, device=z.device).expand(n) if not torch.is_tensor(elim) or elim.ndim == 0 \
        else elim
    if bool(((scale < 0) | (scale >= N_HOMOG) | (elim < 0) | (elim >= N_HOMOG) | (scale == elim)).any()):
        raise ValueError("a patch needs scale and elim indices in 0..4 with scale != elim")
    zs = z.gather(-1, scale[:, None])
    if bool((zs.abs() == 0).any()):
        raise ValueError(f"patch scale coordinate vanishes at {int((zs.abs() == 0).sum())} points")
    Z = z / zs
    grad = gradient(Z)
    de = grad.gather(-1, elim[:, None])[:, 0]
    if check:
        bad = ~(de.abs() > DERIV_TOL * grad.abs().pow(2).sum(-1).sqrt())
        if bool(bad.any()):
            raise ValueError(f"dp/dz_e vanishes for the chosen patch at {int(bad.sum())} of {n} points; "
                             "the eliminated coordinate cannot be solved for there")
    coords = _coords_table(str(z.device))[scale, elim]                       # (batch, 3)
    onehot = lambda idx: torch.nn.functional.one_hot(idx, N_HOMOG).to(z.dtype)
    slope = grad.gather(-1, coords) / de[:, None]                            # d_{c_a} p / d_e p
    dZ = onehot(coords) - slope[..., None] * onehot(elim)[:, None, :]
    return Z, dZ, de


def fs_hermitian(Z: torch.Tensor, dZ: torch.Tensor) -> torch.Tensor:
    """h_{ab} = d_a dbar_b log|Z|^2 = <dZ_a, dZ_b>/|Z|^2 - <dZ_a, Z><Z, dZ_b>/|Z|^4, (batch, 3, 3).

    <u, v> = sum_i u_i conj(v_i); Z (batch, N) holomorphic in w, dZ (batch, 3, N) its w-derivatives.
    """
    n2 = Z.abs().pow(2).sum(-1)[:, None, None]
    G = dZ @ dZ.conj().transpose(-1, -2)
    A = (dZ @ Z.conj()[..., None])[..., 0]
    return G / n2 - A[:, :, None] * A.conj()[:, None, :] / n2 ** 2


def projection_ratios(Z: torch.Tensor, dZ: torch.Tensor) -> torch.Tensor:
    """r_j = (pi_j^* omega_{CP^3})^3 / omega_Q^3 = det h^(j) / det h for the 5 projections, (batch, 5).

    pi_j drops z_j; h^(j) is fs_hermitian with coordinate j removed (basis independent ratio).
    """
    det = torch.linalg.det(fs_hermitian(Z, dZ)).real
    keep = 1 - torch.eye(N_HOMOG, dtype=Z.dtype, device=Z.device)                # (5, 5)
    Zj = Z[:, None, :] * keep                                                   # (batch, 5, 5)
    dZj = dZ[:, None, :, :] * keep[None, :, None, :]                            # (batch, 5, 3, 5)
    b = Z.shape[0]
    hj = fs_hermitian(Zj.reshape(b * N_HOMOG, N_HOMOG), dZj.reshape(b * N_HOMOG, DIM_C, N_HOMOG))
    return torch.linalg.det(hj).real.reshape(b, N_HOMOG) / det[:, None]


def omega_ratio(z: torch.Tensor, scale=None, elim=None) -> torch.Tensor:
    """|Omega|^2 ratio r^2 = ((i/8) Omega ^ Omegabar) / (omega^3/3!) = |1/(dp/dz_e)|^2 / det h, (batch,).

    A function on Q (the residue is patch independent up to sign); patch per point by default.
    """
    check_on_quintic(z)
    if scale is None or elim is None:
        scale, elim = choose_patch(z)
    Z, dZ, de = affine_frame(z, scale, elim)
    return (1 / de.abs().pow(2)) / torch.linalg.det(fs_hermitian(Z, dZ)).real


# ---------------------------------------------------------------- sampling
@dataclass(frozen=True)
class QuinticSample:
    """Points of Q with Monte Carlo weights: sum_n weights[n] f(z_n) estimates int_Q f omega^3/3!.

    z (N, 5) complex, unit norm; weights (N,) float; group (N,) long: points with equal group
    come from one random draw (one line, or one projection), the independent unit for errors.
    """
    z: torch.Tensor
    weights: torch.Tensor
    group: torch.Tensor
    method: str

    def integral(self, values: torch.Tensor | None = None) -> tuple[float, float]:
        """(estimate, standard error) of int_Q f omega^3/3! from values f(z_n) (None: f = 1)."""
        f = torch.ones_like(self.weights) if values is None else values.to(self.weights.dtype)
        ng = int(self.group.max()) + 1
        per = torch.zeros(ng, dtype=torch.float64, device=f.device).index_add_(
            0, self.group, (f * self.weights).double())
        return float(per.sum()), float(per.std() * math.sqrt(ng)) if ng > 1 else float("nan")


def _check_n(n) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of points n must be a positive integer, got {n!r}")
    return n


def _gauss_c(gen, *shape, dtype=torch.float64):
    return torch.complex(torch.randn(*shape, generator=gen, dtype=dtype, device="cpu"),
                         torch.randn(*shape, generator=gen, dtype=dtype, device="cpu"))


def line_roots(p: torch.Tensor, q: torch.Tensor, newton: int = 2) -> torch.Tensor:
    """The 5 roots t of sum_i (p_i + t q_i)^5 for lines p, q (m, 5) complex -> (m, 5).

    Coefficients c_k = C(5,k) sum_i p_i^(5-k) q_i^k; eigenvalues of the companion matrix, then
    Newton steps on the polynomial to round-off.
    """
    m = p.shape[0]
    c = torch.stack([math.comb(DEGREE, k) * (p ** (DEGREE - k) * q ** k).sum(-1)
                     for k in range(DEGREE + 1)], -1)
    comp = torch.zeros(m, DEGREE, DEGREE, dtype=p.dtype, device=p.device)
    comp[:, 1:, :-1] = torch.eye(DEGREE - 1, dtype=p.dtype, device=p.device)
    comp[:, :, -1] = -c[:, :DEGREE] / c[:, DEGREE:]
    t = torch.linalg.eigvals(comp)
    for _ in range(newton):
        z = p[:, None, :] + t[..., None] * q[:, None, :]
        t = t - polynomial(z) / (gradient(z) * q[:, None, :]).sum(-1)
    return t


def sample_lines(n: int, seed: int = 0, dtype=torch.float64) -> QuinticSample:
    """n points of Q from random lines (cymetric's method), FS distributed, weights vol(Q)/n.

    ceil(n/5) lines, all 5 roots each, shuffled, the first n kept (selection independent of values).
    """
    n = _check_n(n)
    gen = torch.Generator().manual_seed(int(seed))
    m = -(-n // DEGREE)
    p, q = _gauss_c(gen, m, N_HOMOG, dtype=dtype), _gauss_c(gen, m, N_HOMOG, dtype=dtype)
    t = line_roots(p, q)
    z = (p[:, None, :] + t[..., None] * q[:, None, :]).reshape(-1, N_HOMOG)
    z = z / z.abs().pow(2).sum(-1, keepdim=True).sqrt()
    group = torch.arange(m, device="cpu").repeat_interleave(DEGREE)
    keep = torch.randperm(m * DEGREE, generator=gen, device="cpu")[:n]
    w = torch.full((n,), fs_volume_quintic() / n, dtype=dtype, device="cpu")
    return QuinticSample(z=z[keep], weights=w, group=group[keep], method="lines")


def sample_projections(n: int, seed: int = 0, dtype=torch.float64) -> QuinticSample:
    """5 n points of Q from n random projections (module docstring) with explicit weights 1/(n rho)."""
    n = _check_n(n)
    gen = torch.Generator().manual_seed(int(seed))
    j = torch.randint(0, N_HOMOG, (n,), generator=gen, device="cpu")
    u = _gauss_c(gen, n, N_HOMOG, dtype=dtype)
    u = u * (1 - torch.nn.functional.one_hot(j, N_HOMOG)).to(u.dtype)      # z_j to be solved
    s = -polynomial(u)
    root = torch.polar(s.abs() ** (1 / DEGREE), torch.angle(s) / DEGREE)
    k = torch.arange(DEGREE, dtype=dtype, device="cpu")
    roots = root[:, None] * torch.polar(torch.ones_like(k), 2 * math.pi * k / DEGREE)   # (n, 5)
    z = u[:, None, :] + roots[..., None] * torch.nn.functional.one_hot(j, N_HOMOG).to(u.dtype)[:, None, :]
    z = z.reshape(-1, N_HOMOG)
    z = z / z.abs().pow(2).sum(-1, keepdim=True).sqrt()
    scale, elim = choose_patch(z)
    Z, dZ, _ = affine_frame(z, scale, elim)
    rho = projection_ratios(Z, dZ).sum(-1) / (N_HOMOG * fs_volume_projective(DIM_C))
    return QuinticSample(z=z, weights=1 / (n * rho), group=torch.arange(n, device="cpu").repeat_interleave(DEGREE),
                         method="projections")


def sigma_measure(sample: QuinticSample, volume_ratio: torch.Tensor | None = None) -> float:
    """cymetric's sigma of a Kahler metric omega on Q: how far omega^3 is from a multiple of Omega ^ Omegabar.

    sigma = (1/V_Omega) int_Q |1 - (omega^3/V_K) / ((i/8) Omega ^ Omegabar / V_Omega)| (i/8) Omega ^ Omegabar
          = (1/V_Omega) int_Q |r^2 - v V_Omega/V_K| omega_FS^3/3!,
    V_K = int v omega_FS^3/3!, V_Omega = int r^2 omega_FS^3/3!, with r^2 the Fubini-Study ratio of
    `omega_ratio` and v = omega^3/omega_FS^3 the volume_ratio at the sample points, (N,) positive
    (None: v = 1, the Fubini-Study metric itself). (Larfors, Lukas, Ruehle, Schneider,
    arXiv:2111.01436, eq. (2.20) up to notation); 0 exactly for the Ricci-flat metric in the Kahler
    class. Monte Carlo over the sample's weights (FS measure).
    """
    r2 = omega_ratio(sample.z)
    if volume_ratio is None:
        v_k, _ = sample.integral()
        v_o, _ = sample.integral(r2)
        return sample.integral((r2 - v_o / v_k).abs())[0] / v_o
    v = torch.as_tensor(volume_ratio, device=r2.device)
    if v.shape != r2.shape or torch.is_complex(v):
        raise ValueError(f"volume_ratio must be real of shape {tuple(r2.shape)} (one value per sample point), "
                         f"got {v.dtype} {tuple(v.shape)}")
    bad = ~(torch.isfinite(v) & (v > 0))
    if bool(bad.any()):
        raise ValueError(f"volume_ratio omega^3/omega_FS^3 is not finite and positive at {int(bad.sum())} of "
                         f"{len(v)} points: the metric is degenerate or indefinite there")
    v = v.to(r2.dtype)
    v_k, _ = sample.integral(v)
    v_o, _ = sample.integral(r2)
    return sample.integral((r2 - v * (v_o / v_k)).abs())[0] / v_o

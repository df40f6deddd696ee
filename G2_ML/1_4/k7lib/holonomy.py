"""The holonomy test of a G2 structure: curvature operators on 2-forms, split by phi into
Lambda^2_7 + Lambda^2_14 (= g2), and the span of their images over points (Ambrose-Singer).

At a point, in a g-orthonormal frame (e_a), the curvature operator is the symmetric 21 x 21 matrix
R[(ab), (cd)] = R_abcd = R(e_a, e_b, e_c, e_d) on the orthonormal 2-forms e^ab (a < b). For the
3-form phi in that frame, Lambda^2_7 = {iota_v phi} with <iota_a phi, iota_b phi> = 3 delta_ab, so
P7 = Q Q^T, Q = (iota_a phi) / sqrt 3 (21 x 7), and g2 = Lambda^2_14 = ker P7 (Bryant, "Some remarks on
G2-structures", 2005, §2.6). If phi is torsion-free it is parallel, the holonomy lies in G2 and R maps
Lambda^2 into g2 and kills Lambda^2_7: the part of R outside g2 x g2 vanishes (pointwise test).

The holonomy algebra is spanned by the curvature operators transported to one point along paths
(Ambrose-Singer): here the straight segments from a base point x0 to the sample points, with the
frame parallel-transported along each segment (RK4 on de_a/dt = -Gamma(xdot, e_a)). Starting from a
phi-adapted frame at x0 (phi(e_a, e_b, e_c) = phi0_abc), every transported R lies in the standard g2
for a torsion-free phi; the rank of the span of their images (the columns of all R's, weighted by
the volume) is 14 for full holonomy G2, 3 for SU(2) (Gibbons-Hawking x R^3), 0 for a flat metric.
Singular values are reported beside the rank, because noise makes a bare rank meaningless.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import forms as F
from . import g2
from .batches import chunks
from .constants import DIM
from .curvature import christoffel, curvature
from .derivatives import value_and_jacobian
from .inputs import check_points

PAIRS = F.combos(2)


def cross_product(phi: torch.Tensor, ginv: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(u x v)^k = g^{kl} phi_lij u^i v^j: packed phi (batch, 35), ginv (batch, 7, 7), u, v (batch, 7)."""
    return torch.einsum("bkl,blij,bi,bj->bk", ginv, F.unpack(phi, 3), u, v)


def _inner(g, u, v):
    return torch.einsum("bi,bij,bj->b", u, g, v)


def orthonormalise(frame: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt of the columns of frame (batch, 7, 7) in the metric g (batch, 7, 7), in column order."""
    cols = []
    for a in range(DIM):
        v = frame[..., a]
        for e in cols:
            v = v - _inner(g, v, e)[:, None] * e
        cols.append(v / _inner(g, v, v).sqrt()[:, None])
    return torch.stack(cols, -1)


def adapted_frame(phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A g-orthonormal frame (batch, 7, 7) (columns e_0..e_6) with phi(e_a, e_b, e_c) = phi0_abc.

    G2 acts simply transitively on such frames, which are fixed by a special triple (e_0, e_1, e_3):
    e_0, e_1 orthonormal, e_2 = e_0 x e_1, e_3 a unit vector orthogonal to the three, and then
    e_4 = e_0 x e_3, e_5 = e_1 x e_3, e_6 = e_3 x e_2 (the products that phi0 of conventions §3 prescribes).
    e_0, e_1 come from the coordinate vectors d_0, d_1; e_3 from the coordinate vector with the largest
    part orthogonal to e_0, e_1, e_2. phi (batch, 35) must be positive with g = g(phi).
    """
    ginv = torch.linalg.inv(g)
    eye = torch.eye(DIM, dtype=phi.dtype, device=phi.device).expand(phi.shape[0], DIM, DIM)
    two = orthonormalise(eye, g)[..., :2]
    e0, e1 = two[..., 0], two[..., 1]
    e2 = cross_product(phi, ginv, e0, e1)
    rest = eye
    for e in (e0, e1, e2):
        rest = rest - e[:, :, None] * torch.einsum("bi,bij,bjk->bk", e, g, rest)[:, None, :]
    best = torch.einsum("bik,bij,bjk->bk", rest, g, rest).argmax(-1)
    e3 = rest[torch.arange(phi.shape[0]), :, best]
    e3 = e3 / _inner(g, e3, e3).sqrt()[:, None]
    e4, e5, e6 = (cross_product(phi, ginv, e0, e3), cross_product(phi, ginv, e1, e3),
                  cross_product(phi, ginv, e3, e2))
    return torch.stack([e0, e1, e2, e3, e4, e5, e6], -1)


def frame_components(phi: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """phi(e_a, e_b, e_c) packed (batch, 35) for packed phi (batch, 35) and frame columns (batch, 7, 7)."""
    return F.transform_packed(phi, 3, frame.transpose(-1, -2))


def curvature_operator(riemann: torch.Tensor, g: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """R[(ab), (cd)] = R_abcd in the frame: riemann (batch, 7, 7, 7, 7) = R^r_{sij} (curvature.Curvature),
    g (batch, 7, 7), frame columns (batch, 7, 7) -> (batch, 21, 21) on the pairs a < b."""
    low = torch.einsum("zqr,zrsij->zqsij", g, riemann)
    R = torch.einsum("zqsij,zqa,zsb,zic,zjd->zabcd", low, frame, frame, frame, frame)
    p = torch.tensor(PAIRS, device=R.device)
    return R[:, p[:, 0], p[:, 1]][:, :, p[:, 0], p[:, 1]]


def lambda7_projector(phi_frame: torch.Tensor) -> torch.Tensor:
    """P7 = Q Q^T, Q = (iota_a phi) / sqrt 3, for phi's components in an orthonormal frame: (batch, 35) -> (batch, 21, 21)."""
    Q = F.interior_basis_packed(phi_frame, 3).transpose(-1, -2) / math.sqrt(3)
    return Q @ Q.transpose(-1, -2)


def parallel_transport(metric_field, x0: torch.Tensor, x: torch.Tensor, frame0: torch.Tensor,
                       n_steps: int = 16) -> torch.Tensor:
    """Frames (batch, 7, 7) at x (batch, 7), transported from frame0 (batch, 7, 7) at x0 (batch, 7)
    along x0 + t (x - x0), t in [0, 1]: de/dt = -Gamma(x - x0, e), classical RK4 with n_steps steps
    (error O(n_steps^-4)); Gamma from g and its first derivatives (forward-mode jvps)."""
    v = x - x0

    def rate(t, frame):
        g, dg = value_and_jacobian(metric_field, x0 + t * v)
        gam = christoffel(torch.linalg.inv(g), dg)
        return -torch.einsum("bkij,bi,bja->bka", gam, v, frame)

    frame, h = frame0, 1.0 / n_steps
    for s in range(n_steps):
        t = s * h
        k1 = rate(t, frame)
        k2 = rate(t + h / 2, frame + h / 2 * k1)
        k3 = rate(t + h / 2, frame + h / 2 * k2)
        k4 = rate(t + h, frame + h * k3)
        frame = frame + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return frame


@dataclass(frozen=True)
class HolonomyTest:
    """Result of `holonomy_test`.

    outside_g2: sqrt(sum_p w_p |R_p - P14 R_p P14|^2 / sum_p w_p |R_p|^2), the pointwise split by phi itself.
    singular_values (14,): of the span's g2 part, over the largest singular value of the whole span.
    outside_singular_values (7,): of its Lambda^2_7 part (the transported frame's noise floor), same scale.
    rank: singular values above rtol (0 when the curvature itself is below atol); gap: the rank-th
    singular value over the next one or, at rank 14, over the largest outside one.
    """
    outside_g2: float
    singular_values: torch.Tensor
    outside_singular_values: torch.Tensor
    rank: int
    gap: float
    curvature_norm: float          # sqrt(sum_p w_p |R_p|^2 / sum_p w_p)
    n_points: int
    n_steps: int
    rtol: float

    def to_dict(self) -> dict:
        return {"outside_g2": self.outside_g2, "singular_values": self.singular_values.tolist(),
                "outside_singular_values": self.outside_singular_values.tolist(), "rank": self.rank,
                "gap": self.gap, "curvature_norm": self.curvature_norm, "n_points": self.n_points,
                "n_steps": self.n_steps, "rtol": self.rtol}


def transported_operators(phi_field, x: torch.Tensor, base: torch.Tensor, n_steps: int = 16, chunk: int = 256):
    """(R (batch, 21, 21) in the transported frames, the pointwise outside-g2 part of each, and vol weights
    sqrt(det g) (batch,)) for a 3-form field phi_field (batch, 7) -> (batch, 35), points x, base point (7,)."""
    metric_field = g2.metric_field_from_phi(phi_field)
    with torch.no_grad():
        p0 = phi_field(base[None])
        frame0 = adapted_frame(p0, g2.metric_data_packed(p0).g)
    out = []
    for sl in chunks(x.shape[0], chunk):
        xs = x[sl]
        with torch.no_grad():
            frame = parallel_transport(metric_field, base[None].expand_as(xs), xs, frame0.expand(len(xs), DIM, DIM),
                                       n_steps)
            c = curvature(metric_field, xs, chunk=chunk)
            frame = orthonormalise(frame, c.g)
            R = curvature_operator(c.riemann, c.g, frame)
            P14 = torch.eye(21, dtype=R.dtype, device=R.device) - lambda7_projector(frame_components(phi_field(xs), frame))
            out.append((R, R - P14 @ R @ P14, F.det(c.g).sqrt()))
    return tuple(torch.cat([o[i] for o in out]) for i in range(3))


def holonomy_test(phi_field, x: torch.Tensor, base, n_steps: int = 16, rtol: float = 1e-3, atol: float = 1e-8,
                  chunk: int = 256) -> HolonomyTest:
    """The pointwise split and the Ambrose-Singer span (module docstring) at points x (batch, 7), base (7,).

    Points are weighted by the volume density sqrt(det g) (a Monte Carlo estimate of the integral over
    the region when x is uniform or Sobol there). n_steps: RK4 steps per segment. A span whose norm is
    below atol (curvature at round-off, e.g. flat) has rank 0.
    """
    check_points(x)
    base = torch.as_tensor(base, dtype=x.dtype, device=x.device).reshape(DIM)
    R, outside, w = transported_operators(phi_field, x, base, n_steps, chunk)
    norm2 = (R ** 2).sum((-1, -2))
    out_ratio = float(((outside ** 2).sum((-1, -2)) * w).sum() / (norm2 * w).sum().clamp_min(1e-300)) ** 0.5
    M = (R * w.sqrt()[:, None, None]).permute(1, 0, 2).reshape(21, -1)
    phi0 = g2.phi0_packed(x.dtype, x.device)[None]
    P7 = lambda7_projector(phi0)[0]
    s_all = torch.linalg.svdvals(M)
    scale = float(s_all[0]) if len(s_all) else 0.0
    inside = torch.linalg.svdvals(M - P7 @ M)[:14] / max(scale, 1e-300)
    floor = torch.linalg.svdvals(P7 @ M)[:7] / max(scale, 1e-300)
    mean_norm = float((norm2 * w).sum() / w.sum()) ** 0.5
    rank = 0 if mean_norm <= atol else int((inside > rtol).sum())
    following = torch.cat([inside, floor.max().reshape(1)])
    gap = float(inside[rank - 1] / following[rank].clamp_min(1e-300)) if rank else math.nan
    return HolonomyTest(outside_g2=out_ratio if mean_norm > atol else 0.0, singular_values=inside,
                        outside_singular_values=floor, rank=rank, gap=gap, curvature_norm=mean_norm,
                        n_points=x.shape[0], n_steps=n_steps, rtol=rtol)

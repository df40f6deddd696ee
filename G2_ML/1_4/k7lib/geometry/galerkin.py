"""The numerical core of the Hodge projection: a Galerkin least-squares problem on a tensor rule
(Gauss-Legendre nodes in lambda times a lattice rule on the fibre T^6), assembled by sum factorisation.

Unknowns. alpha = sum_{n,m,J} c_{nmJ} P_n(lambda/L) F_m(y) dx^J: Legendre polynomials n = 0..p times the
fibre modes F_m of a `FibreModes` (m = 0 the constant, then cos and sin of 2 pi k.y for each wave vector
k) times the constant (k-1)-forms dx^J. Unknown u = (n, m, J), row-major. Its exact k-form is
    d(s dx^J) = sum_i d_i s  dx^i ^ dx^J,   d_0 s = P'_n(t) F_m(y) / L,   d_a s = P_n(t) d_a F_m(y).

Normal equations. With Q_{(iJ),(i'J')}(x) = <dx^i ^ dx^J, dx^i' ^ dx^J'>_g sqrt(det g) (signed gathers of
Lambda^k(g^{-1}) sqrt(det g)), the matrix M_{uv} = int <d beta_u, d beta_v>_g vol_g factorises on a tensor
rule x = (lambda_j, y_r) with weights w_j / n_y:
    M = sum_j w_j sum_{A,B in {d, v}} (Lambda^A(lambda_j) Lambda^B(lambda_j)^T) (x) Z^{AB}_j,
    Z^{dd}_j[(mJ),(m'J')] = (1/n_y) sum_r F_m F_m' Q_{(0J),(0J')},
    Z^{dv}_j = (1/n_y) sum_r sum_a F_m d_aF_m' Q_{(0J),(aJ')},   Z^{vv}_j = (1/n_y) sum_r sum_{a,b} d_aF_m d_bF_m' Q_{(aJ),(bJ')},
where Lambda^d = P'(t)/L and Lambda^v = P(t). The fibre sums cost n_y (n_F nJ)^2 per node instead of
n_y ((p+1) n_F nJ)^2 per point for the direct sum, and only modes that depend on y_a enter the a-terms.
The right-hand sides b_{u,w} = int <d beta_u, w>_g vol_g factorise the same way.

Solve. M is positive semi-definite with an exact kernel (closed combinations of the beta's). It is
Jacobi scaled, shifted by RIDGE times the identity and Cholesky factored; the kernel components of c
then stay at round-off and d alpha is unaffected (they are closed).

Evaluation. The Gram matrices of the residuals r_w = w - d alpha_w are summed on a second, finer rule
(`evaluate`): a Gram matrix evaluated with an independent exact-enough rule is wrong only at second order
in the solution's error (Galerkin orthogonality), while one read off the normal equations carries the
first-order quadrature error of the rule it was solved on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .. import forms as F
from .. import g2

RIDGE = 1e-11        # relative shift of the Jacobi-scaled normal matrix (its kernel: closed beta's)


# ---------------------------------------------------------------- fibre modes and Legendre factors
@dataclass(frozen=True)
class FibreModes:
    """The constant and cos / sin(2 pi k.y) for each wave vector k (tuple of 6 ints, y = x^1..x^6)."""
    vectors: tuple

    @property
    def n(self) -> int:
        return 1 + 2 * len(self.vectors)

    @property
    def table(self) -> torch.Tensor:
        """(n, 7) float64: column 0 is 0 for cos and 1 for sin, columns 1..6 the wave vector."""
        rows = [[0] * 7] + [[kind, *k] for k in self.vectors for kind in (0, 1)]
        return torch.tensor(rows, dtype=torch.float64, device="cpu")

    @property
    def support(self) -> tuple:
        """support[a] (long tensor): the modes that depend on y_a (a = 0..5)."""
        m = self.table[:, 1:]
        return tuple(torch.nonzero(m[:, a] != 0).flatten() for a in range(6))

    def __call__(self, y: torch.Tensor):
        """(F (n_y, n), dF (n_y, n, 6)) at fibre points y (n_y, 6)."""
        t = self.table.to(y)
        m, is_sin = t[:, 1:], t[:, 0].bool()
        theta = 2 * math.pi * y @ m.T
        c, s = torch.cos(theta), torch.sin(theta)
        return torch.where(is_sin, s, c), torch.where(is_sin, c, -s)[:, :, None] * (2 * math.pi * m)


def legendre(t: torch.Tensor, p: int):
    """(P (batch, p+1), P' (batch, p+1)) of the Legendre polynomials at t (batch,), by
    (n+1) P_{n+1} = (2n+1) t P_n - n P_{n-1} and P'_{n+1} = P'_{n-1} + (2n+1) P_n."""
    P, dP = [torch.ones_like(t), t], [torch.zeros_like(t), torch.ones_like(t)]
    for n in range(1, p):
        P.append(((2 * n + 1) * t * P[n] - n * P[n - 1]) / (n + 1))
        dP.append(dP[n - 1] + (2 * n + 1) * P[n])
    return torch.stack(P[: p + 1], -1), torch.stack(dP[: p + 1], -1)


# ---------------------------------------------------------------- index tables
@lru_cache(maxsize=None)
def exact_table(k: int):
    """Packed index (7, C(7,k-1)) of dx^i ^ dx^J in the k-forms (C(7,k), a zero slot, when i is in J) and
    its sign: d(s dx^J) = sum_i d_i s dx^i ^ dx^J."""
    ck = F.combo_index(k)
    nJ = F.n_components(k - 1)
    idx = torch.full((F.DIM, nJ), F.n_components(k), dtype=torch.long, device="cpu")
    sgn = torch.zeros(F.DIM, nJ, dtype=torch.float64, device="cpu")
    for i in range(F.DIM):
        for j, J in enumerate(F.combos(k - 1)):
            if i not in J:
                idx[i, j] = ck[tuple(sorted((i,) + J))]
                sgn[i, j] = F.perm_sign((i,) + J)
    return idx, sgn


@lru_cache(maxsize=None)
def block_table(k: int):
    """Flat indices into the zero-padded (C+1, C+1) matrix and signs of the blocks Q_{(iJ),(i'J')}, i <= i',
    concatenated, and where[(i, i')] = block number."""
    idx, sgn = exact_table(k)
    C = F.n_components(k)
    flat, signs, where = [], [], {}
    for i in range(F.DIM):
        for ip in range(i, F.DIM):
            where[i, ip] = len(flat)
            flat.append((idx[i][:, None] * (C + 1) + idx[ip][None, :]).flatten())
            signs.append((sgn[i][:, None] * sgn[ip][None, :]).flatten())
    return torch.cat(flat), torch.cat(signs), where


def weighted_metric(phi: torch.Tensor, weights: torch.Tensor, degrees) -> dict:
    """{k: Lambda^k(g^{-1}) sqrt(det g) w (batch, C, C)} for packed phi (batch, 35): sum_x a^T G_k b w
    approximates int <a, b>_g vol_g. A non-positive phi raises ValueError."""
    m = g2.metric_data_packed(phi.to(torch.float64), check=True)
    vol = (weights * m.det.sqrt())[:, None, None]
    return {k: F.exterior_power(m.ginv, k) * vol for k in degrees}


# ---------------------------------------------------------------- assembly (one lambda node at a time)
def _blocks(k: int, Gk: torch.Tensor):
    bi, bs, where = block_table(k)
    nJ = F.n_components(k - 1)
    Gp = torch.nn.functional.pad(Gk, (0, 1, 0, 1)).reshape(Gk.shape[0], -1)
    Q = (Gp.index_select(1, bi.to(Gk.device)) * bs.to(Gk)).view(Gk.shape[0], -1, nJ * nJ)
    return lambda i, ip: Q[:, where[i, ip]]


def _khatri_rao(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(n_y, a b) rows A_r (x) B_r."""
    return (A[:, :, None] * B[:, None, :]).reshape(A.shape[0], -1)


def fibre_sums(k: int, Gk: torch.Tensor, modes: FibreModes, Fv: torch.Tensor, dF: torch.Tensor):
    """(Zdd, Zdv, Zvv), each (n_F nJ, n_F nJ), at one lambda node: Gk (n_y, C, C) weighted metric,
    Fv (n_y, n_F), dF (n_y, n_F, 6) the fibre modes (module docstring)."""
    nJ, nF = F.n_components(k - 1), modes.n
    Q = _blocks(k, Gk)
    Zdd = (_khatri_rao(Fv, Fv).T @ Q(0, 0)).view(nF, nF, nJ, nJ)
    Zdv = Gk.new_zeros(nF, nF, nJ, nJ)
    Zvv = Gk.new_zeros(nF, nF, nJ, nJ)
    sup = [s.to(Gk.device) for s in modes.support]
    for a in range(6):
        if not len(sup[a]):
            continue
        Da = dF[:, sup[a], a]
        Zdv[:, sup[a]] += (_khatri_rao(Fv, Da).T @ Q(0, a + 1)).view(nF, len(sup[a]), nJ, nJ)
        for b in range(a, 6):
            if not len(sup[b]):
                continue
            blk = (_khatri_rao(Da, dF[:, sup[b], b]).T @ Q(a + 1, b + 1)).view(len(sup[a]), len(sup[b]), nJ, nJ)
            Zvv[sup[a][:, None], sup[b][None, :]] += blk
            if b != a:                                       # the (b, a) term is the transpose
                Zvv[sup[b][:, None], sup[a][None, :]] += blk.permute(1, 0, 3, 2)
    flat = lambda Z: Z.permute(0, 2, 1, 3).reshape(nF * nJ, nF * nJ)
    return flat(Zdd), flat(Zdv), flat(Zvv)


def rhs_sums(k: int, Gk: torch.Tensor, V: torch.Tensor, modes: FibreModes, Fv: torch.Tensor, dF: torch.Tensor):
    """(Bd, Bv), each (n_F, nJ, n_v), at one node: Bd = sum_r F_m <dx^0 ^ dx^J, w_v>, Bv = sum_r sum_a
    d_aF_m <dx^a ^ dx^J, w_v> (weights in Gk) for the packed k-forms V (n_y, n_v, C)."""
    idx, sgn = exact_table(k)
    nJ, ny = idx.shape[1], Gk.shape[0]
    GV = torch.matmul(Gk, V.transpose(1, 2))                                   # (n_y, C, n_v)
    P = torch.nn.functional.pad(GV, (0, 0, 0, 1))[:, idx.flatten().to(Gk.device)]
    P = (P * sgn.flatten().to(Gk)[:, None]).view(ny, F.DIM, nJ, -1)            # <dx^i ^ dx^J, w_v>
    Bd = (Fv.T @ P[:, 0].reshape(ny, -1)).view(modes.n, nJ, -1)
    Bv = torch.zeros_like(Bd)
    for a, S in enumerate(modes.support):
        if len(S):
            S = S.to(Gk.device)
            Bv[S] += (dF[:, S, a].T @ P[:, a + 1].reshape(ny, -1)).view(len(S), nJ, -1)
    return Bd, Bv


@dataclass
class NormalEquations:
    """Running sums of the normal equations in two groups of unknowns: the constant fibre mode with
    Legendre degrees 0..p (group 0, (p+1) nJ unknowns) and the other fibre modes with degrees 0..pF
    (group F, (pF+1)(n_F-1) nJ unknowns; pF <= p: the fibre parts of alpha are as small as the metric's
    fibre variation, so they need fewer Legendre degrees). Blocks are kept as ((n n'), (D D')) matrices:
    M00, M0F, MFF; right-hand sides B0 (p+1, nJ, n_v), BF (pF+1, n_F-1, nJ, n_v); norms2 = <w_v, w_v>."""
    p: int
    pF: int
    nJ: int
    M: dict
    B0: torch.Tensor
    BF: torch.Tensor
    norms2: torch.Tensor

    @classmethod
    def zeros(cls, k: int, p: int, pF: int, modes: FibreModes, n_v: int, device=None):
        nJ = F.n_components(k - 1)
        DF = (modes.n - 1) * nJ
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)
        M = {"00": z((p + 1) ** 2, nJ * nJ), "0F": z((p + 1) * (pF + 1), nJ * DF), "FF": z((pF + 1) ** 2, DF * DF)}
        return cls(p, pF, nJ, M, z(p + 1, nJ, n_v), z(pF + 1, modes.n - 1, nJ, n_v), z(n_v))

    def add_node(self, k, Gk, V, modes, Fv, dF, lam_d, lam_v) -> None:
        """Add one lambda node: lam_d = P'(t_j)/L, lam_v = P(t_j) (p+1,); weights are inside Gk."""
        Zdd, Zdv, Zvv = fibre_sums(k, Gk, modes, Fv, dF)
        Zvd = Zdv.T
        nJ, q = self.nJ, self.pF + 1
        groups = {"0": slice(0, nJ), "F": slice(nJ, None)}
        lam = {"0": (lam_d, lam_v), "F": (lam_d[:q], lam_v[:q])}
        for key, Mb in self.M.items():
            r, c = groups[key[0]], groups[key[1]]
            (ad, av), (bd, bv) = lam[key[0]], lam[key[1]]
            K = torch.stack([torch.outer(ad, bd), torch.outer(ad, bv), torch.outer(av, bd), torch.outer(av, bv)])
            Z = torch.stack([Zdd[r, c], Zdv[r, c], Zvd[r, c], Zvv[r, c]])
            Mb += K.reshape(4, -1).T @ Z.reshape(4, -1)
        Bd, Bv = rhs_sums(k, Gk, V, modes, Fv, dF)
        self.B0 += lam_d[:, None, None] * Bd[0] + lam_v[:, None, None] * Bv[0]
        self.BF += lam_d[:q, None, None, None] * Bd[1:] + lam_v[:q, None, None, None] * Bv[1:]
        self.norms2 += torch.einsum("xvc,xcd,xvd->v", V, Gk, V)

    def matrices(self):
        """(M (n_u, n_u), B (n_u, n_v)): unknowns (n, J) of group 0, then (n, m, J) of group F, row-major."""
        p1, q, nJ = self.p + 1, self.pF + 1, self.nJ
        DF = self.BF.shape[1] * nJ
        flat = lambda Mb, a, b, da, db: Mb.view(a, b, da, db).permute(0, 2, 1, 3).reshape(a * da, b * db)
        M00, M0F = flat(self.M["00"], p1, p1, nJ, nJ), flat(self.M["0F"], p1, q, nJ, DF)
        MFF = flat(self.M["FF"], q, q, DF, DF)
        M = torch.cat([torch.cat([M00, M0F], 1), torch.cat([M0F.T, MFF], 1)], 0)
        n_v = self.B0.shape[-1]
        return 0.5 * (M + M.T), torch.cat([self.B0.reshape(p1 * nJ, n_v), self.BF.reshape(q * DF, n_v)], 0)

    def full_coefficients(self, c: torch.Tensor, n_modes: int) -> torch.Tensor:
        """c (n_u, n_v) in the order of `matrices` -> (p+1, n_F, nJ, n_v), zero where n > pF for m >= 1."""
        p1, q, nJ = self.p + 1, self.pF + 1, self.nJ
        out = c.new_zeros(p1, n_modes, nJ, c.shape[1])
        out[:, 0] = c[: p1 * nJ].view(p1, nJ, -1)
        out[:q, 1:] = c[p1 * nJ:].view(q, n_modes - 1, nJ, c.shape[1])
        return out


def solve(M: torch.Tensor, B: torch.Tensor, ridge: float = RIDGE):
    """c (n_u, n_v) minimising the normal equations' quadratic form, and the number of live unknowns.

    Unknowns whose diagonal vanishes (d(s dx^J) = 0 identically) are dropped; the rest is Jacobi scaled,
    Mn = D^-1/2 M D^-1/2, shifted by ridge I and Cholesky factored (module docstring)."""
    d = torch.diagonal(M).clone()
    live = d > 1e-12 * float(d.max())
    r = d[live].rsqrt()
    A = r[:, None] * M[live][:, live] * r[None, :]
    A.diagonal().add_(ridge)
    chol, info = torch.linalg.cholesky_ex(A)
    if int(info):
        raise ValueError("the Hodge projection's normal matrix is not positive semi-definite to round-off "
                         "(a non-finite metric or a rule too coarse for the basis)")
    c = torch.zeros_like(B)
    c[live] = r[:, None] * torch.cholesky_solve(r[:, None] * B[live], chol)
    return c, int(live.sum())


# ---------------------------------------------------------------- evaluation
def exact_forms_at_node(k: int, c4: torch.Tensor, modes: FibreModes, Fv, dF, lam_d, lam_v) -> torch.Tensor:
    """d alpha_v at the fibre points of one node: c4 (p+1, n_F, nJ, n_v) -> packed (n_y, C, n_v)."""
    idx, sgn = exact_table(k)
    idx, sgn = idx.to(c4.device), sgn.to(c4)
    p1, nF, nJ, n_v = c4.shape
    Ad = (lam_d @ c4.reshape(p1, -1)).view(nF, nJ * n_v)           # sum_n P'_n(t_j)/L c_n
    Av = (lam_v @ c4.reshape(p1, -1)).view(nF, nJ, n_v)            # sum_n P_n(t_j) c_n
    ny = Fv.shape[0]
    out = c4.new_zeros(ny, F.n_components(k) + 1, n_v)
    out.index_add_(1, idx[0], (Fv @ Ad).view(ny, nJ, n_v) * sgn[0][None, :, None])
    for a, S in enumerate(modes.support):
        if len(S):
            S = S.to(c4.device)
            E = (dF[:, S, a] @ Av[S].reshape(len(S), -1)).view(ny, nJ, n_v)
            out.index_add_(1, idx[a + 1], E * sgn[a + 1][None, :, None])
    return out[:, :-1]


def residual_sums(Gk: torch.Tensor, R: torch.Tensor, n_classes: int):
    """(S (C, C), X (C, n_v - C)) = sums over one node of <r_I, r_J> and <r_I, r_a>: R (n_y, C, n_v) holds
    the residual forms, the first n_classes columns those of the constant forms dx^I."""
    GR = torch.matmul(Gk, R[:, :, :n_classes]).reshape(-1, n_classes)         # rows (point, component)
    S = R[:, :, :n_classes].reshape(-1, n_classes).T @ GR
    X = GR.T @ R[:, :, n_classes:].reshape(-1, R.shape[2] - n_classes)
    return S, X


def metric_of(phi: torch.Tensor) -> torch.Tensor:
    """g(phi) (batch, 7, 7) without the positivity check (weighted_metric has checked these points)."""
    return g2.metric_data_packed(phi.to(torch.float64), check=False).g

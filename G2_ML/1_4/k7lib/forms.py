"""Exterior algebra on R^7, batched, from precomputed index/sign tables.

Conventions (docs/conventions.md §3): a k-form is stored *packed*, as its C(7,k) components
omega_I for increasing multi-indices I in `itertools.combinations` order, or *dense*,
as a fully antisymmetric tensor omega_{i1..ik} with omega = (1/k!) omega_{i1..ik} dx^{i1..ik}.
Packed and dense components agree: omega_I = omega_{i1..ik} for I = (i1 < .. < ik).
eps^{0123456} = +1; <a,b>_g = (1/k!) a_{I} b^{I}; (*w)_J = (1/k!) sqrt(det g) w^{I} eps_{IJ}.

All functions are batched over leading dimensions. Dense forms are batch first:
shape (*batch, 7, ..., 7) with k trailing 7s. Functions that receive a metric g of shape
(*batch, 7, 7) read the form degree from the number of dimensions beyond the batch;
`wedge` infers degrees from trailing sizes and takes p, q where a batch size is itself 7.
"""
from __future__ import annotations

import math
from functools import lru_cache, wraps
from itertools import combinations, permutations

import torch

from .constants import DIM

_LETTERS = "abcdefg"


def n_components(k: int) -> int:
    """C(7, k), the number of packed components of a k-form."""
    check_degree(k)
    return math.comb(DIM, k)


def check_degree(k: int) -> None:
    if not isinstance(k, int) or not 0 <= k <= DIM:
        raise ValueError(f"form degree must be an integer in 0..7, got {k!r}")


def perm_sign(seq) -> int:
    """Sign of the permutation that sorts `seq` (distinct entries); 0 if entries repeat."""
    seq = list(seq)
    if len(set(seq)) < len(seq):
        return 0
    inv = sum(1 for i in range(len(seq)) for j in range(i + 1, len(seq)) if seq[i] > seq[j])
    return -1 if inv % 2 else 1


@lru_cache(maxsize=None)
def combos(k: int) -> tuple:
    """Increasing multi-indices of length k, in packed order."""
    return tuple(combinations(range(DIM), k))


@lru_cache(maxsize=None)
def combo_index(k: int) -> dict:
    return {I: n for n, I in enumerate(combos(k))}


# ---------------------------------------------------------------- tables (cached per device)
def table_cache(build):
    """lru_cache for the index/sign tables, each built with functorch's transforms switched off.

    A tensor created while jvp/vmap are active is a wrapper tied to that transform (torch 2.13), so a
    table first built inside, say, the nested jvps of curvature would be cached as a wrapper and fail
    in every later call ("escaped?"). Building under torch._C._DisableFuncTorch makes it a plain tensor
    whichever call comes first.
    """
    cached = lru_cache(maxsize=None)(build)

    @wraps(build)
    def table(*args):
        with torch._C._DisableFuncTorch():
            return cached(*args)
    table.cache_clear = cached.cache_clear
    return table


def device_key(device) -> str:
    """The cache key of a device for the index tables: "cpu", "cuda:0", ..."""
    return str(torch.device(device)) if device is not None else "cpu"


@table_cache
def _pack_table(k: int, device: str):
    """Flat positions in a 7^k dense tensor of the increasing components."""
    flat = [sum(i * DIM ** (k - 1 - n) for n, i in enumerate(I)) for I in combos(k)]
    return torch.tensor(flat, dtype=torch.long, device=device)


@table_cache
def _unpack_matrix(k: int, device: str, dtype: torch.dtype):
    """(C(7,k), 7^k) matrix U with dense.flat = packed @ U (all signed permutations)."""
    U = torch.zeros(n_components(k), DIM**k, dtype=dtype, device="cpu")
    for n, I in enumerate(combos(k)):
        for p in permutations(range(k)):
            J = [I[q] for q in p]
            U[n, sum(i * DIM ** (k - 1 - m) for m, i in enumerate(J))] = perm_sign(p)
    return U.to(device)


@table_cache
def _wedge_table(p: int, q: int, device: str, dtype: torch.dtype):
    """Gather indices (I, J) of the nonzero products and the signed scatter matrix to L."""
    Ii, Jj, rows = [], [], []
    out = combo_index(p + q)
    for a, I in enumerate(combos(p)):
        for b, J in enumerate(combos(q)):
            s = perm_sign(I + J)
            if s:
                Ii.append(a)
                Jj.append(b)
                rows.append((out[tuple(sorted(I + J))], s))
    S = torch.zeros(max(len(rows), 1), n_components(p + q), dtype=dtype, device="cpu")
    for r, (L, s) in enumerate(rows):
        S[r, L] = s
    return (torch.tensor(Ii, dtype=torch.long, device=device),
            torch.tensor(Jj, dtype=torch.long, device=device), S[: len(rows)].to(device))


@table_cache
def _interior_table(k: int, device: str, dtype: torch.dtype):
    """For (iota_{e_i} w)_J = sign * w_{L}, L = sorted(i, J): index (7, C(7,k-1)) and sign."""
    idx = torch.zeros(DIM, n_components(k - 1), dtype=torch.long, device="cpu")
    sgn = torch.zeros(DIM, n_components(k - 1), dtype=dtype, device="cpu")
    ck = combo_index(k)
    for i in range(DIM):
        for n, J in enumerate(combos(k - 1)):
            if i in J:
                continue
            L = tuple(sorted((i,) + J))
            idx[i, n] = ck[L]
            sgn[i, n] = perm_sign((i,) + J)
    return idx.to(device), sgn.to(device)


@table_cache
def _star0_table(k: int, device: str, dtype: torch.dtype):
    """Euclidean star: (*0 w)_{J} = eps(I, J) w_I with J the complement of I (packed order of J)."""
    ck = combo_index(k)
    idx = torch.zeros(n_components(DIM - k), dtype=torch.long, device="cpu")
    sgn = torch.zeros(n_components(DIM - k), dtype=dtype, device="cpu")
    for n, J in enumerate(combos(DIM - k)):
        I = tuple(i for i in range(DIM) if i not in J)
        idx[n] = ck[I]
        sgn[n] = perm_sign(I + J)
    return idx.to(device), sgn.to(device)


@table_cache
def _d_table(k: int, device: str, dtype: torch.dtype):
    """(d w)_L = sum_{m in L} sign(m, L\\m) d_m w_{L\\m}: flat index into (C(7,k), 7) and sign."""
    ck = combo_index(k)
    idx = torch.zeros(n_components(k + 1), k + 1, dtype=torch.long, device="cpu")
    sgn = torch.zeros(n_components(k + 1), k + 1, dtype=dtype, device="cpu")
    for n, L in enumerate(combos(k + 1)):
        for pos, m in enumerate(L):
            rest = L[:pos] + L[pos + 1:]
            idx[n, pos] = ck[rest] * DIM + m
            sgn[n, pos] = -1 if pos % 2 else 1
    return idx.to(device), sgn.to(device)


# ---------------------------------------------------------------- packed <-> dense
def pack(dense: torch.Tensor, k: int, check: bool = False) -> torch.Tensor:
    """Dense (*batch, 7^k) antisymmetric tensor -> packed (*batch, C(7,k))."""
    check_degree(k)
    if k and tuple(dense.shape[dense.ndim - k:]) != (DIM,) * k:
        raise ValueError(f"a dense {k}-form needs {k} trailing dimensions of size 7, got shape {tuple(dense.shape)}")
    if k == 0:
        return dense.unsqueeze(-1)
    batch = dense.shape[: dense.ndim - k]
    packed = dense.reshape(*batch, DIM**k)[..., _pack_table(k, device_key(dense.device))]
    if check:
        _check_antisymmetric(dense, packed, k)
    return packed


def unpack(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Packed (*batch, C(7,k)) -> dense antisymmetric (*batch, 7, ..., 7)."""
    check_degree(k)
    if packed.shape[-1] != n_components(k):
        raise ValueError(f"a packed {k}-form has {n_components(k)} components, got shape {tuple(packed.shape)}")
    if k == 0:
        return packed[..., 0]
    U = _unpack_matrix(k, device_key(packed.device), packed.dtype)
    return (packed @ U).reshape(*packed.shape[:-1], *(DIM,) * k)


def is_traced(t: torch.Tensor) -> bool:
    f = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(f(t)) if f is not None else False


def _check_antisymmetric(dense: torch.Tensor, packed: torch.Tensor, k: int) -> None:
    if k < 2 or is_traced(dense):
        return
    err = (unpack(packed, k) - dense).abs().amax()
    scale = dense.abs().amax().clamp_min(1.0)
    if err > 1e3 * torch.finfo(dense.dtype).eps * scale:
        raise ValueError(f"tensor is not antisymmetric: largest deviation {float(err):.3e} "
                         f"from its antisymmetric part (a dense {k}-form must be fully antisymmetric)")


def degree_in(t: torch.Tensor, g: torch.Tensor, name: str = "form") -> int:
    """Degree of a dense form whose batch dimensions are those of the metric g."""
    if g.ndim < 2 or g.shape[-2:] != (DIM, DIM):
        raise ValueError(f"metric must have shape (*batch, 7, 7), got {tuple(g.shape)}")
    k = t.ndim - (g.ndim - 2)
    if k < 0 or k > DIM or tuple(t.shape[: g.ndim - 2]) != tuple(g.shape[:-2]) \
            or any(s != DIM for s in t.shape[g.ndim - 2:]):
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not match the metric's batch "
                         f"shape {tuple(g.shape[:-2])} followed by 0..7 dimensions of size 7")
    return k


def _infer_pq(a: torch.Tensor, b: torch.Tensor):
    """Smallest common batch rank n with trailing dims all 7 and p + q <= 7."""
    for n in range(0, min(a.ndim, b.ndim) + 1):
        p, q = a.ndim - n, b.ndim - n
        if p + q <= DIM and all(s == DIM for s in a.shape[n:]) and all(s == DIM for s in b.shape[n:]):
            return p, q
    raise ValueError(f"cannot read form degrees from shapes {tuple(a.shape)} and {tuple(b.shape)} "
                     "(need equal batch shapes followed by dimensions of size 7, total degree <= 7)")


# ---------------------------------------------------------------- packed operations
def wedge_packed(a: torch.Tensor, b: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """(a ^ b)_L = sum_{I u J = L} sign(I, J) a_I b_J; packed (*batch, C(7,p)), (*batch, C(7,q))."""
    if p + q > DIM:
        return torch.zeros(*torch.broadcast_shapes(a.shape[:-1], b.shape[:-1]), 0, dtype=a.dtype, device=a.device)
    Ii, Jj, S = _wedge_table(p, q, device_key(a.device), a.dtype)
    return (a[..., Ii] * b[..., Jj]) @ S


def interior_basis_packed(w: torch.Tensor, k: int) -> torch.Tensor:
    """iota_{e_i} w for all seven basis vectors: packed k-form -> (*batch, 7, C(7,k-1))."""
    if k == 0:
        raise ValueError("interior product of a 0-form is not defined")
    idx, sgn = _interior_table(k, device_key(w.device), w.dtype)
    return w[..., idx] * sgn


def interior_packed(v: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """(iota_v w)_{J} = v^i w_{i J}; v (*batch, 7), w packed (*batch, C(7,k))."""
    return torch.einsum("...i,...ij->...j", v, interior_basis_packed(w, k))


def star0_packed(w: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean Hodge star (g = I, eps^{0..6} = +1): packed k-form -> packed (7-k)-form."""
    idx, sgn = _star0_table(k, device_key(w.device), w.dtype)
    return w[..., idx] * sgn


@table_cache
def _power_table(k: int, device: str):
    """For Lambda^k(M) e_L = (M e_{l0}) ^ Lambda^{k-1}(M) e_{L minus l0}: column and row gathers."""
    ck, cprev = combos(k), combo_index(k - 1)
    first = [L[0] for L in ck]
    rest = [cprev[L[1:]] for L in ck]
    m_idx = [[J[p] for p in range(k)] for J in ck]                       # the 1-form slot of (a ^ alpha)_J
    r_idx = [[cprev[J[:p] + J[p + 1:]] for p in range(k)] for J in ck]   # the remaining (k-1)-index
    t = lambda v: torch.tensor(v, dtype=torch.long, device=device)
    return t(first), t(rest), t(m_idx), t(r_idx)


def exterior_power(M: torch.Tensor, k: int) -> torch.Tensor:
    """Lambda^k(M) (*batch, C(7,k), C(7,k)) of M (*batch, 7, 7), so that
    Lambda^k(M) @ w = forms.transform_packed(w, k, M) for packed k-forms w.

    Built recursively from its definition Lambda^k(M)(e_{l0} ^ .. ^ e_{lk-1}) = M e_{l0} ^ .. ^ M e_{lk-1}:
    each column is the wedge (a ^ alpha)_J = sum_{m in J} sign(m, J\\m) a_m alpha_{J\\m} of a column
    of M with a column of Lambda^{k-1}(M) (packed tables, k products per entry; no dense tensors).
    Lambda^k is multiplicative: Lambda^k(AB) = Lambda^k(A) Lambda^k(B), Lambda^k(M^T) = Lambda^k(M)^T.
    """
    check_degree(k)
    if M.shape[-2:] != (DIM, DIM):
        raise ValueError(f"exterior_power needs matrices (*batch, 7, 7), got {tuple(M.shape)}")
    if k == 0:
        return M.new_ones(*M.shape[:-2], 1, 1)
    P = M
    for j in range(2, k + 1):
        first, rest, m_idx, r_idx = _power_table(j, device_key(M.device))
        a = M.index_select(-1, first)            # (*batch, 7, C_j): the new 1-form of each column
        alpha = P.index_select(-1, rest)         # (*batch, C_{j-1}, C_j)
        terms = [a.index_select(-2, m_idx[:, p]) * alpha.index_select(-2, r_idx[:, p]) for p in range(j)]
        P = terms[0]
        for p in range(1, j):                    # row gathers of whole rows: cheap, no 4-d temporaries
            P = P - terms[p] if p % 2 else P + terms[p]
    return P


def transform_packed(w: torch.Tensor, k: int, M: torch.Tensor, power: torch.Tensor | None = None) -> torch.Tensor:
    """Apply M (*batch, 7, 7) to every index: w'_{a1..ak} = M_{a1 i1} .. M_{ak ik} w_{i1..ik}.

    With M = g^{-1} this raises all indices (Lambda^k(g^{-1}) w); with M = g it lowers.
    Sequential contractions on the dense tensor, never minors (docs/conventions.md §7); when many forms share
    one M, pass power = exterior_power(M, k) and each form costs one matrix product.
    """
    if power is not None:
        return (power @ w.unsqueeze(-1)).squeeze(-1)
    if k == 0:
        return w
    t = unpack(w, k)
    for j in range(k):
        src = "".join(_LETTERS[:k])
        dst = src[:j] + "z" + src[j + 1:]
        t = torch.einsum(f"...z{src[j]},...{src}->...{dst}", M, t)
    return pack(t, k)


def det(M: torch.Tensor) -> torch.Tensor:
    """Determinant of (*batch, n, n) matrices from an LU factorisation.

    torch.linalg.det, slogdet and logdet give wrong reverse-over-forward derivatives in
    torch 2.13 (a gradient of a jvp through them disagrees with finite differences); the
    LU route is exact in every mode, which training needs (loss on jvp tangents).
    """
    LU, piv, _ = torch.linalg.lu_factor_ex(M)
    swaps = (piv != torch.arange(1, M.shape[-1] + 1, dtype=piv.dtype, device=piv.device)).sum(-1)
    return torch.diagonal(LU, dim1=-2, dim2=-1).prod(-1) * (1 - 2 * (swaps % 2)).to(M.dtype)


def metric_data(g: torch.Tensor):
    """(g^{-1}, det g) for a batch of SPD metrics (*batch, 7, 7), via Cholesky when possible.

    cholesky_solve rather than cholesky_inverse: in torch 2.13 the forward-mode derivative of
    cholesky_inverse is wrong (and linalg.solve's reverse-over-forward one), which
    tests/test_forms.py guards against.
    """
    L, info = torch.linalg.cholesky_ex(g)
    if is_traced(g) or not bool(info.any()):
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device).expand_as(g)
        return torch.cholesky_solve(eye, L), torch.diagonal(L, dim1=-2, dim2=-1).prod(-1) ** 2
    return torch.linalg.inv(g), det(g)


def inner_packed(a: torch.Tensor, b: torch.Tensor, k: int, g: torch.Tensor,
                 ginv: torch.Tensor | None = None, det: torch.Tensor | None = None) -> torch.Tensor:
    """<a, b>_g = sum_{I,J} a_I Lambda^k(g^{-1})_{IJ} b_J (docs/conventions.md §3).

    For k >= 4 Jacobi's complementary-minor identity gives
    <a, b>_g = det(g)^{-1} <*0 a, *0 b> with the (7-k)-form indices lowered by g,
    so at most three index contractions are ever needed.
    """
    if ginv is None or det is None:
        ginv, det = metric_data(g)
    if k <= 3:
        return (a * transform_packed(b, k, ginv)).sum(-1)
    a0, b0 = star0_packed(a, k), star0_packed(b, k)
    return (a0 * transform_packed(b0, DIM - k, g)).sum(-1) / det


def star_packed(w: torch.Tensor, k: int, g: torch.Tensor, ginv: torch.Tensor | None = None,
                det: torch.Tensor | None = None, orientation: torch.Tensor | float = 1.0,
                power: torch.Tensor | None = None) -> torch.Tensor:
    """Hodge star of a packed k-form with metric g; `orientation` = +-1 flips eps.

    k <= 3: (*w)_{I^c} = sqrt(det g) eps(I, I^c) w^I with w^I = Lambda^k(g^{-1}) w.
    k >= 4: *w = det(g)^{-1/2} Lambda^{7-k}(g) (*0 w)   (Jacobi's identity, as in inner_packed).
    power: optional precomputed Lambda^k(g^{-1}) (k <= 3) or Lambda^{7-k}(g) (k >= 4).
    """
    if ginv is None or det is None:
        ginv, det = metric_data(g)
    o = float(orientation) if isinstance(orientation, (int, float)) else orientation[..., None]
    if k <= 3:
        return o * det.sqrt()[..., None] * star0_packed(transform_packed(w, k, ginv, power), k)
    return o * transform_packed(star0_packed(w, k), DIM - k, g, power) / det.sqrt()[..., None]


def d_from_jacobian(jac: torch.Tensor, k: int) -> torch.Tensor:
    """Exterior derivative from first derivatives: jac (*batch, C(7,k), 7) = d_m w_I -> (dw) packed.

    (dw)_L = sum_{m in L} sign(m, L\\m) d_m w_{L\\m}  (docs/conventions.md §3).
    """
    if k == DIM:
        return jac.new_zeros(*jac.shape[:-2], 0)
    idx, sgn = _d_table(k, device_key(jac.device), jac.dtype)
    flat = jac.reshape(*jac.shape[:-2], -1)
    return (flat[..., idx] * sgn).sum(-1)


# ---------------------------------------------------------------- dense public API
def wedge(a: torch.Tensor, b: torch.Tensor, p: int | None = None, q: int | None = None) -> torch.Tensor:
    """Wedge product of dense forms: (*batch, 7^p), (*batch, 7^q) -> (*batch, 7^(p+q)).

    Degrees are inferred from trailing dimensions of size 7 (smallest batch rank with
    p + q <= 7); pass p and q explicitly when a batch dimension is itself 7.
    (a ^ b)_{i1..ip+q} = ((p+q)!/(p! q!)) a_[i1..ip b_ip+1..ip+q].
    """
    if p is None or q is None:
        p, q = _infer_pq(a, b)
    if p + q > DIM:
        raise ValueError(f"wedge of a {p}-form and a {q}-form has degree {p + q} > 7")
    ap, bp = pack(a, p, check=True), pack(b, q, check=True)
    return unpack(wedge_packed(ap, bp, p, q), p + q)


def interior(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Interior product iota_v w: v (*batch, 7), dense k-form w (*batch, 7^k) -> (*batch, 7^(k-1))."""
    k = w.ndim - (v.ndim - 1)
    if v.shape[-1] != DIM or k < 1 or tuple(w.shape[: v.ndim - 1]) != tuple(v.shape[:-1]):
        raise ValueError(f"interior: vector {tuple(v.shape)} and form {tuple(w.shape)} do not match")
    return unpack(interior_packed(v, pack(w, k, check=True), k), k - 1)


def inner(a: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """<a, b>_g = (1/k!) a_{i1..ik} b^{i1..ik}: dense k-forms (*batch, 7^k), g (*batch, 7, 7) -> (*batch,)."""
    k = degree_in(a, g, "first form")
    if degree_in(b, g, "second form") != k:
        raise ValueError("inner product of forms of different degrees")
    return inner_packed(pack(a, k, check=True), pack(b, k, check=True), k, g)


def norm2(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """|a|^2_g for a dense form a (*batch, 7^k) and metric g (*batch, 7, 7)."""
    return inner(a, a, g)


def hodge_star(omega: torch.Tensor, g: torch.Tensor, orientation=1.0) -> torch.Tensor:
    """Hodge star *_g: dense k-form (*batch, 7^k) -> dense (7-k)-form, with eps^{0123456} = +1.

    (*w)_{j1..j(7-k)} = (1/k!) sqrt(det g) w^{i1..ik} eps_{i1..ik j1..j(7-k)}; ** = 1, a ^ *b = <a,b> vol_g.
    """
    k = degree_in(omega, g, "form")
    return unpack(star_packed(pack(omega, k, check=True), k, g, orientation=orientation), DIM - k)


def volume_form(g: torch.Tensor) -> torch.Tensor:
    """vol_g = sqrt(det g) dx^0..6 as a dense 7-form (*batch, 7^7)."""
    _, det = metric_data(g)
    return unpack(det.sqrt()[..., None], DIM)


# ---------------------------------------------------------------- Hodge star of a metric and its derivative
@table_cache
def derivation_table(k: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """T (49, C, C): D^k(X) = sum_ab X_ab T[7a+b], the derivative of Lambda^k at the identity,
    D^k(X) = d/de Lambda^k(I + e X) at e = 0 (X acting on one index at a time).
    Exact from Lambda^k(I + E_ab) - I, since Lambda^k(I + e E_ab) is affine in e."""
    eye = torch.eye(DIM, dtype=torch.float64, device="cpu")
    E = torch.zeros(DIM * DIM, DIM, DIM, dtype=torch.float64, device="cpu")
    E.view(-1, DIM * DIM)[torch.arange(DIM * DIM, device="cpu"), torch.arange(DIM * DIM, device="cpu")] = 1
    T = exterior_power(eye + E, k) - torch.eye(n_components(k), dtype=torch.float64, device="cpu")
    return T.to(dtype=dtype, device=device)


@table_cache
def dx_wedge_table(p: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """W (C(7,p+1), 7 C(7,p)) with W[:, i C(7,p) + J] the matrix of alpha -> dx^i ^ alpha on p-forms."""
    n = n_components(p)
    W = torch.zeros(n_components(p + 1), DIM * n, dtype=torch.float64, device="cpu")
    ck = combo_index(p + 1)
    for i in range(DIM):
        for j, J in enumerate(combos(p)):
            if i not in J:
                W[ck[tuple(sorted((i,) + J))], i * n + j] = perm_sign((i,) + J)
    return W.to(dtype=dtype, device=device)


def hodge_matrix_and_d(g: torch.Tensor, dg: torch.Tensor, orientation: torch.Tensor, k: int):
    """S and K for *_g on k-forms from g (batch, 7, 7) and its derivatives dg (batch, 7, 7, 7) = d_i g.

    S (batch, C(7,7-k), C(7,k)) with *w = S w, S = o sqrt(det g) *0 Lambda^k(g^{-1}) (docs/conventions.md §3).
    K (batch, C(7,8-k), C(7,k)) = sum_i dx^i ^ d_i S, so that d(*w) = K w + sum_i dx^i ^ S d_i w.
    With G = g^{-1} and X_i = G^{-1} d_i G = -(d_i g) G:  d_i Lambda^k(G) = Lambda^k(G) D^k(X_i)
    (multiplicativity of Lambda^k) and d_i sqrt(det g) = -(1/2) tr(X_i) sqrt(det g), hence
    d_i S = S (D^k(X_i) - (1/2) tr(X_i)). Only g is differentiated (49 numbers per direction).
    """
    ginv, det = metric_data(g)
    S = hodge_matrix(ginv, det, orientation, k)
    X = -torch.einsum("bxyi,byz->bixz", dg, ginv)                          # (batch, 7 directions, 7, 7)
    T = derivation_table(k, device_key(g.device), g.dtype)
    n = n_components(k)
    D = (X.reshape(-1, DIM * DIM) @ T.reshape(DIM * DIM, -1)).reshape(g.shape[0], DIM, n, n)
    tr = torch.diagonal(X, dim1=-2, dim2=-1).sum(-1)                         # (batch, 7)
    dS = torch.matmul(S[:, None], D) - 0.5 * tr[:, :, None, None] * S[:, None]   # (batch, 7, C', C) = d_i S
    W = dx_wedge_table(DIM - k, device_key(g.device), g.dtype)
    K = torch.matmul(W, dS.reshape(g.shape[0], -1, n))                       # sum_i dx^i ^ d_i S
    return S, K


def hodge_matrix(ginv: torch.Tensor, det: torch.Tensor, orientation: torch.Tensor, k: int) -> torch.Tensor:
    """S (batch, C(7,7-k), C(7,k)) with *_g w = S @ w: S = o sqrt(det g) *0 Lambda^k(g^{-1}) (docs/conventions.md §3)."""
    Lk = exterior_power(ginv, k)
    rows = star0_packed(Lk.transpose(-1, -2), k).transpose(-1, -2)    # *0 applied to every column
    return (orientation * det.sqrt())[:, None, None] * rows

import math
import subprocess
import sys
from itertools import permutations
from pathlib import Path

import pytest
import torch

from k7lib import forms as F

torch.manual_seed(0)


def random_packed(k, batch=(4,), seed=0):
    g = torch.Generator().manual_seed(seed + 17 * k)
    return torch.randn(*batch, F.n_components(k), generator=g, dtype=torch.float64)


def random_metric(batch=(4,), seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, 7, 7, generator=g, dtype=torch.float64)
    return A @ A.transpose(-1, -2) / 7 + 0.5 * torch.eye(7, dtype=torch.float64)


def levi_civita():
    eps = torch.zeros((7,) * 7, dtype=torch.float64)
    for p in permutations(range(7)):
        eps[p] = F.perm_sign(p)
    return eps


@pytest.mark.parametrize("k", range(8))
def test_pack_unpack_roundtrip_and_antisymmetry(k):
    w = random_packed(k)
    dense = F.unpack(w, k)
    assert dense.shape == (4,) + (7,) * k
    assert torch.equal(F.pack(dense, k, check=True), w)
    if k >= 2:  # swapping two indices flips the sign
        assert torch.allclose(dense.transpose(1, 2), -dense)


def test_non_antisymmetric_tensor_is_rejected():
    t = torch.randn(3, 7, 7, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="not antisymmetric"):
        F.wedge(t, torch.randn(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="not antisymmetric"):
        F.hodge_star(t, random_metric((3,)))


def test_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match="packed 3-form"):
        F.unpack(torch.zeros(4, 34), 3)
    with pytest.raises(ValueError, match="metric's batch"):
        F.hodge_star(F.unpack(random_packed(2), 2), random_metric((5,)))
    with pytest.raises(ValueError, match="degree"):
        F.unpack(torch.zeros(4, 1), 8)
    with pytest.raises(ValueError, match="degree 8"):
        F.wedge(F.unpack(random_packed(4), 4), F.unpack(random_packed(4), 4), 4, 4)


@pytest.mark.parametrize("p,q", [(1, 1), (1, 2), (2, 2), (2, 3), (1, 4), (0, 3)])
def test_wedge_matches_dense_antisymmetrisation(p, q):
    a, b = F.unpack(random_packed(p), p), F.unpack(random_packed(q, seed=5), q)
    got = F.wedge(a, b, p, q)
    outer = a.reshape(4, *(7,) * p, *(1,) * q) * b.reshape(4, *(1,) * p, *(7,) * q)
    n = p + q
    alt = torch.zeros_like(got)
    for perm in permutations(range(n)):
        alt = alt + F.perm_sign(perm) * outer.permute(0, *[1 + s for s in perm])
    expected = alt / (math.factorial(p) * math.factorial(q))   # (a^b) = (p+q)!/(p!q!) Alt(a (x) b)
    assert torch.allclose(got, expected, atol=1e-12)


def test_wedge_graded_commutativity_and_degree_inference():
    a, b = F.unpack(random_packed(2), 2), F.unpack(random_packed(3), 3)
    assert torch.allclose(F.wedge(a, b), F.wedge(b, a), atol=1e-12)          # (-1)^{2*3} = +1
    c = F.unpack(random_packed(1), 1)
    assert torch.allclose(F.wedge(c, b), (-1) ** 3 * F.wedge(b, c), atol=1e-12)


@pytest.mark.parametrize("k", range(8))
def test_star_star_is_identity(k):
    g, w = random_metric(), random_packed(k)
    dense = F.unpack(w, k)
    assert torch.allclose(F.hodge_star(F.hodge_star(dense, g), g), dense, atol=1e-10)


@pytest.mark.parametrize("k", range(8))
def test_alpha_wedge_star_beta_is_inner_times_volume(k):
    g = random_metric()
    a, b = F.unpack(random_packed(k), k), F.unpack(random_packed(k, seed=3), k)
    lhs = F.wedge(a, F.hodge_star(b, g), k, 7 - k)
    rhs = F.inner(a, b, g)[:, None] * F.pack(F.volume_form(g), 7)
    assert torch.allclose(F.pack(lhs, 7), rhs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_inner_matches_index_raising_formula(k):
    g = random_metric()
    ginv = torch.linalg.inv(g)
    a, b = F.unpack(random_packed(k), k), F.unpack(random_packed(k, seed=9), k)
    raised = b
    letters = "abcdefg"[:k]
    for j in range(k):
        dst = letters[:j] + "z" + letters[j + 1:]
        raised = torch.einsum(f"nz{letters[j]},n{letters}->n{dst}", ginv, raised)
    expected = (a * raised).flatten(1).sum(1) / math.factorial(k)
    assert torch.allclose(F.inner(a, b, g), expected, rtol=1e-11)


def test_hodge_star_matches_levi_civita_definition():
    eps = levi_civita()
    g = random_metric((2,))
    ginv, det = torch.linalg.inv(g), torch.linalg.det(g)
    for k in (1, 2, 3, 4):
        w = F.unpack(random_packed(k, (2,)), k)
        raised = w
        letters = "abcdefg"[:k]
        for j in range(k):
            dst = letters[:j] + "z" + letters[j + 1:]
            raised = torch.einsum(f"nz{letters[j]},n{letters}->n{dst}", ginv, raised)
        star = torch.tensordot(raised, eps, dims=([*range(1, k + 1)], [*range(k)]))
        star = star * det.sqrt().reshape(2, *(1,) * (7 - k)) / math.factorial(k)
        assert torch.allclose(F.hodge_star(w, g), star, atol=1e-11)


def test_interior_product():
    v = torch.randn(4, 7, dtype=torch.float64)
    w = F.unpack(random_packed(3), 3)
    assert torch.allclose(F.interior(v, w), torch.einsum("ni,nijk->njk", v, w), atol=1e-13)
    # Leibniz: i_v(a ^ b) = i_v a ^ b - a ^ i_v b for a 1-form a
    a, b = F.unpack(random_packed(1), 1), F.unpack(random_packed(2, seed=4), 2)
    lhs = F.interior(v, F.wedge(a, b))
    rhs = F.interior(v, a)[:, None, None] * b - F.wedge(a, F.interior(v, b))
    assert torch.allclose(lhs, rhs, atol=1e-12)


def test_batched_over_several_leading_dimensions():
    g = random_metric((2, 3))
    w = random_packed(3, (2, 3))
    out = F.hodge_star(F.unpack(w, 3), g)
    assert out.shape == (2, 3, 7, 7, 7, 7)
    flat = F.hodge_star(F.unpack(w.reshape(6, 35), 3), g.reshape(6, 7, 7))
    assert torch.allclose(out.reshape(6, *(7,) * 4), flat)


def test_lu_determinant_is_exact_in_reverse_over_forward_mode():
    """A gradient of a jvp through det must match finite differences (torch.linalg.det does not in 2.13)."""
    from torch.func import jvp
    x = torch.rand(4, 7, dtype=torch.float64)
    S0 = random_metric((1,))[0]

    def loss(w):
        mat = lambda y: S0 * (1 + w * torch.sin(y[:, 0]))[:, None, None] + w * torch.diag_embed(torch.cos(y))
        v = torch.zeros_like(x)
        v[:, 0] = 1
        return (jvp(lambda y: F.det(mat(y)), (x,), (v,))[1] ** 2).sum()

    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss(w).backward()
    with torch.no_grad():
        fd = (loss(w + 1e-6) - loss(w - 1e-6)) / 2e-6
    assert float(w.grad) == pytest.approx(float(fd), rel=1e-7)
    M = torch.randn(5, 7, 7, dtype=torch.float64)
    assert torch.allclose(F.det(M), torch.linalg.det(M), rtol=1e-12)


def test_metric_data_derivatives_match_finite_differences():
    """jvp (vmapped over the 7 directions) and its gradient through g^{-1} and det g are exact."""
    from torch.func import jvp, vmap
    x = torch.rand(4, 7, dtype=torch.float64)
    S0 = random_metric((1,))[0]
    A0 = torch.randn(7, 7, dtype=torch.float64)

    def mat(w, y):
        return (S0 * (1 + w * torch.sin(y[:, 0]))[:, None, None] + w * torch.diag_embed(torch.cos(y))
                + w * torch.sin(y[:, 1])[:, None, None] * (A0 + A0.T) / 10)

    basis = torch.eye(7, dtype=x.dtype)[:, None, :].expand(7, *x.shape)
    w0, h = torch.tensor(0.3, dtype=torch.float64), 1e-6
    for pick in (0, 1):
        f = lambda y, w=w0: F.metric_data(mat(w, y))[pick]
        tangents = vmap(lambda u: jvp(f, (x,), (u,))[1])(basis)
        fd = torch.stack([(f(x + h * basis[m]) - f(x - h * basis[m])) / (2 * h) for m in range(7)])
        assert float((tangents - fd).abs().max()) < 1e-7 * float(fd.abs().max())

        def loss(w):
            return (vmap(lambda u: jvp(lambda y: F.metric_data(mat(w, y))[pick], (x,), (u,))[1])(basis) ** 2).sum()

        w = w0.clone().requires_grad_(True)
        loss(w).backward()
        with torch.no_grad():
            fdg = (loss(w0 + h) - loss(w0 - h)) / (2 * h)
        assert float(w.grad) == pytest.approx(float(fdg), rel=1e-6)


def test_tables_built_inside_forward_mode_transforms_are_plain_tensors():
    """A fresh process whose first use of the tables is inside curvature's nested jvps: with tables cached
    as functorch wrappers the second chunk failed ("escaped?"); forms.table_cache builds them plain."""
    code = ("import torch; from k7lib import g2, fixtures; from k7lib.curvature import curvature; "
            "x = torch.rand(4, 7, dtype=torch.float64); "
            "c = curvature(g2.metric_field_from_phi(fixtures.diffeo_field), x, chunk=2); "
            "print(float(c.ricci.abs().max()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) <= 1e-10

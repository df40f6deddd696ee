"""Topology: Betti numbers of T^7, Joyce's T^7/Z2^3 and twisted connected sums, computed."""
import pytest

from k7lib import topology as T
from k7lib.constants import StructuralConstants


def test_torus_betti_from_fourier_complex():
    assert T.torus_betti(7) == (1, 7, 21, 35, 35, 21, 7, 1)
    assert T.torus_betti(3, max_frequency=2) == (1, 3, 3, 1)
    assert sum((-1) ** k * b for k, b in enumerate(T.torus_betti(6))) == 0      # Euler characteristic


def test_nonzero_frequency_is_exact():
    m = (1, 0, -1, 2, 0, 0, 1)
    for k in range(6):
        d_k, d_next = T.wedge_vector_matrix(m, k), T.wedge_vector_matrix(m, k + 1)
        assert abs(d_next @ d_k).max() == 0                                       # d o d = 0
        kernel = d_next.shape[1] - T._rank(d_next)
        assert kernel == T._rank(d_k)                                             # ker = im: no cohomology


def test_joyce_group_and_betti():
    gens = T.joyce_generators()
    group = T.generate_group(list(gens.values()))
    assert len(group) == 8                                                        # Z2^3
    ident = T.AffineInvolution((1,) * 7, (0,) * 7)
    assert all(e.compose(e) == ident for e in group)
    assert all(T.preserves_phi0(e) for e in group)
    # the linear parts really act on phi0's index triples (not a vacuous check)
    flip = T.AffineInvolution((-1, 1, 1, 1, 1, 1, 1), (0,) * 7)
    assert not T.preserves_phi0(flip)
    fa = T.fixed_components(gens["alpha"])
    assert len(fa) == 16 and all(len(free) == 3 for free, _ in fa)
    assert T.fixed_components(gens["alpha"].compose(gens["beta"])) == []         # acts freely
    j = T.joyce_betti()
    assert j.invariant[:4] == (1, 0, 0, 7) and j.singular_components == 12
    assert (j.resolved[2], j.resolved[3]) == (12, 43)
    assert j.resolved[1] == 0 and j.resolved[4] == j.resolved[3]                   # Poincare duality


def test_tcs_published_example_and_general_formula():
    blk = T.P3_BLOCK
    assert (blk.b3, blk.k, blk.rank_N) == (66, 0, 1)                              # genus 33 curve: 2g = 66
    assert T.tcs_betti(blk, blk) == (0, 155)
    # general formula reduces to the orthogonal one when N+ n N- = 0
    a = T.BuildingBlock("a", b3=10, rank_N=2, rank_ker=3)
    b = T.BuildingBlock("b", b3=4, rank_N=3, rank_ker=1)
    assert T.tcs_betti(a, b) == (2, 23 + 10 + 4 + 2)
    shared = T.Gluing(rank_intersection=1, rank_sum=4, rank_Nminus_Tplus=1, rank_Nplus_Tminus=0)
    assert T.tcs_betti(a, b, shared) == (1 + 2, 1 + 18 + 1 + 0 + 14 + 2)
    assert T.tcs_parity_allows(*T.tcs_betti(a, b, shared))                       # non-orthogonal gluing: odd too
    with pytest.raises(ValueError, match="rk"):
        T.tcs_betti(a, b, T.Gluing(1, 5, 0, 0))
    with pytest.raises(ValueError, match="even"):
        T.BuildingBlock("odd", b3=3, rank_N=1, rank_ker=1)


def test_parity_and_gift_pair():
    for b3p in range(0, 40, 2):
        for k in range(3):
            blk = T.BuildingBlock("x", b3=b3p, rank_N=1, rank_ker=k + 1)
            b2, b3 = T.tcs_betti(blk, T.P3_BLOCK)
            assert (b2 + b3) % 2 == 1 and T.orthogonal_tcs_allows(b2, b3)
            assert T.tcs_parity_allows(b2, b3)
    sc = StructuralConstants()
    assert not T.orthogonal_tcs_allows(sc.b2_K7, sc.b3_K7)                       # 21 + 77 = 98 is even
    # every twisted connected sum, whatever its matching (Crowley-Nordstroem): nu = 24 is even, 1 + 21 + 77 = 99 is odd
    assert T.semicharacteristic(1, 0, sc.b2_K7, sc.b3_K7) == 1 and T.TCS_NU == 24
    assert not T.tcs_parity_allows(sc.b2_K7, sc.b3_K7)
    assert T.tcs_parity_allows(sc.b2_K7, sc.b3_K7, b1=1)                         # b1 enters the semicharacteristic
    assert T.tcs_parity_allows(12, 31) and not T.orthogonal_tcs_allows(12, 31)   # parity alone is weaker
    with pytest.raises(ValueError, match="non-negative"):
        T.semicharacteristic(1, 0, -1, 3)


def test_topology_report():
    df = T.topology_report()
    assert list(df["space"])[:2] == ["T^7 (flat)", "Joyce T^7/Z2^3"]
    assert {"b2", "b3", "source"} <= set(df.columns) and len(df) == 5
    rows = df.set_index("space")
    assert (rows.loc["Joyce T^7/Z2^3", "b2"], rows.loc["Joyce T^7/Z2^3", "b3"]) == (12, 43)
    assert rows.loc["TCS of two P^3 blocks", "b3"] == 155
    assert "not reachable" in rows.loc["GIFT targets", "how"]
    how = rows.loc["GIFT targets", "how"]
    assert "whatever the matching of its blocks" in how and "99 is odd" in how and "gluing angle" not in how
    assert "extra-twisted" in how and "not checked" in how
    assert "1211.0269" in rows.loc["GIFT targets", "source"]
    assert df["source"].str.len().min() > 5

"""Structural constants of the GIFT v2.2 framework and the rationals derived from them.

Every physical target of the notebook is an exact `fractions.Fraction` built from the
integers of `StructuralConstants`; nothing here is a fitted or typed-in float.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

# The manifold's dimension: coordinates x^0..x^6, and every point tensor is (batch, DIM).
DIM = 7


@dataclass(frozen=True)
class StructuralConstants:
    """The integers of the GIFT v2.2 structure (seed 000, "Structural constants")."""

    p2: int = 2
    N_gen: int = 3
    dim_K7: int = 7
    dim_G2: int = 14
    rank_E8: int = 8
    dim_E8: int = 248
    Weyl_factor: int = 5
    b2_K7: int = 21
    b3_K7: int = 77

    @property
    def H_star(self) -> int:
        """H* = 1 + b2 + b3 (total even-degree-free cohomology count used by GIFT)."""
        return 1 + self.b2_K7 + self.b3_K7

    @property
    def M5(self) -> int:
        """M5 = dim(E8) / rank(E8) = 31 (an integer by construction)."""
        if self.dim_E8 % self.rank_E8:
            raise ValueError("dim_E8 must be divisible by rank_E8 for M5 to be an integer")
        return self.dim_E8 // self.rank_E8


@dataclass(frozen=True)
class ZeroParamGeometry:
    """Exact rationals of the zero-parameter geometry, derived from `StructuralConstants`.

    kappa_T      = 1 / (b3 - dim_G2 - p2)                          = 1/61
    det_g_target = p2 + 1 / (b2 + dim_G2 - N_gen)                  = 65/32
    tau          = p2^4 * dim_K7 * M5 / (N_gen^4 * (rank_E8 + N_gen)) = 3472/891
    tau_alt      = (2 dim_E8) * b2 / (N_gen^3 * H*)                = 496*21/(27*99)
    """

    sc: StructuralConstants = field(default_factory=StructuralConstants)

    @property
    def kappa_T(self) -> Fraction:
        return Fraction(1, self.sc.b3_K7 - self.sc.dim_G2 - self.sc.p2)

    @property
    def det_g_target(self) -> Fraction:
        return self.sc.p2 + Fraction(1, self.sc.b2_K7 + self.sc.dim_G2 - self.sc.N_gen)

    @property
    def tau(self) -> Fraction:
        sc = self.sc
        return Fraction(sc.p2**4 * sc.dim_K7 * sc.M5, sc.N_gen**4 * (sc.rank_E8 + sc.N_gen))

    @property
    def tau_alt(self) -> Fraction:
        """Second expression of tau; equal to `tau` for the GIFT integers."""
        sc = self.sc
        return Fraction(2 * sc.dim_E8 * sc.b2_K7, sc.N_gen**3 * sc.H_star)

    def as_dict(self) -> dict:
        """Exact values as strings 'p/q' plus floats, for metadata files."""
        out = {}
        for name in ("kappa_T", "det_g_target", "tau"):
            v = getattr(self, name)
            out[name] = str(v)
            out[name + "_float"] = float(v)
        return out

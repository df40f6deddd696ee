import re
from dataclasses import FrozenInstanceError
from fractions import Fraction
from pathlib import Path

import pytest

from k7lib.constants import StructuralConstants, ZeroParamGeometry


def test_integers_and_derived():
    sc = StructuralConstants()
    assert (sc.p2, sc.N_gen, sc.dim_K7, sc.dim_G2, sc.rank_E8, sc.dim_E8, sc.Weyl_factor,
            sc.b2_K7, sc.b3_K7) == (2, 3, 7, 14, 8, 248, 5, 21, 77)
    assert sc.H_star == 99 and sc.M5 == 31


def test_exact_rationals():
    z = ZeroParamGeometry()
    assert z.kappa_T == Fraction(1, 61)
    assert z.det_g_target == Fraction(65, 32)
    assert z.tau == Fraction(3472, 891)
    assert isinstance(z.tau, Fraction) and isinstance(z.kappa_T, Fraction)


def test_two_expressions_of_tau_agree():
    z = ZeroParamGeometry()
    assert z.tau_alt == Fraction(496 * 21, 27 * 99)
    assert z.tau == z.tau_alt


def test_rationals_follow_the_integers():
    z = ZeroParamGeometry(StructuralConstants(b3_K7=43, b2_K7=12))
    assert z.kappa_T == Fraction(1, 43 - 14 - 2)
    assert z.det_g_target == 2 + Fraction(1, 12 + 14 - 3)


def test_frozen():
    with pytest.raises(FrozenInstanceError):
        StructuralConstants().b2_K7 = 22


def test_no_float_literal_of_the_targets_in_the_package():
    src = Path(__file__).resolve().parents[1] / "k7lib"
    values = [Fraction(1, 61), Fraction(65, 32), Fraction(3472, 891)]
    pattern = re.compile(r"\d+\.\d{3,}")
    for path in src.glob("*.py"):
        for lit in pattern.findall(path.read_text()):
            for v in values:
                assert abs(float(lit) - float(v)) > 1e-3 * float(v), f"{path.name}: float literal {lit} of {v}"

"""The GIFT ansatz: a map from a normalised geometric coupling to fermion mass ratios, and the GIFT v2.2
integer formulas it is compared with. Kept apart from the geometry it is applied to (`geometry.couplings`).

`TauLayer` is the ansatz GIFT assumes (it is not derived here or elsewhere): a parameter-free layer that
sends a normalised coupling eps to eps^(-tau n) for each sector, tau = 3472/891 from the structural
integers; `gift_reference_ratios` gives the GIFT v2.2 integer formulas; `ansatz_table` sets the two side
by side for couplings (a `geometry.couplings.Couplings`: kind, triplets, values, stderr, normalised) as a
diagnostic. Nothing here is fitted: the map has no continuous parameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd
import torch
from torch import nn

from .constants import StructuralConstants, ZeroParamGeometry


# A coupling within this many standard errors of zero is consistent with zero: flagged, never mapped
# (geometry.couplings.Couplings.consistent_with_zero).
RESOLVED_SIGMA = 3.0


@dataclass(frozen=True)
class Sector:
    """A mass ratio m_heavy / m_light between two generations of one fermion family.

    `generations(sc)` returns the ordinals (heavy, light) of the two generations, counted
    1..N_gen, as integer expressions of the structural constants; `reason` says why.
    """
    name: str
    family: str
    generations: object          # callable StructuralConstants -> (int, int)
    reason: str


SECTORS = (
    Sector("m_s/m_d", "down-type quarks", lambda sc: (sc.N_gen - 1, sc.N_gen - 2),
           "strange and down are the second and first down-type generations: one step"),
    Sector("m_tau/m_mu", "charged leptons", lambda sc: (sc.N_gen, sc.N_gen - 1),
           "tau is the last (N_gen-th) generation and the muon the one before it: one step"),
    Sector("m_tau/m_e", "charged leptons", lambda sc: (sc.N_gen, sc.N_gen - 2),
           "tau and electron are the third and first generations: N_gen - 1 steps"),
)


class TauLayer(nn.Module):
    """The GIFT ansatz as a parameter-free layer: normalised couplings eps (batch,) -> mass ratios
    (batch, len(SECTORS)), column s = eps^(-tau n_s) (`forward`); exact tau = 3472/891 and
    kappa_T = 1/61 from `ZeroParamGeometry`.

    The map is an ansatz that GIFT assumes; nothing derives it from the geometry: a normalised coupling
    eps = |Y| / Y_scale plays the role of the single expansion parameter of a Froggatt-Nielsen
    hierarchy (C. Froggatt, H. Nielsen, Nucl. Phys. B147 (1979) 277), m_g ∝ eps^(tau (N_gen - g)) for
    generation g, with GIFT's hierarchy parameter tau as the charge per generation step. Hence
      m_heavy / m_light = eps^(-tau * n),   n = g_heavy - g_light  (the sector factor, an integer
    expression of N_gen, see `SECTORS`). The exponent -tau*n is an exact Fraction; there is no
    continuous parameter. The map is multiplicative across generations: r(tau/e) = r(tau/mu) r(mu/e).
    kappa_T is held for reference (the torsion scale of the same geometry); the map does not use it.
    """

    def __init__(self, geometry: ZeroParamGeometry | None = None):
        super().__init__()
        self.geometry = ZeroParamGeometry() if geometry is None else geometry
        # exponents -tau n of the sectors, in SECTORS order (a buffer: it follows the layer's device)
        self.register_buffer("exponents", torch.tensor([float(self.exponent(s.name)) for s in SECTORS],
                                                       dtype=torch.float64), persistent=False)

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        """(batch,) normalised couplings, finite and non-zero -> (batch, len(SECTORS)) ansatz mass ratios."""
        return self.ansatz_mass_ratio(eps, None)

    @property
    def sc(self) -> StructuralConstants:
        return self.geometry.sc

    @property
    def tau(self) -> Fraction:
        return self.geometry.tau

    @property
    def kappa_T(self) -> Fraction:
        return self.geometry.kappa_T

    @property
    def sectors(self) -> dict:
        return {s.name: s for s in SECTORS}

    def sector(self, name: str) -> Sector:
        if name not in self.sectors:
            raise ValueError(f"unknown sector {name!r}; known sectors: {', '.join(self.sectors)}")
        return self.sectors[name]

    def steps(self, sector: str) -> int:
        """Generation distance n = g_heavy - g_light of a sector (positive integer)."""
        s = self.sector(sector)
        heavy, light = s.generations(self.sc)
        if not 1 <= light < heavy <= self.sc.N_gen:
            raise ValueError(f"sector {sector!r} needs generations 1 <= light < heavy <= N_gen, "
                             f"got ({heavy}, {light}) with N_gen = {self.sc.N_gen}")
        return heavy - light

    def exponent(self, sector: str) -> Fraction:
        """Exact exponent e with m_heavy / m_light = eps^e, e = -tau * n."""
        return -self.tau * self.steps(sector)

    def ansatz_mass_ratio(self, Y_geom, sector: str | None):
        """GIFT ansatz m_heavy / m_light = |Y_geom|^(-tau n) for a normalised coupling Y_geom (float or tensor).

        sector None (tensors only): every sector, a last axis in SECTORS order.

        Raises ValueError for an unknown sector, or for a coupling that is zero or not finite
        (no hierarchy can be read from it).
        """
        if isinstance(Y_geom, torch.Tensor):
            eps = Y_geom.detach().to(torch.float64).abs()
            if not bool(torch.isfinite(eps).all()) or bool((eps == 0).any()):
                raise ValueError("Y_geom must be finite and non-zero to map to a mass ratio")
            if sector is None:
                return eps[..., None].pow(self.exponents.to(eps.device))
            return eps.pow(float(self.exponent(sector)))
        e = self.exponent(sector)
        eps = abs(float(Y_geom))
        if not math.isfinite(eps) or eps == 0:
            raise ValueError(f"Y_geom must be finite and non-zero to map to a mass ratio, got {Y_geom!r}")
        return eps ** float(e)

    def lepton_masses(self, Y_geom) -> tuple:
        """(m_e, m_mu, m_tau) / m_e from the ansatz, using the two lepton sectors."""
        r_te = self.ansatz_mass_ratio(Y_geom, "m_tau/m_e")
        r_tm = self.ansatz_mass_ratio(Y_geom, "m_tau/m_mu")
        return 1.0, r_te / r_tm, r_te


def koide_q(m1, m2, m3) -> float:
    """Koide's Q = (m1 + m2 + m3) / (sqrt m1 + sqrt m2 + sqrt m3)^2 (Y. Koide, 1982); 1/3 <= Q <= 1."""
    ms = [float(m) for m in (m1, m2, m3)]
    if any(not math.isfinite(m) or m < 0 for m in ms):
        raise ValueError(f"Koide Q needs three finite non-negative masses, got {ms}")
    return sum(ms) / sum(math.sqrt(m) for m in ms) ** 2


@dataclass(frozen=True)
class ReferenceRatio:
    """One GIFT v2.2 integer formula: `exact` is computed from the structural integers."""
    name: str
    formula: str
    exact: Fraction

    @property
    def value(self) -> float:
        return float(self.exact)


def gift_reference_ratios(sc: StructuralConstants | None = None) -> dict:
    """The GIFT v2.2 mass-ratio formulas (seed 000), each an exact Fraction of the structural integers.

    m_s/m_d = p2^2 Weyl = 20;  m_tau/m_e = dim_K7 + 10 dim_E8 + 10 H* = 3477;
    m_tau/m_mu = (dim_K7 + b3) / Weyl = 84/5;  Q_Koide = dim_G2 / b2 = 2/3.
    """
    sc = StructuralConstants() if sc is None else sc
    refs = (
        ReferenceRatio("m_s/m_d", "p2^2 * Weyl", Fraction(sc.p2**2 * sc.Weyl_factor)),
        ReferenceRatio("m_tau/m_e", "dim_K7 + 10*dim_E8 + 10*H*",
                       Fraction(sc.dim_K7 + 10 * sc.dim_E8 + 10 * sc.H_star)),
        ReferenceRatio("m_tau/m_mu", "(dim_K7 + b3)/Weyl", Fraction(sc.dim_K7 + sc.b3_K7, sc.Weyl_factor)),
        ReferenceRatio("Q_Koide", "dim_G2/b2", Fraction(sc.dim_G2, sc.b2_K7)),
    )
    return {r.name: r for r in refs}


# ---------------------------------------------------------------- the ansatz beside the couplings (a diagnostic)
def choose_triplets(couplings, n: int = 3, n_sigma: float = RESOLVED_SIGMA) -> tuple:
    """The n triplets to show: the resolved couplings (|Y| > n_sigma standard errors) with the largest
    normalised value first, then, when fewer than n are resolved, the largest of those consistent with
    zero (shown flagged, not mapped). ValueError when no coupling is non-zero and finite."""
    eps = couplings.normalised
    ok = torch.isfinite(eps) & (eps > 0)
    if not bool(ok.any()):
        raise ValueError(f"no {couplings.kind} coupling is non-zero and finite; nothing to show")
    zero = couplings.consistent_with_zero(n_sigma)
    # resolved ones rank above every flagged one: flagged values are shifted below the smallest
    rank = torch.where(zero, eps - float(eps[ok].max()) - 1.0, eps).masked_fill(~ok, -math.inf)
    order = torch.argsort(rank, descending=True)
    return tuple(couplings.triplets[int(i)] for i in order[:n] if bool(ok[int(i)]))


def ansatz_table(couplings, triplets=None, layer: TauLayer | None = None,
                 n: int = 3, n_sigma: float = RESOLVED_SIGMA) -> pd.DataFrame:
    """Couplings beside the mass ratios the GIFT ansatz assigns them and the GIFT integer formulas.

    A diagnostic, never a fit, and not a derivation: the map is the ansatz `TauLayer` assumes.
    One row per (triplet, quantity): the coupling's kind, Y with its standard error, eps = normalised
    |Y|, `consistent_with_zero` (|Y| <= n_sigma standard errors), the ansatz eps^(-tau n) for each sector
    and Koide's Q of the mapped lepton masses (NaN for a coupling consistent with zero: eps^(-tau n) of a
    number consistent with zero says nothing), the GIFT v2.2 formula (text), exact value and float, with
    mapped / GIFT; and, for the kind, n_computed couplings of which n_resolved are resolved.
    triplets: which couplings to show (default `choose_triplets(couplings, n, n_sigma)`).
    """
    layer = TauLayer() if layer is None else layer
    refs = gift_reference_ratios(layer.sc)
    if triplets is None:
        triplets = choose_triplets(couplings, n, n_sigma)
    where = {tuple(t): i for i, t in enumerate(couplings.triplets)}
    zero = couplings.consistent_with_zero(n_sigma)
    counts = {"n_computed": len(couplings.triplets), "n_resolved": int((~zero).sum())}
    rows = []
    for t in triplets:
        t = tuple(int(v) for v in t)
        if t not in where:
            raise ValueError(f"triplet {t} is not among the computed {couplings.kind} couplings")
        i = where[t]
        Y, se, eps = (float(v[i]) for v in (couplings.values, couplings.stderr, couplings.normalised))
        flagged = bool(zero[i])
        mapped = _mapped(layer, eps if not flagged else float("nan"))
        for name, ref in refs.items():
            rows.append({
                "kind": couplings.kind, "triplet": str(t), "Y": Y, "Y_stderr": se, "epsilon": eps,
                "consistent_with_zero": flagged, "quantity": name,
                "exponent": str(layer.exponent(name)) if name in layer.sectors else "",
                "mapped": mapped[name], "gift_formula": ref.formula, "gift_exact": str(ref.exact),
                "gift_value": ref.value, "mapped/gift": mapped[name] / ref.value, **counts,
            })
    return pd.DataFrame(rows)


def _mapped(layer: TauLayer, eps: float) -> dict:
    """{quantity: the ansatz's value} for one normalised coupling; NaN throughout unless eps > 0."""
    if not eps > 0:
        return {**{s.name: float("nan") for s in SECTORS}, "Q_Koide": float("nan")}
    out = {s.name: layer.ansatz_mass_ratio(eps, s.name) for s in SECTORS}
    out["Q_Koide"] = koide_q(*layer.lepton_masses(eps))
    return out


def coupling_tables(*couplings, layer: TauLayer | None = None) -> tuple:
    """(table, notes): the long ansatz_table of every Couplings given (kind column: PAIRING_KIND or
    HITCHIN_KIND), concatenated (None when none has a coupling above its noise), and one note per
    kind left out, saying why (no triplet to map)."""
    tables, notes = [], []
    for cp in couplings:
        try:
            tables.append(ansatz_table(cp, layer=layer))
        except ValueError as err:            # a kind with no non-zero coupling is said, not shown
            notes.append(f"{cp.kind}: {err}")
    return (pd.concat(tables, ignore_index=True) if tables else None), notes


def compact_table(table: pd.DataFrame) -> pd.DataFrame:
    """The long `ansatz_table` folded to one row per (kind, triplet): Y, its standard error, eps and the
    flag consistent_with_zero, then for each quantity the mapped value (NaN when flagged) followed by its
    GIFT integer formula ("formula = exact")."""
    need = {"kind", "triplet", "Y", "Y_stderr", "epsilon", "quantity", "mapped", "gift_formula", "gift_exact"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise ValueError(f"compact_table needs the long ansatz_table with columns {sorted(need)}")
    rows = []
    for _, grp in table.groupby(["kind", "triplet"], sort=False):
        first = grp.iloc[0]
        row = {k: first[k] for k in ("kind", "triplet", "Y", "Y_stderr", "epsilon", "consistent_with_zero")
               if k in first}
        for r in grp.itertuples(index=False):
            row[r.quantity] = r.mapped
            row[f"{r.quantity} GIFT"] = f"{r.gift_formula} = {r.gift_exact}"
        rows.append(row)
    return pd.DataFrame(rows)

"""The typed context of the article: every value the template prints, with the name of its source.

A `Value` is one number (or word) of the run and the key it came from: a metadata key
("kappa_T_measured"), a configuration field ("config.batch"), a quantity computed here from the
metadata ("derived.kappa_T_rel"), a field of a coupling record ("coupling.3.mapped") or a cell of a
further table ("table.0.2.1"). The template prints each one through its `rv` filter, as
\\rv{key}{value}; a missing field or a non-finite value prints "not computed". `build_context`
reads an `export.Results` (or anything with its fields) and returns an `Article`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..constants import StructuralConstants, ZeroParamGeometry
from ..geometry.couplings import HITCHIN_KIND, PAIRING_KIND
from ..gift import RESOLVED_SIGMA, gift_reference_ratios
from .known_context import Validation, validation
from .latex import (
    MISSING,
    as_number,
    formula_lines,
    label_tex,
    quantity_tex,
    value_tex,
)

# rows of the harmonic table of the further tables that the Betti table already shows
IN_BETTI_TABLE = ("b_eff", "b_harm", "gap ratio across b_harm")
WEIGHT_HEADERS = {"kappa": r"$w_\kappa$", "closure": r"$w_{d\varphi}$", "coclosure": r"$w_{d\star\varphi}$",
                  "det": r"$w_{\det}$", "positivity": r"$w_{+}$", "anti_flat": r"$w_{\partial_\lambda g}$"}
KIND_NAMES = {PAIRING_KIND: "triple wedge integrals", HITCHIN_KIND: r"values of Hitchin's cubic"}
KIND_TITLES = {PAIRING_KIND: r"$\int\omega_i\wedge\omega_j\wedge\Phi_k$ (triple wedge integral on the chart)",
               HITCHIN_KIND: r"$\partial^3V/\partial t_i\partial t_j\partial t_k$ (Hitchin cubic of $V$, not of $\log V$)"}


@dataclass(frozen=True)
class Value:
    """One value of the run and the key of its source (module docstring); with its standard error and,
    for a metadata key the ensemble block holds (metadata["ensemble"]["quantities"][key]["std"]), its
    seed spread, both Values (printed together by `latex.uncertain_tex`)."""
    key: str
    raw: object = MISSING
    stderr: "Value | None" = None
    spread: "Value | None" = None


SOURCES = ("config", "coupling", "table", "derived")      # key heads that are not metadata keys


class Source:
    """The run's metadata, configuration, coupling records and further tables, looked up by \\rv key."""

    def __init__(self, metadata: dict, config: dict, records: list, tables: list):
        self.meta, self.config, self.records, self.tables = metadata, config, records, tables

    def __call__(self, key: str, stderr: str | None = None) -> Value:
        """The Value under key; stderr: the key of its standard error. A metadata key that the ensemble
        block lists carries its seed spread."""
        se = Value(stderr, self._raw(stderr)) if stderr else None
        return Value(key, self._raw(key), se, self._spread(key))

    def _spread(self, key: str) -> Value | None:
        ens = self.meta.get("ensemble")
        quantities = ens.get("quantities") if isinstance(ens, dict) else None
        entry = quantities.get(key) if isinstance(quantities, dict) and key in self.meta else None
        if not isinstance(entry, dict) or "std" not in entry or key.partition(".")[0] in SOURCES:
            return None
        return Value(f"ensemble.quantities.{key}.std", entry["std"])

    def number(self, key: str):
        return as_number(self._raw(key))

    def _raw(self, key: str):
        head, _, rest = key.partition(".")
        if head == "config":
            cur, parts = self.config, rest.split(".") if rest else []
        elif head == "coupling":
            cur, parts = self.records, rest.split(".", 1)
        elif head == "table":
            cur, parts = self.tables, rest.split(".")
        else:
            cur, parts = self.meta, [key] if key in self.meta else key.split(".")
        for p in parts:
            if isinstance(cur, dict) and p in cur:
                cur = cur[p]
            elif isinstance(cur, (list, tuple)) and p.lstrip("-").isdigit() and -len(cur) <= int(p) < len(cur):
                cur = cur[int(p)]
            else:
                return MISSING
        return cur


def derived(name: str, raw, stderr=None) -> Value:
    """A value computed here from the metadata (key "derived.<name>"), with its standard error if given."""
    return Value("derived." + name, raw, None if stderr is None else Value(f"derived.{name}_stderr", stderr))


# ---------------------------------------------------------------- sections
@dataclass(frozen=True)
class Targets:
    """The exact targets the run recorded (the constants' values when absent) and the integers behind them."""
    kappa: Fraction
    det_g: Fraction
    tau: Fraction
    sc: StructuralConstants
    zp: ZeroParamGeometry


@dataclass(frozen=True)
class Summary:
    profile: Value
    seed: Value
    total_epochs: Value
    n_phases: Value
    n_eval_points: Value
    kappa_T_measured: Value
    T_stderr: Value
    kappa_T_rel: Value
    det_g_measured: Value
    det_g_stderr: Value
    det_g_rel: Value
    betti: dict          # {"b2_eff": Value, ...}: Gram ranks, harmonic counts, chart and GIFT Betti numbers


@dataclass(frozen=True)
class Schedule:
    """The phase table: header cells (LaTeX) and, per phase, its name and Values."""
    header: tuple
    rows: tuple          # (index, name, epochs Value, lr Value, (weight Values...))


@dataclass(frozen=True)
class Setup:
    config: dict         # {"L": Value, "depth": Value, ...}: the configuration fields the setup prints
    targets: dict        # {"p2": Value, "N_gen": Value, "kappa_T_target": Value, "det_g_target": Value, "tau": Value}
    rollbacks: Value
    schedule: Schedule | None


@dataclass(frozen=True)
class Torsion:
    n_eval_points: Value
    nonpositive_points: Value
    stderr_scrambles: Value | None     # randomised QMC; None: s / sqrt(N) with N = stderr_points
    stderr_points: Value
    rows: dict           # {"kappa_T_measured": Value, ...}: the table's cells
    phase_starts: tuple  # Values: the global epochs at which phases 2.. start
    history_exported: bool


@dataclass(frozen=True)
class BettiRow:
    k: int
    target: Value
    eff: Value
    harm: Value
    gap: Value
    gram_error: Value           # estimated relative error of the harmonic Gram matrix
    spectrum: tuple | None      # (count, min, max) Values, or None when not exported
    topology: Value


@dataclass(frozen=True)
class Harmonic:
    n_points: Value
    tolerance: Value            # of the harmonic Gram errors
    rows: tuple
    spectra_exported: bool


@dataclass(frozen=True)
class CouplingRow:
    kind_title: str | None      # the kind's heading when this row starts a new kind, else None
    triplet: str
    Y: Value                    # with its standard error
    epsilon: Value
    cells: tuple                # one Value (or None: not computed) per quantity column
    flagged: bool               # consistent with zero (|Y| <= RESOLVED_SIGMA standard errors): not mapped


@dataclass(frozen=True)
class Resolution:
    """How many couplings of one kind were computed and how many of them are resolved."""
    name: str                   # LaTeX, plural: "triple wedge integrals"
    computed: Value
    resolved: Value


@dataclass(frozen=True)
class CouplingTable:
    header: tuple               # LaTeX header cells
    rows: tuple
    resolution: tuple           # Resolution per kind, where the records carry the counts
    n_sigma: float              # the resolution threshold in standard errors
    any_flagged: bool


@dataclass(frozen=True)
class ExtraTable:
    name: str
    columns: tuple
    rows: tuple                 # cells: str (text) or Value
    colspec: str


@dataclass(frozen=True)
class Provenance:
    profile: Value
    seed: Value
    n_sample_points: Value
    history_rows: Value
    versions: str               # "torch 2.13.0, ..." (plain text) or ""
    topology: tuple | None      # (b2, b3 of the chart, b2, b3 of GIFT) Values when the run has a topology note


@dataclass(frozen=True)
class Article:
    run: str
    k7lib_version: str
    targets: Targets
    summary: Summary
    setup: Setup
    torsion: Torsion
    harmonic: Harmonic
    couplings: CouplingTable | None
    provenance: Provenance
    tables: tuple
    t6_betti: tuple             # (b2, b3) of T^6: the chart's cohomology
    validation: Validation | None = None


# ---------------------------------------------------------------- builders
def _rel(measured, target):
    m, t = as_number(measured), as_number(target)
    if m is None or t is None or t == 0:
        return None
    return (float(m) - float(t)) / float(t)


def _rel_value(name: str, meta: dict, measured: str, target: str, stderr: str) -> Value:
    """measured / target - 1 with its standard error stderr / |target| (key derived.<name>)."""
    se, t = as_number(meta.get(stderr)), as_number(meta.get(target))
    rel_se = float(se) / abs(float(t)) if se is not None and t else float("nan")     # nan: not computed
    return derived(name, _rel(meta.get(measured), meta.get(target)), rel_se)


def _exact(src: Source, name: str, fallback: Fraction) -> Fraction:
    """The exact target the run recorded under metadata["exact"][name] (constants' value if absent)."""
    f = src.number(f"exact.{name}")
    return f if isinstance(f, Fraction) else fallback


def _epochs(config: dict) -> list:
    return [as_number(p.get("epochs")) for p in config.get("phases", []) if isinstance(p, dict)]


def targets(src: Source) -> Targets:
    zp = ZeroParamGeometry()
    return Targets(kappa=_exact(src, "kappa_T", zp.kappa_T), det_g=_exact(src, "det_g", zp.det_g_target),
                   tau=_exact(src, "tau", zp.tau), sc=StructuralConstants(), zp=zp)


def summary(src: Source) -> Summary:
    meta, epochs = src.meta, _epochs(src.config)
    total = sum(epochs) if epochs and None not in epochs else None
    betti = {f"b{k}_{kind}": src(f"b{k}_{kind}") for kind in ("eff", "harm", "topology", "target") for k in (2, 3)}
    return Summary(
        profile=src("profile"), seed=src("seed"), total_epochs=derived("total_epochs", total),
        n_phases=derived("n_phases", len(epochs) or None), n_eval_points=src("n_eval_points"),
        kappa_T_measured=src("kappa_T_measured", "T_stderr"), T_stderr=src("T_stderr"),
        kappa_T_rel=_rel_value("kappa_T_rel", meta, "kappa_T_measured", "kappa_T_target", "T_stderr"),
        det_g_measured=src("det_g_measured", "det_g_stderr"), det_g_stderr=src("det_g_stderr"),
        det_g_rel=_rel_value("det_g_rel", meta, "det_g_measured", "det_g_target", "det_g_stderr"), betti=betti)


def schedule(src: Source) -> Schedule | None:
    """The phase schedule in the configuration, or None when it has no phases."""
    phases = src.config.get("phases")
    if not isinstance(phases, (list, tuple)) or not phases or not all(isinstance(p, dict) for p in phases):
        return None
    names = []
    for p in phases:
        names += [k for k in (p.get("weights") or {}) if k not in names]
    header = ("", "phase", "epochs", "peak l.r.") + tuple(WEIGHT_HEADERS.get(k) or label_tex(k) for k in names)
    rows = tuple((i + 1, p.get("name", ""), src(f"config.phases.{i}.epochs"), src(f"config.phases.{i}.lr"),
                  tuple(src(f"config.phases.{i}.weights.{k}") for k in names)) for i, p in enumerate(phases))
    return Schedule(header=header, rows=rows)


def setup(src: Source) -> Setup:
    fields = ("L", "depth", "width", "n_fourier", "n_chebyshev", "method", "batch", "polish_points", "train_dtype")
    return Setup(config={f: src(f"config.{f}") for f in fields},
                 targets={k: src(k) for k in ("p2", "N_gen", "kappa_T_target", "det_g_target", "tau")},
                 rollbacks=src("rollbacks"), schedule=schedule(src))


def _phase_starts(config: dict) -> tuple:
    epochs, starts, n = _epochs(config), [], 0
    if None in epochs:
        return ()
    for e in epochs:
        starts.append(n)
        n += int(e)
    return tuple(derived(f"phase_start.{i + 1}", s) for i, s in enumerate(starts[1:]))


def torsion(src: Source, figures: set) -> Torsion:
    n, bad = src.number("n_eval_points"), src.number("nonpositive_points")
    rows = {k: src(k) for k in ("det_g_std", "eig_min", "anti_flat")}
    rows.update(kappa_T_measured=src("kappa_T_measured", "T_stderr"), det_g_measured=src("det_g_measured", "det_g_stderr"))
    scrambles = src("stderr_scrambles") if src.number("stderr_scrambles") is not None else None
    return Torsion(n_eval_points=src("n_eval_points"), nonpositive_points=src("nonpositive_points"),
                   stderr_scrambles=scrambles,
                   stderr_points=derived("stderr_points", None if n is None else int(n) - int(bad or 0)),
                   rows=rows, phase_starts=_phase_starts(src.config), history_exported="history" in figures)


def _spectrum(src: Source, k: int):
    spec = src(f"harmonic_spectrum_{k}").raw
    if hasattr(spec, "tolist") and not isinstance(spec, (list, tuple)):     # a tensor or array (in-memory run)
        spec = spec.tolist()
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    vals = [float(s) for s in map(as_number, spec) if s is not None]
    if not vals:
        return None
    return (derived(f"spectrum_{k}_count", len(vals)), derived(f"spectrum_{k}_min", min(vals)),
            derived(f"spectrum_{k}_max", max(vals)))


def harmonic(src: Source, figures: set) -> Harmonic:
    rows = tuple(BettiRow(k=k, target=src(f"b{k}_target"), eff=src(f"b{k}_eff"), harm=src(f"b{k}_harm"),
                          gap=src(f"b{k}_harm_gap"), gram_error=src(f"b{k}_harmonic_gram_error"),
                          spectrum=_spectrum(src, k), topology=src(f"b{k}_topology"))
                 for k in (2, 3))
    return Harmonic(n_points=src("n_harmonic_points"), tolerance=src("harmonic_tolerance"), rows=rows,
                    spectra_exported="spectra" in figures)


def coupling_records(results) -> list:
    """The coupling table as a list of dict records (metadata["coupling_table"] or the DataFrame), [] if none."""
    recs = results.metadata.get("coupling_table")
    if recs is None and getattr(results, "couplings", None) is not None:
        recs = results.couplings.to_dict(orient="records")
    return list(recs or [])


def _add_record(rows: list, where: dict, columns: dict, refs: dict, i: int, r: dict) -> None:
    key = (str(r.get("kind", "")), str(r.get("triplet", "")))
    if key not in where:
        where[key] = len(rows)
        rows.append({"kind": key[0], "triplet": key[1], "first": i, "cells": {}})
    row = rows[where[key]]
    if "quantity" in r:                          # the long shape: one record per quantity
        q = str(r["quantity"])
        row["cells"][q] = (i, "mapped")
        ref = refs.get(q)
        columns.setdefault(q, (r.get("gift_formula", ref.formula if ref else ""),
                               r.get("gift_exact", str(ref.exact) if ref else "")))
        return
    for q, ref in refs.items():                  # the compact shape: one field per quantity
        field = next((k for k in r if k == q or k.startswith(q + " ")), None)
        if field is not None:
            row["cells"][q] = (i, field)
            columns.setdefault(q, (r.get(f"{q} formula", ref.formula), r.get(f"{q} exact", str(ref.exact))))


def compact_couplings(records: list, references: dict | None = None):
    """Group coupling records by (kind, triplet): [(row info, {quantity: (record index, field)})], columns.

    Accepts the long shape (one record per triplet and quantity, fields quantity / mapped /
    gift_formula / gift_exact) and a compact one (one record per triplet, one field per quantity).
    Returns (rows, columns) with columns = [(quantity, formula text, exact text)].
    """
    refs = gift_reference_ratios() if references is None else references
    rows, columns, where = [], {}, {}
    for i, r in enumerate(records):
        if isinstance(r, dict):
            _add_record(rows, where, columns, refs, i, r)
    return rows, [(q, f, e) for q, (f, e) in columns.items()]


def _quantity_header(q: str, formula: str, exact) -> str:
    ex = as_number(exact)
    lines = [f"${quantity_tex(q)}$"] + [f"${part}$" for part in formula_lines(formula)]
    lines += [f"$={value_tex(ex)}$"] if ex is not None else []
    return r"\shortstack{" + r"\\ ".join(lines) + "}"


def _flagged(record: dict) -> bool:
    """Consistent with zero: the record's flag, or |Y| <= RESOLVED_SIGMA standard errors where it has none."""
    flag = record.get("consistent_with_zero")
    if isinstance(flag, bool):
        return flag
    y, se = as_number(record.get("Y")), as_number(record.get("Y_stderr"))
    return not (y is not None and se is not None and abs(float(y)) > RESOLVED_SIGMA * float(se))


def couplings(src: Source) -> CouplingTable | None:
    """The compact coupling table (one row per kind and triplet), or None when the run has none."""
    rows, columns = compact_couplings(src.records)
    if not rows:
        return None
    header = ("triplet", r"$Y(\sigma_Y)$", r"$\varepsilon$") + tuple(_quantity_header(*c) for c in columns)
    out, kind, resolution = [], None, []
    for row in rows:
        title, i = None, row["first"]
        if row["kind"] != kind:
            kind = row["kind"]
            title = KIND_TITLES.get(kind) or label_tex(kind)
            if "n_computed" in src.records[i]:
                resolution.append(Resolution(KIND_NAMES.get(kind) or label_tex(kind), src(f"coupling.{i}.n_computed"),
                                             src(f"coupling.{i}.n_resolved")))
        cells = tuple(src(f"coupling.{row['cells'][q][0]}.{row['cells'][q][1]}") if q in row["cells"] else None
                      for q, _, _ in columns)
        out.append(CouplingRow(kind_title=title, triplet=row["triplet"], Y=src(f"coupling.{i}.Y", f"coupling.{i}.Y_stderr"),
                               epsilon=src(f"coupling.{i}.epsilon"), cells=cells, flagged=_flagged(src.records[i])))
    return CouplingTable(header=header, rows=tuple(out), resolution=tuple(resolution), n_sigma=RESOLVED_SIGMA,
                         any_flagged=any(r.flagged for r in out))


FOLD_ROWS = 12       # a narrow further table longer than this is set as two halves side by side


def _fold(cols: tuple, rows: tuple) -> tuple:
    """(columns, rows, colspec) of a narrow long table set in two halves side by side (row i beside row
    i + ceil(n/2)); the last row's right half is blank when n is odd."""
    half = (len(rows) + 1) // 2
    blank = ("",) * len(cols)
    pairs = tuple(rows[i] + (rows[i + half] if i + half < len(rows) else blank) for i in range(half))
    one = "p{0.31\\linewidth}" + "c" * (len(cols) - 1)
    return cols + cols, pairs, one + "@{\\hspace{1.2em}}" + one


def extra_tables(src: Source, frames: list) -> tuple:
    """The further tables: text cells stay text, numbers become Values (key table.t.r.c); a narrow long one
    is folded into two halves side by side (`_fold`)."""
    out = []
    for t, (name, df) in enumerate(frames):
        cols = tuple(map(str, df.columns))
        rows = tuple(tuple(df.iat[r, c] if isinstance(df.iat[r, c], str) else src(f"table.{t}.{r + 1}.{c}")
                           for c in range(len(cols)))
                     for r in range(len(df)) if not str(df.iat[r, 0]).startswith(IN_BETTI_TABLE))
        if len(cols) <= 3 and len(rows) > FOLD_ROWS:
            cols, rows, colspec = _fold(cols, rows)
        else:
            colspec = "p{0.5\\linewidth}" + "c" * (len(cols) - 1) if len(cols) <= 4 else "l" * len(cols)
        out.append(ExtraTable(name=name, columns=cols, rows=rows, colspec=colspec))
    return tuple(out)


def provenance(src: Source, results) -> Provenance:
    versions = src.meta.get("versions") if isinstance(src.meta.get("versions"), dict) else {}
    note = src.meta.get("topology_note")
    topology = tuple(src(k) for k in ("b2_topology", "b3_topology", "b2_target", "b3_target"))
    return Provenance(
        profile=src("profile"), seed=src("seed"),
        n_sample_points=derived("n_sample_points", len(results.coords) if results.coords is not None else None),
        history_rows=derived("history_rows", len(results.history) if results.history is not None else None),
        versions=", ".join(f"{k} {x}" for k, x in versions.items()),
        topology=topology if isinstance(note, str) and note.strip() else None)


def build_context(results) -> Article:
    """The article's typed context from an `export.Results` (metadata, config, couplings, tables, figures)."""
    meta = dict(results.metadata or {})
    config = dict(results.config or {}) if isinstance(results.config, dict) else {}
    frames = list((getattr(results, "tables", None) or {}).items())
    src = Source(meta, config, coupling_records(results),
                 [[list(map(str, df.columns))] + df.values.tolist() for _, df in frames])
    figures = set(getattr(results, "figures", None) or {})
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    return Article(run=str(meta.get("run", "--")), k7lib_version=str(versions.get("k7lib", "")),
                   targets=targets(src), summary=summary(src), setup=setup(src), torsion=torsion(src, figures),
                   harmonic=harmonic(src, figures), couplings=couplings(src), provenance=provenance(src, results),
                   tables=extra_tables(src, frames), t6_betti=(math.comb(6, 2), math.comb(6, 3)),
                   validation=validation(src))

"""results_v1_4.tex: a short standalone article about one run, built from its exported `export.Results`.

Every number of the run is typeset by one function, `value_tex`, and wrapped in the macro
\\rv{key}{value}, where key names where the number came from ("kappa_T_measured" is a metadata key,
"config.batch" a configuration field, "derived.kappa_T_rel" a quantity computed here from metadata,
"coupling.3.mapped" a field of the fourth coupling record, "table.0.2.1" a cell of an extra table).
The macro prints only the value; the key lets a test check each printed number against its source
(`render` returns the raw values by key). A missing field or a non-finite value prints
"not computed": never a LaTeX error, never a silent zero.

Mathematical constants (the exact targets 1/61, 65/32, 3472/891 and the integers they come from) are
read from `constants`; they are definitions, not results of the run.

The document uses only packages of a TeX Live "recommended" installation (amsmath, amssymb,
graphicx, geometry, booktabs, microtype, hyperref) and includes the figures fig_history.pdf and
fig_spectra.pdf when the run exported them (a missing file prints a framed note instead).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..constants import StructuralConstants, ZeroParamGeometry
from ..geometry.couplings import HITCHIN_KIND, PAIRING_KIND
from ..gift import gift_reference_ratios

NOT_COMPUTED = r"\text{\emph{not computed}}"
MISSING = object()          # sentinel: the field is absent
DIGITS = 6                  # significant digits of every run number in the report
OVERFULL_LIMIT_PT = 10.0    # overfull boxes wider than this are reported by `log_problems`

# ---------------------------------------------------------------- text and numbers
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text) -> str:
    """Text with LaTeX's special characters escaped (safe in running text and in a tabular cell)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def as_number(v):
    """v as a finite int/float/Fraction, or None when it is missing, not a number or not finite.

    Strings "p/q" and "x" that parse as numbers count (JSON keeps exact targets as "p/q").
    """
    if v is MISSING or v is None or isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, Fraction):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = Fraction(v.strip())
        except (ValueError, ZeroDivisionError):
            return None
        return f
    try:                                     # 0-d tensors and arrays
        return as_number(v.item())
    except (AttributeError, ValueError, TypeError):
        return None


_NON_FINITE = ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "none", "null")


def value_tex(v, digits: int = DIGITS) -> str:
    """The math-mode text of one value: the single formatting rule of the report.

    int -> "77"; Fraction or "p/q" -> "\\frac{1}{61}"; float -> 6 significant digits, written
    "m\\times10^{e}" outside [1e-3, 1e5); bool -> yes/no; str -> upright text; missing (None,
    MISSING), non-finite or non-numeric objects -> NOT_COMPUTED.
    """
    if v is MISSING or v is None:
        return NOT_COMPUTED
    if isinstance(v, (bool, np.bool_)):
        return r"\text{yes}" if v else r"\text{no}"
    x = as_number(v)
    if isinstance(v, str) and x is None:
        return r"\text{" + latex_escape(v) + "}" if v.strip() and v.strip().lower() not in _NON_FINITE else NOT_COMPUTED
    if x is None:
        return NOT_COMPUTED
    if isinstance(x, Fraction):
        if x.denominator == 1:
            return str(x.numerator)
        sign = "-" if x < 0 else ""
        return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    m, e = f"{x:.{digits - 1}e}".split("e")
    m = m.rstrip("0").rstrip(".") if "." in m else m
    return f"{m}\\times10^{{{int(e)}}}"


def key_digits(key: str) -> int:
    """Significant digits for the value under key: DIGITS, fewer for Monte Carlo couplings (2 for errors)."""
    if key.startswith("coupling."):
        return 2 if key.endswith("_stderr") else 4
    return DIGITS


def frac_inline(f: Fraction) -> str:
    """A rational as p/q for running text (math mode, no \\frac)."""
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


# GIFT integer formulas are stored as text (gift.gift_reference_ratios); these are their symbols.
_SYMBOLS = {"p2": "p_2", "N_gen": r"N_{\mathrm{gen}}", "dim_K7": r"\dim K_7", "dim_G2": r"\dim G_2",
            "dim_E8": r"\dim E_8", "rank_E8": r"\operatorname{rk} E_8", "Weyl": r"W", "Weyl_factor": "W",
            "b2": "b_2", "b3": "b_3", "H*": "H^*", "H_star": "H^*", "M5": "M_5"}
_QUANTITIES = {"m_s/m_d": r"m_s/m_d", "m_tau/m_e": r"m_\tau/m_e", "m_tau/m_mu": r"m_\tau/m_\mu",
               "Q_Koide": r"Q_{\mathrm{Koide}}", "m_c/m_s": r"m_c/m_s", "m_b/m_s": r"m_b/m_s",
               "m_t/m_b": r"m_t/m_b", "m_mu/m_e": r"m_\mu/m_e"}


def formula_tex(text: str) -> str:
    """A GIFT integer formula written in k7lib's text form ("dim_K7 + 10*dim_E8 + 10*H*") as math.

    Known symbols become their usual notation, '*' a thin space, other names upright text.
    """
    out = []
    for tok in re.findall(r"H\*|[A-Za-z_][A-Za-z0-9_]*|\d+|\*\*|[-+*/^()]|\s+|.", str(text)):
        if tok in _SYMBOLS:
            out.append(_SYMBOLS[tok])
        elif tok == "*":
            out.append(r"\,")
        elif tok == "**":
            out.append("^")
        elif tok.isspace():
            out.append(" ")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            out.append(r"\mathrm{" + latex_escape(tok) + "}")
        elif re.fullmatch(r"\d+|[-+/^()]", tok):
            out.append(tok)
        else:
            out.append(latex_escape(tok))
    return "".join(out).strip()


def quantity_tex(name: str) -> str:
    return _QUANTITIES.get(name, r"\mathrm{" + latex_escape(name) + "}")


# ---------------------------------------------------------------- values of one report
class _Values:
    """Looks values up by key and remembers every one it typesets (key -> raw value)."""

    def __init__(self, metadata: dict, config: dict, coupling_records: list, tables: list):
        self.meta, self.config, self.couplings, self.tables = metadata, config, coupling_records, tables
        self.used: dict = {}

    def raw(self, key: str):
        if key.startswith("derived."):
            return self.used.get(key, MISSING)
        root, parts = self._root(key)
        cur = root
        for p in parts:
            if isinstance(cur, dict) and p in cur:
                cur = cur[p]
            elif isinstance(cur, (list, tuple)) and p.lstrip("-").isdigit() and -len(cur) <= int(p) < len(cur):
                cur = cur[int(p)]
            else:
                return MISSING
        return cur

    def _root(self, key):
        head, _, rest = key.partition(".")
        if head == "config":
            return self.config, rest.split(".") if rest else []
        if head == "coupling":
            return self.couplings, rest.split(".", 1)
        if head == "table":
            return self.tables, rest.split(".")
        return self.meta, [key] if key in self.meta else key.split(".")

    def number(self, key):
        return as_number(self.raw(key))

    def tex(self, key: str, value=MISSING) -> str:
        """\\rv{key}{value}; value defaults to the one stored under key (derived values are passed in)."""
        if key.startswith("derived."):
            self.used[key] = value
        else:
            value = self.raw(key)
            self.used[key] = value
        return f"\\rv{{{key}}}{{{value_tex(value, key_digits(key))}}}"

    def derived(self, key: str, value) -> str:
        return self.tex("derived." + key, value)


def _rel(measured, target):
    m, t = as_number(measured), as_number(target)
    if m is None or t is None or t == 0:
        return None
    return (float(m) - float(t)) / float(t)


def _exact(values: _Values, name: str, fallback: Fraction) -> Fraction:
    """The exact target the run recorded under metadata["exact"][name] (constants' value if absent)."""
    f = as_number(values.raw(f"exact.{name}"))
    return f if isinstance(f, Fraction) else fallback


def coupling_records(results) -> list:
    """The coupling table as a list of dict records (metadata["coupling_table"] or the DataFrame), [] if none."""
    recs = results.metadata.get("coupling_table")
    if recs is None and getattr(results, "couplings", None) is not None:
        recs = results.couplings.to_dict(orient="records")
    return list(recs or [])


def compact_couplings(records: list, references: dict | None = None):
    """Group coupling records by (kind, triplet): [(row info, {quantity: (record index, field)})], columns.

    Accepts the long shape (one record per triplet and quantity, fields quantity / mapped /
    gift_formula / gift_exact) and a compact one (one record per triplet, one field per quantity).
    Returns (rows, columns) with columns = [(quantity, formula text, exact text)].
    """
    refs = gift_reference_ratios() if references is None else references
    rows, columns, where = [], {}, {}
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            continue
        key = (str(r.get("kind", "")), str(r.get("triplet", "")))
        if key not in where:
            where[key] = len(rows)
            rows.append({"kind": key[0], "triplet": key[1], "first": i, "cells": {}})
        row = rows[where[key]]
        if "quantity" in r:
            q = str(r["quantity"])
            row["cells"][q] = (i, "mapped")
            ref = refs.get(q)
            columns.setdefault(q, (r.get("gift_formula", ref.formula if ref else ""),
                                   r.get("gift_exact", str(ref.exact) if ref else "")))
        else:
            for q, ref in refs.items():
                field = next((k for k in r if k == q or k.startswith(q + " ")), None)
                if field is not None:
                    row["cells"][q] = (i, field)
                    columns.setdefault(q, (r.get(f"{q} formula", ref.formula), r.get(f"{q} exact", str(ref.exact))))
    return rows, [(q, f, e) for q, (f, e) in columns.items()]


# ---------------------------------------------------------------- the document
_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[a4paper,margin=2cm]{geometry}
\usepackage{amsmath,amssymb}
\usepackage{graphicx}
\usepackage{booktabs}
\usepackage{caption}
\usepackage{microtype}
\usepackage[hidelinks]{hyperref}
% \rv{source}{value}: one number of the run; the first argument names where it came from.
\newcommand{\rv}[2]{\ensuremath{#2}}
\newcommand{\figurefile}[2]{\IfFileExists{#1}{\includegraphics[width=#2]{#1}}%
  {\fbox{\parbox{0.8\linewidth}{\centering figure file \texttt{\detokenize{#1}} was not exported}}}}
\newcommand{\beff}[1]{b_{#1}^{\mathrm{eff}}}
\newcommand{\bharm}[1]{b_{#1}^{\mathrm{harm}}}
\setlength{\parskip}{0.3em}
"""


_WEIGHT_HEADERS = {"kappa": r"$w_\kappa$", "closure": r"$w_{d\varphi}$", "coclosure": r"$w_{d\star\varphi}$",
                   "det": r"$w_{\det}$", "positivity": r"$w_{+}$", "anti_flat": r"$w_{\partial_\lambda g}$"}


def _schedule(v: _Values):
    """(header, rows) of the phase schedule in the configuration, or None when it has no phases."""
    phases = v.raw("config.phases")
    if not isinstance(phases, (list, tuple)) or not phases or not all(isinstance(p, dict) for p in phases):
        return None
    names = []
    for p in phases:
        for k in (p.get("weights") or {}):
            if k not in names:
                names.append(k)
    header = ["", "phase", "epochs", "peak l.r."] + [_WEIGHT_HEADERS.get(k, latex_escape(k)) for k in names]
    rows = []
    for i, p in enumerate(phases):
        cells = [str(i + 1), latex_escape(p.get("name", "")), v.tex(f"config.phases.{i}.epochs"),
                 v.tex(f"config.phases.{i}.lr")]
        cells += [v.tex(f"config.phases.{i}.weights.{k}") for k in names]
        rows.append(" & ".join(cells) + r" \\")
    return header, rows


def _phase_starts(v: _Values):
    phases = v.raw("config.phases")
    if not isinstance(phases, (list, tuple)):
        return []
    starts, n = [], 0
    for p in phases:
        e = as_number(p.get("epochs")) if isinstance(p, dict) else None
        if e is None:
            return []
        starts.append(n)
        n += int(e)
    return starts[1:]


def _stderr_n(v: _Values):
    n, bad = v.number("n_eval_points"), v.number("nonpositive_points")
    if n is None:
        return None
    return int(n) - int(bad or 0)


def _pm(v: _Values, key: str, se_key: str) -> str:
    return f"{v.tex(key)} \\pm {v.tex(se_key)}"


_IN_BETTI_TABLE = ("b_eff", "b_harm", "gap ratio across b_harm")     # rows of further tables shown in tab:betti


def _spectrum_summary(v: _Values, k: int) -> str:
    spec = v.raw(f"harmonic_spectrum_{k}")
    if hasattr(spec, "tolist") and not isinstance(spec, (list, tuple)):     # a tensor or array (in-memory run)
        spec = spec.tolist()
    if not isinstance(spec, (list, tuple)) or not spec:
        return NOT_COMPUTED
    vals = [as_number(s) for s in spec]
    vals = [float(s) for s in vals if s is not None]
    if not vals:
        return NOT_COMPUTED
    return (f"{v.derived(f'spectrum_{k}_count', len(vals))}\\ \\text{{values in }}"
            f"[{v.derived(f'spectrum_{k}_min', min(vals))}, {v.derived(f'spectrum_{k}_max', max(vals))}]")


def _table(header: list, rows: list, caption: str, label: str, colspec: str, size: str = r"\small",
           fit: bool = False, float_: bool = True) -> list:
    """A booktabs table; fit: shrink it to the line width only when it is wider (graphicx's \\width)."""
    tab = [f"\\begin{{tabular}}{{{colspec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *rows,
           r"\bottomrule", r"\end{tabular}"]
    if fit:
        tab = [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"] + tab + ["}"]
    if not float_:           # in place, captioned like a table (caption package)
        return [r"\begin{center}", size] + tab + [f"\\captionof{{table}}{{{caption}}}\\label{{{label}}}",
                                                  r"\end{center}", ""]
    return [r"\begin{table}[ht]", r"\centering", size] + tab + [
            f"\\caption{{{caption}}}", f"\\label{{{label}}}", r"\end{table}", ""]


def render(results) -> tuple:
    """(tex, values): the article and every run value it prints, by \\rv key (raw, before formatting)."""
    meta = dict(results.metadata or {})
    config = dict(results.config or {}) if isinstance(results.config, dict) else {}
    records = coupling_records(results)
    extra_tables = list((getattr(results, "tables", None) or {}).items())
    v = _Values(meta, config, records, [[list(map(str, df.columns))] + df.values.tolist() for _, df in extra_tables])
    figures = set(getattr(results, "figures", None) or {})
    sc, zp = StructuralConstants(), ZeroParamGeometry()
    kappa = _exact(v, "kappa_T", zp.kappa_T)
    det_t = _exact(v, "det_g", zp.det_g_target)
    tau = _exact(v, "tau", zp.tau)
    rel_T = _rel(meta.get("kappa_T_measured"), meta.get("kappa_T_target"))
    rel_det = _rel(meta.get("det_g_measured"), meta.get("det_g_target"))
    n_se = _stderr_n(v)
    epochs = [as_number(p.get("epochs")) for p in config.get("phases", []) if isinstance(p, dict)]
    total_epochs = sum(epochs) if epochs and None not in epochs else None

    P = [_PREAMBLE, r"\begin{document}"]
    P += [r"\title{A $G_2$ three-form learned on a twisted-connected-sum chart of $K_7$\\[2pt]"
          r"\large GIFT v1.4 results, run \texttt{" + latex_escape(meta.get("run", "--")) + "}}",
          r"\author{k7lib " + latex_escape(meta.get("versions", {}).get("k7lib", "")
                                           if isinstance(meta.get("versions"), dict) else "") + "}",
          r"\date{}", r"\maketitle", ""]

    # ---- summary
    P += [r"\begin{abstract}",
          "A neural correction to a $G_2$ three-form $\\varphi$ was trained on the chart "
          "$[-L,L]\\times T^6$ of a twisted connected sum, with the metric $g=g(\\varphi)$ of "
          "Bryant and Hitchin throughout (profile " + v.tex("profile") + ", seed " + v.tex("seed") + ", "
          + v.derived("total_epochs", total_epochs) + " epochs in " + v.derived("n_phases", len(epochs) or None)
          + " phases). No continuous physical parameter is fitted: the targets are exact rationals of the "
          f"GIFT structural integers, $\\kappa_T={frac_inline(kappa)}$ and $\\det g={frac_inline(det_t)}$. "
          "On " + v.tex("n_eval_points") + " fresh points in double precision the torsion magnitude is "
          "$\\langle T\\rangle=" + _pm(v, "kappa_T_measured", "T_stderr") + "$, so that "
          "$\\langle T\\rangle/\\kappa_T-1=" + v.derived("kappa_T_rel", rel_T) + "$, and $\\langle\\det g\\rangle="
          + _pm(v, "det_g_measured", "det_g_stderr") + "$, so that $\\langle\\det g\\rangle/\\det g_*-1="
          + v.derived("det_g_rel", rel_det) + "$. The candidate forms have Gram ranks "
          "$(\\beff2,\\beff3)=(" + v.tex("b2_eff") + "," + v.tex("b3_eff") + ")$ and harmonic counts "
          "$(\\bharm2,\\bharm3)=(" + v.tex("b2_harm") + "," + v.tex("b3_harm") + ")$; the chart itself has "
          "$(b_2,b_3)=(" + v.tex("b2_topology") + "," + v.tex("b3_topology") + ")$, so the GIFT pair $(b_2,b_3)=("
          + v.tex("b2_target") + "," + v.tex("b3_target") + ")$ is not tested by this chart "
          "(Section~\\ref{sec:scope}).",
          r"\end{abstract}", ""]

    # ---- setup
    P += [r"\section{Setup}",
          r"\paragraph{Chart.} The neck coordinate $\lambda\in[-L,L]$, with $L=" + v.tex("config.L") + "$, "
          r"runs from deep in the left building block ($\lambda=-L$) to deep in the right one; "
          r"$y\in T^6=\mathbb{R}^6/\mathbb{Z}^6$ are periodic fibre coordinates. A smooth partition of unity "
          r"in $\lambda$ defines the left block, the neck and the right block. The background "
          r"$\varphi_{\mathrm{bg}}=s^3A(\lambda)^*\varphi_0$ pulls the standard form $\varphi_0$ back by a "
          r"frame with $\det A=1$ that warps a different fibre circle in each block and turns fibre planes "
          r"by a hyper-K\"ahler rotation whose angle rises from $0$ to $\pi/2$ across the neck; the scale "
          r"$s$ is fixed by $\det g(\varphi_{\mathrm{bg}})=s^{14}=" + value_tex(det_t) + "$.",
          "",
          r"\paragraph{Three-form and metric.} $\varphi=\varphi_{\mathrm{bg}}+\mathrm{NN}(x)$, where the "
          r"network (" + v.tex("config.depth") + r" $\tanh$ layers of width " + v.tex("config.width")
          + ", Fourier modes $n\\le" + v.tex("config.n_fourier") + "$ of $y$, Chebyshev polynomials "
          "$T_1,\\dots,T_{" + v.tex("config.n_chebyshev") + r"}$ of $\lambda/L$) starts at zero. The metric "
          r"is never rescaled: $B_{ij}=\tfrac1{144}\varphi_{iab}\varphi_{jcd}\varphi_{efg}\epsilon^{abcdefg}$, "
          r"$g=(\det B)^{-1/9}B$, $\psi=\star\varphi$. Exterior derivatives are exact (forward-mode "
          r"automatic differentiation, method " + v.tex("config.method") + ").",
          "",
          r"\paragraph{Targets.} From $p_2=" + v.tex("p2") + r"$, $N_{\mathrm{gen}}=" + v.tex("N_gen")
          + f"$, $\\dim K_7={sc.dim_K7}$, $\\dim G_2={sc.dim_G2}$, $\\operatorname{{rk}}E_8={sc.rank_E8}$, "
          f"$M_5=\\dim E_8/\\operatorname{{rk}}E_8={sc.M5}$ and the GIFT Betti numbers $b_2={sc.b2_K7}$, "
          f"$b_3={sc.b3_K7}$:",
          r"\begin{align*}",
          r"\kappa_T&=\frac{1}{b_3-\dim G_2-p_2}=" + value_tex(zp.kappa_T) + r", &"
          r"\det g_*&=p_2+\frac{1}{b_2+\dim G_2-N_{\mathrm{gen}}}=" + value_tex(zp.det_g_target) + r",\\",
          r"\tau&=\frac{p_2^4\,\dim K_7\,M_5}{N_{\mathrm{gen}}^4(\operatorname{rk}E_8+N_{\mathrm{gen}})}="
          + value_tex(zp.tau) + ".",
          r"\end{align*}",
          "The run recorded $\\kappa_T=" + v.tex("kappa_T_target") + "$, $\\det g_*=" + v.tex("det_g_target")
          + "$ and $\\tau=" + v.tex("tau") + f"$ (exactly ${frac_inline(tau)}$).",
          "",
          r"\paragraph{Losses.} With $T^2=|d\varphi|_g^2+|d{\star\varphi}|_g^2$ and averages "
          r"$\langle\cdot\rangle$ over a batch of " + v.tex("config.batch") + r" chart points, the loss is "
          r"$\sum w_iL_i$ with",
          r"\begin{align*}",
          r"L_\kappa&=\Big(\frac{\langle T\rangle-\kappa_T}{\kappa_T}\Big)^2, &"
          r"L_{\det}&=\Big(\frac{\langle\det g\rangle-\det g_*}{\det g_*}\Big)^2"
          r"+\frac{\operatorname{Var}\det g}{\det g_*^2},\\",
          r"L_{d\varphi}&=\langle|d\varphi|_g^2\rangle, &"
          r"L_{+}&=\big\langle\operatorname{relu}(m-\lambda_{\min}(g))^2\big\rangle+\dots,\\",
          r"L_{d\star\varphi}&=\langle|d{\star\varphi}|_g^2\rangle, &"
          r"L_{\partial_\lambda g}&=\operatorname{relu}(1-V/V_0)^2,",
          r"\end{align*}",
          r"where $L_{+}$ keeps $g$ positive definite and well conditioned and $V$ is the RMS of "
          r"$\partial_\lambda g$ in the neck (the anti-flat measure); the weights $w_i$ of each phase are "
          r"in Table~\ref{tab:schedule}. Adam with warm-up and cosine decay and gradient clipping, its "
          r"state reset at each phase; a NaN, or a run of loss spikes, rolls back to the last checkpoint at "
          r"half the learning rate (a lone spike only skips its step; " + v.tex("rollbacks")
          + r" rollbacks in this run). After the last phase a Gauss--Newton polish makes the smallest change "
          r"of the network's weights that puts $\langle T\rangle$ and $\langle\det g\rangle$ on their targets "
          r"over " + v.tex("config.polish_points") + r" fixed Sobol points; $g=g(\varphi)$ throughout.",
          ""]
    sched = _schedule(v)
    if sched is None:
        P += [r"Training schedule: \emph{not computed} (the configuration lists no phases).", ""]
    else:
        P += _table(sched[0], sched[1],
                    r"Training schedule from the run's configuration: epochs, peak learning rate and the loss "
                    r"weights of each phase (training precision " + v.tex("config.train_dtype") + ").",
                    "tab:schedule", "rlrr" + "r" * (len(sched[0]) - 4))

    # ---- results
    if as_number(meta.get("stderr_scrambles")) is not None:
        how = (r"; standard errors are the spread of the means of " + v.tex("stderr_scrambles")
               + r" independent scrambles over its square root (randomised quasi-Monte Carlo)")
    else:
        how = (r"; standard errors are $s/\sqrt{N}$ with $N=" + v.derived("stderr_points", n_se)
               + r"$ and $s$ the sample standard deviation")
    P += [r"\section{Results}", r"\subsection{Torsion and volume}",
          r"Means over " + v.tex("n_eval_points") + r" fresh scrambled Sobol points in double precision, of "
          r"which " + v.tex("nonpositive_points") + r" gave a non-positive $\varphi$ and are left out" + how
          + r" (Table~\ref{tab:torsion}).", ""]
    P += _table(
        ["", "measured", "target", "relative deviation"],
        [r"$\langle T\rangle$ & $" + _pm(v, "kappa_T_measured", "T_stderr") + r"$ & $\kappa_T="
         + value_tex(kappa) + "$ & " + v.derived("kappa_T_rel", rel_T) + r" \\",
         r"$\langle\det g\rangle$ & $" + _pm(v, "det_g_measured", "det_g_stderr") + r"$ & $"
         + value_tex(det_t) + "$ & " + v.derived("det_g_rel", rel_det) + r" \\",
         r"standard deviation of $\det g$ & " + v.tex("det_g_std") + r" & & \\",
         r"smallest eigenvalue of $g$ & " + v.tex("eig_min") + r" & & \\",
         r"anti-flat measure (RMS $\partial_\lambda g$, neck) & " + v.tex("anti_flat") + r" & & \\"],
        r"Torsion magnitude and volume of the learned metric against the exact targets.", "tab:torsion", "lccc")
    starts = _phase_starts(v)
    start_text = ", ".join(v.derived(f"phase_start.{i + 1}", s) for i, s in enumerate(starts)) or NOT_COMPUTED
    P += [r"\begin{figure}[ht]", r"\centering", r"\figurefile{fig_history.pdf}{\linewidth}" if "history" in figures
          else r"\figurefile{fig_history_not_exported.pdf}{\linewidth}",
          r"\caption{Training history: total loss, $\langle T\rangle/\kappa_T$ and "
          r"$\langle\det g\rangle/\det g_*$ against the global epoch. Dashed lines mark the phase "
          r"boundaries (epochs " + start_text + r"); the dotted line is the target.}",
          r"\label{fig:history}", r"\end{figure}", ""]

    P += [r"\subsection{Harmonic forms}",
          r"$\beff k$ is the rank of the Gram matrix $G_{ab}=\int\langle\omega_a,\omega_b\rangle_g\,"
          r"\mathrm{vol}_g$ of the candidate $k$-forms with the learned metric: it measures linear "
          r"independence. $\bharm k$ is the rank of the Gram matrix of their harmonic parts: each closed "
          r"form $w$ is projected to $h=w-d\alpha$ with $\alpha$ minimising $\|w-d\alpha\|_g$ (the Hodge "
          r"projection with absolute boundary conditions, a Galerkin least-squares problem on a "
          r"Gauss--Legendre $\times$ Sobol rule), and the harmonic classes are the $O(1)$ eigenvalues "
          r"above the spectral gap of Figure~\ref{fig:spectra}, the exact directions the ones at round-off "
          r"below it. The Gram rank uses " + v.tex("n_harmonic_points") + r" Monte Carlo points "
          r"(Table~\ref{tab:betti}).", ""]
    P += _table(
        ["", "GIFT", r"$\beff k$ (Gram rank)", r"$\bharm k$", "gap", "spectrum", "chart"],
        [f"$b_{k}$ & " + v.tex(f"b{k}_target") + " & " + v.tex(f"b{k}_eff") + " & " + v.tex(f"b{k}_harm")
         + " & " + v.tex(f"b{k}_harm_gap") + " & $" + _spectrum_summary(v, k) + "$ & "
         + v.tex(f"b{k}_topology") + r" \\" for k in (2, 3)],
        r"Betti numbers: the GIFT targets, the Gram rank and the harmonic count of the candidates, the "
        r"spectral gap and the spectrum of the harmonic extraction where exported, and the Betti numbers "
        r"of the chart $[-L,L]\times T^6$.", "tab:betti", "lcccccc")
    P += [r"\begin{figure}[ht]", r"\centering",
          r"\figurefile{fig_spectra.pdf}{0.72\linewidth}" if "spectra" in figures
          else r"\figurefile{fig_spectra_not_exported.pdf}{\linewidth}",
          r"\caption{Spectra of the harmonic extraction for 2-forms (top) and 3-forms (bottom): the "
          r"horizontal lines mark the thresholds behind $\beff k$ and $\bharm k$; harmonic classes are the "
          r"eigenvalues above the gap, exact directions sit at round-off below it.}", r"\label{fig:spectra}", r"\end{figure}", ""]

    P += _couplings_section(v, records)

    # ---- scope
    t6 = (math.comb(6, 2), math.comb(6, 3))
    P += [r"\section{What this does and does not show}\label{sec:scope}",
          r"\emph{Does:} the learned $\varphi$ is a positive three-form whose metric is $g(\varphi)$ "
          r"everywhere; its torsion magnitude and volume are measured on fresh points with the standard "
          r"errors above, and every number in this note is computed by the code that produced the run.",
          "",
          r"\emph{Does not:} the chart $[-L,L]\times T^6$ is not a compact $K_7$. Since $\lambda$ is a "
          r"global function, $d\lambda\wedge dy_i=d(\lambda\,dy_i)$ is exact and the chart has the "
          f"cohomology of $T^6$, $(b_2,b_3)=({t6[0]},{t6[1]})$, for every metric; no computation on it can "
          f"produce $(b_2,b_3)=({sc.b2_K7},{sc.b3_K7})$. A Gram rank $\\beff k$ counts linearly "
          r"independent candidates, not cohomology classes: any " + str(sc.b3_K7) + r" independent "
          r"three-forms give $\beff3=" + str(sc.b3_K7) + r"$. Nor is "
          f"$({sc.b2_K7},{sc.b3_K7})$ the pair of a twisted connected sum, whatever the gluing angle: by "
          r"Crowley and Nordstr\"om~\cite{CN} the torsion-free $G_2$-structure of every twisted connected sum "
          r"has $\nu=24$, and $\nu\equiv b_0+b_1+b_2+b_3\pmod 2$,\footnote{$\nu=24$ for every twisted "
          r"connected sum and odd $\nu$ for some of Joyce's examples are stated in the abstract of~\cite{CN}; "
          r"the parity relation is cited from~\cite{CN} without our having checked its exact statement there.} "
          f"while here $b_0+b_1+b_2+b_3=1+{sc.b2_K7}+{sc.b3_K7}={1 + sc.b2_K7 + sc.b3_K7}$ is odd (for "
          r"orthogonal gluing this is the parity of~\cite{CHNP}, Theorem~4.9). Extra-twisted connected sums "
          r"and Joyce's orbifold resolutions are not covered; some of the latter have odd $\nu$. The couplings "
          r"are diagnostics of the learned geometry, the mass ratios the GIFT ansatz: not a fit, not a prediction.",
          ""]

    # ---- provenance
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    P += [r"\paragraph{Provenance.} Profile " + v.tex("profile") + ", seed " + v.tex("seed") + ", "
          + v.derived("n_sample_points", len(results.coords) if results.coords is not None else None)
          + " exported sample points, " + v.derived("history_rows", len(results.history)
                                                    if results.history is not None else None)
          + " history rows; " + latex_escape(", ".join(f"{k} {x}" for k, x in versions.items()) or "versions not recorded")
          + "."]
    note = meta.get("topology_note")
    if isinstance(note, str) and note.strip():
        P += [r"The run's topology note reads: ``\emph{" + latex_escape(note.strip().rstrip(".")) + "}''."]
    P += [""]

    # ---- references, then the appendix
    P += [r"{\small", r"\begin{thebibliography}{9}", r"\setlength{\itemsep}{0pt}",
          r"\bibitem{CHNP} A.~Corti, M.~Haskins, J.~Nordstr\"om, T.~Pacini, \emph{$G_2$-manifolds and "
          r"associative submanifolds via semi-Fano 3-folds}, Duke Math.\ J.\ 164 (2015) 1971--2092, "
          r"\href{https://arxiv.org/abs/1207.4470}{arXiv:1207.4470}.",
          r"\bibitem{CN} D.~Crowley, J.~Nordstr\"om, \emph{New invariants of $G_2$-structures}, "
          r"Geom.\ Topol.\ 19 (2015) 2949--2992, \href{https://arxiv.org/abs/1211.0269}{arXiv:1211.0269}.",
          r"\bibitem{BW} C.~Beasley, E.~Witten, \emph{A note on fluxes and superpotentials in M-theory "
          r"compactifications on manifolds of $G_2$ holonomy}, JHEP 07 (2002) 046, "
          r"\href{https://arxiv.org/abs/hep-th/0203061}{arXiv:hep-th/0203061}.",
          r"\bibitem{Hitchin} N.~Hitchin, \emph{The geometry of three-forms in six and seven dimensions}, "
          r"J.\ Differential Geom.\ 55 (2000) 547--576, \href{https://arxiv.org/abs/math/0010054}{arXiv:math/0010054}.",
          r"\bibitem{KL} S.~Karigiannis, N.\,C.~Leung, \emph{Hodge theory for $G_2$-manifolds: intermediate "
          r"Jacobians and Abel--Jacobi maps}, Proc.\ London Math.\ Soc.\ 99 (2009) 297--325, "
          r"\href{https://arxiv.org/abs/0709.2987}{arXiv:0709.2987}.",
          r"\bibitem{GY} S.~Grigorian, S.-T.~Yau, \emph{Local geometry of the $G_2$ moduli space}, "
          r"Commun.\ Math.\ Phys.\ 287 (2009) 459--488, \href{https://arxiv.org/abs/0802.0723}{arXiv:0802.0723}.",
          r"\bibitem{AW} B.~Acharya, E.~Witten, \emph{Chiral fermions from manifolds of $G_2$ holonomy}, "
          r"\href{https://arxiv.org/abs/hep-th/0109152}{arXiv:hep-th/0109152}.",
          r"\end{thebibliography}}", ""]

    # ---- further tables
    if extra_tables:
        P += [r"\appendix", r"\section{Further tables}"]
        for t, (name, df) in enumerate(extra_tables):
            cols = list(map(str, df.columns))
            rows = []
            for r in range(len(df)):
                if str(df.iat[r, 0]).startswith(_IN_BETTI_TABLE):       # already in the Betti table
                    continue
                cells = []
                for c in range(len(cols)):
                    x = df.iat[r, c]
                    cells.append(latex_escape(x) if isinstance(x, str) else v.tex(f"table.{t}.{r + 1}.{c}"))
                rows.append(" & ".join(cells) + r" \\")
            P += _table([latex_escape(c) for c in cols], rows, latex_escape(name), f"tab:extra{t}",
                        "p{0.5\\linewidth}" + "c" * (len(cols) - 1) if len(cols) <= 4 else "l" * len(cols),
                        r"\scriptsize", fit=True, float_=False)

    P += [r"\end{document}", ""]
    return "\n".join(P), dict(v.used)


def _couplings_section(v: _Values, records: list) -> list:
    out = [r"\subsection{Couplings: a topological pairing, Hitchin's cubic and the GIFT ansatz}"]
    rows, columns = compact_couplings(records)
    if not rows:
        return out + [r"Couplings: " + r"\emph{not computed} (the run exported no coupling table).", ""]
    out += [r"Two couplings that do not vanish by degree are computed, with Monte Carlo standard errors. "
            r"The triple pairing $Y_{ijk}=\int\omega_i\wedge\omega_j\wedge\Phi_k$ of harmonic 2- and 3-forms "
            r"is topological: for closed forms on a closed manifold it depends only on their cohomology "
            r"classes, and in M-theory it is the gauge kinetic term of the vector multiplets~\cite{BW}, not "
            r"a Yukawa coupling; on the chart it is the coordinate integral of the top form. Hitchin's cubic, "
            r"the derivative $\partial^3V/\partial t_i\partial t_j\partial t_k$ of the volume "
            r"functional~\cite{Hitchin} along harmonic 3-forms, is the moduli Yukawa coupling of a torsion-free "
            r"$G_2$ structure~\cite{KL,GY}; the learned $\varphi$ has small, non-zero torsion. A smooth "
            r"$G_2$ manifold carries no chiral matter~\cite{AW}, so neither number is a Yukawa coupling of "
            r"quarks or leptons. The mass ratios are the GIFT ansatz, a map that GIFT assumes and nothing "
            r"here derives: the TauLayer sends the normalised coupling $\varepsilon=|Y|/Y_{\mathrm{scale}}$ to "
            r"$\varepsilon^{-\tau n}$ with integer generation steps $n$ (and Koide's $Q$ of the resulting "
            r"lepton masses); each column heads with the GIFT integer formula it is compared with "
            r"(Table~\ref{tab:couplings}).",
            ""]
    header = ["triplet", r"$Y\pm\sigma_Y$", r"$\varepsilon$"]
    for q, formula, exact in columns:
        ex = as_number(exact)
        lines = [f"${quantity_tex(q)}$"] + [f"${part}$" for part in _formula_lines(formula)]
        lines += [f"$={value_tex(ex)}$"] if ex is not None else []
        header.append(r"\shortstack{" + r"\\ ".join(lines) + "}")
    kinds = {PAIRING_KIND: r"$\int\omega_i\wedge\omega_j\wedge\Phi_k$ (topological triple pairing)",
             HITCHIN_KIND: r"$\partial^3V/\partial t_i\partial t_j\partial t_k$ (Hitchin cubic, moduli Yukawa)"}
    body, kind = [], None
    for row in rows:
        if row["kind"] != kind:
            kind = row["kind"]
            body += ([r"\midrule"] if body else []) + [
                f"\\multicolumn{{{len(header)}}}{{l}}{{{kinds.get(kind, latex_escape(kind))}}} \\\\"]
        i = row["first"]
        cells = [latex_escape(row["triplet"]),
                 "$" + v.tex(f"coupling.{i}.Y") + r"\pm" + v.tex(f"coupling.{i}.Y_stderr") + "$",
                 v.tex(f"coupling.{i}.epsilon")]
        for q, _, _ in columns:
            cell = row["cells"].get(q)
            cells.append(v.tex(f"coupling.{cell[0]}.{cell[1]}") if cell else r"\emph{not computed}")
        body.append(" & ".join(cells) + r" \\")
    return out + _table(header, body, r"Couplings per triplet (Monte Carlo standard error $\sigma_Y$) and the mass "
                        r"ratios the GIFT ansatz assigns them; each column's header gives the GIFT integer formula "
                        r"and its exact value (a diagnostic of an assumed map: not a fit, not a derivation).",
                        "tab:couplings", "l" + "c" * (len(header) - 1), r"\footnotesize\setlength{\tabcolsep}{3pt}",
                        fit=True)


def _formula_lines(formula: str, width: int = 18) -> list:
    """A formula as math lines short enough for a column header: split before top-level '+' terms."""
    terms, depth, cur = [], 0, ""
    for ch in str(formula):
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            terms.append(cur.strip())
            cur = ""
        cur += ch
    terms.append(cur.strip())
    lines = [""]
    for t in terms:
        if lines[-1] and len(lines[-1]) + len(t) > width:
            lines.append("")
        lines[-1] = (lines[-1] + " " + t).strip()
    return [formula_tex(line) for line in lines]


def render_tex(results) -> str:
    """The standalone article (see the module docstring); every run number from `results`."""
    return render(results)[0]


# ---------------------------------------------------------------- checks and compilation
def tex_problems(text: str) -> list:
    """Structural problems of a LaTeX document: unbalanced braces/environments, missing document body."""
    problems = []
    body = re.sub(r"(?<!\\)%.*", "", text)                       # comments
    body = re.sub(r"\\[\\{}%&$#_]", "", body)                    # escaped characters
    depth = 0
    for ch in body:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            problems.append("a '}' closes no '{'")
            depth = 0
    if depth:
        problems.append(f"{depth} unclosed '{{'")
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", body):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack[-1] != env:
            problems.append(f"\\end{{{env}}} does not match " + (f"\\begin{{{stack[-1]}}}" if stack else "any \\begin"))
            if stack and env in stack:
                while stack and stack.pop() != env:
                    pass
        else:
            stack.pop()
    problems += [f"\\begin{{{env}}} is never closed" for env in stack]
    if not re.match(r"\s*\\documentclass", body):
        problems.append("the document does not start with \\documentclass")
    if "\\begin{document}" not in body or not body.rstrip().endswith("\\end{document}"):
        problems.append("the document needs \\begin{document} and must end with \\end{document}")
    return problems


def tex_wellformed(path) -> bool:
    """True when `tex_problems` finds nothing in the file at path."""
    return not tex_problems(Path(path).read_text(encoding="utf-8"))


def log_problems(log: str, overfull_limit_pt: float = OVERFULL_LIMIT_PT) -> list:
    """Errors ("! ..." lines), undefined references and overfull boxes wider than the limit in a pdflatex log."""
    problems = [line for line in log.splitlines() if line.startswith("!")]
    problems += [m.group(0) for m in re.finditer(r"Overfull \\[hv]box \(([\d.]+)pt too \w+\)[^\n]*", log)
                 if float(m.group(1)) > overfull_limit_pt]
    problems += [line for line in log.splitlines() if "undefined" in line and ("Reference" in line or "Citation" in line)]
    return problems


def compile_tex(path, timeout: float = 120.0, keep_log: bool = False) -> Path | None:
    """Run pdflatex on the file (auxiliary files in a temporary folder); PDF beside it, or None without pdflatex.

    Runs again while the log asks for it (cross-references), at most three times. keep_log: copy
    the final .log beside the PDF. Raises RuntimeError with the end of the log when pdflatex fails.
    """
    exe = shutil.which("pdflatex")
    if exe is None:
        return None
    path = Path(path).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp}",
                                   str(path)], cwd=path.parent, capture_output=True, text=True, timeout=timeout)
            pdf = Path(tmp) / (path.stem + ".pdf")
            if proc.returncode != 0 or not pdf.exists():
                raise RuntimeError(f"pdflatex failed on {path}:\n" + "\n".join(proc.stdout.splitlines()[-25:]))
            log = (Path(tmp) / (path.stem + ".log")).read_text(encoding="latin-1")
            if "Rerun to get" not in log:
                break
        out = path.with_suffix(".pdf")
        shutil.copyfile(pdf, out)
        if keep_log:
            path.with_suffix(".log").write_text(log, encoding="latin-1")
    return out


def first_page_png(pdf, out_png=None, dpi: int = 80) -> Path | None:
    """The PDF's first page as a PNG (pdftoppm, else pypdfium2); None when neither is available."""
    pdf = Path(pdf)
    out_png = Path(out_png) if out_png is not None else pdf.with_name(pdf.stem + "_page1.png")
    exe = shutil.which("pdftoppm")
    if exe is not None:
        subprocess.run([exe, "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile", str(pdf),
                        str(out_png.with_suffix(""))], check=True, capture_output=True, timeout=60)
        return out_png
    try:
        import pypdfium2
    except ImportError:
        return None
    page = pypdfium2.PdfDocument(str(pdf))[0]
    page.render(scale=dpi / 72).to_pil().save(out_png)
    return out_png


def preview(tex, dpi: int = 80) -> dict:
    """Compile the article and render its first page, never raising: {"pdf", "png", "message"}.

    pdf / png are paths or None; message says what was done or why not (no pdflatex, no PDF
    rasteriser, or the end of pdflatex's log when it failed). For the notebook's last section.
    """
    tex = Path(tex)
    out = {"pdf": None, "png": None, "message": ""}
    if not tex.is_file():
        out["message"] = f"{tex} does not exist: run the export first"
        return out
    try:
        out["pdf"] = compile_tex(tex)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        out["message"] = f"pdflatex could not compile {tex.name}: {err}"
        return out
    if out["pdf"] is None:
        out["message"] = (f"pdflatex is not installed: {tex.name} is ready to compile elsewhere "
                          "(apt-get install texlive-latex-recommended, then pdflatex twice)")
        return out
    try:
        out["png"] = first_page_png(out["pdf"], dpi=dpi)
    except (OSError, subprocess.SubprocessError) as err:
        out["message"] = f"compiled {out['pdf'].name}, but its first page could not be rendered: {err}"
        return out
    out["message"] = (f"compiled {out['pdf']}" + ("" if out["png"] else
                      "; install poppler-utils (pdftoppm) or pypdfium2 to show its first page here"))
    return out

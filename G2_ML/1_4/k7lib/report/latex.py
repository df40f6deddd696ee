"""LaTeX text of the report: the one formatting rule of its numbers (`value_tex`), escaping, GIFT
formulas as mathematics, and the structural check of a document (`tex_problems`)."""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

NOT_COMPUTED = r"\text{\emph{not computed}}"
MISSING = object()          # sentinel: the field is absent
DIGITS = 6                  # significant digits of every run number in the report
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


def formula_lines(formula: str, width: int = 18) -> list:
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

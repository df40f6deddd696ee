"""LaTeX text of the report: the one formatting rule of its numbers (`value_tex`), the one rule of a number
with its uncertainty (`uncertain_tex`, `uncertain_text`), the one escaping rule of every string
(`latex_escape`) and of labels (`label_tex`), GIFT formulas as mathematics, and the structural check of a
document (`tex_problems`)."""
from __future__ import annotations

import math
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np

NOT_COMPUTED = r"\text{\emph{not computed}}"
MISSING = object()          # sentinel: the field is absent
DIGITS = 6                  # significant digits of every run number in the report
# ---------------------------------------------------------------- text
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\ensuremath{\$}", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\ensuremath{|}", "`": r"\`{}"}
# ($ as math: the text dollar of \texttt comes from a bitmap font, which microtype's expansion refuses)
# characters beyond ASCII that the article's fonts set (OT1 text, LaTeX's utf8 input), written as commands
_TYPOGRAPHY = {"\u2013": "--", "\u2014": "---", "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''",
               "\u2026": r"\dots{}", "\u00d7": r"\ensuremath{\times}", "\u00b1": r"\ensuremath{\pm}", "\u2212": "-",
               "\u00b0": r"\ensuremath{^\circ}", "\u00df": r"\ss{}", "\u00e6": r"\ae{}", "\u00c6": r"\AE{}",
               "\u00f8": r"\o{}", "\u00d8": r"\O{}", "\u0153": r"\oe{}", "\u0152": r"\OE{}", "\u0131": r"\i{}",
               "\u00b7": r"\ensuremath{\cdot}", "\u2192": r"\ensuremath{\to}", "\u00a0": "~"}
_ACCENTS = {"\u0301": "'", "\u0300": "`", "\u0302": "^", "\u0308": '"', "\u0303": "~", "\u0304": "=", "\u0307": ".",
            "\u0306": "u", "\u030c": "v", "\u030b": "H", "\u030a": "r", "\u0327": "c", "\u0328": "k"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"}
_GREEK_CAPITALS = {"gamma", "delta", "theta", "lambda", "xi", "pi", "sigma", "upsilon", "phi", "psi", "omega"}


def _char_tex(ch: str) -> str:
    """One character beyond printable ASCII as something pdflatex sets: a typographic or accent command,
    a Greek letter as mathematics, whitespace and control characters (newlines, DEL, ...) as a space,
    and anything else (CJK, emoji, format characters, ...) as the text [U+XXXX] of its code point."""
    if ch in _TYPOGRAPHY:
        return _TYPOGRAPHY[ch]
    cat = unicodedata.category(ch)
    if cat == "Cc" or cat == "Zs" or cat in ("Zl", "Zp"):
        return " "
    parts = unicodedata.normalize("NFD", ch)
    if len(parts) == 2 and parts[0].isascii() and parts[0].isalpha() and parts[1] in _ACCENTS:
        base = r"\i" if parts[0] == "i" else parts[0]
        return f"\\{_ACCENTS[parts[1]]}{{{base}}}"
    name = unicodedata.name(ch, "").split()
    if name[:2] == ["GREEK", "SMALL"] or name[:2] == ["GREEK", "CAPITAL"]:
        letter = " ".join(name[3:]).lower().replace("lamda", "lambda")
        if name[2:3] == ["LETTER"] and letter in _GREEK and (name[1] == "SMALL" or letter in _GREEK_CAPITALS):
            return r"\ensuremath{\%s}" % (letter if name[1] == "SMALL" else letter.capitalize())
    return f"[U+{ord(ch):04X}]"


def latex_escape(text) -> str:
    """The one escaping rule of every string that reaches the article (text, labels, table cells, keys).

    LaTeX's special characters become their text commands (so no control sequence, group, comment,
    parameter, ^^ notation or math shift can be formed from the string); printable ASCII stays; every
    other character is replaced by what pdflatex can set (`_char_tex`): newlines, tabs and DEL by a space,
    CJK, emoji and other unset characters by "[U+XXXX]". Safe in running text, in \\texttt and in a
    tabular cell; the result is pure ASCII.
    """
    out = []
    for ch in str(text):
        if ch in _TEX_ESCAPES:
            out.append(_TEX_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(_char_tex(ch))
    return "".join(out)


# labels of the package's own tables and keys, typeset as mathematics
_LABEL_MATH = {"b_eff": r"$b^{\mathrm{eff}}$", "b_harm": r"$b^{\mathrm{harm}}$",
               "b2_eff": r"$b_2^{\mathrm{eff}}$", "b3_eff": r"$b_3^{\mathrm{eff}}$",
               "b2_harm": r"$b_2^{\mathrm{harm}}$", "b3_harm": r"$b_3^{\mathrm{harm}}$", "kappa_T": r"$\kappa_T$",
               "det_g": r"$\det g$", "dx^I": r"$dx^I$", "T^6": r"$T^6$"}
_LABEL_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_^][A-Za-z0-9]+)+")


def label_tex(text) -> str:
    """A label or other text for the article: the package's keys written as mathematics (b_eff ->
    $b^{\\rm eff}$, b_harm, kappa_T, dx^I, ...), any other word with an underscore or caret as
    \\texttt{...} (a name in the code), the rest as text; every part through `latex_escape`."""
    out, pos, text = [], 0, str(text)
    for m in _LABEL_TOKEN.finditer(text):
        out.append(latex_escape(text[pos:m.start()]))
        tok = m.group(0)
        out.append(_LABEL_MATH.get(tok) or r"\texttt{" + latex_escape(tok) + "}")
        pos = m.end()
    out.append(latex_escape(text[pos:]))
    return "".join(out)


# ---------------------------------------------------------------- numbers
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


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def value_text(v, digits: int = DIGITS) -> str:
    """`value_tex`'s rule in plain Unicode text: 77, 1/61, 0.0171, 1.234 × 10⁻⁴, yes/no, "not computed"."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    x = as_number(v)
    if isinstance(v, str) and x is None and v.strip() and v.strip().lower() not in _NON_FINITE:
        return v
    if x is None:
        return "not computed"
    if isinstance(x, (Fraction, int)):
        return str(x)
    tex = value_tex(x, digits)
    m, _, e = tex.partition("\\times10^{")
    return m if not e else f"{m} \u00d7 10{e.rstrip('}').translate(_SUPERSCRIPT)}"


# ---------------------------------------------------------------- a number with its uncertainty
UNCERTAINTY_DIGITS = 2      # significant digits of an uncertainty; the value is rounded to the same place
_GROUP = 3                  # digits are grouped in threes on either side of the point (SI), from 5 digits on


def _decimal(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def _rounded(value: float, errors: list) -> tuple:
    """(value, errors, place): all rounded at 10^place, the place of the second significant digit of the
    largest error after its own rounding (0.0996 -> 0.10, the place moves up with it)."""
    big = _decimal(max(errors))
    place = big.adjusted() - (UNCERTAINTY_DIGITS - 1)
    if big.quantize(Decimal(1).scaleb(place), ROUND_HALF_UP).adjusted() > big.adjusted():
        place += 1
    q = Decimal(1).scaleb(place)
    v = _decimal(value).quantize(q, ROUND_HALF_UP)
    return (v if v != 0 else abs(v)), [_decimal(e).quantize(q, ROUND_HALF_UP) for e in errors], place


def _grouped(digits: str, sep: str) -> str:
    """'16394.12345' -> '16 394.123 45' (sep between groups of three) when a side has five digits or more."""
    sign = "-" if digits.startswith("-") else ""
    whole, _, frac = digits.lstrip("-").partition(".")
    if len(whole) > 4:
        whole = sep.join(reversed([whole[max(0, i - _GROUP):i] for i in range(len(whole), 0, -_GROUP)]))
    if len(frac) > 4:
        frac = sep.join(frac[i:i + _GROUP] for i in range(0, len(frac), _GROUP))
    return sign + whole + ("." + frac if frac else "")


def _parts(value: float, errors: list, sep: str):
    """(mantissa, [error digits], exponent or None) of value(errors): fixed notation for a leading exponent
    in [-3, 5) when the error ends at or left of the units; otherwise a power of ten."""
    v, errs, place = _rounded(value, errors)
    lead = max(abs(v), *errs).adjusted()
    shift = 0 if -3 <= lead < 5 and place <= 0 else lead
    decimals = max(shift - place, 0)
    mant = f"{v.scaleb(-shift):.{decimals}f}"
    shown = []
    for e in errs:
        t = f"{e.scaleb(-shift):.{decimals}f}"
        # below the units: the digits in units of the last place, 0.0013 -> 13; otherwise as it is, 8.2
        shown.append((t.replace(".", "").lstrip("0") or "0") if t.startswith("0.") else t)
    return _grouped(mant, sep), shown, (None if shift == 0 else shift)


def _uncertainty_inputs(value, stderr, spread):
    """(value float or None, [(error, label)]) of the finite positive uncertainties given; the value None
    when it is missing, not finite or exact (a Fraction or "p/q", which stays exact)."""
    x = as_number(value)
    if x is None or isinstance(x, Fraction) or isinstance(value, (bool, np.bool_, str)):
        return None, []
    errs = []
    for err, label in ((stderr, "MC"), (spread, "seeds")):
        e = as_number(err)
        if e is not None and not isinstance(e, Fraction) and e > 0:
            errs.append((float(e), label))
    return float(x), errs


def _error_state(err) -> str:
    """'absent' (None or missing), 'zero', 'bad' (non-finite, negative, not a number) or 'ok'."""
    if err is None or err is MISSING:
        return "absent"
    e = as_number(err)
    if e is None or isinstance(err, (bool, np.bool_)) or e < 0:
        return "bad"
    return "zero" if e == 0 else "ok"


def _parts_or_none(x, errs, sep):
    """`_parts` of a value with finite positive errors; None where the rule does not apply."""
    if x is None or not errs:
        return None
    try:
        return _parts(x, [e for e, _ in errs], sep)
    except InvalidOperation:                  # an error below the value's float resolution
        return None


def _without_rule(value, x, errs, stderr, spread, fmt, words) -> str:
    """A value the two-digit rule does not apply to, by today's rule `fmt`: missing value -> fmt(value);
    errors beyond the value's resolution -> value +- each error; else the value with its error's state.
    words: (zero error, bad error, plus-minus, spread template)."""
    zero, bad, pm, spread_words = words
    if x is None:
        return fmt(value)
    if errs:
        return fmt(x) + "".join(pm + fmt(e, UNCERTAINTY_DIGITS) for e, _ in errs)
    state = {"absent": "", "zero": zero, "bad": bad, "ok": ""}[_error_state(stderr)]
    return fmt(value) + state + ("" if spread is None else spread_words % fmt(spread))


def uncertain_tex(value, stderr, spread=None) -> str:
    """The math-mode text of a value with its standard error (and its seed spread): the one rule of the
    report for a number with an uncertainty.

    The uncertainty is shown to UNCERTAINTY_DIGITS = 2 significant digits (not the PDG rule: 0.049 stays
    0.049, not 0.05) and the value rounded to the same decimal place, in the concise form with the
    uncertainty in parentheses: 0.016\\,394(13) for 0.016394 +- 0.000013, 9.960(49), 3.7(8.2)\\times10^{-5}
    (an uncertainty reaching the units is written with its point). Fixed notation while the leading
    exponent lies in [-3, 5) and the uncertainty ends at or below the units, else a power of ten; digits
    in groups of three (a thin space) from five on. spread: the standard deviation over the ensemble's
    seeds, shown after the Monte Carlo error and marked: 0.016\\,394(13)_{\\mathrm{MC}}(40)_{\\mathrm{seeds}},
    both at the place of the larger.
    A missing uncertainty (None) keeps `value_tex`'s rule; a zero one prints \\pm0; a non-finite or negative
    one prints \\pm "not computed". Exact values (Fraction, "p/q") stay exact; a missing or non-finite value
    prints "not computed".
    """
    x, errs = _uncertainty_inputs(value, stderr, spread)
    parts = _parts_or_none(x, errs, r"\,")
    if parts is None:
        return _without_rule(value, x, errs, stderr, spread, value_tex, (r"\pm0", r"\pm" + NOT_COMPUTED, r"\pm",
                             r"\ (\text{seed spread }%s)"))
    mant, shown, exp = parts
    marks = [r"_{\mathrm{%s}}" % label if spread is not None else "" for _, label in errs]
    body = mant + "".join(f"({d}){m}" for d, m in zip(shown, marks))
    return body if exp is None else f"{body}\\times10^{{{exp}}}"


def uncertain_text(value, stderr, spread=None) -> str:
    """`uncertain_tex` in plain Unicode text: 0.016 394(13), 3.7(8.2) × 10⁻⁵, with a spread
    0.016 394(13 MC)(40 seeds); a missing uncertainty keeps `value_text`'s rule, a zero one ± 0, a
    non-finite one "± not computed"."""
    x, errs = _uncertainty_inputs(value, stderr, spread)
    parts = _parts_or_none(x, errs, "\u2009")
    if parts is None:
        return _without_rule(value, x, errs, stderr, spread, value_text, (" ± 0", " ± not computed", " ± ",
                             " (seed spread %s)"))
    mant, shown, exp = parts
    marks = [f" {label}" if spread is not None else "" for _, label in errs]
    body = mant + "".join(f"({d}{m})" for d, m in zip(shown, marks))
    return body if exp is None else f"{body} \u00d7 10{str(exp).translate(_SUPERSCRIPT)}"


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

"""results_v1_4.tex: a short standalone article about one run, rendered from a LaTeX template with Jinja2.

`report/templates/results_v1_4.tex.j2` holds the text; `report.context.build_context` builds its typed
context from an `export.Results`. The template uses delimiters that LaTeX never does (\\VAR{...} prints,
\\BLOCK{...} controls, \\#{...} comments), and every number of the run passes through one filter, `rv`,
which typesets it with `latex.value_tex` inside the macro \\rv{key}{value}: the key names where the
number came from (see `context.Value`), the macro prints only the value, and a missing field or a
non-finite value prints "not computed": never a LaTeX error, never a silent zero. `render` returns the
raw value of every key it printed, so a test can check each printed number against its source.

Mathematical constants (the exact targets 1/61, 65/32, 3472/891 and the integers they come from) are
read from `constants` (filter `math`); they are definitions, not results of the run. The document uses
only packages of a TeX Live "recommended" installation and includes fig_history.pdf and
fig_spectra.pdf when the run exported them (a missing file prints a framed note instead).
"""
from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, StrictUndefined

from .context import Value, build_context
from .latex import MISSING, NOT_COMPUTED, frac_inline, key_digits, label_tex, latex_escape, uncertain_tex, value_tex

TEMPLATE = "results_v1_4.tex.j2"
DELIMITERS = dict(block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{",
                  variable_end_string="}", comment_start_string=r"\#{", comment_end_string="}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.,:;/ |*+=()'-]*")


def source_key(key: str) -> str:
    """A source key as the first argument of \\rv / \\ru: as it is when made of plain characters (the
    macro discards it), else through `latex.latex_escape` (a key from a dictionary of the run may hold
    braces, %, ^^ or control sequences)."""
    return key if _PLAIN_KEY.fullmatch(key) else latex_escape(key)


def _error_raw(v: Value | None):
    """The raw standard error (or spread) to print: None without one, NaN ("not computed") when it is missing."""
    if v is None:
        return None
    return float("nan") if v.raw is MISSING or v.raw is None else v.raw


def environment(used: dict) -> Environment:
    """The Jinja2 environment of the article; `rv` records every value it prints in `used` (key -> raw).

    A Value with a standard error or a seed spread prints as \\ru{key}{stderr key}{spread key}{text},
    text by `latex.uncertain_tex`; any other as \\rv{key}{text}, text by `latex.value_tex`. Filters:
    tex (`latex.label_tex`: labels and text), esc (`latex.latex_escape`: inside \\texttt), math, frac."""
    def rv(v: Value) -> str:
        if not isinstance(v, Value):
            raise TypeError(f"rv prints a report.context.Value, got {type(v).__name__}")
        used[v.key] = v.raw
        if v.stderr is None and v.spread is None:
            return f"\\rv{{{source_key(v.key)}}}{{{value_tex(v.raw, key_digits(v.key))}}}"
        keys = [source_key(e.key) if e is not None else "" for e in (v.stderr, v.spread)]
        used.update({e.key: e.raw for e in (v.stderr, v.spread) if e is not None})
        text = uncertain_tex(v.raw, _error_raw(v.stderr), _error_raw(v.spread))
        return f"\\ru{{{source_key(v.key)}}}{{{keys[0]}}}{{{keys[1]}}}{{{text}}}"

    env = Environment(loader=PackageLoader("k7lib.report", "templates"), trim_blocks=True, lstrip_blocks=True,
                      autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True, **DELIMITERS)
    env.filters.update(rv=rv, math=value_tex, frac=frac_inline, tex=label_tex, esc=latex_escape)
    env.globals["not_computed"] = NOT_COMPUTED
    return env


def render(results) -> tuple:
    """(tex, values): the article and every run value it prints, by \\rv key (raw, before formatting)."""
    used: dict = {}
    tex = environment(used).get_template(TEMPLATE).render(a=build_context(results))
    return tex, used


def render_tex(results) -> str:
    """The standalone article (see the module docstring); every run number from `results`."""
    return render(results)[0]

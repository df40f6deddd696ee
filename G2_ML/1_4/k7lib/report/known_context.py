"""The article's section on a known G2 metric: its typed context, read from metadata["known_validation"]
(as learn.known.KnownReport.summary writes it) through a `context.Source`."""
from __future__ import annotations

from dataclasses import dataclass

from .latex import as_number, label_tex


@dataclass(frozen=True)
class ValidationRow:
    """One row of the validation table; every field but the label is a `context.Value`."""
    label: str                  # LaTeX
    exact: object
    start: object               # relative differences from exact (invariants) or values (torsion, holonomy)
    learned: object             # with its paired standard error where the invariant is a Monte Carlo estimate
    control: object


@dataclass(frozen=True)
class Validation:
    """The run's validation on a known G2 metric (metadata "known_validation"): invariant rows with relative
    differences, then per structure the L2 torsion, the curvature outside g2 and the holonomy rank; the
    numbers are `context.Value`s."""
    fixture: str                # LaTeX: which metric
    eps: object
    width: object
    n_points: object
    invariants: tuple
    structures: tuple
    met: object
    targets: object


VALIDATION_ROWS = {"volume": r"$\mathrm{Vol}(D)$", "int |Rm|^2": r"$\int_D|Rm|^2$",
                   "|Rm|^2 q0.5": r"median of $|Rm|^2$", "|Rm|^2 q0.9": r"$|Rm|^2$, 0.9 quantile",
                   "lambda_1": r"Dirichlet $\lambda_1$", "lambda_5": r"Dirichlet $\lambda_5$"}
FIXTURE_TEX = {"bryant-salamon": r"the Bryant--Salamon metric on $S^3\times\mathbb{R}^4$ (holonomy $G_2$)",
               "gibbons-hawking": r"Gibbons--Hawking $\times\,\mathbb{R}^3$ (holonomy $SU(2)$)",
               "flat": r"the flat metric of $\varphi_0$"}
VALIDATION_STRUCTURES = (("torsion_l2", r"$L^2$ torsion"), ("outside_g2", r"curvature outside $\mathfrak g_2$"),
                         ("rank", r"holonomy rank"))


def validation(src: Source) -> Validation | None:
    """The validation on a known G2 metric when the run carries one (metadata "known_validation"), else None."""
    kv = src.meta.get("known_validation")
    if not isinstance(kv, dict) or not isinstance(kv.get("rows"), list):
        return None
    base = "known_validation"
    def learned(i):              # with a standard error only where the invariant is a Monte Carlo estimate
        se = f"{base}.rows.{i}.learned_rel_se"
        return src(f"{base}.rows.{i}.learned_rel", se if as_number(src(se).raw) is not None else None)

    rows = tuple(ValidationRow(VALIDATION_ROWS[r["invariant"]], *(src(f"{base}.rows.{i}.{c}") for c in (
                 "exact", "start_rel")), learned(i), src(f"{base}.rows.{i}.control_rel"))
                 for i, r in enumerate(kv["rows"]) if isinstance(r, dict) and r.get("invariant") in VALIDATION_ROWS)
    structs = tuple(ValidationRow(label, *(src(f"{base}.structures.{n}.{key}") for n in ("exact", "start", "learned")),
                                  src(f"{base}.structures.control.{key}"))
                    for key, label in VALIDATION_STRUCTURES)
    fixture = FIXTURE_TEX.get(kv.get("fixture")) if isinstance(kv.get("fixture"), str) else None
    return Validation(fixture=fixture or label_tex(kv.get("fixture", "a known metric")), eps=src(f"{base}.eps"), width=src(f"{base}.width"),
                      n_points=src(f"{base}.n_points"), invariants=rows, structures=structs,
                      met=src(f"{base}.targets_met"), targets=src(f"{base}.targets"))



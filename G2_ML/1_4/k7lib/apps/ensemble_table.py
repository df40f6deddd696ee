"""The ensemble's table: per quantity every member's value, the mean, the seed spread (standard deviation and
range), the typical error, their ratio and the fixed/free classification (apps.ensemble's rule), computed
here from the members' records; written as CSV, JSON and a figure, and as the metadata's "ensemble" block.

A member record is the dict of apps.ensemble.member_record (run, seed, width, status, values, errors,
recipe, seconds, settings, config). Seed members are those at the base width; the others are
architecture members, kept out of the statistics and shown apart.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..learn import runs
from ..report import figures
from .ensemble_measure import QUANTITIES

FIXED_RATIO = 3.0            # seed spread <= 3 x typical error: fixed by the constraints at this precision
FIXED, FREE = "fixed by the constraints at this precision", "seed-dependent"
COMPARED_APART = ("seed", "width")     # configuration fields members may differ in
FILES = {"csv": "ensemble_table.csv", "json": "ensemble.json", "figure": "fig_ensemble.png"}


def read_member(path) -> dict | None:
    """The record in a member file, None when there is none; ValueError naming the file when it is malformed."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable ensemble member record ({err})") from None
    need = ("run", "seed", "width", "status", "values", "errors", "settings", "config")
    missing = [k for k in need if not isinstance(record, dict) or k not in record]
    if missing:
        raise ValueError(f"{path}: ensemble member record lacks {missing[0]!r}")
    return record


def _differences(a: dict, b: dict) -> list:
    keys = sorted((set(a) | set(b)) - set(COMPARED_APART))
    return [k for k in keys if a.get(k) != b.get(k)]


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(config: dict, keys) -> str:
    return ", ".join(f"{k}={_short(config.get(k))}" for k in keys)


def check_same_configuration(records: list) -> int:
    """The base width (the most common; ties: the first record's) when every record shares one configuration
    apart from seed and width; ValueError naming the runs and the first fields they differ in otherwise."""
    ref, odd, named = records[0], [], set()
    for r in records[1:]:
        diff = _differences(ref["config"], r["config"])[:3]
        if diff:
            odd.append(f"{r['run']} ({_fields(r['config'], diff)})")
            named.update(diff)
    if odd:
        raise ValueError(f"--collect: runs of different profiles or configurations cannot be merged: "
                         f"{'; '.join(odd)} differ from {ref['run']} "
                         f"({_fields(ref['config'], sorted(named))})")
    widths = Counter(r["width"] for r in records)
    top = max(widths.values())
    return next(r["width"] for r in records if widths[r["width"]] == top)


def quantity_stats(values: list, errors: list) -> dict:
    """mean, std (over members, ddof 1), min, max, mc_error (median of the members' errors), ratio
    (std / mc_error) and fixed (ratio <= FIXED_RATIO) of one quantity over the finished seed members."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    errs = [float(e) for e in errors if e is not None and math.isfinite(float(e))]
    n = len(vals)
    std = statistics.stdev(vals) if n > 1 else None
    mc = statistics.median(errs) if errs else None
    ratio = None
    if std is not None and mc is not None:
        ratio = std / mc if mc > 0 else (0.0 if std == 0 else math.inf)
    return {"mean": statistics.fmean(vals) if n else None, "std": std, "min": min(vals) if n else None,
            "max": max(vals) if n else None, "mc_error": mc, "ratio": ratio,
            "fixed": bool(ratio is not None and ratio <= FIXED_RATIO), "n": n}


def member_kind(record: dict, base_width: int) -> str:
    return "seed" if record["width"] == base_width else "architecture"


def _column(record: dict) -> str:
    return f"seed {record['seed']}" + ("" if record.get("kind") == "seed" else f", width {record['width']}")


@dataclass(frozen=True)
class Ensemble:
    """Seed members and architecture members (records), per-quantity statistics over the finished seed
    members, notes (members left out and why), and how it ran (wall seconds, jobs, threads)."""
    members: tuple
    architecture: tuple
    quantities: dict
    notes: tuple = ()
    wall_s: float | None = None
    jobs: int | None = None
    threads: int | None = None
    files: dict = field(default_factory=dict)

    @classmethod
    def from_records(cls, records, base_width: int, notes: tuple = (), **how) -> "Ensemble":
        records = [dict(r, kind=member_kind(r, base_width)) for r in records]
        seeds = tuple(r for r in records if r["kind"] == "seed")
        arch = tuple(r for r in records if r["kind"] == "architecture")
        done = [r for r in seeds if r["status"] == "finished"]
        quantities = {q: quantity_stats([r["values"].get(q) for r in done], [r["errors"].get(q) for r in done])
                      for q in QUANTITIES}
        gone = [f"{r['run']} (seed {r['seed']}) diverged and is left out: {r['recipe']}"
                for r in records if r["status"] == "diverged"]
        return cls(members=seeds, architecture=arch, quantities=quantities, notes=tuple(notes) + tuple(gone), **how)

    @property
    def n_finished(self) -> int:
        return sum(r["status"] == "finished" for r in self.members)

    @property
    def n_diverged(self) -> int:
        return sum(r["status"] == "diverged" for r in self.members + self.architecture)

    def table(self) -> pd.DataFrame:
        """One row per quantity: members' values (finished seed members), mean, std, range, typical error,
        ratio, class; then each architecture member's value and its distance from the mean in seed spreads."""
        done = [r for r in self.members if r["status"] == "finished"]
        rows = []
        for q, label in QUANTITIES.items():
            st = self.quantities[q]
            row = {"quantity": q, "label": label}
            row.update({_column(r): r["values"].get(q) for r in done})
            row.update({"mean": st["mean"], "std": st["std"], "range": _range(st), "mc_error": st["mc_error"],
                        "ratio": st["ratio"], "class": _class(st)})
            for r in self.architecture:
                if r["status"] == "finished":
                    v = r["values"].get(q)
                    row[_column(r)] = v
                    row[f"{_column(r)}: shift / std"] = (abs(v - st["mean"]) / st["std"]
                                                        if v is not None and st["std"] else None)
            rows.append(row)
        return pd.DataFrame(rows).set_index("quantity")

    def metadata_block(self) -> dict:
        """The metadata's "ensemble" block (contract: members, quantities, architecture, n_finished, n_diverged)."""
        keep = ("run", "seed", "width", "status", "values", "errors", "recipe", "seconds")
        return {"members": [{k: r.get(k) for k in keep} for r in self.members],
                "quantities": {q: {k: v for k, v in st.items() if k != "n"} for q, st in self.quantities.items()},
                "architecture": [{k: r.get(k) for k in keep} for r in self.architecture],
                "n_finished": self.n_finished, "n_diverged": self.n_diverged, "fixed_ratio": FIXED_RATIO,
                "notes": list(self.notes), "wall_s": self.wall_s, "jobs": self.jobs, "threads": self.threads,
                "settings": next((r["settings"] for r in self.members if r.get("settings")), None)}

    def write(self, out_dir) -> "Ensemble":
        """ensemble_table.csv, ensemble.json (the metadata block) and fig_ensemble.png in out_dir; returns
        the ensemble with their paths in `files`."""
        out = runs.output_folder(out_dir)
        paths = {k: out / name for k, name in FILES.items()}
        table = self.table()
        try:
            table.to_csv(paths["csv"])
        except OSError as err:
            raise runs.storage_error(paths["csv"], err) from err
        runs.write_json(paths["json"], self.metadata_block())
        fig = figures.ensemble_figure(self.metadata_block(), QUANTITIES)
        fig.savefig(paths["figure"], dpi=120)
        return Ensemble(**{**self.__dict__, "files": {k: str(p) for k, p in paths.items()}})

    def summary(self) -> str:
        """Plain text: members, how many finished, which quantities are fixed and which seed-dependent."""
        fixed = [QUANTITIES[q] for q, st in self.quantities.items() if st["fixed"]]
        free = [QUANTITIES[q] for q, st in self.quantities.items() if st["std"] is not None and not st["fixed"]]
        head = (f"{len(self.members)} seed member(s), {self.n_finished} finished, {self.n_diverged} diverged; "
                f"{len(self.architecture)} architecture member(s)")
        lines = [head, f"{FIXED} (spread <= {FIXED_RATIO:g} x error): " + (", ".join(fixed) or "none"),
                 f"{FREE}: " + (", ".join(free) or "none")]
        if self.n_finished < 2:
            lines.append("fewer than two finished seed members: no seed spread, nothing classified")
        return "\n".join(lines + list(self.notes))


def _range(st: dict):
    return None if st["min"] is None else st["max"] - st["min"]


def _class(st: dict) -> str:
    if st["std"] is None or st["ratio"] is None:
        return "not classified (no spread or no error)"
    return FIXED if st["fixed"] else FREE

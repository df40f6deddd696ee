"""Export of a finished run: weights, sample points, metrics, history, metadata, a LaTeX summary, figures.

`write_outputs(out_dir, results)` writes exactly
  models_v1_4.pt  coords_v1_4.npy  metric_v1_4.npy  history_v1_4.csv  metadata_v1_4.json  results_v1_4.tex
plus fig_<name>.png for each figure, directly in out_dir (the notebook, the LaTeX figure paths
and the reader expect them there; out_dir also holds explore/, validation/ and the executed
notebook, which an export never touches). The .pt file is data only: it loads with
torch.load(weights_only=True) (docs/conventions.md §8).

The files are replaced as one set, never one by one:
  1. stage: every file is written (flushed, fsynced, mode 0666 less the umask) into a fresh
     hidden folder out_dir/.export-staging-<pid>-<token>, with a manifest of the set's names;
  2. commit: that folder is renamed to out_dir/.export-commit in one os.rename. Before it the
     old set is the current one; after it the new one is, even if the process dies next;
  3. apply: the old set's files move to out_dir/.export-previous, the new ones out of the commit
     folder, the commit folder is removed, and .export-previous replaces out_dir/previous/ (so
     the set before is kept there, and only that one).
A failed or killed stage leaves only its hidden folder, removed by the next export (its writer's
pid is gone); a kill during apply is finished by the next export. `read_outputs` never returns a
mix: while a commit folder exists it reads the committed set from wherever each file is. One
export at a time per folder.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..constants import StructuralConstants, ZeroParamGeometry
from ..inputs import check_points
from ..learn import runs
from .article import render_tex
from .latex import tex_problems
from .outputs_check import OutputsError, check_metric, check_model, load, read_history, read_metadata

SUFFIX = "v1_4"
FILES = {
    "model": f"models_{SUFFIX}.pt",
    "coords": f"coords_{SUFFIX}.npy",
    "metric": f"metric_{SUFFIX}.npy",
    "history": f"history_{SUFFIX}.csv",
    "metadata": f"metadata_{SUFFIX}.json",
    "tex": f"results_{SUFFIX}.tex",
}
REQUIRED_METADATA = ("p2", "N_gen", "b2_eff", "b3_eff", "b2_harm", "b3_harm", "b2_target", "b3_target", "kappa_T_target",
                     "kappa_T_measured", "det_g_target", "det_g_measured", "tau", "profile", "seed",
                     "versions")
_FIG_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
STAGING = ".export-staging"         # + "-<pid>-<token>": a set being written
COMMIT = ".export-commit"           # the committed set while it is being applied
MANIFEST = ".set.json"              # names of the set, inside the staging / commit folder
PREVIOUS = "previous"               # the set the last export replaced
_NEXT_PREVIOUS = ".export-previous"
_DISCARD = ".export-discard"


# ---------------------------------------------------------------- what is exported
@dataclass(frozen=True)
class Results:
    """Everything one export writes.

    model_state: state dict (name -> tensor); config: plain dict (Config.to_dict());
    coords (N, 7) and metric (N, 7, 7) arrays or tensors (written as float64);
    history: the training history DataFrame; metadata: dict with at least REQUIRED_METADATA
    (see `build_metadata`); couplings: the coupling table of gift.coupling_tables (the triple wedge
    integral and Hitchin's cubic beside the GIFT ansatz), or None; tables: further named
    DataFrames for the LaTeX summary; figures: name -> matplotlib Figure (fig_<name>.png).
    """
    model_state: dict
    config: dict
    coords: object
    metric: object
    history: pd.DataFrame
    metadata: dict
    couplings: pd.DataFrame | None = None
    tables: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def _versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "k7lib": __version__}


def build_metadata(config: dict, *, b2_eff, b3_eff, b2_harm, b3_harm, kappa_T_measured, det_g_measured,
                   geometry: ZeroParamGeometry | None = None, extra: dict | None = None) -> dict:
    """Metadata with the required keys: measured values as given, targets from `ZeroParamGeometry`.

    Targets are written as floats with their exact fractions under "exact"; profile and seed
    come from the config dict; versions are read from the running interpreter and libraries.
    extra: further keys (e.g. b2_topology, b3_topology, topology_note, det_g_std, T_mean).
    """
    geo = ZeroParamGeometry() if geometry is None else geometry
    sc: StructuralConstants = geo.sc
    for key in ("profile", "seed"):
        if key not in config:
            raise ValueError(f"config has no field {key!r} (needed in the metadata)")
    meta = {
        "p2": sc.p2, "N_gen": sc.N_gen, "b2_target": sc.b2_K7, "b3_target": sc.b3_K7, "H_star": sc.H_star,
        "b2_eff": b2_eff, "b3_eff": b3_eff, "b2_harm": b2_harm, "b3_harm": b3_harm,
        "kappa_T_target": float(geo.kappa_T), "kappa_T_measured": kappa_T_measured,
        "det_g_target": float(geo.det_g_target), "det_g_measured": det_g_measured,
        "tau": float(geo.tau),
        "exact": {"kappa_T": str(geo.kappa_T), "det_g": str(geo.det_g_target), "tau": str(geo.tau)},
        "profile": config["profile"], "seed": config["seed"], "versions": _versions(),
    }
    meta.update(extra or {})
    return meta


# ---------------------------------------------------------------- conversions and checks
def _jsonable(v, name="metadata"):
    """Plain JSON types; tensors/arrays become lists, Fractions 'p/q', non-finite floats null."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x, f"{name}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, name) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.detach().cpu().tolist(), name)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist(), name)
    if isinstance(v, np.generic):
        return _jsonable(v.item(), name)
    if isinstance(v, Fraction):
        return str(v)
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    raise ValueError(f"{name}: value of type {type(v).__name__} cannot be written to JSON")


def _plain_config(v, name="config"):
    """Check the config holds only types torch.load(weights_only=True) accepts."""
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{name}: keys must be strings, got {k!r}")
            _plain_config(x, f"{name}.{k}")
    elif isinstance(v, (list, tuple)):
        for x in v:
            _plain_config(x, name)
    elif not (v is None or isinstance(v, (bool, int, float, str))):
        raise ValueError(f"{name}: value of type {type(v).__name__} is not plain data "
                         "(use str, int, float, bool, None, lists and dicts)")


def _array(a, shape_tail, name):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim != 1 + len(shape_tail) or tuple(a.shape[1:]) != shape_tail or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape_tail))}) with N >= 1, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite: {int((~np.isfinite(a)).any(tuple(range(1, a.ndim))).sum())} "
                         f"of {a.shape[0]} rows hold NaN or Inf")
    return a


def _validate(results: Results):
    if not isinstance(results, Results):
        raise ValueError(f"results must be an export.Results, got {type(results).__name__}")
    if not isinstance(results.model_state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in results.model_state.items()):
        raise ValueError("model_state must be a dict of name -> tensor (a state dict)")
    if not isinstance(results.config, dict):
        raise ValueError("config must be a dict (Config.to_dict())")
    _plain_config(results.config)
    if isinstance(results.coords, torch.Tensor):
        check_points(results.coords, "coords")
    coords = _array(results.coords, (7,), "coords")
    metric = _array(results.metric, (7, 7), "metric")
    if coords.shape[0] != metric.shape[0]:
        raise ValueError(f"coords and metric disagree on the number of points: {coords.shape[0]} vs {metric.shape[0]}")
    if not isinstance(results.history, pd.DataFrame) or results.history.shape[1] == 0:
        raise ValueError("history must be a pandas DataFrame with at least one column")
    missing = [k for k in REQUIRED_METADATA if k not in results.metadata]
    if missing:
        raise ValueError(f"metadata lacks the keys {missing} (see export.build_metadata)")
    for name, t in [("couplings", results.couplings)] + list(results.tables.items()):
        if t is not None and not isinstance(t, pd.DataFrame):
            raise ValueError(f"table {name!r} must be a pandas DataFrame")
    for name in results.figures:
        if not isinstance(name, str) or not _FIG_NAME.match(name):
            raise ValueError(f"figure name {name!r} must use only letters, digits, '_' and '-'")
    return coords, metric


# ---------------------------------------------------------------- write / read
def _write_pt(f, results, coords, metric):
    state = {k: v.detach().cpu() for k, v in results.model_state.items()}
    torch.save({"state_dict": state, "config": results.config}, f)


def _write_npy(array):
    return lambda f, *_: np.save(f, array, allow_pickle=False)


def _write_text(text):
    return lambda f, *_: f.write(text.encode("utf-8"))


def _is_set_file(name: str) -> bool:
    """True for the names an export writes at the top of out_dir (FILES, fig_<name>.png and .pdf), and
    for the report's PDF compiled from a previous set (it belongs to that set's .tex)."""
    return (name in FILES.values() or name == Path(FILES["tex"]).with_suffix(".pdf").name
            or (name.startswith("fig_") and name.endswith((".png", ".pdf"))))


def _rotate_previous(out_dir: Path) -> None:
    """Make .export-previous (the set just replaced) the new out_dir/previous; idempotent after a kill."""
    nxt, prev, discard = out_dir / _NEXT_PREVIOUS, out_dir / PREVIOUS, out_dir / _DISCARD
    if discard.exists():
        shutil.rmtree(discard)
    if nxt.is_dir():
        if prev.exists():
            os.replace(prev, discard)
        os.replace(nxt, prev)
    if discard.exists():
        shutil.rmtree(discard)


def _apply(out_dir: Path) -> None:
    """Move the old set aside and the committed set into place (module doc, step 3); idempotent."""
    commit = out_dir / COMMIT
    manifest = commit / MANIFEST
    if manifest.is_file():
        names = json.loads(manifest.read_text(encoding="utf-8"))
        nxt = out_dir / _NEXT_PREVIOUS
        for p in sorted(out_dir.iterdir()):
            # an old file: a set name that is not a new file already moved in
            if p.is_file() and _is_set_file(p.name) and not (p.name in names and not (commit / p.name).exists()):
                nxt.mkdir(exist_ok=True)
                os.replace(p, nxt / p.name)
        for name in names:
            if (commit / name).exists():
                os.replace(commit / name, out_dir / name)
        runs.fsync_dir(out_dir)
    if commit.exists():
        shutil.rmtree(commit)                       # the switch is complete
    _rotate_previous(out_dir)


def _recover(out_dir: Path) -> None:
    """Finish what a killed export left: stale staging folders removed, a committed set applied."""
    runs.remove_stale(out_dir, f"{STAGING}-*")
    _apply(out_dir)


def write_outputs(out_dir, results: Results) -> dict:
    """Write the six files and the figures as one set (module doc); returns name -> final path.

    Raises ValueError (naming the folder) when out_dir cannot be created or written, and
    ValueError naming the field for malformed results, both before anything is written. A failed
    write (disk full, torch's writer error, ...) raises runs.StorageError naming the file and the
    cause, removes the staging folder and leaves the current set as it was. The set replaced is
    kept in out_dir/previous/; files get mode 0666 less the umask (0644 under umask 022).
    """
    coords, metric = _validate(results)
    out_dir = runs.writable_folder(out_dir, "out_dir")
    history_csv = results.history.to_csv(index=False)
    meta = dict(results.metadata)
    if results.couplings is not None:
        meta["coupling_table"] = results.couplings.to_dict(orient="records")
    meta_text = json.dumps(_jsonable(meta), indent=2, allow_nan=False)
    tex = render_tex(results)
    problems = tex_problems(tex)
    if problems:
        raise ValueError(f"the LaTeX summary is malformed: {problems}")
    writers = {
        FILES["model"]: _write_pt, FILES["coords"]: _write_npy(coords), FILES["metric"]: _write_npy(metric),
        FILES["history"]: _write_text(history_csv), FILES["metadata"]: _write_text(meta_text),
        FILES["tex"]: _write_text(tex),
    }
    for name, fig in results.figures.items():
        for fmt in ("png", "pdf"):                     # PNG for the notebook, PDF (vector) for the .tex
            writers[f"fig_{name}.{fmt}"] = (lambda fg, fm: lambda f, *_: fg.savefig(f, format=fm, dpi=150))(fig, fmt)
    try:
        _recover(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}-{os.getpid()}-", dir=out_dir))
    except OSError as err:
        raise runs.storage_error(out_dir, err, "prepare the export in") from err
    target = None
    try:
        for target, write in writers.items():
            with open(staging / target, "wb") as f:          # plain open: the umask sets the mode
                write(f, results, coords, metric)
                f.flush()
                os.fsync(f.fileno())
        target = FILES["model"]
        torch.load(staging / target, weights_only=True)     # the .pt must load as plain data
        target = MANIFEST
        (staging / MANIFEST).write_text(json.dumps(sorted(writers)), encoding="utf-8")
        runs.fsync_dir(staging)
        target = None
        os.rename(staging, out_dir / COMMIT)                 # the commit: one rename
        runs.fsync_dir(out_dir)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, (OSError, RuntimeError)):
            raise runs.storage_error(out_dir / target if target else out_dir / COMMIT, err,
                                     "write the export file") from err
        raise
    try:
        _apply(out_dir)
    except OSError as err:
        raise runs.storage_error(out_dir, err, "finish switching the export set in (it is committed; "
                                 "read_outputs reads it and the next export completes the switch)") from err
    return {target: out_dir / target for target in writers}


def _set_paths(out_dir: Path) -> dict:
    """name -> path of the current set's files: the committed set while a switch is under way."""
    commit = out_dir / COMMIT
    try:
        names = json.loads((commit / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) and Path(n).name == n for n in names)):
        return {p.name: p for p in sorted(out_dir.iterdir()) if p.is_file() and _is_set_file(p.name)} \
            if out_dir.is_dir() else {}
    return {n: commit / n if (commit / n).exists() else out_dir / n for n in names}


def read_outputs(out_dir) -> dict:
    """Parse the six files back: {"model", "coords", "metric", "history", "metadata", "tex", "figures"}.

    Checks that all six exist and parse, coords is finite float64 (N, 7), metric finite float64
    (N, 7, 7) with the same N, the history has rows and numeric columns (phase_name aside), the
    metadata has the required keys with numbers of the right type (counts integers, measured numbers
    finite, targets finite and non-zero: `outputs_check`), the model file holds a state dict and a
    config, and the LaTeX is well formed; raises `OutputsError` (a ValueError) naming the file and the
    key otherwise, never the parser's own error. All files come from one set (module doc), also while an
    export is switching sets.
    """
    out_dir = Path(out_dir)
    for attempt in range(3):
        try:
            return _read_set(out_dir, _set_paths(out_dir))
        except FileNotFoundError:
            if attempt == 2:                      # a file moved between listing and reading: look again
                raise
    raise AssertionError("unreachable")


def _read_set(out_dir: Path, paths: dict) -> dict:
    missing = [name for name in FILES.values() if name not in paths]
    if missing:
        raise OutputsError(f"{out_dir} lacks the output files {missing}")
    name = FILES["model"]
    model = check_model(name, load(name, lambda p: torch.load(p, weights_only=True), paths[name]))
    coords, metric = (load(FILES[k], lambda p: np.load(p, allow_pickle=False), paths[FILES[k]]) for k in ("coords", "metric"))
    if coords.dtype != np.float64 or coords.ndim != 2 or coords.shape[1] != 7:
        raise OutputsError(f"{FILES['coords']} must be float64 (N, 7), got {coords.dtype} {coords.shape}")
    try:
        check_points(torch.from_numpy(coords), "coords")
    except ValueError as err:
        raise OutputsError(f"{FILES['coords']}: {err}") from None
    check_metric(FILES["metric"], metric, coords.shape[0])
    history = read_history(FILES["history"], paths[FILES["history"]])
    metadata = read_metadata(FILES["metadata"], paths[FILES["metadata"]], REQUIRED_METADATA)
    tex = load(FILES["tex"], lambda p: p.read_text(encoding="utf-8"), paths[FILES["tex"]])
    problems = tex_problems(tex)
    if problems:
        raise OutputsError(f"{FILES['tex']} is malformed: {problems}")
    return {"model": model, "coords": coords, "metric": metric, "history": history, "metadata": metadata,
            "tex": tex, "figures": sorted(p for n, p in paths.items() if n.startswith("fig_") and n.endswith(".png"))}


# The per-degree numbers of the harmonic extraction shown in its table, with the labels people read.
HARMONIC_ROWS = {
    "n_candidates": "candidate forms", "n_points": "Monte Carlo points of the candidates' Gram matrix",
    "gram_min": "smallest normalised Gram eigenvalue", "gram_max": "largest normalised Gram eigenvalue",
    "condition": "condition number of the Gram matrix", "condition_eff": "condition number on the b_eff directions",
    "noise_floor": "Monte Carlo noise floor of the eigenvalues", "gram_se_max": "largest standard error of a Gram entry",
    "harmonic_max": "largest harmonic eigenvalue", "harmonic_last": "smallest harmonic eigenvalue above the gap",
    "harmonic_floor": "round-off floor of the exact directions", "b_classes": "classes of the chart kept by the projection",
    "class_gap_ratio": "gap ratio of the classes' Gram spectrum",
    "harmonic_gram_error": "estimated relative error of the harmonic Gram matrix",
    "class_gram_error": "estimated relative error of the classes' Gram matrix",
    "harmonic_gram_error_source": "setting to raise when above the tolerance",
    "projection_points": "quadrature points of the projection", "projection_unknowns": "unknowns of the least squares",
    "projection_lambda_nodes": "Gauss nodes in lambda", "projection_fibre_points": "fibre lattice points per node",
    "projection_legendre_degree": "Legendre degree of the basis",
}


def harmonic_table(harmonic) -> pd.DataFrame:
    """quantity | 2-forms | 3-forms: the counts and spectrum statistics of a harmonic.HarmonicResult."""
    two, three = harmonic.two.summary(), harmonic.three.summary()
    rows = [("b_eff (Gram rank of the candidates)", harmonic.b2_eff, harmonic.b3_eff),
            ("b_harm (rank of their harmonic parts, Hodge projection)", harmonic.b2_harm, harmonic.b3_harm),
            ("gap ratio across b_harm", harmonic.two.harmonic_gap, harmonic.three.harmonic_gap)]
    # an empty error source means the estimate is within the tolerance
    cell = lambda v: "none (within tolerance)" if isinstance(v, str) and not v else v      # noqa: E731
    rows += [(label, cell(two.get(key)), cell(three.get(key))) for key, label in HARMONIC_ROWS.items()]
    return pd.DataFrame(rows, columns=["quantity", "2-forms", "3-forms"], dtype=object)

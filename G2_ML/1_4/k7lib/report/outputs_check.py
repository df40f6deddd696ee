"""What `export.read_outputs` checks in each file it reads back: one `OutputsError` naming the file and
the key (or column) and what was expected, for hand-edited, truncated or foreign outputs, in place of
whatever the parser would have raised (JSONDecodeError, EmptyDataError, RecursionError, KeyError, ...)."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import torch

# metadata keys read back, by type: counts (ints, the Betti targets non-zero: the summary divides by them),
# measured numbers (finite), targets (finite, non-zero), optional numbers (finite or null)
COUNT_KEYS = ("p2", "N_gen", "b2_eff", "b3_eff", "b2_harm", "b3_harm", "b2_target", "b3_target")
NONZERO_COUNTS = ("b2_target", "b3_target")
MEASURED_KEYS = ("kappa_T_measured", "det_g_measured")
TARGET_KEYS = ("kappa_T_target", "det_g_target", "tau")
OPTIONAL_NUMBERS = ("T_stderr", "det_g_stderr", "det_g_std", "eig_min", "anti_flat", "b2_topology", "b3_topology",
                    "n_eval_points", "nonpositive_points")
MAX_COUNT = 10**9
TEXT_COLUMNS = ("phase_name",)          # the history's only non-numeric column


class OutputsError(ValueError):
    """An output file that cannot be read back as an export wrote it (the message names the file and key)."""


def load(name: str, reader, path):
    """reader(path), any failure of the parser as one OutputsError naming the file."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise
    except Exception as err:           # a hostile file may break its parser in any way (RecursionError too)
        raise OutputsError(f"{name} cannot be read: {type(err).__name__}: {str(err)[:200]}") from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_metadata(name: str, meta, required) -> dict:
    """The metadata dict, checked: required keys, counts, finite measured numbers, non-zero targets."""
    if not isinstance(meta, dict):
        raise OutputsError(f"{name} must hold a JSON object, got {type(meta).__name__}")
    lacking = [k for k in required if k not in meta]
    if lacking:
        raise OutputsError(f"{name} lacks the keys {lacking}")
    for k in COUNT_KEYS:
        v = meta.get(k)
        if k in meta and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT):
            raise OutputsError(f"{name}: {k} must be an integer in [0, {MAX_COUNT}], got {v!r:.60}")
        if k in NONZERO_COUNTS and v == 0:
            raise OutputsError(f"{name}: {k} must be non-zero (the summary divides by it)")
    for k in MEASURED_KEYS + TARGET_KEYS:
        v = meta[k]
        if not (_is_number(v) and math.isfinite(v)):
            raise OutputsError(f"{name}: {k} must be a finite number, got {v!r:.60}")
        if k in TARGET_KEYS and v == 0:
            raise OutputsError(f"{name}: {k} must be non-zero (the summary divides by it)")
    for k in OPTIONAL_NUMBERS:
        v = meta.get(k)
        if v is not None and not (_is_number(v) and math.isfinite(v) and abs(v) <= 1e300):
            raise OutputsError(f"{name}: {k} must be a finite number or null, got {v!r:.60}")
    _check_exact(name, meta.get("exact"))
    for k, kind in (("profile", str), ("versions", dict), ("coupling_table", list)):
        if k in meta and not isinstance(meta[k], kind):
            raise OutputsError(f"{name}: {k} must be a {kind.__name__}, got {type(meta[k]).__name__}")
    if not (isinstance(meta["seed"], int) and not isinstance(meta["seed"], bool)):
        raise OutputsError(f"{name}: seed must be an integer, got {meta['seed']!r:.60}")
    if not all(isinstance(r, dict) for r in meta.get("coupling_table", [])):
        raise OutputsError(f"{name}: coupling_table must be a list of records (objects)")
    return meta


def _check_exact(name: str, exact) -> None:
    if exact is None:
        return
    if not isinstance(exact, dict):
        raise OutputsError(f"{name}: exact must be an object of 'p/q' strings, got {type(exact).__name__}")
    for k, v in exact.items():
        try:
            f = Fraction(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
        except (ValueError, ZeroDivisionError):
            f = None
        if f is None or f == 0:
            raise OutputsError(f"{name}: exact.{k} must be a non-zero fraction 'p/q', got {v!r:.60}")


def read_metadata(name: str, path, required) -> dict:
    """metadata_v1_4.json parsed (NaN and Infinity literals refused) and checked (`check_metadata`)."""
    def parse(p):
        return json.loads(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    return check_metadata(name, load(name, parse, path), required)


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not a JSON number")


def read_history(name: str, path) -> pd.DataFrame:
    """history_v1_4.csv parsed: at least one row, and every column but TEXT_COLUMNS numeric."""
    history = load(name, lambda p: pd.read_csv(p), path)
    if len(history) == 0 or history.shape[1] == 0:
        raise OutputsError(f"{name} has no rows")
    bad = [str(c) for c in history.columns if c not in TEXT_COLUMNS and not pd.api.types.is_numeric_dtype(history[c])]
    if bad:
        raise OutputsError(f"{name}: the columns {bad[:5]} must be numeric")
    return history


def check_model(name: str, model) -> dict:
    """The model file's dict: 'state_dict' (names -> tensors) and 'config' (a dict)."""
    if not isinstance(model, dict) or set(model) != {"state_dict", "config"}:
        raise OutputsError(f"{name} must hold a dict with 'state_dict' and 'config'")
    sd = model["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise OutputsError(f"{name}: state_dict must map names to tensors")
    if not isinstance(model["config"], dict):
        raise OutputsError(f"{name}: config must be a dict")
    return model


def check_metric(name: str, metric: np.ndarray, n: int) -> np.ndarray:
    if metric.dtype != np.float64 or metric.shape != (n, 7, 7):
        raise OutputsError(f"{name} must be float64 ({n}, 7, 7), got {metric.dtype} {metric.shape}")
    if not np.isfinite(metric).all():
        raise OutputsError(f"{name} must be finite: {int((~np.isfinite(metric)).any((1, 2)).sum())} of {n} "
                           "points hold NaN or Inf")
    return metric

"""Export of a finished run: weights, sample points, metrics, history, metadata, a LaTeX summary, figures.

`write_outputs(out_dir, results)` writes exactly
  models_v1_4.pt  coords_v1_4.npy  metric_v1_4.npy  history_v1_4.csv  metadata_v1_4.json  results_v1_4.tex
plus fig_<name>.png for each figure. Every file is first written to a temporary file in out_dir
(flushed and fsynced); only when all of them succeeded are they renamed into place, so a failed
export leaves the previous files untouched. `read_outputs` parses the six files back and checks
them. The .pt file is data only: it loads with torch.load(weights_only=True) (DESIGN §8).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import runs
from .constants import StructuralConstants, ZeroParamGeometry

SUFFIX = "v1_4"
FILES = {
    "model": f"models_{SUFFIX}.pt",
    "coords": f"coords_{SUFFIX}.npy",
    "metric": f"metric_{SUFFIX}.npy",
    "history": f"history_{SUFFIX}.csv",
    "metadata": f"metadata_{SUFFIX}.json",
    "tex": f"results_{SUFFIX}.tex",
}
REQUIRED_METADATA = ("p2", "N_gen", "b2_eff", "b3_eff", "b2_harm", "b3_harm", "kappa_T_target",
                     "kappa_T_measured", "det_g_target", "det_g_measured", "tau", "profile", "seed",
                     "versions")
# Columns of the Yukawa table shown in the LaTeX summary (the JSON metadata keeps all of them).
YUKAWA_TEX_COLUMNS = ("triplet", "Y", "Y_stderr", "epsilon", "quantity", "exponent", "mapped",
                      "gift_formula", "gift_exact", "mapped/gift")
_FIG_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# ---------------------------------------------------------------- what is exported
@dataclass(frozen=True)
class Results:
    """Everything one export writes.

    model_state: state dict (name -> tensor); config: plain dict (Config.to_dict());
    coords (N, 7) and metric (N, 7, 7) arrays or tensors (written as float64);
    history: the training history DataFrame; metadata: dict with at least REQUIRED_METADATA
    (see `build_metadata`); yukawa: the Yukawa DataFrame (or None); tables: further named
    DataFrames for the LaTeX summary; figures: name -> matplotlib Figure (fig_<name>.png).
    """
    model_state: dict
    config: dict
    coords: object
    metric: object
    history: pd.DataFrame
    metadata: dict
    yukawa: pd.DataFrame | None = None
    tables: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def _versions() -> dict:
    from . import __version__
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
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or tuple(a.shape[1:]) != shape_tail:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape_tail))}), got {a.shape}")
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
    coords = _array(results.coords, (7,), "coords")
    metric = _array(results.metric, (7, 7), "metric")
    if coords.shape[0] != metric.shape[0]:
        raise ValueError(f"coords and metric disagree on the number of points: {coords.shape[0]} vs {metric.shape[0]}")
    if not isinstance(results.history, pd.DataFrame) or results.history.shape[1] == 0:
        raise ValueError("history must be a pandas DataFrame with at least one column")
    missing = [k for k in REQUIRED_METADATA if k not in results.metadata]
    if missing:
        raise ValueError(f"metadata lacks the keys {missing} (see export.build_metadata)")
    for name, t in [("yukawa", results.yukawa)] + list(results.tables.items()):
        if t is not None and not isinstance(t, pd.DataFrame):
            raise ValueError(f"table {name!r} must be a pandas DataFrame")
    for name in results.figures:
        if not isinstance(name, str) or not _FIG_NAME.match(name):
            raise ValueError(f"figure name {name!r} must use only letters, digits, '_' and '-'")
    return coords, metric


# ---------------------------------------------------------------- LaTeX
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text) -> str:
    """Text with LaTeX's special characters escaped (safe inside a tabular cell)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _fmt(v) -> str:
    if v is None:
        return "--"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "--" if math.isnan(v) else latex_escape(str(v))
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            m, e = f"{v:.4e}".split("e")
            return f"${m}\\times 10^{{{int(e)}}}$"
        return f"{v:.6g}"
    return latex_escape(v)


def _tabular(header, rows, caption) -> str:
    cols = "l" * len(header)
    size = (r"\small" if len(header) <= 6 else r"\footnotesize\setlength{\tabcolsep}{3pt}" if len(header) <= 8
            else r"\scriptsize\setlength{\tabcolsep}{3pt}")
    wide = len(header) > 8                      # shrink wide tables to the text width (graphicx)
    lines = [r"\begin{table}[ht]", r"\centering", size] + ([r"\resizebox{\textwidth}{!}{%"] if wide else []) + [
             f"\\begin{{tabular}}{{{cols}}}", r"\hline",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\hline"]
    lines += [" & ".join(_fmt(v) for v in r) + r" \\" for r in rows]
    lines += [r"\hline", r"\end{tabular}"] + (["}"] if wide else []) + [
              f"\\caption{{{latex_escape(caption)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def _frame_table(df: pd.DataFrame, caption: str) -> str:
    rows = [[None if (isinstance(v, float) and math.isnan(v)) else v for v in r]
            for r in df.itertuples(index=False, name=None)]
    return _tabular([str(c) for c in df.columns], rows, caption)


def _rel(measured, target):
    try:
        return (float(measured) - float(target)) / float(target)
    except (TypeError, ValueError):
        return None


def render_tex(results: Results) -> str:
    """The standalone LaTeX summary (article class, amsmath and graphicx); every number from `results`."""
    m = results.metadata
    ex = m.get("exact", {})
    parts = [r"\documentclass[11pt]{article}", r"\usepackage{amsmath}", r"\usepackage{graphicx}",
             r"\setlength{\textwidth}{6.6in}", r"\setlength{\oddsidemargin}{-0.1in}",
             r"\setlength{\textheight}{9in}", r"\setlength{\topmargin}{-0.5in}",
             r"\begin{document}", r"\section*{K7 G2 structure on a TCS chart: results v1.4}",
             "Profile " + latex_escape(m["profile"]) + ", seed " + latex_escape(m["seed"]) + ", "
             + str(len(results.coords)) + " sample points, " + str(len(results.history))
             + " history rows. Versions: " + latex_escape(", ".join(f"{k} {v}" for k, v in m["versions"].items()))
             + ".", ""]
    parts.append(_tabular(
        ["quantity", "measured", "target", "exact target", "relative deviation"],
        [["kappa_T (torsion magnitude)", m["kappa_T_measured"], m["kappa_T_target"], ex.get("kappa_T", "--"),
          _rel(m["kappa_T_measured"], m["kappa_T_target"])]],
        "Torsion magnitude kappa_T against 1/(b3 - dim G2 - p2)."))
    det_rows = [["det g (mean)", m["det_g_measured"], m["det_g_target"], ex.get("det_g", "--"),
                 _rel(m["det_g_measured"], m["det_g_target"])]]
    if "det_g_std" in m:
        det_rows.append(["det g (standard deviation)", m["det_g_std"], None, "--", None])
    parts.append(_tabular(["quantity", "measured", "target", "exact target", "relative deviation"], det_rows,
                          "Metric determinant det g(phi) against p2 + 1/(b2 + dim G2 - N_gen)."))
    parts.append(_tabular(
        ["Betti number", "target", "Gram rank (b_eff)", "harmonic count (b_harm)", "chart topology"],
        [["b2", m.get("b2_target"), m["b2_eff"], m["b2_harm"], m.get("b2_topology")],
         ["b3", m.get("b3_target"), m["b3_eff"], m["b3_harm"], m.get("b3_topology")]],
        "b_eff: rank of the Gram matrix of the candidate forms (linear independence); b_harm: "
        "rank of the Gram matrix of their harmonic parts (Hodge projection with absolute boundary "
        "conditions); chart topology: what the chart's topology allows."))
    if m.get("topology_note"):
        parts += [latex_escape(m["topology_note"]), ""]
    parts.append("Hierarchy parameter tau = " + _fmt(m["tau"]) + " (exact " + latex_escape(ex.get("tau", "--"))
                 + "), p2 = " + _fmt(m["p2"]) + ", N\\_gen = " + _fmt(m["N_gen"]) + ".\n")
    if results.yukawa is not None:
        y = results.yukawa
        kinds = ", ".join(sorted(map(str, y["kind"].unique()))) if "kind" in y else "given"
        cols = [c for c in YUKAWA_TEX_COLUMNS if c in y.columns] or list(y.columns)
        parts.append(_frame_table(y[cols], f"Yukawa-type couplings ({kinds}), mapped mass ratios and the "
                                  "GIFT integer formulas (a diagnostic, not a fit)."))
    for name, df in results.tables.items():
        parts.append(_frame_table(df, name))
    parts += [r"\end{document}", ""]
    return "\n".join(parts)


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


def compile_tex(path, timeout: float = 120.0) -> Path | None:
    """Run pdflatex on the file (auxiliary files in a temporary folder); PDF beside it, or None without pdflatex.

    Raises RuntimeError with the end of the log when pdflatex fails.
    """
    exe = shutil.which("pdflatex")
    if exe is None:
        return None
    path = Path(path).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp}",
                               str(path)], cwd=path.parent, capture_output=True, text=True, timeout=timeout)
        pdf = Path(tmp) / (path.stem + ".pdf")
        if proc.returncode != 0 or not pdf.exists():
            raise RuntimeError(f"pdflatex failed on {path}:\n" + "\n".join(proc.stdout.splitlines()[-25:]))
        out = path.with_suffix(".pdf")
        shutil.copyfile(pdf, out)
    return out


# ---------------------------------------------------------------- write / read
def _write_pt(f, results, coords, metric):
    state = {k: v.detach().cpu() for k, v in results.model_state.items()}
    torch.save({"state_dict": state, "config": results.config}, f)


def _write_npy(array):
    return lambda f, *_: np.save(f, array, allow_pickle=False)


def _write_text(text):
    return lambda f, *_: f.write(text.encode("utf-8"))


def write_outputs(out_dir, results: Results) -> dict:
    """Write the six files and the figures atomically; returns name -> final path.

    Raises ValueError (naming the folder) when out_dir cannot be created or written, and
    ValueError naming the field for malformed results, both before anything is written. If any
    write fails, the temporary files are removed and the previous outputs are left as they were.
    """
    coords, metric = _validate(results)
    out_dir = runs.writable_folder(out_dir, "out_dir")
    history_csv = results.history.to_csv(index=False)
    meta = dict(results.metadata)
    if results.yukawa is not None:
        meta["yukawa_table"] = results.yukawa.to_dict(orient="records")
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
        writers[f"fig_{name}.png"] = (lambda fg: lambda f, *_: fg.savefig(f, format="png", dpi=150))(fig)
    staged = {}
    try:
        for target, write in writers.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=out_dir)
            staged[target] = tmp
            with os.fdopen(fd, "wb") as f:
                write(f, results, coords, metric)
                f.flush()
                os.fsync(f.fileno())
        torch.load(staged[FILES["model"]], weights_only=True)       # the .pt must load as plain data
    except BaseException:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for target, tmp in staged.items():
        os.replace(tmp, out_dir / target)
    return {target: out_dir / target for target in staged}


def read_outputs(out_dir) -> dict:
    """Parse the six files back: {"model", "coords", "metric", "history", "metadata", "tex", "figures"}.

    Checks that all six exist, coords is float64 (N, 7), metric float64 (N, 7, 7) with the same N,
    the metadata has the required keys, the model file holds a state dict and a config, and the
    LaTeX is well formed; raises ValueError naming the problem otherwise.
    """
    out_dir = Path(out_dir)
    missing = [name for name in FILES.values() if not (out_dir / name).is_file()]
    if missing:
        raise ValueError(f"{out_dir} lacks the output files {missing}")
    model = torch.load(out_dir / FILES["model"], weights_only=True)
    if not isinstance(model, dict) or set(model) != {"state_dict", "config"}:
        raise ValueError(f"{FILES['model']} must hold a dict with 'state_dict' and 'config'")
    coords = np.load(out_dir / FILES["coords"], allow_pickle=False)
    metric = np.load(out_dir / FILES["metric"], allow_pickle=False)
    if coords.dtype != np.float64 or coords.ndim != 2 or coords.shape[1] != 7:
        raise ValueError(f"{FILES['coords']} must be float64 (N, 7), got {coords.dtype} {coords.shape}")
    if metric.dtype != np.float64 or metric.shape != (coords.shape[0], 7, 7):
        raise ValueError(f"{FILES['metric']} must be float64 ({coords.shape[0]}, 7, 7), got {metric.dtype} {metric.shape}")
    history = pd.read_csv(out_dir / FILES["history"])
    metadata = json.loads((out_dir / FILES["metadata"]).read_text(encoding="utf-8"))
    lacking = [k for k in REQUIRED_METADATA if k not in metadata]
    if lacking:
        raise ValueError(f"{FILES['metadata']} lacks the keys {lacking}")
    tex = (out_dir / FILES["tex"]).read_text(encoding="utf-8")
    problems = tex_problems(tex)
    if problems:
        raise ValueError(f"{FILES['tex']} is malformed: {problems}")
    return {"model": model, "coords": coords, "metric": metric, "history": history, "metadata": metadata,
            "tex": tex, "figures": sorted(out_dir.glob("fig_*.png"))}


def results_from_run(result, evaluation: dict, harmonic, yukawa: pd.DataFrame | None = None, *,
                     n_points: int = 4096, seed: int | None = None, figures: dict | None = None,
                     topology: dict | None = None) -> Results:
    """Collect a trained run (train.TrainResult), its float64 evaluation (train.evaluate), the
    harmonic extraction (harmonic.HarmonicResult) and the Yukawa table into `Results`.

    coords are n_points fresh uniform chart points and metric = g(phi(coords)) in float64.
    topology: optional {"b2": .., "b3": .., "note": ..} of what the chart supports.
    """
    from . import chart, g2

    cfg = result.config
    seed = cfg.seed if seed is None else seed
    import copy
    model = copy.deepcopy(result.model).double().eval()      # float64 evaluation, caller's model untouched
    p = next(model.parameters())
    x, _ = chart.sample(n_points, cfg.L, torch.Generator().manual_seed(seed + 7919), dtype=torch.float64, device=p.device)
    with torch.no_grad():
        g = torch.cat([g2.metric_data_packed(model(x[i:i + 2048]), check=True).g for i in range(0, n_points, 2048)])
    extra = {"det_g_std": evaluation["det_std"], "T_mean": evaluation["T_mean"],
             "eig_min": evaluation["eig_min"], "nonpositive_points": evaluation["nonpositive"],
             "anti_flat": evaluation["anti_flat"], "n_eval_points": evaluation["n_points"],
             "n_harmonic_points": harmonic.n_points, "run": result.run_dir.name,
             "harmonic_spectrum_2": harmonic.two.harmonic_eigenvalues, "harmonic_spectrum_3": harmonic.three.harmonic_eigenvalues,
             "b2_harm_gap": harmonic.two.harmonic_gap, "b3_harm_gap": harmonic.three.harmonic_gap,
             "rollbacks": len(getattr(result, "events", []) or [])}
    if topology:
        extra.update({"b2_topology": topology.get("b2"), "b3_topology": topology.get("b3"),
                      "topology_note": topology.get("note", "")})
    metadata = build_metadata(cfg.to_dict(), b2_eff=harmonic.b2_eff, b3_eff=harmonic.b3_eff,
                              b2_harm=harmonic.b2_harm, b3_harm=harmonic.b3_harm,
                              kappa_T_measured=evaluation["T_mean"], det_g_measured=evaluation["det_mean"],
                              extra=extra)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    return Results(model_state=state, config=cfg.to_dict(), coords=x.double().cpu(), metric=g.double().cpu(),
                   history=result.history, metadata=metadata, yukawa=yukawa,
                   tables={"Harmonic extraction: normalised Gram spectra of the candidates (b_eff) and of their "
                           "harmonic parts after the Hodge projection with absolute boundary conditions (b_harm)":
                           harmonic_table(harmonic)},
                   figures=dict(figures or {}))


HARMONIC_ROWS = ("n_candidates", "n_points", "gram_min", "gram_max", "condition", "condition_eff", "noise_floor",
                 "gram_se_max", "harmonic_max", "harmonic_last", "harmonic_floor", "b_classes", "class_gap_ratio",
                 "projection_points", "projection_unknowns")


def harmonic_table(harmonic) -> pd.DataFrame:
    """quantity | 2-forms | 3-forms: the counts and spectrum statistics of a harmonic.HarmonicResult."""
    two, three = harmonic.two.summary(), harmonic.three.summary()
    rows = [("b_eff (Gram rank of the candidates)", harmonic.b2_eff, harmonic.b3_eff),
            ("b_harm (rank of their harmonic parts, Hodge projection)", harmonic.b2_harm, harmonic.b3_harm),
            ("gap ratio across b_harm", harmonic.two.harmonic_gap, harmonic.three.harmonic_gap)]
    rows += [(key, two.get(key), three.get(key)) for key in HARMONIC_ROWS]
    return pd.DataFrame(rows, columns=["quantity", "2-forms", "3-forms"], dtype=object)

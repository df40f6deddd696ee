"""results_v1_4.tex: every printed number is the run's, missing values say so, and the article compiles cleanly."""
import math
import re
import shutil

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from test_export import make_results  # noqa: E402

from k7lib.apps import pipeline  # noqa: E402
from k7lib.learn.config import Config  # noqa: E402
from k7lib.report import article, context, export, figures, latex, pdf  # noqa: E402

NOT_COMPUTED = latex.NOT_COMPUTED


def full_results(figs=None, **meta_changes):
    """A small fake run with every metadata key the report reads, the quick configuration and a coupling table."""
    base = make_results()
    meta = dict(base.metadata)
    meta.update({"T_stderr": 1.234e-4, "det_g_stderr": 2.5e-6, "n_eval_points": 4096, "nonpositive_points": 3,
                 "run": "run_7", "rollbacks": 1, "n_harmonic_points": 2048, "eig_min": 0.812345, "anti_flat": 0.1234,
                 "T_mean": 0.0171, "harmonic_spectrum_2": [1e-12, 3e-11, 0.4, 0.9], "b2_harm_gap": 1.3e10,
                 "harmonic_spectrum_3": [2e-12, 0.7], "b3_harm_gap": 3.5e11, "b2_topology": 15, "b3_topology": 20,
                 "b2_harmonic_gram_error": 3.4e-6, "b3_harmonic_gram_error": 1.8e-5, "harmonic_tolerance": 1e-3,
                 "known_validation": KNOWN})
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not DROP}
    return export.Results(**{**base.__dict__, "metadata": meta, "config": Config.from_profile("quick").to_dict(),
                             "figures": figs if figs is not None else {}})


DROP = object()
# a validation on a known G2 metric as learn.known.KnownReport.summary writes it
KNOWN = {"fixture": "bryant-salamon", "eps": 0.2, "width": 16, "n_points": 256, "targets_met": 11, "targets": 16,
         "rows": [{"invariant": "volume", "exact": 0.0315, "start_rel": 3.1e-3, "learned_rel": 2.4e-6,
                   "learned_rel_se": float("nan"), "control_rel": 1.0e-3},
                  {"invariant": "int |Rm|^2", "exact": 0.3049, "start_rel": 44.0, "learned_rel": 4.1e-4,
                   "learned_rel_se": 2.0e-5, "control_rel": 9.4e-3},
                  {"invariant": "lambda_1", "exact": 215.65, "start_rel": 1.2e-2, "learned_rel": 7.3e-6,
                   "learned_rel_se": float("nan"), "control_rel": -5.5e-4}],
         "structures": {n: {"torsion_l2": t, "outside_g2": o, "rank": 14, "gap": 10.0} for n, t, o in
                        (("exact", 3e-15, 1.5e-14), ("start", 0.187, 0.74), ("learned", 6.7e-4, 2.4e-2),
                         ("control", 1.7e-3, 6.3e-2))}}


def rv_values(tex):
    """[(key, printed text)] of every \\rv{key}{text} in the document (balanced braces)."""
    out, tex = [], tex[tex.index("\\begin{document}"):]          # the preamble only defines the macro
    for m in re.finditer(r"\\rv\{([^{}]*)\}\{", tex):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(tex[i], 0)
            i += 1
        out.append((m.group(1), tex[m.end():i - 1]))
    return out


def ru_values(tex):
    """[((key, stderr key, spread key), printed text)] of every \\ru{key}{se}{spread}{text} in the document."""
    out, tex = [], tex[tex.index("\\begin{document}"):]
    for m in re.finditer(r"\\ru\{([^{}]*)\}\{([^{}]*)\}\{([^{}]*)\}\{", tex):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(tex[i], 0)
            i += 1
        out.append(((m.group(1), m.group(2), m.group(3)), tex[m.end():i - 1]))
    return out


def parse_uncertain(text):
    """(value, error) that a printed value(error)[\\times10^{e}] stands for (independent of latex.uncertain_tex)."""
    m = re.fullmatch(r"(-?[\d.,\\]+)\(([\d.]+)\)(?:\\times10\^\{(-?\d+)\})?", text.strip())
    assert m, text
    mant, err, e = m.group(1).replace("\\,", ""), m.group(2), int(m.group(3) or 0)
    decimals = len(mant.partition(".")[2])
    err = float(err) if "." in err else int(err) * 10.0 ** -decimals
    return float(mant) * 10.0 ** e, err * 10.0 ** e, 10.0 ** (e - decimals)


def parse_number(text):
    """The float a printed value stands for (independent of latex.value_tex)."""
    t = text.strip()
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", t)
    if m:
        return (-1 if m.group(1) else 1) * int(m.group(2)) / int(m.group(3))
    m = re.fullmatch(r"(-?[\d.]+)\\times10\^\{(-?\d+)\}", t)
    if m:
        return float(m.group(1)) * 10 ** int(m.group(2))
    return float(t)


def source_value(res, key):
    """The value a key names, looked up here from the Results (not through the report's code)."""
    meta, cfg = res.metadata, res.config
    head, _, rest = key.partition(".")
    if head == "config":
        cur = cfg
        for p in rest.split("."):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur
    if head == "coupling":
        i, field = rest.split(".", 1)
        return res.couplings.to_dict(orient="records")[int(i)][field]
    if head == "table":
        t, r, c = map(int, rest.split("."))
        return list(res.tables.values())[t].iat[r - 1, c]
    if head == "derived":
        epochs = [p["epochs"] for p in cfg["phases"]]
        derived = {
            "kappa_T_rel": (meta["kappa_T_measured"] - meta["kappa_T_target"]) / meta["kappa_T_target"],
            "det_g_rel": (meta["det_g_measured"] - meta["det_g_target"]) / meta["det_g_target"],
            "stderr_points": meta["n_eval_points"] - meta["nonpositive_points"],
            "total_epochs": sum(epochs), "n_phases": len(epochs),
            "n_sample_points": len(res.coords), "history_rows": len(res.history)}
        derived.update({f"phase_start.{i}": sum(epochs[:i]) for i in range(1, len(epochs))})
        for k in (2, 3):
            s = meta[f"harmonic_spectrum_{k}"]
            derived.update({f"spectrum_{k}_count": len(s), f"spectrum_{k}_min": min(s), f"spectrum_{k}_max": max(s)})
        return derived[rest]
    if key in meta:
        return meta[key]
    cur = meta
    for p in key.split("."):
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    return cur


def test_value_tex_is_the_one_formatting_rule():
    from fractions import Fraction
    assert latex.value_tex(0.0171) == "0.0171" and latex.value_tex(2.03125) == "2.03125"
    assert latex.value_tex(1.234e-4) == r"1.234\times10^{-4}" and latex.value_tex(-6.25e7) == r"-6.25\times10^{7}"
    assert latex.value_tex(Fraction(3472, 891)) == r"\frac{3472}{891}" and latex.value_tex("65/32") == r"\frac{65}{32}"
    assert latex.value_tex(77) == "77" and latex.value_tex(0.0) == "0"
    for missing in (None, latex.MISSING, float("nan"), float("inf"), -math.inf, "", object(), torch.tensor(math.nan)):
        assert latex.value_tex(missing) == NOT_COMPUTED
    assert latex.value_tex(torch.tensor(0.5)) == "0.5"


def test_every_number_in_the_tex_is_the_runs():
    res = full_results()
    tex, values = article.render(res)
    printed, uncertain = rv_values(tex), ru_values(tex)
    keys = {k for k, _ in printed} | {k for ks, _ in uncertain for k in ks if k}
    assert printed and uncertain and keys == set(values)
    for (key, se, spread), text in uncertain:     # a value with its standard error: the one rule, the run's numbers
        assert not spread and text == latex.uncertain_tex(values[key], values[se]), key
        v, err, unit = parse_uncertain(text)
        expected = source_value(res, key)
        expected_se = source_value(res, se) if not se.startswith("derived.") else \
            source_value(res, {"derived.kappa_T_rel_stderr": "T_stderr", "derived.det_g_rel_stderr": "det_g_stderr"}[se]) \
            / res.metadata[{"derived.kappa_T_rel_stderr": "kappa_T_target", "derived.det_g_rel_stderr": "det_g_target"}[se]]
        assert abs(v - expected) <= 0.5001 * unit and err == pytest.approx(expected_se, rel=0.05), key
        assert unit <= expected_se / 9.99                  # two significant digits of the error
    for key, text in printed:
        digits = latex.key_digits(key)
        assert text == latex.value_tex(values[key], digits), key
        expected = source_value(res, key)
        if isinstance(expected, str) and not re.fullmatch(r"\d+/\d+", expected):
            assert text == r"\text{" + latex.latex_escape(expected) + "}", key
            continue
        assert text != NOT_COMPUTED, f"{key} is in the run but printed as not computed"
        assert parse_number(text) == pytest.approx(float(eval(str(expected)) if isinstance(expected, str)
                                                         else expected), rel=0.6 * 10.0 ** (1 - digits)), key
    must = {"kappa_T_measured", "T_stderr", "det_g_measured", "det_g_stderr", "kappa_T_target", "det_g_target", "tau",
            "b2_eff", "b3_eff", "b2_harm", "b3_harm", "b2_topology", "b3_topology", "b2_target", "b3_target",
            "b2_harm_gap", "b3_harm_gap", "n_eval_points", "profile", "seed", "config.batch", "config.phases.0.lr",
            "config.phases.3.epochs", "derived.kappa_T_rel", "derived.det_g_rel", "derived.stderr_points",
            "b2_harmonic_gram_error", "b3_harmonic_gram_error", "harmonic_tolerance",
            "known_validation.rows.2.learned_rel", "known_validation.rows.1.learned_rel_se",
            "known_validation.structures.learned.outside_g2",
            "known_validation.structures.control.rank", "known_validation.targets_met"}
    assert must <= keys, must - keys
    records = res.couplings.to_dict(orient="records")
    assert {f"coupling.{i}.mapped" for i in range(len(records)) if not records[i]["consistent_with_zero"]} <= keys
    triplets = {(r["kind"], r["triplet"]) for r in records}
    assert sum(k.endswith(".Y") and k.startswith("coupling.") for k in keys) == len(triplets)   # one row per triplet
    # exact targets and proper mathematics, not text
    for frac in (r"\frac{1}{61}", r"\frac{65}{32}", r"\frac{3472}{891}"):
        assert frac in tex
    for math_ in (r"\kappa_T", r"\det g", "b_2", "T^6", r"\tau"):
        assert math_ in tex
    assert "kappa\\_T" not in tex.replace("\\rv{kappa_T", "") and "T\\textasciicircum{}6" not in tex
    assert "arXiv:1211.0269" in tex and "arXiv:1207.4470" in tex and "Geom.\\ Topol.\\ 19 (2015)" in tex
    # what each coupling is, with its sources: the wedge integral on the chart (not topological there),
    # d^3 V (not d^3 log V), no chiral matter, the ansatz
    for arxiv in ("hep-th/0203061", "math/0010054", "0709.2987", "0802.0723", "hep-th/0109152"):
        assert f"arXiv:{arxiv}" in tex
    flat = " ".join(tex.split())           # the phrases as they read, whatever the line breaks
    assert "triple wedge integral" in flat and "not topological on this chart" in flat and "no chiral matter" in flat
    assert "functional $V(\\varphi)=\\int\\mathrm{vol}_{g(\\varphi)}$~\\cite{Hitchin} itself, not of $\\log V$" in flat
    assert "topological triple pairing" not in tex and "moduli Yukawa" not in tex
    assert "GIFT ansatz" in tex and "Yukawa-type" not in tex
    assert "always glued through a hyper-K" in flat and "whatever the matching of its" in flat and "1+21+77=99" in tex
    assert "gluing angle" not in flat and "Extra-twisted connected sums, glued at other angles" in flat
    assert "is fixed by the chart's topology" in " ".join(tex.split())      # what b_harm is, in words
    assert not latex.tex_problems(tex)


def test_tex_holds_the_numbers_escaped(tmp_path):
    res = make_results()
    export.write_outputs(tmp_path, res)
    tex = (tmp_path / export.FILES["tex"]).read_text()
    assert "0.0171" in tex and "2.0301" in tex and "1/61" in tex and "65/32" in tex and "3472/891" in tex
    assert "3477" in tex and r"$\dim K_7 + 10\,\dim E_8$\\ $+ 10\,H^*$" in tex     # GIFT formula, as mathematics
    assert "Region statistics" in tex
    # the topology note is typeset as mathematics from its numbers, never printed as raw text
    assert "T\\textasciicircum{}" not in tex and r"has the cohomology of $T^6$" in tex
    assert not latex.tex_problems(tex)
    assert latex.latex_escape("a_b & 50% {x} $y$ #1 ~ ^ \\") == \
        r"a\_b \& 50\% \{x\} \ensuremath{\$}y\ensuremath{\$} \#1 \textasciitilde{} \textasciicircum{} \textbackslash{}"


def test_missing_and_nonfinite_fields_say_not_computed():
    res = full_results(T_stderr=DROP, det_g_stderr=DROP, kappa_T_measured=float("nan"), b3_harm=float("inf"),
                       b2_topology=DROP, harmonic_spectrum_3=DROP, b3_harm_gap=None, eig_min=torch.tensor(math.nan))
    tex, values = article.render(res)
    printed = dict(rv_values(tex)) | {keys[0]: text for keys, text in ru_values(tex)}
    for key in ("kappa_T_measured", "b3_harm", "b2_topology", "b3_harm_gap", "eig_min", "derived.kappa_T_rel"):
        assert printed[key] == NOT_COMPUTED, key
    # a value whose standard error is missing says so; the value keeps its rule
    assert printed["det_g_measured"] == "2.0301\\pm" + NOT_COMPUTED and printed["b2_harm"] == "21"
    assert not re.search(r"\b(nan|inf|None)\b", tex)
    assert not latex.tex_problems(tex)
    # a near-empty run: no configuration, no coupling table, only two metadata keys
    bare = export.Results(model_state={}, config={}, coords=None, metric=None, history=None, metadata={"profile": "quick", "seed": 0},
                          couplings=None)
    tex, values = article.render(bare)
    assert not latex.tex_problems(tex) and "not computed" in tex
    assert all(text == NOT_COMPUTED for key, text in rv_values(tex) if key not in ("profile", "seed"))


def test_compact_couplings_accepts_the_long_and_the_compact_shape():
    long = make_results().couplings.to_dict(orient="records")
    rows, cols = context.compact_couplings(long)
    assert len(rows) == 2 and [c[0] for c in cols] == ["m_s/m_d", "m_tau/m_e", "m_tau/m_mu", "Q_Koide"]
    compact = [{"kind": "triple wedge integral on the chart", "triplet": "(0, 1, 0)", "Y": 2.0, "Y_stderr": 0.1, "epsilon": 0.9,
                "m_s/m_d": 1.5, "m_tau/m_e": 2.2, "m_tau/m_mu": 1.4, "Q_Koide": 0.4}]
    rows, cols = context.compact_couplings(compact)
    assert len(rows) == 1 and rows[0]["cells"]["m_tau/m_e"] == (0, "m_tau/m_e") and len(cols) == 4
    base = make_results()
    res = export.Results(**{**base.__dict__, "couplings": None, "metadata": {**base.metadata, "coupling_table": compact}})
    tex, values = article.render(res)
    assert values["coupling.0.m_tau/m_e"] == 2.2 and r"\rv{coupling.0.m_tau/m_e}{2.2}" in tex
    assert r"$\dim K_7 + 10\,\dim E_8$\\ $+ 10\,H^*$" in tex and not latex.tex_problems(tex)


def test_tex_problems_detects_malformed_documents():
    good = "\\documentclass{article}\n\\begin{document}\n\\begin{table}x\\end{table}\n\\end{document}\n"
    assert latex.tex_problems(good) == []
    assert latex.tex_problems(good.replace("\\end{table}", ""))
    assert latex.tex_problems(good.replace("x", "{x"))
    assert latex.tex_problems(good.replace("\\end{document}", ""))
    assert latex.tex_problems(good.replace("\\end{table}", "\\end{tabular}"))
    assert latex.tex_problems(good.replace("x", "\\{x")) == []        # escaped brace is text


def test_log_problems_reads_errors_and_wide_overfull_boxes():
    log = ("Overfull \\hbox (3.5pt too wide) in paragraph at lines 1--2\n"
           "Overfull \\hbox (12.25pt too wide) in paragraph at lines 5--6\n"
           "! Undefined control sequence.\n"
           "LaTeX Warning: Reference `tab:x' on page 1 undefined on input line 9.\n")
    problems = pdf.log_problems(log)
    assert len(problems) == 3 and problems[0].startswith("! Undefined") and "12.25pt" in problems[1] and "tab:x" in problems[2]
    assert pdf.log_problems("Overfull \\hbox (3.5pt too wide)\n") == []


def test_compile_tex_without_pdflatex_returns_none(tmp_path, monkeypatch):
    export.write_outputs(tmp_path, make_results())
    monkeypatch.setattr(pdf.shutil, "which", lambda name: None)
    assert pdf.compile_tex(tmp_path / export.FILES["tex"]) is None


PDFLATEX = shutil.which("pdflatex")
NO_PDFLATEX = "pdflatex is not on PATH: the compile test is skipped (install texlive-latex-recommended to run it)"


@pytest.mark.skipif(PDFLATEX is None, reason=NO_PDFLATEX)
def test_tex_compiles_with_pdflatex(tmp_path):
    export.write_outputs(tmp_path, make_results())
    out = pdf.compile_tex(tmp_path / export.FILES["tex"])
    assert out is not None and out.exists() and out.read_bytes()[:4] == b"%PDF"


@pytest.mark.skipif(PDFLATEX is None, reason=NO_PDFLATEX)
def test_article_compiles_without_errors_or_wide_boxes(tmp_path):
    hist = pd.DataFrame({"phase": [1] * 5 + [2] * 5, "epoch": list(range(5)) * 2, "global_epoch": range(10),
                         "loss": [1 / (i + 1) for i in range(10)], "T_mean": [0.1 / (i + 1) for i in range(10)],
                         "det_mean": [2.0 + 0.003 * i for i in range(10)]})
    spectra = Figure(figsize=(8, 5))
    spectra.subplots().semilogy([1, 2, 3], [1e-12, 0.5, 1.0], "o")
    figs = {"history": figures.history_figure(hist), "spectra": spectra}
    for res in (full_results(figs), full_results(figs, T_stderr=DROP, kappa_T_measured=float("nan"))):
        export.write_outputs(tmp_path, res)
        assert (tmp_path / "fig_history.pdf").read_bytes()[:4] == b"%PDF"
        out = pdf.compile_tex(tmp_path / export.FILES["tex"], keep_log=True)
        log = (tmp_path / "results_v1_4.log").read_text(encoding="latin-1")
        assert pdf.log_problems(log) == []
        pages = int(re.search(r"Output written on .*?\((\d+) pages?", log, re.S).group(1))
        assert 2 <= pages <= 4, pages
        assert "was not exported" not in log and out.stat().st_size > 10_000


def test_standard_errors_over_the_fresh_points():
    from k7lib.learn.model import K7PhiModel
    from k7lib.torsion import torsion_packed
    ev = {"n_points": 400, "nonpositive": 4, "det_std": 0.02, "T_std": 0.5}
    se = pipeline.standard_errors(ev, None, None)
    assert se["det_g_stderr"] == pytest.approx(0.02 / math.sqrt(396)) and se["T_stderr"] == pytest.approx(0.5 / math.sqrt(396))
    assert se["stderr_points"] == 396 and se["T_std_source"] == "evaluation points"
    cfg = Config.from_profile("quick", width=8, depth=1)        # without T_std: T at the exported points
    model = K7PhiModel(cfg).double()
    with torch.no_grad():
        model.head.bias.add_(0.01)                                # a correction, so that T varies over the chart
    x = torch.rand(24, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    se = pipeline.standard_errors({"n_points": 24, "nonpositive": 0, "det_std": 0.0}, model, x)
    T = torsion_packed(model, x, check=False).T.detach()
    assert se["T_stderr"] == pytest.approx(float(T.std()) / math.sqrt(24)) and se["T_stderr"] > 0
    assert se["det_g_stderr"] == 0.0 and se["T_std_source"] == "24 exported points"


def test_preview_never_raises(tmp_path, monkeypatch):
    assert pdf.preview(tmp_path / "absent.tex")["pdf"] is None
    export.write_outputs(tmp_path, make_results())
    tex = tmp_path / export.FILES["tex"]
    with monkeypatch.context() as m:
        m.setattr(pdf.shutil, "which", lambda name: None)
        out = pdf.preview(tex)
        assert out["pdf"] is None and out["png"] is None and "not installed" in out["message"]
    if PDFLATEX is not None:
        out = pdf.preview(tex)
        assert out["pdf"].exists()
        if shutil.which("pdftoppm"):
            assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        tex.write_text("\\documentclass{article}\\begin{document}\\undefinedmacro\\end{document}")
        out = pdf.preview(tex)
        assert out["pdf"] is None and "could not compile" in out["message"]

"""The article and its read-back against careless and hostile input: the uncertainty rule's edge cases,
couplings consistent with zero, typeset labels, every string field of export.Results escaped (and the
result compiled), pdflatex confined to the outputs folder, a full disk while compiling, and hand-edited
outputs read back."""
import errno
import json
import math
import os
import re
import shutil
import stat
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_export import make_results  # noqa: E402
from test_report import full_results  # noqa: E402

from k7lib import gift  # noqa: E402
from k7lib.apps import pipeline  # noqa: E402
from k7lib.geometry import couplings  # noqa: E402
from k7lib.report import article, export, figures, latex, pdf  # noqa: E402
from k7lib.report.outputs_check import OutputsError  # noqa: E402

PDFLATEX = shutil.which("pdflatex")
NO_PDFLATEX = "pdflatex is not on PATH (install texlive-latex-recommended to run it)"
NC = latex.NOT_COMPUTED


# ---------------------------------------------------------------- the uncertainty rule
@pytest.mark.parametrize("value, se, tex, text", [
    (9.96, 0.049, "9.960(49)", "9.960(49)"),                                  # two digits of 0.049, not 0.05
    (9.96, 0.49, "9.96(49)", "9.96(49)"),
    (9.9996, 0.049, "10.000(49)", "10.000(49)"),                              # the value rounds up a decade
    (1.0, 0.0996, "1.00(10)", "1.00(10)"),                                    # the error rounds up a decade
    (0.0163940566, 1.34442e-5, r"0.016\,394(13)", "0.016\u2009394(13)"),
    (2.0312476118, 5.450583e-6, r"2.031\,247\,6(55)", "2.031\u2009247\u20096(55)"),
    (3.7e-5, 8.2e-5, r"3.7(8.2)\times10^{-5}", "3.7(8.2) × 10⁻⁵"),           # error larger than the value
    (0.02, 0.5, "0.02(50)", "0.02(50)"),
    (-5.768686e-07, 2.3212e-07, r"-5.8(2.3)\times10^{-7}", "-5.8(2.3) × 10⁻⁷"),  # negative
    (-0.0000004, 1e-4, r"-0.000(10)", "-0.000(10)") if False else (-4e-8, 1e-6, r"0.0(1.0)\times10^{-6}", "0.0(1.0) × 10⁻⁶"),
    (6.02214076e23, 1.2e17, r"6.022\,140\,8(12)\times10^{23}", "6.022\u2009140\u20098(12) × 10²³"),  # exponent > 5
    (1.234567e-7, 3.4e-9, r"1.235(34)\times10^{-7}", "1.235(34) × 10⁻⁷"),     # exponent < -5
    (12345.6, 12, r"12\,346(12)", "12\u2009346(12)"),
    (12345.6, 120, r"1.235(12)\times10^{4}", "1.235(12) × 10⁴"),
    (5.0, 0.0, r"5\pm0", "5 ± 0"),                                            # zero uncertainty
    (5.0, math.nan, r"5\pm" + NC, "5 ± not computed"),                        # non-finite uncertainty
    (5.0, math.inf, r"5\pm" + NC, "5 ± not computed"),
    (5.0, -1e-3, r"5\pm" + NC, "5 ± not computed"),
    (0.0171, None, "0.0171", "0.0171"),                                       # no uncertainty: today's rule
    (1.234e-4, None, r"1.234\times10^{-4}", "1.234 × 10⁻⁴"),
    (Fraction(1, 61), 1e-3, r"\frac{1}{61}", "1/61"),                         # exact stays exact
    ("65/32", 1e-3, r"\frac{65}{32}", "65/32"),
    (math.nan, 1e-3, NC, "not computed"),
    (1e300, 1e-300, r"1\times10^{300}\pm1\times10^{-300}", "1 × 10³⁰⁰ ± 1 × 10⁻³⁰⁰"),  # beyond float resolution
])
def test_uncertain_tex_and_text_round_the_error_to_two_digits(value, se, tex, text):
    assert latex.uncertain_tex(value, se) == tex
    assert latex.uncertain_text(value, se) == text


def test_the_seed_spread_is_shown_apart_from_the_monte_carlo_error():
    assert latex.uncertain_tex(0.0163940566, 1.34442e-5, spread=4.0e-5) == r"0.016\,394(13)_{\mathrm{MC}}(40)_{\mathrm{seeds}}"
    assert latex.uncertain_text(0.0163940566, 1.34442e-5, spread=4.0e-5) == "0.016\u2009394(13 MC)(40 seeds)"
    assert latex.uncertain_tex(0.0163940566, None, spread=4.0e-5) == r"0.016\,394(40)_{\mathrm{seeds}}"
    # the place is the larger error's: a Monte Carlo error far below the spread reads (0)
    assert latex.uncertain_tex(2.5, 1e-9, spread=0.012) == r"2.500(0)_{\mathrm{MC}}(12)_{\mathrm{seeds}}"


def test_the_article_prints_an_ensemble_spread_where_the_metadata_has_one():
    ens = {"quantities": {"kappa_T_measured": {"mean": 0.0171, "std": 4e-4}, "eig_min": {"mean": 0.81, "std": 0.02}}}
    tex, values = article.render(full_results(ensemble=ens))
    assert r"\ru{kappa_T_measured}{T_stderr}{ensemble.quantities.kappa_T_measured.std}{0.017\,10(12)_{\mathrm{MC}}(40)_{\mathrm{seeds}}}" in tex
    assert r"\ru{eig_min}{}{ensemble.quantities.eig_min.std}{0.812(20)_{\mathrm{seeds}}}" in tex
    assert values["ensemble.quantities.eig_min.std"] == 0.02 and not latex.tex_problems(tex)


# ---------------------------------------------------------------- couplings consistent with zero
def noise_couplings():
    """Three triple wedge integrals within three standard errors of zero (the quick run's sizes)."""
    return couplings.Couplings(couplings.PAIRING_KIND, ((4, 10, 1), (3, 1, 2), (0, 5, 7)),
                               torch.tensor([-5.8e-7, 5.5e-7, 5.3e-7], dtype=torch.float64),
                               torch.tensor([2.3e-7, 2.2e-7, 2.5e-7], dtype=torch.float64),
                               torch.tensor([1.4e-6, 1.3e-6, 1.2e-6], dtype=torch.float64))


def test_couplings_consistent_with_zero_are_flagged_and_print_a_dash_with_its_reason():
    table = gift.ansatz_table(noise_couplings())
    assert table["consistent_with_zero"].all() and table["mapped"].isna().all()
    base = full_results()
    res = export.Results(**{**base.__dict__, "couplings": table})
    tex, values = article.render(res)
    assert tex.count("---$^{*}$") == 3 * 4 and "Consistent with zero ($|Y|\\le3\\,\\sigma_Y$): not mapped" in tex
    assert not any(k.endswith(".mapped") for k in values)                       # no ratio of noise printed
    flat = " ".join(tex.split())
    assert re.search(r"of the \\rv\{coupling\.0\.n_computed\}\{3\} triple wedge integrals computed, "
                     r"\\rv\{coupling\.0\.n_resolved\}\{0\} are resolved", flat)
    assert r"\ru{coupling.0.Y}{coupling.0.Y_stderr}{}{-5.8(2.3)\times10^{-7}}" in tex
    shown = figures.coupling_display(gift.compact_table(table))
    assert (shown["m_s/m_d"] == "—").all() and (shown["consistent_with_zero"] == "yes").all()
    assert shown["Y(σ_Y)"].iloc[0] == "-5.8(2.3) × 10⁻⁷"


# ---------------------------------------------------------------- labels
def texttt_free(tex):
    """The document without \\texttt{...} groups and without the source keys of \\rv and \\ru."""
    tex = re.sub(r"\\(rv|ru)\{[^{}]*\}(\{[^{}]*\}\{[^{}]*\})?", "", tex)
    out, i = [], 0
    for m in re.finditer(r"\\texttt\{", tex):
        if m.start() < i:
            continue
        out.append(tex[i:m.start()])
        depth, j = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(tex[j], 0) if tex[j - 1] != "\\" else 0
            j += 1
        i = j
    return "".join(out) + tex[i:]


def test_every_label_of_the_article_is_typeset():
    rows = [(label, 1.0, 2.0) for label in export.HARMONIC_ROWS.values()] + [
        ("setting to raise when above the tolerance", "n_lambda", "none (within tolerance)"),
        ("b_eff (Gram rank of the candidates)", 21, 77)]
    harm = pd.DataFrame(rows, columns=["quantity", "2-forms", "3-forms"], dtype=object)
    res = full_results()
    res = export.Results(**{**res.__dict__, "tables": {pipeline.HARMONIC_TABLE: harm, "region_stats": harm.head(2)},
                            "config": {**res.config, "phases": [{**p, "weights": {**p["weights"], "my_weight": 1.0}}
                                                                 for p in res.config["phases"]]}})
    tex = article.render_tex(res)
    assert r"($b^{\mathrm{eff}}$) and the Hodge projection ($b^{\mathrm{harm}}$)" in tex
    assert r"condition number on the $b^{\mathrm{eff}}$ directions" in tex and r"\texttt{n\_lambda}" in tex
    assert r"\texttt{my\_weight}" in tex and r"\texttt{region\_stats}" in tex
    rest = texttt_free(tex)
    assert "\\_" not in rest, rest[max(0, rest.find("\\_") - 80):rest.find("\\_") + 40]


# ---------------------------------------------------------------- hostile strings
HOSTILE = ["\\input{/etc/passwd}", "\\openout1=x.tex", "\\immediate\\write18{touch pwned}", "^^5cinput{/etc/hostname}",
           "}", "{", "%", "#", "$", "&", "_", "a\n\nb\r\n", "x\x7fy\x00z\x1b", "中文", "😀👨\u200d👩", "\\", "~^",
           "\\csname input\\endcsname", "\\catcode`\\@=0", "\\end{document}", "\\begin{verbatim}", "é—λ\u2028"]


def hostile_results(s):
    """Results with s in every string field the article prints: run, profile, versions (keys and values),
    phase names and loss-weight keys, the couplings' kind and triplet, table names, columns and cells,
    the known metric's fixture, the topology note."""
    res = full_results(run=s, profile=s, versions={s: s, "k7lib": s}, topology_note=s,
                       known_validation={**full_results().metadata["known_validation"], "fixture": s})
    cfg = dict(res.config)
    cfg["phases"] = [{**p, "name": s, "weights": {s: 1.0, **p["weights"]}} for p in cfg["phases"]]
    table = gift.ansatz_table(noise_couplings()).assign(kind=s, triplet=s)
    other = pd.DataFrame({s: [s, 1.5], "value": [s, 2]})
    return export.Results(**{**res.__dict__, "config": cfg, "couplings": table, "tables": {s: other}})


def assert_escaped(tex):
    assert not latex.tex_problems(tex)
    assert tex.isascii()
    for control in ("\\input", "\\openout", "\\write18", "^^5c", "\\csname", "\\catcode", "\\begin{verbatim}"):
        assert control not in tex, control
    assert tex.count("\\end{document}") == 1


@pytest.mark.parametrize("s", HOSTILE)
def test_a_hostile_string_in_every_field_is_escaped(s):
    assert_escaped(article.render_tex(hostile_results(s)))


@pytest.mark.skipif(PDFLATEX is None, reason=NO_PDFLATEX)
def test_an_export_of_hostile_strings_compiles_and_reads_nothing_outside(tmp_path):
    res = hostile_results("".join(HOSTILE))
    export.write_outputs(tmp_path, res)
    out = pdf.compile_tex(tmp_path / export.FILES["tex"], keep_log=True)
    log = (tmp_path / "results_v1_4.log").read_text(encoding="latin-1")
    assert out.read_bytes()[:5] == b"%PDF-" and not [p for p in pdf.log_problems(log) if p.startswith("!")]
    assert "/etc/passwd" not in log.replace("\\textbackslash", "") or "(/etc/passwd" not in log
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "x.tex").exists()
    assert not list(tmp_path.glob(".pdflatex-*"))


@pytest.mark.skipif(PDFLATEX is None, reason=NO_PDFLATEX)
def test_pdflatex_reads_and_writes_only_inside_the_outputs_folder(tmp_path):
    outside = tmp_path / "secret.tex"
    outside.write_text("SECRET\n")
    run = tmp_path / "outputs"
    run.mkdir()
    doc = "\\documentclass{article}\\begin{document}%s\\end{document}\n"
    attempts = {"abs": f"\\input{{{outside}}}", "parent": "\\input{../secret}",
                "write": "x\\immediate\\openout5=../evil.tex \\immediate\\write5{hi}\\immediate\\closeout5",
                "shell": "x\\immediate\\write18{touch ../pwned}"}
    for name, body in attempts.items():
        (run / f"{name}.tex").write_text(doc % body)
        try:
            pdf.compile_tex(run / f"{name}.tex")
        except RuntimeError:
            pass
    assert not (tmp_path / "evil.tex").exists() and not (tmp_path / "pwned").exists()
    for name in ("abs", "parent"):
        assert not (run / f"{name}.pdf").exists()               # the file outside was not read
    assert not list(run.glob(".pdflatex-*"))


# ---------------------------------------------------------------- a full disk while compiling
@pytest.mark.skipif(PDFLATEX is None, reason=NO_PDFLATEX)
def test_a_full_disk_while_compiling_leaves_the_previous_pdf(tmp_path, monkeypatch):
    export.write_outputs(tmp_path, make_results())
    tex = tmp_path / export.FILES["tex"]
    first = pdf.compile_tex(tex).read_bytes()

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:                        # the move into place fails
        m.setattr(pdf.os, "replace", full)
        with pytest.raises(OSError, match="No space"):
            pdf.compile_tex(tex)
    assert tex.with_suffix(".pdf").read_bytes() == first and not list(tmp_path.glob(".pdflatex-*"))
    fake = tmp_path / "bin"                                 # pdflatex itself cut short: exit 0, a PDF without its end
    fake.mkdir()
    script = fake / "pdflatex"
    script.write_text("#!/bin/sh\nfor a; do case $a in -output-directory=*) d=${a#*=};; esac; done\n"
                      "printf '%%PDF-1.5 truncated' > \"$d/results_v1_4.pdf\"; : > \"$d/results_v1_4.log\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="pdflatex failed"):
        pdf.compile_tex(tex)
    assert tex.with_suffix(".pdf").read_bytes() == first and not list(tmp_path.glob(".pdflatex-*"))
    (tmp_path / export.FILES["tex"]).with_suffix(".pdf").unlink()
    with pytest.raises(RuntimeError):
        pdf.compile_tex(tex)
    assert not tex.with_suffix(".pdf").exists()             # no truncated PDF joins the set


# ---------------------------------------------------------------- hand-edited outputs
def _meta(d, **changes):
    p = d / export.FILES["metadata"]
    m = json.loads(p.read_text())
    m.update(changes)
    p.write_text(json.dumps({k: v for k, v in m.items() if v is not DROP}))


DROP = object()
META_EDITS = [dict(kappa_T_target=DROP), dict(det_g_target=DROP), dict(b2_target=DROP), dict(seed=DROP),
              dict(kappa_T_target=0), dict(det_g_target=0.0), dict(tau=0), dict(b2_target=0),
              dict(kappa_T_measured="0.0171"), dict(det_g_measured=None), dict(b2_eff=21.5), dict(b3_harm=True),
              dict(b2_eff=-1), dict(b3_eff=10**30), dict(T_stderr="small"), dict(det_g_stderr=[1]),
              dict(exact={"kappa_T": "1/0"}), dict(exact={"det_g": "zero"}), dict(exact="65/32"),
              dict(profile=3), dict(versions="torch"), dict(seed=1.5), dict(coupling_table={"a": 1}),
              dict(coupling_table=[1, 2])]
RAW_METADATA = ["", "{", "[]", "null", "{\"p2\": NaN}", "[" * 100000 + "]" * 100000, "\xff\xfe", "{\"a\": Infinity}"]


def _file_edits():
    """(name, edit(folder)) of hand edits to the files other than the metadata's values."""
    h, c, mt, md, tx = (export.FILES[k] for k in ("history", "coords", "metric", "model", "tex"))
    return [
        ("history empty", lambda d: (d / h).write_text("")),
        ("history header only", lambda d: (d / h).write_text("phase,loss\n")),
        ("history text column", lambda d: (d / h).write_text("phase,loss\n1,abc\n")),
        ("history ragged", lambda d: (d / h).write_text("phase,loss\n1,2,3,4\n\"unterminated\n")),
        ("history binary", lambda d: (d / h).write_bytes(b"\x00\xff\xfe" * 50)),
        ("metric NaN", lambda d: np.save(d / mt, np.full((12, 7, 7), np.nan))),
        ("metric object", lambda d: np.save(d / mt, np.array([{"a": 1}], dtype=object), allow_pickle=True)),
        ("metric truncated", lambda d: (d / mt).write_bytes((d / mt).read_bytes()[:100])),
        ("coords truncated", lambda d: (d / c).write_bytes(b"\x93NUMPY")),
        ("model garbage", lambda d: (d / md).write_bytes(b"not a torch file")),
        ("model list", lambda d: torch.save([1, 2], d / md)),
        ("model bad state", lambda d: torch.save({"state_dict": {"w": 1}, "config": {}}, d / md)),
        ("tex latin-1", lambda d: (d / tx).write_bytes(b"\\documentclass{article}\xe9")),
        ("tex unbalanced", lambda d: (d / tx).write_text("\\documentclass{article}\\begin{document}{\\end{document}")),
    ]


def test_hand_edited_outputs_are_one_named_error(tmp_path):
    export.write_outputs(tmp_path / "good", make_results())
    back = export.read_outputs(tmp_path / "good")
    shown = figures.summary_table(back)                       # the summary of a good read-back
    assert shown.loc["kappa_T = <T>", "target"] == "1/61" and shown.loc["det g", "target"] == "65/32"
    assert shown.loc["b2: harmonic b2_harm (Hodge projection)", "reached"] == "21"
    cases = [(f"metadata {e}", lambda d, e=e: _meta(d, **e), export.FILES["metadata"]) for e in META_EDITS]
    cases += [(f"metadata text {t[:12]!r}", lambda d, t=t: (d / export.FILES["metadata"]).write_text(t),
               export.FILES["metadata"]) for t in RAW_METADATA]
    cases += [(name, edit, None) for name, edit in _file_edits()]
    held = 0
    for i, (name, edit, file) in enumerate(cases):
        d = tmp_path / f"c{i}"
        shutil.copytree(tmp_path / "good", d)
        edit(d)
        with pytest.raises(OutputsError) as info:
            export.read_outputs(d)
        msg = str(info.value)
        assert "\n" not in msg.strip() or name.startswith("tex"), (name, msg)
        assert re.search(r"_v1_4\.(json|csv|npy|pt|tex)", msg), (name, msg)     # names the file
        assert file is None or file in msg, (name, msg)
        held += 1
    assert held == len(cases) == len(META_EDITS) + len(RAW_METADATA) + len(_file_edits())


def test_a_read_back_error_names_the_key():
    from k7lib.report.outputs_check import check_metadata
    good = make_results().metadata
    for key, value, words in (("kappa_T_target", 0.0, "non-zero"), ("b2_target", 0, "non-zero"),
                              ("kappa_T_measured", math.nan, "finite"), ("b3_eff", "77", "integer")):
        with pytest.raises(OutputsError, match=f"{key} must be .*"):
            check_metadata("metadata_v1_4.json", {**good, key: value}, export.REQUIRED_METADATA)
    assert issubclass(OutputsError, ValueError)

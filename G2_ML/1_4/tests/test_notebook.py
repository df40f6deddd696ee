"""The notebook: the committed file is what the builder writes, and it runs top to bottom headless."""
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
import build_notebook  # noqa: E402


def test_committed_notebook_matches_the_builder():
    assert build_notebook.NOTEBOOK.read_text() == build_notebook.render(), \
        "K7_GIFT_v1_4_TCS_full.ipynb differs from build_notebook.py: run python build_notebook.py"


def test_notebook_has_the_cells_in_order_and_outputs_stripped():
    nb = json.loads(build_notebook.NOTEBOOK.read_text())
    text = [("".join(c["source"])) for c in nb["cells"]]
    order = ["colab-badge", "## Parameters", "## Setup", "## 1. Structural constants", "## 2. The TCS chart",
             "## 3. From φ to g", "## 4. dφ and d*φ", "## 5. Losses", "## 6. Training", "### Resume",
             "## 7. What the trained", "## 8. Harmonic", "## 9. Couplings", "## 10. Validation on known",
             "## 11. Export", "## 12. Summary", "## 13. Explore", "## 14. A curved test", "## 15. The report"]
    pos = [next(i for i, t in enumerate(text) if key in t) for key in order]
    assert pos == sorted(pos)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")
    assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"])


def _run(tmp_path, **params):
    pytest.importorskip("nbclient")
    base = {"PROFILE": "quick", "CHECKPOINT_ROOT": str(tmp_path / "ckpt"), "OUTPUT_DIR": str(tmp_path / "out")}
    base.update(params)
    return build_notebook.execute(base, timeout=1800)


def test_bad_input_stops_with_one_message_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata_v1_4.json").write_text("{}")
    for params, message in (({"PROFILE": "medium"}, "profile"), ({"RESUME": 4000}, "resume"),
                            ({"OUTPUT_DIR": "/proc/not-writable"}, "output_dir")):
        from nbclient.exceptions import CellExecutionError
        with pytest.raises(CellExecutionError) as err:
            _run(tmp_path, **params)
        assert message in str(err.value)
    assert (out / "metadata_v1_4.json").read_text() == "{}"
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.pt"))


@pytest.mark.slow
def test_notebook_runs_end_to_end_in_the_quick_profile(tmp_path):
    nb = _run(tmp_path)
    out = tmp_path / "out"
    from k7lib.report.export import read_outputs
    res = read_outputs(out)
    md = res["metadata"]
    for key in ("p2", "N_gen", "b2_eff", "b3_eff", "b2_harm", "b3_harm", "kappa_T_target", "kappa_T_measured",
                "det_g_target", "det_g_measured", "tau", "profile", "seed", "versions"):
        assert key in md
    assert md["profile"] == "quick"
    assert (md["b2_eff"], md["b3_eff"], md["b2_harm"], md["b3_harm"]) == (21, 77, 15, 20)   # T^6's cohomology
    # the quick profile's targets, reached through phi (g = g(phi), no rescaling)
    assert abs(md["kappa_T_measured"] / md["kappa_T_target"] - 1) <= 0.01
    assert abs(md["det_g_measured"] / md["det_g_target"] - 1) <= 2e-4
    coords, metric = np.load(out / "coords_v1_4.npy"), np.load(out / "metric_v1_4.npy")
    assert coords.shape[0] == metric.shape[0] and metric.shape[1:] == (7, 7) and metric.dtype == np.float64
    hist = pd.read_csv(out / "history_v1_4.csv")
    for col in ("phase", "epoch", "global_epoch", "loss", "T_mean", "det_mean", "det_std", "eig_min", "lr", "rollbacks"):
        assert col in hist.columns
    from k7lib.report.latex import tex_wellformed
    from k7lib.report.pdf import compile_tex, log_problems
    assert tex_wellformed(out / "results_v1_4.tex")
    if shutil.which("pdflatex"):        # the run's own article stays within 2-4 pages, without overfull boxes
        compile_tex(out / "results_v1_4.tex", keep_log=True)
        log = (out / "results_v1_4.log").read_text(encoding="latin-1")
        pages = int(re.search(r"Output written on .*?\((\d+) pages?", log, re.S).group(1))
        assert 2 <= pages <= 4 and log_problems(log) == [], (pages, log_problems(log))
    summary = "".join(o.get("data", {}).get("text/plain", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "kappa_T" in summary and "det g" in summary and "b3_harm" in summary

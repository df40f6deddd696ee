"""Builds K7_GIFT_v1_4_TCS_full.ipynb from the cells below (the builder is the notebook's source).

  python build_notebook.py            # write the notebook (outputs stripped)
  python build_notebook.py --check    # exit 1 if the committed notebook differs from the builder
  python build_notebook.py --execute [--profile quick] [--timeout S]
                                      # build, then run it headless with nbclient (outputs kept
                                      # in outputs/K7_GIFT_v1_4_TCS_full.executed.ipynb)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "K7_GIFT_v1_4_TCS_full.ipynb"
REPO = "gift-framework/GIFT"
COLAB = f"https://colab.research.google.com/github/{REPO}/blob/main/G2_ML/1_4/K7_GIFT_v1_4_TCS_full.ipynb"

CELLS = [
    ("md", f"""[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB})

# K7 GIFT v1.4: a learned G2 3-form on a twisted-connected-sum chart

This notebook learns a G2 3-form φ on a twisted-connected-sum (TCS) style chart of the 7-manifold K7
and reads off what its metric g(φ) does. Every physical target comes from integers — κ_T = 1/61,
det g = 65/32, τ = 3472/891, b2 = 21, b3 = 77 — and no continuous physical parameter is fitted:
only the network, the optimiser, the batch size and the phase schedule are tunable.

All the mathematics lives in the small package `k7lib` beside this notebook; each code cell calls it
and shows a number, a table or a plot. Run all cells: on a GPU the *full* profile trains at the scale
of v1.3c, without one a *quick* profile runs end to end in minutes.

**What changed from the request, and why** (the design notes fix these):
- g = g(φ) is the Bryant–Hitchin metric B_ij = (1/144) φ_iab φ_jcd φ_efg ε^abcdefg, g = det(B)^(−1/9) B,
  never a rescaled or eigen-clamped matrix: clamping would break g = g(φ), and rescaling g would make
  det g = 65/32 true by construction. det g = 65/32 is reached through φ itself (φ → s³φ scales det g by s¹⁴).
- dφ and d*φ are exact forward-mode derivatives (finite differences remain selectable and are checked
  against them), and d*φ is the derivative of ψ = *φ, not a proxy.
- The literal Yukawa ∫ φ_i∧φ_j∧φ_k of three 3-forms is a 9-form on a 7-manifold and vanishes, so the
  couplings here are ∫ ω_i∧ω_j∧Φ_k and the cubic derivative of Hitchin's volume functional.
- A Gram rank measures linear independence, not harmonicity: both b_eff (Gram rank) and b_harm
  (rank of the candidates' harmonic parts after the Hodge projection with absolute boundary conditions)
  are reported, with the topology the chart can support."""),
    ("md", """## Parameters
Papermill-style: this cell is tagged `parameters`. `PROFILE` is `"auto"` (full on a GPU, quick
otherwise), `"quick"` or `"full"`. `RUN = None` starts a new numbered run; `RESUME = "latest"` or a
checkpoint number continues `RUN` (or the latest run) after a divergence or a dropped runtime; the
default `"auto"` continues the latest run from its latest good checkpoint when that run was started with
the same configuration, so running all cells again after a crash picks up where training stopped.
`DRIVE_DIR` keeps checkpoints on Google Drive so that a lost Colab runtime loses nothing."""),
    ("code", """PROFILE = "auto"          # "auto" | "quick" | "full"
RUN = None                # None: a new numbered run; or a run name / number
RESUME = "auto"           # "auto": continue the latest run if it has this configuration | None | "latest" | N
EPOCHS_SCALE = None       # e.g. 0.1 to shorten every phase; None keeps the profile's schedule
DRIVE_DIR = None          # e.g. "/content/drive/MyDrive/k7_v1_4" (Colab) to keep checkpoints on Drive
CHECKPOINT_ROOT = None    # folder of the runs; None: G2_ML/1_4/checkpoints (or DRIVE_DIR/checkpoints)
OUTPUT_DIR = None         # None: G2_ML/1_4/outputs
N_EVAL = 4096             # fresh float64 points for the final numbers
N_HARMONIC = None         # points for the Gram/Dirichlet integrals; None: 2048 quick, 20000 full
EXPLORE = True            # run the optional exploration and validation section
REPO_URL = "https://github.com/""" + REPO + """.git\""""),
    ("md", """## Setup
In Colab the repository is cloned and `k7lib` installed; elsewhere the package next to this notebook is
used. The cell reports the accelerator, then checks every parameter before any work starts: an unknown
profile, a missing checkpoint or a folder that cannot be written stops here with one message."""),
    ("code", """import os, sys, subprocess
from pathlib import Path
if "google.colab" in sys.modules:          # absolute paths: running this cell twice must not nest clones
    here = Path("/content/GIFT/G2_ML/1_4")
    if not (here / "k7lib").exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "/content/GIFT"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(here)], check=True)
    os.chdir(here)
if DRIVE_DIR and "google.colab" in sys.modules:
    from google.colab import drive
    drive.mount("/content/drive")
sys.path.insert(0, str(Path.cwd()))
%matplotlib inline
import torch, pandas as pd
from IPython.display import display
import k7lib
from k7lib import session
print(session.environment())
S = session.configure(PROFILE, run=RUN, resume=RESUME, epochs_scale=EPOCHS_SCALE,
                      checkpoint_root=CHECKPOINT_ROOT or (Path(DRIVE_DIR) / "checkpoints" if DRIVE_DIR else None),
                      output_dir=OUTPUT_DIR)
print(S.describe())"""),
    ("md", """## 1. Structural constants
The integers of the GIFT v2.2 structure, and the exact rationals derived from them with
`fractions.Fraction`: κ_T = 1/(b3 − dim G2 − p2), det g = p2 + 1/(b2 + dim G2 − N_gen),
τ = p2⁴·dim K7·M5 / (N_gen⁴·(rank E8 + N_gen)), checked against its second form (2·dim E8)·b2/(N_gen³·H*)."""),
    ("code", """from k7lib.constants import StructuralConstants, ZeroParamGeometry
sc, zp = StructuralConstants(), ZeroParamGeometry()
display(pd.DataFrame({"value": {**{k: getattr(sc, k) for k in sc.__dataclass_fields__}, "H_star": sc.H_star, "M5": sc.M5}}).T)
display(pd.DataFrame({"exact": [zp.kappa_T, zp.det_g_target, zp.tau],
                      "float": [float(zp.kappa_T), float(zp.det_g_target), float(zp.tau)]},
                     index=["kappa_T", "det_g_target", "tau"]))
assert zp.tau == zp.tau_alt"""),
    ("md", """## 2. The TCS chart
λ ∈ [−L, L] is the neck coordinate (not periodic: −L is deep in the left block, +L deep in the right
one) and y ∈ T⁶ are periodic fibre coordinates. Left, neck and right are a smooth partition of unity
in λ. The background φ_bg = s³ A(λ)*φ0 pulls the standard 3-form back by a frame with det A = 1: a
warp that stretches a different fibre circle in each block, and a hyper-Kähler rotation of fibre
planes whose angle rises from 0 to π/2 across the neck, so det g(φ_bg) = s¹⁴ = 65/32 exactly while
the metric varies with λ. The learned network adds a correction that is zero at initialisation."""),
    ("code", """from k7lib import chart, figures
figures.chart_figure(S.config.L)"""),
    ("md", """## 3. From φ to g
g(φ0) = I, g(A*φ0) = AᵀA, and on the background det g = 65/32 to round-off at every point; the G2
identities |φ|² = 7, φ∧ψ = 7 vol_g and ψ = *φ hold pointwise for the metric φ defines."""),
    ("code", """from k7lib import g2
x = chart.sample(512, S.config.L, torch.Generator().manual_seed(1), dtype=torch.float64)[0]
m = g2.metric_data_packed(chart.phi_background(x, S.config.L))
ids = g2.g2_identities(k7lib.forms.unpack(chart.phi_background(x, S.config.L), 3))
print(f"max |det g - 65/32| on the background: {float((m.det - float(zp.det_g_target)).abs().max()):.2e}")
display(pd.DataFrame(ids.summary()).T)"""),
    ("md", """## 4. dφ and d*φ
Exterior derivatives are exact: one forward-mode pass along the seven coordinate directions gives
∂_m φ, and ψ's derivatives follow from the exact linearisation of φ ↦ *φ. The check below runs the
exact fixtures of the design notes: a pull-back F*φ0 by a diffeomorphism is torsion-free, a conformal
e^{3f}φ0 has τ1 = df and |dφ|² = 36|df|², and central differences converge to the same numbers at
second order."""),
    ("code", """from k7lib import fixtures
display(fixtures.fixture_report())"""),
    ("md", """## 5. Losses
`compute_losses` returns named terms: (⟨T⟩ − κ_T)², closure ⟨|dφ|²⟩, coclosure ⟨|d*φ|²⟩,
(⟨det g⟩ − 65/32)² plus its variance, positivity margins on g and on φ with a mild condition-number
term, and an anti-flat term that penalises a neck metric that does not vary along λ. Here they are on
the untrained model (φ = φ_bg), with the weights of phase 1."""),
    ("code", """from k7lib.model import K7PhiModel
from k7lib.losses import compute_losses
torch.manual_seed(S.config.seed)
x0, w0 = chart.sample(S.config.batch, S.config.L, torch.Generator().manual_seed(0))
terms = compute_losses(K7PhiModel(S.config), x0, w0, S.config.phases[0].weights, S.config.method, L=S.config.L)
display(pd.Series(terms.row(), name="untrained").to_frame().T)"""),
    ("md", """## 6. Training
Four phases (coarse → tighten κ_T and det g → refine → break flatness), Adam with warm-up and decay,
gradient clipping, float32 with exact derivatives. A numbered checkpoint is written every
`checkpoint_every` epochs (1000 in the full profile) atomically; a NaN or a loss spike rolls back to the
last good checkpoint with half the learning rate and is recorded in the history."""),
    ("code", """from k7lib.train import train, evaluate
result = train(S.config, run=S.run, root=S.root, resume=S.resume, progress=True)
print(result.summary())
figures.history_figure(result.history, S.config)"""),
    ("md", """### Resume from a numbered checkpoint
Every checkpoint of this run is listed below. After a divergence or a dropped runtime, set
`RESUME_FROM` to one of these numbers (or `"latest"`) and run this cell — or set `RESUME` in the
parameters cell and run all: training continues exactly where that checkpoint left it."""),
    ("code", """from k7lib.checkpoint import list_checkpoints
RESUME_FROM = None   # e.g. 2000 or "latest"
if RESUME_FROM is not None:
    result = train(S.config, run=result.run_dir.name, root=S.root, resume=RESUME_FROM, progress=True)
display(pd.DataFrame([(n, p.name, p.stat().st_size) for n, p in list_checkpoints(result.run_dir)],
                     columns=["global_epoch", "file", "bytes"]))"""),
    ("md", """## 7. What the trained φ reaches
Fresh uniform points, float64, g = g(φ) everywhere (no rescaling): ⟨T⟩ against κ_T = 1/61 and
⟨det g⟩ against 65/32, the smallest eigenvalue of g, the number of points where φ is not positive, and
the anti-flat measure (RMS ∂_λ g in the neck)."""),
    ("code", """model = result.model.double().eval()
ev = evaluate(model, S.config.L, n_points=N_EVAL, seed=S.config.seed)
display(pd.DataFrame({"measured": [ev["T_mean"], ev["det_mean"]],
                      "target": [float(zp.kappa_T), float(zp.det_g_target)],
                      "relative error": [ev["T_over_kappa"] - 1, ev["det_rel_err"]]},
                     index=["<T>", "<det g>"]))
print({k: ev[k] for k in ("det_std", "eig_min", "nonpositive", "anti_flat")})"""),
    ("md", """## 8. Harmonic forms: b2 and b3
The chart [−L, L] × T⁶ has a boundary and λ is a global function, so dλ∧dy_J = d(λ dy_J) is exact: its
cohomology is that of T⁶, **(b2, b3) = (15, 20) for every metric** (21 and 35 hold for a periodic T⁷ only).
The harmonic field of a closed form w is its Hodge projection with absolute boundary conditions
(Hodge–Morrey–Friedrichs; Schwarz, LNM 1607):

  h = w − dα,  α = argmin ‖w − dα‖²_g over all (k−1)-forms α,

so that h is L²_g-orthogonal to every exact form (δh = 0 inside, normal part 0 on λ = ±L). α is a
Galerkin least-squares solution in Legendre(λ/L) × Fourier(y) profiles times constant forms dx^J, on a
Gauss × Sobol quadrature with g = g(φ) at every point. The constant forms dx^I are projected; the
harmonic part of any candidate is then its L²_g projection onto span{h_I}. b_harm is the rank of the Gram
matrix of the candidates' harmonic parts: harmonic directions are O(1) eigenvalues, exact and co-exact
directions sit at round-off, with a visible gap. b_eff, the Gram rank of the raw candidates (21 constant
2-forms; 35 constant plus 42 TCS-adapted 3-forms), measures linear independence only. The pair (21, 77)
belongs to a compact K7, and b2 + b3 = 98 is even, which an orthogonal twisted-connected-sum gluing cannot
produce (Corti–Haskins–Nordström–Pacini, Thm 4.9); the topology table computes these numbers with sources."""),
    ("code", """from k7lib import harmonic, topology, export
n_harm = N_HARMONIC or (20000 if S.config.profile == "full" else 2048)
H = harmonic.extract(model, n_harm, S.config.L, seed=S.config.seed, progress=True)
display(export.harmonic_table(H))
display(pd.DataFrame({"b_eff (Gram rank)": [H.b2_eff, H.b3_eff], "b_harm (Hodge projection)": [H.b2_harm, H.b3_harm],
                      "chart [-L,L] x T^6": [topology.chart_support()["b2"], topology.chart_support()["b3"]]},
                     index=["b2", "b3"]))
harmonic.plot_spectra(H)"""),
    ("md", """### Accuracy of the projection on an exact fixture
For φ = e^{3f(y1)}φ0 with f = a sin(2π y1) (g = e^{2f} g0) the harmonic field of a class dy1∧dy_K of degree k
is ∝ e^{−(7−2k)f} dy1∧dy_K with ‖h‖² = 2L / I0((7−2k)a), and a class without dy1 keeps its constant form,
‖h‖² = 2L·I0((7−2k)a); the exact dλ-forms must vanish. The table gives the relative errors against the
Fourier degree of the basis and the number of points (the basis error enters ‖h‖² quadratically)."""),
    ("code", """display(harmonic.convergence_table())"""),
    ("code", """display(topology.topology_report())"""),
    ("md", """## 9. The TauLayer and Yukawa-type couplings
Couplings that do not vanish by degree: Y_ijk = ∫ ω_i∧ω_j∧Φ_k over the harmonic 2-forms and 3-forms, and
∂³V/∂t_i∂t_j∂t_k of Hitchin's volume functional V(φ) = ∫ vol_g(φ) along harmonic 3-forms, each with its
Monte Carlo standard error. **Normalisation:** the harmonic representatives are L²_g-orthonormal on the
chart, ∫_{[−L,L]×T⁶} ⟨h_a, h_b⟩_g vol_g = δ_ab (the chart's volume is 2L·⟨√det g⟩), so the couplings do not
depend on the arbitrary scale of the candidate forms and compare harmonic classes on equal footing;
ε = |Y| / ∫|ω_i|_g|ω_j|_g|Φ_k|_g vol_g for the wedge couplings and ε = |∂³V| / ((28/27)V) · Π_a √(7V/‖Φ_a‖²)
for the Hitchin cubic (1 when all three directions are φ itself). The `TauLayer` holds τ = 3472/891 and
κ_T = 1/61 exactly and maps ε to mass ratios with exponents that are integer expressions of the
structural constants; each mapped ratio stands beside its GIFT v2.2 integer formula as a diagnostic,
never as a fit."""),
    ("code", """from k7lib import yukawa
print(yukawa.TRIPLE_PRODUCT_VANISHES)
omega2, Phi3 = H.two.representatives(), H.three.representatives()      # L2_g-orthonormal harmonic forms
xy = harmonic.sample_chart(1024 if S.config.profile == "quick" else 8192, S.config.L, seed=S.config.seed + 1, device=S.device)
metric = lambda x: g2.metric_data_packed(model(x)).g
W = yukawa.wedge_couplings(omega2, Phi3, xy, volume=chart.chart_volume(S.config.L), metric=metric)
C = yukawa.hitchin_cubic(model, H.three.representatives(4), xy[:256], volume=chart.chart_volume(S.config.L))
tables = []
for cp in (W.couplings(), C.couplings()):
    try:                                   # a kind with no coupling above 2 standard errors is said, not mapped
        tables.append(yukawa.yukawa_table(cp))
    except ValueError as err:
        print(f"{cp.kind}: {err}")
Y = pd.concat(tables, ignore_index=True) if tables else None
if Y is not None:
    display(yukawa.compact_table(Y))"""),
    ("md", """## 10. Export
Six files in `outputs/`: `models_v1_4.pt` (state dict + config), `coords_v1_4.npy` and `metric_v1_4.npy`
(float64, the metric at those coordinates), `history_v1_4.csv`, `metadata_v1_4.json` and
`results_v1_4.tex` (a standalone LaTeX summary), plus the figures as PNG. Every file is written to a
temporary name first and renamed only when all succeeded, so a failed export keeps the previous ones."""),
    ("code", """paths = export.write_outputs(S.out_dir, export.results_from_run(result, ev, H, Y, n_points=N_EVAL,
                             topology=topology.chart_support(), figures={"chart": figures.chart_figure(S.config.L), "spectra": harmonic.plot_spectra(H),
                                      "history": figures.history_figure(result.history, S.config)}))
display(pd.Series({k: str(v) for k, v in paths.items()}, name="file").to_frame())"""),
    ("md", """## 11. Summary
Targets against what this run reached; every number is read back from the exported files."""),
    ("code", """display(figures.summary_table(export.read_outputs(S.out_dir)))"""),
    ("md", """## 12. Explore and validate (optional)
The learned metric itself: the first eigenvalue λ1 of its Laplace–Beltrami operator (Rayleigh–Ritz,
λ1·H* against 13 as a diagnostic), Ricci curvature and its hotspots, geodesics with their energy drift,
neck-versus-bulk statistics and refinement guidance; and the G2 identities on the learned forms.
The same runs from the command line: `python -m k7lib explore` and `python -m k7lib validate`."""),
    ("code", """if EXPLORE:
    from k7lib import explore, validate
    from IPython.display import Image
    ex = explore.explore_run(model, S.config, out_dir=S.out_dir / "explore")
    display(pd.Series({"lambda1": ex["spectral"]["lambda1"], "lambda1 * H*": ex["spectral"]["lambda1_H_star"],
                       "seed 001's quoted lambda1 * H*": ex["spectral"]["seed_quoted_lambda1_H_star"],
                       "scalar curvature min": ex["curvature"]["scalar"]["min"],
                       "scalar curvature max": ex["curvature"]["scalar"]["max"],
                       "<T> / kappa_T": ex["torsion"]["T_mean_over_kappa_T"]}, name="explore").to_frame())
    display(Image(ex["files"]["figure"]))
    va = validate.validate_run(model, S.config, out_dir=S.out_dir / "validation")
    display(pd.DataFrame(va["statistics"]).T.dropna(how="all", axis=1).head(12))"""),
    ("md", """## 13. A curved test: the link of the quintic (optional)
On the 7-dimensional link of the Fermat quintic (a circle bundle over the Calabi–Yau threefold Q),
φ = η∧ω + Re Ω and ψ = ½ω∧ω − η∧Im Ω satisfy dφ = ω∧ω and dψ = 0 analytically, so k7lib's exact
derivatives must reproduce them to round-off on a chart that is not a torus. With Fubini–Study data
|Ω| is not constant (r ≠ 1), so ψ = *φ and φ∧ψ = 7 vol hold only where r = 1; a learned Ricci-flat
correction of ω (Monge–Ampère loss) makes r nearly constant, measured by cymetric's σ."""),
    ("code", """if EXPLORE:
    from k7lib import links, ricci_flat
    checks = links.structure_checks(links.sample_chart(64, seed=0))
    display(pd.DataFrame({k: v.detach().numpy() for k, v in checks.items()}).describe().T[["mean", "max"]])
    potential, ricci_history, _ = ricci_flat.train(ricci_flat.RicciConfig(n_train=2000, epochs=10))
    display(ricci_flat.sigma_table(potential, 2000, seeds=(101, 102)))"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "accelerator": "GPU", "colab": {"provenance": []}}
    for n, (kind, src) in enumerate(CELLS):
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell["id"] = f"cell-{n:02d}"
        if kind == "code" and src.startswith("PROFILE = "):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    return nb


def render() -> str:
    return nbformat.writes(build()) + "\n"


def inject_parameters(nb: nbformat.NotebookNode, params: dict) -> nbformat.NotebookNode:
    """Insert a cell assigning `params` right after the `parameters` cell (as papermill does)."""
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = new_code_cell("# injected parameters\n" + src)
    cell["id"] = "injected-parameters"
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(where + 1, cell)
    return nb


def execute(params: dict, timeout: int = 3600, out: Path | None = None) -> nbformat.NotebookNode:
    """Run the notebook headless with nbclient in this folder; returns the executed notebook."""
    from nbclient import NotebookClient
    nb = inject_parameters(build(), params)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(out))
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the committed notebook differs")
    ap.add_argument("--execute", action="store_true", help="run the notebook headless after writing it")
    ap.add_argument("--profile", default="auto", help="PROFILE parameter for --execute")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout for --execute (s)")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = NOTEBOOK.exists() and NOTEBOOK.read_text() == text
        print("notebook is up to date" if same else f"{NOTEBOOK.name} differs from build_notebook.py: run it")
        return 0 if same else 1
    NOTEBOOK.write_text(text)
    print(f"wrote {NOTEBOOK}")
    if args.execute:
        out = HERE / "outputs" / "K7_GIFT_v1_4_TCS_full.executed.ipynb"
        execute({"PROFILE": args.profile}, timeout=args.timeout, out=out)
        print(f"executed; outputs in {HERE / 'outputs'}, executed notebook {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

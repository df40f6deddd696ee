"""The command line beside the notebook: python -m k7lib {train,explore,validate,links,known} ...

Every argparse parser of k7lib is built here, and each command calls the public API of its concept
module; the mathematics has no command-line code. Every count and scale is checked, bounds
included, before any file is written. Input errors, overflows and machine faults (ValueError,
OverflowError, OSError) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from ..calabi_yau import link as Lk
from ..calabi_yau import link_analysis
from ..calabi_yau import ricci_flat as RF
from ..calabi_yau.link_chart import link_points
from ..calabi_yau.ricci_flat import DEFAULT_RUNS as RICCI_RUNS
from ..calabi_yau.ricci_flat import RicciConfig
from ..derivatives import METHODS
from ..exact import Box, fixture
from ..geometry.invariants import InvariantSettings
from ..inputs import MAX_POINTS, positive_int
from ..learn import runs
from ..learn.chart_training import train_chart
from ..learn.checkpoint import load_trained
from ..learn.config import (
    EPOCHS_SCALE_MAX,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_FEATURES,
    MAX_SEED,
    MAX_THREADS,
    MAX_WIDTH,
    Config,
)
from ..learn.divergence import TrainingDiverged
from ..learn.evaluate import evaluate
from ..learn.known import KNOWN_ROOT, known_report
from ..learn.schedule import LR_SCALE_MAX, check_lr_scale
from ..learn.torsion_free import KnownConfig, check_problem
from ..report import figures
from ..report.latex import uncertain_text
from .explore import ExploreSettings, explore_run
from .validate import validate_run

COMMANDS = {
    "train": "phased training with numbered checkpoints",
    "explore": "spectral gap, curvature, geodesics and region statistics of a run",
    "validate": "G2 identity report on a trained run",
    "links": "G2 structures on the link of the quintic: sample | train | validate | ricci",
    "known": "the torsion-free learner on a known G2 metric: bryant-salamon | gibbons-hawking | flat",
}


def add_run_arguments(parser) -> None:
    """--run, --root, --which and --threads: the options of every command that reads a trained run."""
    parser.add_argument("--run", default=None, help="run number or name (default: the latest run)")
    parser.add_argument("--root", default=str(runs.DEFAULT_ROOT), help="folder holding run_N folders")
    parser.add_argument("--which", default="latest", help="checkpoint of the run to load (default: latest)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own; 1 is fastest on busy shared cores)")


def add_analysis_arguments(parser, seed: int, out_help: str, progress_help: str) -> None:
    """--seed, --out, the run options and --progress: the options of a command that analyses a trained run."""
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--out", default=None, help=out_help)
    add_run_arguments(parser)
    parser.add_argument("--progress", action="store_true", help=progress_help)


def load_from_args(args):
    """(model, config) of the run named by add_run_arguments' options; ValueError naming what is missing."""
    threads = None if args.threads is None else positive_int(args.threads, "--threads", maximum=MAX_THREADS)
    runs.resolve_run(args.run, args.root)          # a missing run is a clear error before any loading
    if threads is not None:
        torch.set_num_threads(threads)
    which = int(args.which) if str(args.which).isdigit() else args.which
    return load_trained(run=args.run, root=args.root, which=which)


def train_parser() -> argparse.ArgumentParser:
    """python -m k7lib train --profile quick [--run NAME] [--resume latest|N] [--lr-scale X] [--epochs-scale F] ..."""
    ap = argparse.ArgumentParser(prog="python -m k7lib train", description=COMMANDS["train"])
    ap.add_argument("--profile", default="auto", help="quick | full | auto (full when CUDA is available)")
    ap.add_argument("--run", default=None, help="run name or number (default: a new numbered run)")
    ap.add_argument("--root", default=str(runs.DEFAULT_ROOT), help="folder of the runs")
    ap.add_argument("--resume", default=None, help="'latest' or a checkpoint epoch of --run")
    ap.add_argument("--epochs-scale", type=float, default=None,
                    help=f"multiply every phase's epochs (at most {EPOCHS_SCALE_MAX:g})")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default=None, help="auto | cpu | cuda")
    ap.add_argument("--cpu-threads", type=int, default=None,
                    help="torch threads while training on the CPU (1 is fastest on busy shared cores)")
    ap.add_argument("--warm-start", default=None, help="state dict to load compatible weights from")
    ap.add_argument("--lr-scale", type=float, default=None,
                    help="multiply every remaining phase's peak learning rate (e.g. 0.5 after a divergence; "
                         f"at most {LR_SCALE_MAX:g})")
    ap.add_argument("--eval-points", type=int, default=4096,
                    help=f"fresh points for the final float64 numbers (at most {MAX_POINTS:.0e})")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def train_main(argv=None) -> int:
    """Train or resume a chart run and print its final float64 numbers; 1 after a divergence (with the recipe)."""
    args = train_parser().parse_args(argv)
    positive_int(args.eval_points, "--eval-points", maximum=MAX_POINTS)    # before any training or writing
    overrides = {k: v for k, v in (("seed", args.seed), ("device", args.device), ("warm_start", args.warm_start),
                                   ("cpu_threads", args.cpu_threads)) if v is not None}
    # before any work: nothing is written on bad input
    lr_scale = None if args.lr_scale is None else check_lr_scale(args.lr_scale)
    config = Config.from_profile(args.profile, **overrides)
    if args.epochs_scale is not None:
        config = config.scaled(args.epochs_scale)
    if args.resume is not None and args.resume != "latest" and not args.resume.isdigit():
        raise ValueError(f"--resume: expected 'latest' or a checkpoint epoch number, got {args.resume!r}")
    resume = None if args.resume is None else (args.resume if args.resume == "latest" else int(args.resume))
    try:
        result = train_chart(config, run=args.run, root=args.root, resume=resume, progress=not args.no_progress,
                             lr_scale=lr_scale)
    except TrainingDiverged as err:
        print(f"error: {err}")
        return 1
    ev = evaluate(result.model, config.chart, n_points=args.eval_points, seed=config.seed,
                  dtype=getattr(torch, config.eval_dtype))
    print(f"{result.summary()}\n"
          f"float64 on {ev.n_points} fresh points: <T>/kappa_T = {uncertain_text(ev.T_over_kappa, ev.T_over_kappa_stderr)}, "
          f"<det g> = {uncertain_text(ev.det_mean, ev.det_stderr)} (rel. err "
          f"{uncertain_text(ev.det_rel_err, ev.det_rel_err_stderr)}), min eig g = {ev.eig_min:.4f}, "
          f"non-positive points = {ev.nonpositive}, anti-flat = {ev.anti_flat:.4f}; run folder {result.run_dir}")
    return 0


def explore_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m k7lib explore",
                                description=COMMANDS["explore"])
    d = ExploreSettings()
    p.add_argument("--points", type=int, default=d.n_points, help="sample points for curvature, torsion, regions")
    p.add_argument("--spectral-lambda", type=int, default=d.spectral_n_lambda, help="cosine modes in lambda")
    p.add_argument("--spectral-fourier", type=int, default=d.spectral_n_fourier, help="max |k|_1 of fibre modes")
    p.add_argument("--spectral-points", type=int, default=d.spectral_points, help="lattice points on T^6")
    p.add_argument("--geodesics", type=int, default=d.n_geodesics)
    p.add_argument("--geodesic-steps", type=int, default=d.geodesic_steps)
    add_analysis_arguments(p, d.seed, "output folder (default: G2_ML/1_4/outputs)", "show progress bars")
    return p


def explore_main(argv=None) -> int:
    """python -m k7lib explore [--run N] [--points P] [--out DIR] ...; prints the key numbers."""
    args = explore_parser().parse_args(argv)
    settings = ExploreSettings(n_points=args.points, spectral_n_lambda=args.spectral_lambda,
                               spectral_n_fourier=args.spectral_fourier, spectral_points=args.spectral_points,
                               n_geodesics=args.geodesics, geodesic_steps=args.geodesic_steps,
                               seed=args.seed).validate()
    t0 = time.perf_counter()
    model, config = load_from_args(args)
    ex = explore_run(model, config, out_dir=args.out, progress=args.progress, settings=settings)
    sp, cu, hs = ex.spectral, ex.curvature, ex.hotspots_ricci
    change = sp.to_dict()["relative_change_last_refinement"]
    print(f"lambda1 = {sp.lambda1:.6g}, lambda1*H* = {sp.lambda1_H_star:.6g} "
          f"(seed 001 quotes 13; basis {sp.n_basis}, last refinement changed it by {change:.2e})")
    print(f"scalar curvature in [{float(cu.scalar.min()):.4g}, {float(cu.scalar.max()):.4g}], "
          f"|Ric| in [{float(cu.ricci_norm.min()):.4g}, {float(cu.ricci_norm.max()):.4g}]")
    print("hotspots (top {:.0%} |Ric|) by region: ".format(hs.fraction)
          + ", ".join(f"{k} {v['hotspots']}/{v['points']}" for k, v in hs.regions.items()))
    print(f"T mean {ex.torsion.T_mean:.4g} (kappa_T = 1/61 = {ex.torsion.kappa_T_float:.4g}); "
          f"det g mean {ex.regions['det_g']['mean']:.6g} (65/32)")
    print(f"geodesic energy drift: Levi-Civita max {max(ex.geodesics.energy_drift_levi_civita):.2e}, "
          f"torsion flow max {max(ex.geodesics.energy_drift_torsion_flow):.2e}")
    print(f"wrote {ex.files['summary']}, {ex.files['figure']} in {time.perf_counter() - t0:.1f} s")
    return 0


def validate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m k7lib validate",
                                description=COMMANDS["validate"])
    p.add_argument("--points", type=int, default=1024, help="number of Sobol points on the chart")
    add_analysis_arguments(p, 0, "output folder (default: G2_ML/1_4/outputs; plots in OUT/plots)", "show a progress bar")
    return p


def validate_main(argv=None) -> int:
    """python -m k7lib validate [--run N] [--points P] [--out DIR]; prints the identity table."""
    args = validate_parser().parse_args(argv)
    positive_int(args.points, "--points", maximum=MAX_POINTS)
    model, config = load_from_args(args)
    res = validate_run(model, config, n_points=args.points, out_dir=args.out, seed=args.seed, progress=args.progress)
    stats = res.statistics
    print(f"G2 identities on {args.points} points (float64), {res.time_s:.1f} s:")
    for col, row in stats.items():
        if col in ("lam",) or "mean" not in row or "description" not in row:
            continue
        extra = f"  max|dev| {row['max_abs_deviation']:.2e}" if "max_abs_deviation" in row else ""
        print(f"  {col:20s} mean {row['mean']: .6e}  [{row['min']: .3e}, {row['max']: .3e}]{extra}")
    k, d = stats["kappa_T_check"], stats["det_g_check"]
    print(f"  <T> = {k['T_mean']:.6g} vs kappa_T = {k['target']} = {k['target_float']:.6g}; "
          f"<det g> = {d['mean']:.6g} vs {d['target']} = {d['target_float']:.6g}")
    print(f"wrote {res.files['summary']} and {len(res.files['plots'])} histograms")
    return 0


def links_parser() -> argparse.ArgumentParser:
    """python -m k7lib links {sample,train,validate,ricci} [options]."""
    parser = argparse.ArgumentParser(prog="python -m k7lib links", description=COMMANDS["links"])
    sub = parser.add_subparsers(dest="command", required=True)

    structure, fit = Lk.LinkStructure(), Lk.TrainConfig()       # the defaults, stated once there

    def structure_args(p):
        p.add_argument("--kappa", type=float, default=structure.kappa,
                       help=f"constant factor of Omega (default {structure.kappa:g})")
        p.add_argument("--normalisation", choices=Lk.NORMALISATIONS, default=structure.normalisation)

    p = sub.add_parser("sample", help="chart points, analytic forms, FS volume check")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--volume-draws", type=int, default=4000, help="projection draws for the volume check")
    p.add_argument("--n-checks", type=int, default=64, help="points for the exact-derivative checks")
    p.add_argument("--out", default=str(Lk.DEFAULT_OUT))
    structure_args(p)
    p = sub.add_parser("train", help="fit phi and g networks (new numbered run)")
    p.add_argument("--n", type=int, default=fit.n_points)
    p.add_argument("--epochs", type=int, default=fit.epochs)
    p.add_argument("--batch-size", type=int, default=fit.batch_size)
    p.add_argument("--width", type=int, default=fit.width)
    p.add_argument("--depth", type=int, default=fit.depth)
    p.add_argument("--lr", type=float, default=fit.lr)
    p.add_argument("--seed", type=int, default=fit.seed)
    p.add_argument("--tasks", nargs="+", default=list(fit.tasks), choices=list(Lk.TASKS))
    p.add_argument("--root", default=str(Lk.DEFAULT_RUNS))
    p.add_argument("--progress", action="store_true")
    structure_args(p)
    p = sub.add_parser("validate", help="G2 identities of a trained run beside the analytic ones")
    p.add_argument("--run", default=None, help="run number or name (default: latest)")
    p.add_argument("--root", default=str(Lk.DEFAULT_RUNS))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1, help="seed of the evaluation points")
    p.add_argument("--method", choices=METHODS, default="autograd")
    p.add_argument("--plots", default=str(Lk.DEFAULT_PLOTS))
    p = sub.add_parser("ricci", help="learned Ricci-flat metric on Q and the link's G2 structure from it "
                                     "(k7lib.calabi_yau.ricci_flat)")
    d = RicciConfig()
    p.add_argument("--n-train", type=int, default=d.n_train)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--powers", type=int, default=d.powers, help="diagonal powers u_ii^k among the features")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="wall-clock cap (0: none)")
    p.add_argument("--n-eval", type=int, default=4000, help="points per fresh evaluation sample")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[101, 102, 103])
    p.add_argument("--n-link", type=int, default=64, help="chart points of the link for the G2 checks")
    p.add_argument("--kappa-draws", type=int, default=20000,
                   help="projection draws for the volume-matched kappa of Omega (its error shifts r by the same "
                        "relative amount)")
    p.add_argument("--root", default=str(RICCI_RUNS))
    p.add_argument("--progress", action="store_true")
    return parser


def _links_sample(args) -> int:
    structure = Lk.LinkStructure(kappa=args.kappa, normalisation=args.normalisation)
    s = Lk.sample_summary(args.n, args.seed, structure, args.volume_draws, args.n_checks, args.out)
    print(f"{args.n} chart points of the quintic link -> {s['files']['samples']}")
    print(f"FS volume of Q: projection sampler "
          f"{uncertain_text(s['fs_volume_projection_estimate'], s['fs_volume_standard_error'])} vs exact 5 pi^3/3! = {s['fs_volume_exact']:.5f} "
          f"({s['fs_volume_deviation_in_se']:+.2f} se)")
    print(f"|Omega| ratio r (kappa={structure.kappa:g}, {structure.normalisation}): min {s['r_min']:.4f} "
          f"mean {s['r_mean']:.4f} max {s['r_max']:.4f}; volume-matched kappa = "
          f"{uncertain_text(s['kappa_volume_matched'], s['kappa_volume_matched_se'])}")
    print(f"sigma measure of the Fubini-Study metric (0 for Ricci-flat): {s['sigma_fubini_study']:.4f}")
    print(f"closest approach of the points to the chart's branch cut: {s['min_angle_to_chart_cut']:.3f} rad")
    for k in ("d_omega", "d_eta_minus_omega", "d_phi_minus_omega2", "d_psi", "psi_minus_star_phi",
              "metric_vs_closed_form"):
        print(f"  max {k:22s} {s['max_' + k]:.3e}   on {s['checks_on_points']} points")
    return 0


def _links_train(args) -> int:
    config = Lk.TrainConfig(n_points=args.n, epochs=args.epochs, batch_size=args.batch_size, width=args.width,
                            depth=args.depth, lr=args.lr, seed=args.seed, kappa=args.kappa,
                            normalisation=args.normalisation, tasks=tuple(args.tasks))
    run = Lk.fit_link(config, root=args.root, progress=args.progress)
    hist = pd.read_csv(run / "history.csv")
    last = hist.groupby("task").tail(1)
    print(f"trained {', '.join(config.tasks)} on {config.n_points} points, {config.epochs} epochs -> {run}")
    for _, row in last.iterrows():
        print(f"  {row['task']:7s} final train mse {row['train_mse']:.3e}  val mse {row['val_mse']:.3e} "
              "(standardised units)")
    return 0


def _links_validate(args) -> int:
    saved = Lk.load_run(args.run, args.root)
    path, config, models = saved.path, saved.config, saved.networks
    x = link_points(args.n, seed=args.seed)
    summary, components, residuals = link_analysis.analyse(models, config.structure, x, method=args.method)
    summary.to_csv(path / "validation_summary.csv", index=False)
    components.to_csv(path / "validation_components.csv", index=False)
    fig = figures.link_residuals_figure(residuals, Path(args.plots) / f"links_identities_{path.name}.png")
    with pd.option_context("display.width", 140, "display.float_format", "{:.3e}".format):
        print(f"G2 identities on {args.n} chart points ({args.method} derivatives), run {path.name}:")
        print(summary.to_string(index=False))
    print(f"tables -> {path / 'validation_summary.csv'}, {path / 'validation_components.csv'}; figure -> {fig}")
    return 0


def _links_ricci(args) -> int:
    config = RF.RicciConfig(n_train=args.n_train, epochs=args.epochs, batch_size=args.batch_size, width=args.width,
                            depth=args.depth, powers=args.powers, lr=args.lr, seed=args.seed,
                            max_seconds=args.max_seconds)
    out = RF.fit_run(config, args.n_eval, tuple(args.eval_seeds), args.n_link, args.kappa_draws, args.root,
                     args.progress)
    info, a, run = out.summary, out.sigma.attrs, out.run
    print(f"Monge-Ampere training: {info['epochs_run']} epochs on {config.n_train} points, "
          f"{info['training_seconds']:.1f} s -> {run}")
    print(f"sigma on {len(out.sigma)} fresh samples of {args.n_eval} points (mean +- std over samples): "
          f"Fubini-Study {uncertain_text(*a['sigma_fs'][:2])}, learned {uncertain_text(*a['sigma_nn'][:2])}")
    with pd.option_context("display.width", 140, "display.float_format", "{:.3e}".format):
        print(f"G2 structure of the link on {args.n_link} chart points (kappa = "
              f"{uncertain_text(info['kappa_volume_matched'], info['kappa_volume_matched_se'])}, volume matched; "
              "mean |error|):")
        print(out.link_checks.pivot(index="check", columns="metric", values="mean_abs").to_string())
    return 0


# (option, minimum, maximum) of each links command's counts and seeds, checked before any work
_POINTS, _SEED = (1, MAX_POINTS), (0, MAX_SEED)
_NETWORK = (("epochs", 1, MAX_EPOCHS), ("batch_size", *_POINTS), ("width", 1, MAX_WIDTH), ("depth", 1, MAX_DEPTH),
            ("seed", *_SEED))
LINK_COUNTS = {
    "sample": (("n", *_POINTS), ("volume_draws", *_POINTS), ("n_checks", *_POINTS), ("seed", *_SEED)),
    "train": (("n", *_POINTS),) + _NETWORK,
    "validate": (("n", *_POINTS), ("seed", *_SEED)),
    "ricci": (("n_train", *_POINTS), ("powers", 1, MAX_FEATURES), ("n_eval", *_POINTS), ("n_link", *_POINTS),
              ("kappa_draws", *_POINTS)) + _NETWORK,
}


def _check_link_counts(args) -> None:
    for dest, low, high in LINK_COUNTS[args.command]:
        positive_int(getattr(args, dest), f"--{dest.replace('_', '-')}", low, high)
    for seed in getattr(args, "eval_seeds", ()):
        positive_int(seed, "--eval-seeds", *_SEED)


def links_main(argv=None) -> int:
    """python -m k7lib links {sample,train,validate,ricci} [options]."""
    args = links_parser().parse_args(argv)
    _check_link_counts(args)
    return {"sample": _links_sample, "train": _links_train, "validate": _links_validate,
            "ricci": _links_ricci}[args.command](args)


def known_parser() -> argparse.ArgumentParser:
    """python -m k7lib known --fixture bryant-salamon --eps 0.2 [--width W] [--points N] [--control] ..."""
    c, s = KnownConfig(), InvariantSettings()
    ap = argparse.ArgumentParser(prog="python -m k7lib known", description=COMMANDS["known"])
    ap.add_argument("--fixture", default="bryant-salamon", help="bryant-salamon | gibbons-hawking | flat")
    ap.add_argument("--eps", type=float, default=c.eps, help="relative size of the start's perturbation")
    ap.add_argument("--width", type=int, default=c.width)
    ap.add_argument("--depth", type=int, default=c.depth)
    ap.add_argument("--points", type=int, default=c.n_points, help="training points (scrambled Sobol)")
    ap.add_argument("--epochs", type=int, default=c.epochs, help="L-BFGS calls (checkpoint and progress unit)")
    ap.add_argument("--iterations", type=int, default=c.iterations, help="L-BFGS iterations per epoch")
    ap.add_argument("--polish", type=int, default=c.polish, help="Gauss-Newton steps on the output layers afterwards")
    ap.add_argument("--start", default=c.start, help="network (in the network's class) | modes (outside it)")
    ap.add_argument("--solver", default=c.solver, help="lbfgs | lm (the L-BFGS epochs, 0 allowed, then "
                    "Levenberg-Marquardt on every weight)")
    ap.add_argument("--lm-steps", type=int, default=c.lm_steps, help="Levenberg-Marquardt steps (--solver lm)")
    ap.add_argument("--seed", type=int, default=c.seed)
    ap.add_argument("--lo", type=float, nargs="+", default=None, help="the box's 7 lower ends (default: the fixture's)")
    ap.add_argument("--hi", type=float, nargs="+", default=None, help="the box's 7 upper ends")
    ap.add_argument("--no-boundary", action="store_true", help="train the control alone (no boundary data)")
    ap.add_argument("--control", action="store_true", help="also train the control and compare it")
    ap.add_argument("--invariant-points", type=int, default=s.n_points, help="Monte Carlo points per scramble")
    ap.add_argument("--degree", type=int, default=s.degree, help="degree of the Dirichlet basis")
    ap.add_argument("--nodes", type=int, default=None, help="Gauss nodes per axis of the spectrum (default degree + 3)")
    ap.add_argument("--run", default=None, help="run name or number (default: a new numbered run)")
    ap.add_argument("--root", default=str(KNOWN_ROOT), help="folder of the known-metric runs")
    ap.add_argument("--resume", action="store_true", help="continue --run from its latest checkpoint")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _known_inputs(args):
    """(fixture, box, config, settings) from the arguments: every check before anything is written."""
    fx = fixture(args.fixture)
    box = fx.box if args.lo is None and args.hi is None else Box(args.lo or fx.box.lo, args.hi or fx.box.hi)
    config = KnownConfig(eps=args.eps, width=args.width, depth=args.depth, n_points=args.points, epochs=args.epochs,
                         iterations=args.iterations, polish=args.polish, start=args.start, seed=args.seed,
                         boundary=not args.no_boundary, solver=args.solver, lm_steps=args.lm_steps)
    settings = InvariantSettings(n_points=args.invariant_points, degree=args.degree, n_nodes=args.nodes)
    if args.threads is not None:
        positive_int(args.threads, "--threads", maximum=MAX_THREADS)
    if args.resume and args.run is None:
        raise ValueError("--resume needs --run (the run to continue)")
    check_problem(fx.phi, box, config)            # positivity of phi_E and of the start, named points
    return fx, box, config, settings


def known_main(argv=None) -> int:
    """Train on a fixture from eps, compare exact / start / learned (/ control) and write known.json in the run."""
    args = known_parser().parse_args(argv)
    fx, box, config, settings = _known_inputs(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    root = Path(args.root)
    if args.run is None:
        run_dir = runs.new_run(root)                      # the next free number, taken atomically
    else:
        run_dir = runs.run_path(args.run, root)          # resolves inside the root, symbolic links included
        if run_dir.exists() and not args.resume:
            raise ValueError(f"run folder {run_dir} exists; pass --resume to continue it or choose another --run")
        run_dir.mkdir(parents=True, exist_ok=True)
    with runs.run_lock(run_dir):                          # one writer per run, as for chart training
        rep = known_report(fx.phi, box, config, settings, control=args.control, run_dir=run_dir, label=fx.name,
                           progress=not args.no_progress, resume=args.resume)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(rep.invariants.table.to_string())
        print(rep.targets.to_string())
    runs.write_json(run_dir / "known.json", rep.to_dict())
    print(f"training {rep.seconds['training']:.1f} s, invariants {rep.seconds['invariants']:.1f} s; wrote "
          f"{run_dir / 'known.json'}")
    return 0


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line as one line (a skipped checkpoint, a fresh start), without the source."""
    return f"warning: {message}\n"


MAINS = {"train": train_main, "explore": explore_main, "validate": validate_main, "links": links_main,
         "known": known_main}


def main(argv=None) -> int:
    """python -m k7lib COMMAND [options]: dispatch to COMMAND's handler; 2 on bad input (one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in MAINS:
        lines = [f"  {name:9s} {desc}" for name, desc in COMMANDS.items()]
        print("usage: python -m k7lib COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    warnings.formatwarning = one_line_warning
    try:
        return int(MAINS[argv[0]](argv[1:]) or 0)
    # input errors, numbers too large for a float or an index, and machine faults (disk full, ...): one line
    except (ValueError, OverflowError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

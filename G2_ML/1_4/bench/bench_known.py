"""The torsion-free learner on a known G2 metric (issue 21): time per epoch, total time to the targets,
the cost and peak memory of the invariants, and optionally the convergence in width and point count.

Runs `learn.known.known_report` at the benchmark's default size (KnownConfig() and InvariantSettings(degree=3),
Bryant-Salamon from eps = 0.2) on `--threads` CPU threads and prints the loss history, the invariant
table (exact / start / learned / control, standard errors, paired relative differences), the holonomy
singular values and the targets. Usage:
    python bench/bench_known.py [--fixture bryant-salamon] [--eps 0.2] [--threads 2] [--no-control] [--json out.json]
    python bench/bench_known.py --convergence [--threads 1] [--json table.json]   # the table alone
    python bench/bench_known.py --longer 32 64 128 [--json longer.json]          # one run, trained longer
    python bench/bench_known.py --variants [--json variants.json]                # polish; start outside the class
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace

import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k7lib.exact import fixture  # noqa: E402
from k7lib.geometry.invariants import InvariantSettings, compare  # noqa: E402
from k7lib.learn.known import known_report, train_known  # noqa: E402
from k7lib.learn.torsion_free import KnownConfig  # noqa: E402
from k7lib.report.latex import uncertain_text  # noqa: E402

CONVERGENCE_SETTINGS = InvariantSettings(n_points=128, scrambles=4, holonomy_points=64, degree=2)
VARIANTS = [dict(v, n_points=512) for v in ({"polish": 4}, {"start": "modes", "polish": 0},
                                             {"start": "modes", "polish": 4},
                                             {"start": "modes", "polish": 4, "width": 64},
                                             {"start": "modes", "polish": 4, "width": 128})]


def peak_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def convergence(fx, config: KnownConfig, widths, points, variants=None) -> pd.DataFrame:
    """One row per (width, n_points) (or per dict of KnownConfig fields in variants): training time, the loss
    ratio, and from `compare` on common points the L2 torsion fall, rel of int |Rm|^2 and of lambda_1, and the
    learned part outside g2."""
    rows = []
    if variants is None:
        variants = [{"width": w} for w in widths] + [{"n_points": n} for n in points if n != config.n_points]
    for change in variants:
        cfg = replace(config, **change)
        width, n = cfg.width, cfg.n_points
        cpu0 = time.process_time()
        run = train_known(fx.phi, fx.box, cfg)
        cpu = time.process_time() - cpu0
        t = compare(run.fields(fx.phi), fx.box, CONVERGENCE_SETTINGS)
        res = t.results
        rows.append({"start": cfg.start, "polish": cfg.polish, "width": width, "n_points": n, "epochs": cfg.epochs,
                     "train_s": round(run.seconds, 1), "train_cpu_s": round(cpu, 1),
                     "loss_ratio": float(run.history["loss_ratio"].iloc[-1]),
                     "torsion_fall": res["start"].torsion_l2 / res["learned"].torsion_l2,
                     "rm2_rel": float(t.table.loc["int |Rm|^2", "learned_rel"]),
                     "lambda1_rel": float(t.table.loc["lambda_1", "learned_rel"]),
                     "outside_g2": res["learned"].holonomy.outside_g2})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def longer(fx, config: KnownConfig, stops, run_dir) -> pd.DataFrame:
    """The same run continued from its checkpoints to each number of epochs in stops: the loss ratio, the L2
    torsion fall on fresh points and the learned part outside g2 (CONVERGENCE_SETTINGS) at each stop."""
    rows = []
    for epochs in stops:
        run = train_known(fx.phi, fx.box, replace(config, epochs=epochs), run_dir=run_dir, resume=epochs != stops[0])
        res = compare(run.fields(fx.phi), fx.box, CONVERGENCE_SETTINGS).results
        rows.append({"epochs": epochs, "train_s": round(run.seconds, 1),
                     "loss_ratio": float(run.history["loss_ratio"].iloc[-1]),
                     "torsion_fall": res["start"].torsion_l2 / res["learned"].torsion_l2,
                     "outside_g2": res["learned"].holonomy.outside_g2, "gap": res["learned"].holonomy.gap})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixture", default="bryant-salamon")
    p.add_argument("--eps", type=float, default=KnownConfig.eps)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--polish", type=int, default=KnownConfig.polish, help="Gauss-Newton steps after L-BFGS")
    p.add_argument("--start", default=KnownConfig.start, help="network (in the network's class) or modes")
    p.add_argument("--no-control", action="store_true")
    p.add_argument("--convergence", action="store_true",
                   help="only the table against width and point count (no report, no control)")
    p.add_argument("--json", default=None, help="write the report's to_dict() here")
    p.add_argument("--variants", action="store_true",
                   help="only: the polish and the start outside the network's class, against the width")
    p.add_argument("--longer", type=int, nargs="+", default=None, metavar="EPOCHS",
                   help="only: continue one run to these numbers of epochs (checkpoints in a temporary folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fx, config = fixture(args.fixture), KnownConfig(eps=args.eps, polish=args.polish, start=args.start)
    settings = InvariantSettings(degree=3)
    if args.longer:
        with tempfile.TemporaryDirectory() as tmp:
            table = longer(fx, config, sorted(args.longer), os.path.join(tmp, "run"))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"longer": table.to_dict(orient="records"), "config": config.to_dict()}, fh, default=float)
        return 0
    if args.convergence or args.variants:
        table = convergence(fx, config, (16, 32, 64), (512, 1024, 2048), VARIANTS if args.variants else None)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"convergence": table.to_dict(orient="records"), "settings": CONVERGENCE_SETTINGS.to_dict(),
                           "config": config.to_dict()}, fh, default=float)
        return 0
    print(f"{fx.name} eps={args.eps} {config} threads={torch.get_num_threads()}", flush=True)
    load0, cpu0 = os.getloadavg()[0], time.process_time()
    rep = known_report(fx.phi, fx.box, config, settings, control=not args.no_control, label=fx.name, progress=True)
    cpu = time.process_time() - cpu0
    print(f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (on {os.cpu_count()} cores); "
          f"CPU time of the whole report {cpu:.0f} s (all threads)")
    h = rep.run.history
    per_epoch = h["seconds"].diff().fillna(h["seconds"]).mean()
    print(f"\ntraining: {rep.run.seconds:.1f} s, {per_epoch:.2f} s per epoch of {config.iterations} L-BFGS iterations; "
          f"control {rep.control.seconds if rep.control else 0:.1f} s; peak memory so far {peak_mb():.0f} MB")
    print(h.iloc[:: max(1, len(h) // 8)].to_string(index=False))
    print(f"\ninvariants: {rep.seconds['invariants']:.1f} s for {len(rep.invariants.results)} structures; peak memory "
          f"{peak_mb():.0f} MB")
    for name, inv in rep.invariants.results.items():
        print(f"  {name:8s} " + ", ".join(f"{k} {v:.1f} s" for k, v in inv.seconds.items()))
    pd.set_option("display.width", 250)
    print(rep.invariants.table.to_string(float_format=lambda v: f"{v:.4g}"))
    for name, inv in rep.invariants.results.items():
        hol = inv.holonomy
        print(f"  {name:8s} L2 torsion {uncertain_text(inv.torsion_l2, inv.torsion_l2_stderr)}; Ric/Rm {inv.ricci_ratio:.2e}; "
              f"outside g2 {hol.outside_g2:.2e}; rank {hol.rank} gap {hol.gap:.2e}; g2 singular values "
              + " ".join(f"{v:.2e}" for v in hol.singular_values.tolist()))
    print(rep.targets.to_string())
    to_targets = rep.run.seconds + sum(sum(rep.invariants.results[k].seconds.values()) for k in ("exact", "start", "learned"))
    print(f"\ntime to the targets (training + invariants of exact, start, learned): {to_targets / 60:.1f} min")
    out = {"report": rep.to_dict(), "per_epoch_s": per_epoch, "time_to_targets_s": to_targets, "peak_mb": peak_mb(),
           "cpu_s": cpu, "load_average": [load0, os.getloadavg()[0]]}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())

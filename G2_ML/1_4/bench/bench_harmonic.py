"""Benchmark: the Hodge projection of harmonic.extract (21 + 77 candidates) on the CPU, float64.

Each measurement runs in its own subprocess, which reports its wall time and its peak resident memory
(resource.getrusage(RUSAGE_SELF).ru_maxrss), so peak memory can be compared across point counts: with
chunked float64 accumulation it is set by the chunk and the basis, not by the number of points.
Printed: (1) the cost of the projection of both degrees (and of the b_eff Gram integrals) with the
default basis at --points points for a network phi (Fourier features, 2 tanh layers of width 64,
phi = phi0 + 0.05 MLP); (2) peak memory and time against the number of points; (3) the accuracy table
on the conformal fixture against basis size and point count (harmonic.convergence_table).

    python bench/bench_harmonic.py                      # 1e5 points, 2 threads
    python bench/bench_harmonic.py --points 20000 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def mlp_field(L: float):
    import torch

    from k7lib import g2

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(13, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                              torch.nn.Tanh(), torch.nn.Linear(64, 35)).double()
    for p in net.parameters():
        p.requires_grad_(False)

    def phi(x):
        y = 2 * torch.pi * x[:, 1:]
        feats = torch.cat([x[:, :1] / L, torch.sin(y), torch.cos(y)], dim=-1)
        return g2.phi0_packed(x.dtype) + 0.05 * net(feats)
    return phi


def child(args) -> None:
    import torch

    from k7lib.geometry import candidates, hodge
    from k7lib.geometry import harmonic as H

    torch.set_num_threads(args.threads)
    L = 2.0
    phi = mlp_field(L)
    t0 = time.perf_counter()
    x = H.sample_chart(args.points, L, seed=0)
    for b in (candidates.candidates_2forms(), candidates.candidates_3forms(L)):
        H.integrate(b, phi, x, 2 * L, dirichlet=False)
    t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = hodge.project(phi, L, args.points, seed=0)
    t_proj = time.perf_counter() - t0
    p2, p3 = out[2][0], out[3][0]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB
    print(json.dumps({"points": args.points, "quadrature_points": p3.n_points, "threads": args.threads,
                      "gram_s": t_gram, "projection_s": t_proj, "peak_rss_mib": peak_mib,
                      "b2_classes": p2.b_classes, "b3_classes": p3.b_classes,
                      "unknowns": [p2.n_unknowns, p3.n_unknowns]}))


def run(points, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--points", str(points), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch

    from k7lib.geometry import harmonic as H
    from k7lib.geometry import hodge

    n = args.points
    print(f"threads: {args.threads} (machine has {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f})")
    rows = [run(m, args.threads) for m in (n // 4, n // 2, n)]
    for r in rows:
        print(f"N={r['points']:7d} (quadrature {r['quadrature_points']:7d}): projection of 21 + 77 candidates "
              f"{r['projection_s']:7.1f} s ({1e6 * r['projection_s'] / r['quadrature_points']:.0f} us/point), "
              f"b_eff Gram {r['gram_s']:6.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, classes "
              f"({r['b2_classes']}, {r['b3_classes']}), unknowns {r['unknowns']}")
    print(f"peak RSS ratio (N vs N/4 points): {rows[2]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}")
    print(f"time ratio (N vs N/2 points): {rows[2]['projection_s'] / rows[1]['projection_s']:.3f}")
    torch.set_num_threads(args.threads)
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print("accuracy on the conformal fixture (a = 0.2, L = 2):")
        print(hodge.convergence_table(settings=((1, 1, 512), (1, 2, 1024), (1, 3, 2048), (3, 2, 2048), (3, 3, 8192))))
    t0 = time.perf_counter()
    from k7lib.fixtures import conformal_fibre_field
    r = H.extract(conformal_fibre_field(0.2), 2048, 2.0)
    e = [hodge.fixture_errors(s.projection, 0.2) for s in (r.two, r.three)]
    print(f"default extract on the conformal fixture (2048 points): b_harm = ({r.b2_harm}, {r.b3_harm}), "
          f"b_eff = ({r.b2_eff}, {r.b3_eff}), worst relative error of |h|^2 "
          f"{max(max(x['with_dy1'], x['without_dy1']) for x in e):.2e}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

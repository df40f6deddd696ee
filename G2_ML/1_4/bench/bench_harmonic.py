"""Benchmark: Gram + Dirichlet integrals of the 77 candidate 3-forms on the CPU, float64.

Each measurement runs in its own subprocess, which reports its wall time and its peak resident
memory (resource.getrusage(RUSAGE_SELF).ru_maxrss), so peak memory of N and 2N points can be
compared: with chunked float64 accumulation it is set by the chunk size, not by the number of
points. Three phi fields: the analytic lambda-dependent frame A(lambda)^* phi0, and a small MLP
(Fourier features, 2 tanh layers of width 64, phi = phi0 + 0.05 MLP) to show the network cost.

    python bench/bench_harmonic.py                 # 1e5 points (and 5e4 for the memory check)
    python bench/bench_harmonic.py --points 20000  # quicker
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
    from k7lib import harmonic as H
    from k7lib.fixtures import lambda_frame_field

    torch.set_num_threads(args.threads)
    L = 2.0
    phi = lambda_frame_field if args.field == "frame" else mlp_field(L)
    basis = H.candidates_3forms(L)
    x = H.sample_chart(args.points, L, seed=0)
    t0 = time.perf_counter()
    H.integrate(basis, phi, x, 2 * L, chunk=args.chunk, dirichlet=False)
    t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    ints = H.integrate(basis, phi, x, 2 * L, chunk=args.chunk)
    t_both = time.perf_counter() - t0
    res = H.analyse(ints, basis, mu_scale=(3.141592653589793 / (2 * L)) ** 2)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB
    print(json.dumps({"field": args.field, "points": args.points, "chunk": args.chunk,
                      "gram_s": t_gram, "gram_dirichlet_s": t_both, "peak_rss_mib": peak_mib,
                      "b3_eff": res.b_eff, "b3_harm": res.b_harm}))


def run(field, points, chunk, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--field", field, "--points", str(points),
           "--chunk", str(chunk), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--field", choices=("frame", "mlp"), default="frame")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    n = args.points
    rows = [run("frame", n // 2, args.chunk, args.threads), run("frame", n, args.chunk, args.threads),
            run("mlp", n // 10, args.chunk, args.threads), run("frame", n // 10, args.chunk, args.threads)]
    for r in rows:
        print(f"{r['field']:6s} N={r['points']:7d} chunk={r['chunk']}: Gram {r['gram_s']:7.2f} s, "
              f"Gram+Dirichlet {r['gram_dirichlet_s']:7.2f} s "
              f"({1e6 * r['gram_dirichlet_s'] / r['points']:.0f} us/point), peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"b3_eff={r['b3_eff']} b3_harm={r['b3_harm']}")
    print(f"peak RSS ratio (2N vs N points): {rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}")
    print(f"time ratio (2N vs N points): {rows[1]['gram_dirichlet_s'] / rows[0]['gram_dirichlet_s']:.3f}")
    print(f"MLP / analytic phi time ratio at N={n // 10}: "
          f"{rows[2]['gram_dirichlet_s'] / rows[3]['gram_dirichlet_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How close to free is the geometry? Timings of one training step, printed as ratios in one run.

A phi network of the full profile's size (Fourier features n = 1..12 on the six fibre
coordinates, smooth features of lambda, 6 tanh layers x 256, 35 outputs) at batch 256 on the CPU:

  baseline  = the network's own forward-mode jacobian (7 tangents) + backward
  step      = exact d phi and d psi (one forward-mode pass through x -> (phi, *phi)),
              a loss on T and det g, and backward
  ratio     = step / baseline   (target <= 2, aim 1.5)

Also: autograd vs finite-difference torsion, float32 vs float64, and peak memory at batch 1024
(resident-set growth of a fresh subprocess). Run: python bench/bench_foundation.py [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k7lib import g2  # noqa: E402
from k7lib.constants import ZeroParamGeometry  # noqa: E402
from k7lib.derivatives import value_and_jacobian  # noqa: E402
from k7lib.torsion import torsion_packed  # noqa: E402


class ReferenceNet(nn.Module):
    """phi(x) = phi0 + MLP(features(x)), sized like the full profile's network."""

    def __init__(self, n_fourier=12, width=256, depth=6):
        super().__init__()
        self.register_buffer("freq", 2 * torch.pi * torch.arange(1, n_fourier + 1, dtype=torch.float32))
        layers, d_in = [], 12 * n_fourier + 4
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.Tanh()]
            d_in = width
        layers.append(nn.Linear(d_in, 35))
        self.net = nn.Sequential(*layers)
        self.register_buffer("phi0", g2.phi0_packed(torch.float32))

    def forward(self, x):
        lam, y = x[:, :1], x[:, 1:]
        a = (y[..., None] * self.freq).flatten(1)
        feats = torch.cat([torch.sin(a), torch.cos(a), lam, lam ** 2, torch.tanh(2 * lam), torch.exp(-lam ** 2)], 1)
        return self.phi0 + 0.05 * self.net(feats)


def timeit(fn, repeat=5, warmup=2):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def make(batch, dtype, seed=0):
    torch.manual_seed(seed)
    net = ReferenceNet().to(dtype)
    x = torch.rand(batch, 7, dtype=dtype)
    x[:, 0] = 2 * x[:, 0] - 1
    return net, x


def baseline_step(net, x):
    net.zero_grad(set_to_none=True)
    value, jac = value_and_jacobian(net, x)
    ((value ** 2).mean() + (jac ** 2).mean()).backward()


def geometry_step(net, x, method="autograd"):
    z = ZeroParamGeometry()
    kappa, det_target = float(z.kappa_T), float(z.det_g_target)
    net.zero_grad(set_to_none=True)
    t = torsion_packed(net, x, method=method, check=False)
    loss = (t.T.mean() - kappa) ** 2 + (t.metric.det.mean() - det_target) ** 2
    loss.backward()


def peak_memory_mib(batch, dtype_name):
    """(peak resident set, its growth during two training steps) of a fresh process, in MiB."""
    code = (
        "import resource, sys, torch; sys.path.insert(0, %r); from bench.bench_foundation import *;"
        "net, x = make(%d, torch.%s); r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "geometry_step(net, x); geometry_step(net, x);"
        "r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; print(r1 / 1024, (r1 - r0) / 1024)"
    ) % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), batch, dtype_name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, growth = out.stdout.strip().splitlines()[-1].split()
    return float(peak), float(growth)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {}
    net, x = make(args.batch, torch.float32)
    res["baseline_s"] = timeit(lambda: baseline_step(net, x))
    res["step_s"] = timeit(lambda: geometry_step(net, x))
    res["ratio_step_over_baseline"] = res["step_s"] / res["baseline_s"]
    with torch.no_grad():
        res["torsion_autograd_s"] = timeit(lambda: torsion_packed(net, x, check=False))
        res["torsion_fd_s"] = timeit(lambda: torsion_packed(net, x, method="fd", check=False))
    res["ratio_fd_over_autograd"] = res["torsion_fd_s"] / res["torsion_autograd_s"]
    net64, x64 = make(args.batch, torch.float64)
    res["step_float64_s"] = timeit(lambda: geometry_step(net64, x64), repeat=3)
    res["ratio_float64_over_float32"] = res["step_float64_s"] / res["step_s"]
    res["peak_rss_mib_batch1024"], res["step_growth_mib_batch1024"] = peak_memory_mib(1024, "float32")
    res["peak_rss_mib_batch2048"], res["step_growth_mib_batch2048"] = peak_memory_mib(2048, "float32")
    print(f"batch {args.batch}, {args.threads} threads, torch {torch.__version__}")
    for k, v in res.items():
        print(f"  {k:32s} {v:10.4f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

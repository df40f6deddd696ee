"""Training throughput on this machine: epochs per second of the quick and full profiles.

Runs a few optimiser steps of each profile exactly as `train_chart` does them (sampling, losses with
one forward-mode pass for d phi and d psi plus one for d g / d lambda, backward, clipping,
Adam), after a warm-up step, and prints epochs/s, the ratio between the profiles and the
projected wall time of each whole profile. Also the cost of one step against the network's
own forward+backward (what the geometry adds). Usage:
    python bench/bench_train.py [--steps-quick 20] [--steps-full 3] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k7lib.learn.config import Config  # noqa: E402
from k7lib.learn.losses import compute_losses  # noqa: E402
from k7lib.learn.model import K7PhiModel  # noqa: E402
from k7lib.sampling import points as sampling  # noqa: E402


def time_steps(config: Config, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds per training step, seconds per plain forward+backward of the network) for `config`."""
    if config.cpu_threads and device.type == "cpu":
        torch.set_num_threads(config.cpu_threads)      # as train_chart() does
    torch.manual_seed(0)
    model = K7PhiModel(config).to(device=device, dtype=getattr(torch, config.train_dtype))
    with torch.no_grad():
        model.head.weight.normal_(std=1e-3)              # a non-trivial correction, as after a few steps
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    weights = config.phases[-1].weights                   # every term on

    def step():
        x, w = sampling.uniform(config.batch, config.chart, gen, config.neck_weighted,
                            dtype=getattr(torch, config.train_dtype), device=device)
        out = compute_losses(model, x, w, weights, config.method, chart=config.chart, eig_margin=config.eig_margin,
                             cond_cap=config.cond_cap, anti_flat_margin=config.anti_flat_margin)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()

    def plain():
        x, _ = sampling.uniform(config.batch, config.chart, gen, dtype=getattr(torch, config.train_dtype), device=device)
        model.zero_grad(set_to_none=True)
        model(x).square().sum().backward()

    def clock(fn, n):
        fn()                                              # warm-up (tables, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    return clock(step, steps), clock(plain, steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-quick", type=int, default=20)
    ap.add_argument("--steps-full", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    rows = {}
    default_threads = torch.get_num_threads()
    for name, steps in (("quick", args.steps_quick), ("full", args.steps_full)):
        torch.set_num_threads(default_threads)
        cfg = Config.from_profile(name, device=args.device)
        per_step, per_plain = time_steps(cfg, steps, device)
        rows[name] = (cfg, per_step, per_plain)
        print(f"{name:5s}: batch {cfg.batch}, {cfg.depth} x {cfg.width}, {cfg.total_epochs} epochs, "
              f"{torch.get_num_threads()} thread(s) | "
              f"{1 / per_step:8.2f} epochs/s | step / network fwd+bwd = {per_step / per_plain:6.1f} | "
              f"projected whole profile {cfg.total_epochs * per_step / 60:8.1f} min")
    q, f = rows["quick"], rows["full"]
    print(f"full step / quick step = {f[1] / q[1]:.1f}; projected full / quick wall time = "
          f"{f[0].total_epochs * f[1] / (q[0].total_epochs * q[1]):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

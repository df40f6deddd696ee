"""The notebook's pipeline on a GPU: full-profile training for a fixed number of epochs, then the
harmonic extraction, the couplings (triple wedge integral, Hitchin's cubic d3V) and the exports, with timings printed in one run.

Prints
  * epochs/s of the full profile and the projected time of its 4 x 2500 epochs;
  * peak GPU memory (torch.cuda.max_memory_allocated) of training and of the harmonic extraction;
  * the step's breakdown: the network's own forward-mode jacobian (7 tangents) + backward against
    the whole step (d phi, d psi, g(phi), every loss term, backward, Adam), float32 and float64;
  * the time of the final polish, of the harmonic extraction at --harmonic-points points (1e5 by
    default) and of the float64 evaluation on 10^4 points;
  * the time of the couplings and of the export, and the float64 numbers of the trained phi.

What runs in which precision (the same on CPU and GPU): training in float32 (the network, the
forward-mode derivatives and the G2 algebra: the loss needs relative precision ~1e-4, and float32
is 2x faster, 30x on consumer GPUs); every reported number in float64 (evaluation, harmonic
Gram/Dirichlet integrals, couplings, exported metric), because they are differences of
O(1) quantities measured to 1e-6 and sums over 1e5 points.

    python bench/bench_gpu.py [--epochs 300] [--harmonic-points 100000] [--device cuda]
(--device cpu with small sizes runs the same script as a smoke test.)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k7lib import topology
from k7lib.apps import pipeline
from k7lib.derivatives import value_and_jacobian  # noqa: E402
from k7lib.geometry import harmonic
from k7lib.learn.chart_training import train_chart  # noqa: E402
from k7lib.learn.config import Config  # noqa: E402
from k7lib.learn.evaluate import evaluate  # noqa: E402
from k7lib.learn.losses import compute_losses  # noqa: E402
from k7lib.learn.model import K7PhiModel  # noqa: E402
from k7lib.learn.polish import polish  # noqa: E402
from k7lib.report import export
from k7lib.sampling import points as sampling  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clock(fn, device, n):
    fn()                                        # warm-up: kernels, tables, allocator
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / n


def step_breakdown(config: Config, device, dtype, steps: int) -> tuple[float, float]:
    """(s per whole training step, s per network jacobian + backward) at the profile's batch."""
    torch.manual_seed(0)
    model = K7PhiModel(config).to(device=device, dtype=dtype)
    with torch.no_grad():
        model.head.weight.normal_(std=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    weights = config.phases[-1].weights

    def step():
        x, w = sampling.uniform(config.batch, config.chart, gen, config.neck_weighted, dtype=dtype, device=device)
        out = compute_losses(model, x, w, weights, config.method, chart=config.chart, eig_margin=config.eig_margin,
                             cond_cap=config.cond_cap, anti_flat_margin=config.anti_flat_margin)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()

    def network():
        x, _ = sampling.uniform(config.batch, config.chart, gen, dtype=dtype, device=device)
        model.zero_grad(set_to_none=True)
        value, jac = value_and_jacobian(model, x)
        (value.square().sum() + jac.square().sum()).backward()

    return _clock(step, device, steps), _clock(network, device, steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=300, help="full-profile epochs to train (spread over the 4 phases)")
    ap.add_argument("--steps", type=int, default=10, help="steps per timing of the breakdown")
    ap.add_argument("--harmonic-points", type=int, default=100_000)
    ap.add_argument("--coupling-points", type=int, default=8192)
    ap.add_argument("--polish-points", type=int, default=None, help="default: the full profile's")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available here; run with --device cpu for a smoke test")
        return 2
    if args.epochs < 4 or args.steps < 1 or args.harmonic_points < 1 or args.coupling_points < 1:
        print("error: --epochs must be >= 4 and --steps, --harmonic-points, --coupling-points >= 1")
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}")
    full = Config.from_profile("full", device=args.device)

    for dtype in (torch.float32, torch.float64):
        per_step, per_net = step_breakdown(full, device, dtype, args.steps)
        print(f"step breakdown, {str(dtype)[6:]}, batch {full.batch}: whole step {per_step * 1e3:8.1f} ms | "
              f"network jacobian + backward {per_net * 1e3:8.1f} ms | G2 algebra, losses, Adam "
              f"{(per_step - per_net) * 1e3:8.1f} ms | ratio {per_step / per_net:5.2f}")

    cfg = full.scaled(args.epochs / full.total_epochs)
    cfg = replace(cfg, checkpoint_every=max(1, cfg.total_epochs // 2), polish_points=0)   # polish timed apart
    with tempfile.TemporaryDirectory() as tmp:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        result = train_chart(cfg, root=os.path.join(tmp, "runs"), progress=False)
        _sync(device)
        seconds = time.perf_counter() - t0
        rate = cfg.total_epochs / seconds
        print(f"training: {cfg.total_epochs} epochs in {seconds:.1f} s = {rate:.2f} epochs/s; projected full "
              f"profile ({full.total_epochs} epochs): {full.total_epochs / rate / 60:.1f} min")
        if device.type == "cuda":
            print(f"peak GPU memory, training: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

        t0 = time.perf_counter()
        info = polish(result.model, replace(cfg, polish_points=args.polish_points or full.polish_points))
        _sync(device)
        print(f"polish on {info.n_points} Sobol points: {time.perf_counter() - t0:.1f} s, {info.iters} step(s), "
              f"residuals {info.before[0]:+.1e}, {info.before[1]:+.1e} -> {info.after[0]:+.1e}, "
              f"{info.after[1]:+.1e} (far from the targets after few epochs; accepted: {info.accepted})")
        model = result.model.double().eval()
        t0 = time.perf_counter()
        ev = evaluate(model, cfg.chart, n_points=10_000, seed=cfg.seed)
        print(f"evaluation on 10^4 float64 points: {time.perf_counter() - t0:.1f} s; <T>/kappa_T = "
              f"{ev.T_over_kappa:.4f}, <det g> rel. err {ev.det_rel_err:+.2e}, min eig g {ev.eig_min:.3f}")

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        H = harmonic.extract(model, args.harmonic_points, cfg.chart, seed=cfg.seed)
        _sync(device)
        print(f"harmonic extraction at {args.harmonic_points} points: {time.perf_counter() - t0:.1f} s; "
              f"b_eff = ({H.b2_eff}, {H.b3_eff}), b_harm = ({H.b2_harm}, {H.b3_harm})"
              + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""))

        t0 = time.perf_counter()
        _, _, table, notes = pipeline.coupling_study(model, H, cfg.chart, args.coupling_points, cfg.seed, device)
        print(*notes, sep="\n")
        _sync(device)
        print(f"couplings on {args.coupling_points} points: {time.perf_counter() - t0:.1f} s "
              f"(Hitchin cubic on 256 points)")

        t0 = time.perf_counter()
        res = pipeline.results_from_run(result, ev, H, table, topology=topology.chart_support())
        export.write_outputs(os.path.join(tmp, "outputs"), res)
        print(f"export: {time.perf_counter() - t0:.1f} s")
    if not math.isfinite(rate):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

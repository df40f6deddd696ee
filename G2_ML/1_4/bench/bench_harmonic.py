"""Benchmark: the harmonic extraction and Hitchin's cubic, new defaults against the code before them.

The code before the accuracy work is taken from git (the parent of the commit that added
k7lib/geometry/galerkin.py, or --old REV) into a temporary folder; every measurement runs in its own
subprocess with one thread, old and new alternating, and the faster of --repeats runs is kept, so the
load of a shared machine enters both sides alike. Printed, each as a table with ratios:
  (1) extraction time (harmonic.extract, 21 + 77 candidates, 2048 points as in the quick notebook) on
      phi_bg and on a quick-profile network phi (a saved state dict with --model, else the untrained
      quick model with a small random correction), new / old;
  (2) accuracy against time on the three exact fixtures (phi_bg, conformal, shear): the true relative
      Frobenius error of harmonic_gram, the estimate harmonic_gram_error where there is one, seconds;
  (3) Hitchin's cubic: seconds per point, old (nested jvps on the notebook's 4 directions, 20 triplets)
      against new (the packed cubic form on all 20 harmonic 3-forms, 1540 triplets).

    python bench/bench_harmonic.py                          # a few minutes on one core
    python bench/bench_harmonic.py --model run/model.pt     # the quick run's trained phi
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
L = 2.0


# ---------------------------------------------------------------- inside a child process
def _field(name: str, model_path: str | None):
    import torch

    from k7lib.chart import Chart
    from k7lib.fixtures import conformal_fibre_field, pullback_packed
    from k7lib.learn.config import Config
    from k7lib.learn.model import K7PhiModel

    if name == "phi_bg":
        return Chart(L).phi_background
    if name == "conformal":
        return conformal_fibre_field(0.2)
    if name == "shear":                      # fixtures.shear_fibre_field, written out: the old code lacks it
        def shear(x, eps=0.05):
            t, a, b = torch.tanh(x[:, 0]), 2 * torch.pi * x[:, 2], 2 * torch.pi * x[:, 3]
            A = torch.eye(7, dtype=x.dtype).repeat(x.shape[0], 1, 1)
            A[:, 1, 0] = eps * (1 - t * t) * torch.sin(a) * torch.cos(b)
            A[:, 1, 2] = eps * 2 * torch.pi * t * torch.cos(a) * torch.cos(b)
            A[:, 1, 3] = -eps * 2 * torch.pi * t * torch.sin(a) * torch.sin(b)
            return pullback_packed(A)
        return shear
    model = K7PhiModel(Config.from_profile("quick")).double().eval()
    if model_path:
        state = torch.load(model_path, weights_only=True)
        model.load_state_dict(state.get("state", state.get("model", state)))
    else:
        torch.manual_seed(0)
        with torch.no_grad():
            for q in model.parameters():
                q.add_(0.05 * torch.randn_like(q))
    return model


def child(task: str, field: str, model_path: str | None, out_path: str) -> None:
    import warnings

    import torch

    from k7lib.geometry import couplings
    from k7lib.geometry import harmonic as H
    from k7lib.sampling import points

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    phi = _field(field, model_path)
    t0 = time.perf_counter()
    r = H.extract(phi, 2048, L, seed=0)
    out = {"extract_s": time.perf_counter() - t0,
           "error": [getattr(s, "harmonic_gram_error", float("nan")) for s in (r.two, r.three)]}
    torch.save({"H2": r.two.harmonic_gram, "H3": r.three.harmonic_gram}, out_path + ".pt")
    if task == "couplings":
        x = points.chart_points(64, L, seed=1, method="uniform")
        old = not hasattr(couplings, "density_cubic_form")
        reps = r.three.representatives(4) if old else r.three.representatives()
        t0 = time.perf_counter()
        h = couplings.hitchin_cubic(phi, reps, x, volume=2 * L)
        out.update(cubic_s_per_point=(time.perf_counter() - t0) / x.shape[0], triplets=len(h.triplets),
                   directions=4 if old else r.three.b_harm)
    with open(out_path, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------- the parent
def old_tree(rev: str | None) -> str:
    """A temporary folder holding G2_ML/1_4 at `rev` (default: before the accuracy work)."""
    top = subprocess.run(["git", "-C", ROOT, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if rev is None:
        added = subprocess.run(["git", "-C", ROOT, "log", "--diff-filter=A", "--format=%H", "--",
                                "k7lib/geometry/galerkin.py"], capture_output=True, text=True, check=True).stdout.split()
        rev = added[-1] + "^"
    dest = tempfile.mkdtemp(prefix="k7lib_old_")
    archive = subprocess.run(["git", "-C", top, "archive", rev, "G2_ML/1_4/k7lib"], capture_output=True, check=True)
    path = os.path.join(dest, "a.tar")
    with open(path, "wb") as f:
        f.write(archive.stdout)
    with tarfile.open(path) as t:
        t.extractall(dest, filter="data")
    return os.path.join(dest, "G2_ML", "1_4")


def run(tree: str, task: str, field: str, model: str | None) -> dict:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, field, out] + (["--model", model] if model else [])
    subprocess.run(cmd, env=env, check=True, cwd=tree)
    with open(out) as f:
        res = json.load(f)
    import torch
    res.update(torch.load(out + ".pt"))
    return res


def best_of(trees: dict, task: str, field: str, model, repeats: int) -> dict:
    """{'old': result, 'new': result}, alternating old and new, the fastest run of each kept."""
    best = {}
    key = "cubic_s_per_point" if task == "couplings" else "extract_s"
    for _ in range(repeats):
        for side, tree in trees.items():
            r = run(tree, task, field, model)
            if side not in best or r[key] < best[side][key]:
                best[side] = r
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=None, help="git revision of the code before (default: before galerkin.py)")
    ap.add_argument("--model", default=None, help="state dict of a quick-profile K7PhiModel (trained phi)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("TASK", "FIELD", "OUT"))
    args = ap.parse_args(argv)
    if args.child:                 # k7lib comes from PYTHONPATH: the old or the new tree
        child(*args.child[:2], args.model, args.child[2])
        return 0
    sys.path.insert(0, ROOT)
    import torch

    from k7lib.geometry import accuracy, candidates

    trees = {"old": old_tree(args.old), "new": ROOT}
    print(f"old code: {trees['old']}; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("\n(1) harmonic.extract at 2048 points, 21 + 77 candidates (seconds, fastest of the repeats)")
    for field in ("phi_bg", "network"):
        b = best_of(trees, "extract", field, args.model, args.repeats)
        print(f"  {field:8s} old {b['old']['extract_s']:6.1f}  new {b['new']['extract_s']:6.1f}  "
              f"new / old = {b['new']['extract_s'] / b['old']['extract_s']:.2f}  new estimate "
              f"(2-forms, 3-forms) = {b['new']['error'][0]:.1e}, {b['new']['error'][1]:.1e}")
    print("\n(2) accuracy against time on the exact fixtures (relative Frobenius error of harmonic_gram)")
    cands = {2: candidates.candidates_2forms(), 3: candidates.candidates_3forms(L)}
    for fx in accuracy.FIXTURES:
        b = best_of(trees, "extract", fx, None, 1)
        for side in ("old", "new"):
            errs = [accuracy.relative_error(b[side][f"H{k}"], accuracy.exact_gram(fx, L, k, cands[k])[0]) for k in (2, 3)]
            est = b[side]["error"]
            print(f"  {fx:9s} {side}: {b[side]['extract_s']:6.1f} s  true error {errs[0]:.1e} / {errs[1]:.1e}  "
                  f"estimate {est[0]:.1e} / {est[1]:.1e}" + ("  (none before)" if side == "old" else ""))
    print("\n(3) Hitchin's cubic at 64 points (seconds per point, fastest of the repeats)")
    for field in ("phi_bg", "network"):
        b = best_of(trees, "couplings", field, args.model, args.repeats)
        o, n = b["old"], b["new"]
        print(f"  {field:8s} old {1e3 * o['cubic_s_per_point']:.1f} ms ({o['directions']} directions, {o['triplets']} "
              f"triplets)  new {1e3 * n['cubic_s_per_point']:.1f} ms ({n['directions']} directions, {n['triplets']} "
              f"triplets)  new / old = {n['cubic_s_per_point'] / o['cubic_s_per_point']:.2f}")
    torch.set_num_threads(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

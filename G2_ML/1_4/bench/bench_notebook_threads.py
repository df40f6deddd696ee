"""Benchmark: the quick notebook end to end with CPU_THREADS = 1 (the default) against torch's own default
(CPU_THREADS = None: one intra-op thread per core), on a quiet machine and beside one other CPU-bound process.

Every run executes the notebook headless (`build_notebook.inject_parameters`, nbclient) in a child process
with its own checkpoint and output folders (so each trains from scratch), cell by cell, and records the
seconds of each code cell as it finishes; a run that passes --budget seconds is stopped and reported as far
as it reached. The busy process is `python -c "while True: pass"`, not pinned, started before the run and
stopped after it. Printed: one row per notebook section, the four runs side by side, and the totals with
their ratios. Needs the whole machine: run it alone (`/work/cpu-all` on a shared one).

    python bench/bench_notebook_threads.py                   # about 25 minutes on 2 cores
    python bench/bench_notebook_threads.py --budget 300 --runs quiet:1 busy:1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNS = ("quiet:1", "quiet:default", "busy:1", "busy:default")


# ---------------------------------------------------------------- inside a child process
def child(threads: str, budget: float, log: str) -> None:
    """Execute the notebook with CPU_THREADS = threads, appending {"cell", "seconds", "status"} per code cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    sys.path.insert(0, ROOT)
    import build_notebook as B

    work = tempfile.mkdtemp(prefix="k7nb_")
    params = {"PROFILE": "quick", "CPU_THREADS": None if threads == "default" else int(threads),
              "CHECKPOINT_ROOT": os.path.join(work, "checkpoints"), "OUTPUT_DIR": os.path.join(work, "outputs")}
    nb = B.inject_parameters(B.build(), params)
    client = NotebookClient(nb, timeout=int(budget), kernel_name="python3", resources={"metadata": {"path": ROOT}})
    start, section = time.perf_counter(), "start"
    with client.setup_kernel(), open(log, "a") as out:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                head = cell.source.splitlines()[0] if cell.source else ""
                section = head.lstrip("# ").strip() if head.startswith("#") else section
                continue
            left = budget - (time.perf_counter() - start)
            client.timeout = max(1, int(left))
            t0, status = time.perf_counter(), "ok"
            try:
                client.execute_cell(cell, i)
            except CellTimeoutError:
                status = "stopped at the budget"
            except CellExecutionError as err:
                status = f"error: {str(err).splitlines()[-1][:80]}"
            out.write(json.dumps({"cell": i, "section": section, "seconds": time.perf_counter() - t0,
                                  "status": status}) + "\n")
            out.flush()
            if status != "ok":
                return


# ---------------------------------------------------------------- the parent
def one_run(spec: str, budget: float) -> list:
    load, threads = spec.split(":")
    fd, log = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", threads, str(budget), log]
        try:
            subprocess.run(cmd, cwd=ROOT, timeout=budget + 120)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    with open(log) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(results: dict):
    """(per-section seconds DataFrame, totals DataFrame) of the runs."""
    import pandas as pd

    cols = {}
    for spec, cells in results.items():
        s = {}
        for c in cells:
            s[c["section"]] = s.get(c["section"], 0.0) + c["seconds"]
        cols[spec] = pd.Series(s)
    order = list(dict.fromkeys(c["section"] for cells in results.values() for c in cells))
    per = pd.DataFrame(cols).reindex(order)
    n_code = max(len(c) for c in results.values())
    tot = pd.DataFrame({spec: {"seconds": sum(c["seconds"] for c in cells), "code cells run": len(cells),
                               "finished": bool(cells) and cells[-1]["status"] == "ok" and len(cells) == n_code,
                               "last status": cells[-1]["status"] if cells else "none"}
                        for spec, cells in results.items()}).T
    return per, tot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), help="LOAD:THREADS, LOAD quiet | busy, THREADS n | default")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds per run before it is stopped")
    ap.add_argument("--child", nargs=3, metavar=("THREADS", "BUDGET", "LOG"))
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], float(args.child[1]), args.child[2])
        return 0
    for spec in args.runs:
        load, _, threads = spec.partition(":")
        if load not in ("quiet", "busy") or not (threads == "default" or threads.isdigit() and int(threads) > 0):
            raise SystemExit(f"error: --runs: expected quiet|busy:N|default, got {spec!r}")
    import pandas as pd

    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; budget {args.budget:.0f} s per run; "
          f"busy = one unpinned `while True: pass`; CPU_THREADS default = torch's own (one thread per core)")
    results = {}
    for spec in args.runs:
        results[spec] = one_run(spec, args.budget)
        print(f"  {spec}: {sum(c['seconds'] for c in results[spec]):.0f} s, {len(results[spec])} code cells, "
              f"{results[spec][-1]['status'] if results[spec] else 'nothing ran'}", flush=True)
    per, tot = table(results)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.1f}".format):
        print("\nseconds per notebook section (code cells summed; NaN: not reached)")
        print(per)
        print("\ntotals")
        print(tot)
    for load in ("quiet", "busy"):
        a, b = results.get(f"{load}:default"), results.get(f"{load}:1")
        if a and b:
            n = min(len(a), len(b))
            ta, tb = sum(c["seconds"] for c in a[:n]), sum(c["seconds"] for c in b[:n])
            print(f"{load}: torch default / CPU_THREADS = 1 over the first {n} code cells = {ta / tb:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

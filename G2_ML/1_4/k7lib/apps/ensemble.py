"""Seed ensembles: which reported numbers the constraints fix, and which belong to one member of a family.

The loss fixes <T> = kappa_T, <det g> = 65/32, positivity and the anti-flat term; it does not fix a metric.
An ensemble trains the same configuration with several seeds (each member an ordinary numbered run:
resumable, locked, checkpointed; a finished one is reused, an unfinished one resumed), measures every
member the same way (apps.ensemble_measure), and sets each quantity's seed spread (the standard deviation
over the finished seed members) against its typical error (the median of the members' own errors):

    spread <= FIXED_RATIO x error  ->  "fixed by the constraints at this precision", else "seed-dependent".

One optional member at another network width (the architecture member) is measured the same way and
shown apart: it says whether the free quantities move with the architecture as much as with the seed.
Each member's record is written into its run folder (MEMBER_FILE), so members trained elsewhere (other
machines, a cluster's array jobs) are merged from their run folders by `collect` (apps.ensemble_table
checks that they share one configuration). A member whose training diverges is recorded with its recipe
and left out of the statistics.

--jobs J runs members in J processes (spawned) with torch threads per process such that J x threads fits
the cores this process may use (os.sched_getaffinity); anything more is refused before any training.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch

from ..inputs import positive_int
from ..learn import runs
from ..learn.chart_training import train_chart
from ..learn.checkpoint import list_checkpoints, load_quietly, load_trained
from ..learn.config import MAX_SEED, MAX_WIDTH, Config
from ..learn.divergence import TrainingDiverged
from .ensemble_measure import MemberSettings, measure_member
from .ensemble_table import Ensemble, check_same_configuration, read_member

MAX_MEMBERS = 64
MEMBER_FILE = "ensemble_member.json"


def cores() -> int:
    """The CPU cores this process may run on (its affinity; a slot pinned to one core counts one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # platforms without affinity
        return os.cpu_count() or 1


def parse_seeds(text) -> tuple:
    """Seeds from "0-4", "0,2,5", "0-2,7" or a sequence of ints; ValueError (one line naming --seeds) for an
    empty list, a negative or non-integer seed, a duplicate, or more than MAX_MEMBERS members."""
    items = [str(t) for t in text] if isinstance(text, (list, tuple)) else str(text).split(",")
    seeds = []
    for item in (i.strip() for i in items):
        lo, dash, hi = item.partition("-") if not item.startswith("-") else (item, "", "")
        if not item or not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
            raise ValueError(f"--seeds: expected non-negative integers or ranges a-b (e.g. 0-4 or 0,2,5), "
                             f"got {item!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise ValueError(f"--seeds: the range {item!r} is empty (write the smaller seed first)")
        if b - a + 1 > MAX_MEMBERS:
            raise ValueError(f"--seeds: {item!r} gives {b - a + 1} members; at most {MAX_MEMBERS}")
        seeds += range(a, b + 1)
    if not seeds:
        raise ValueError("--seeds: no seed given")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"--seeds: seed {dup[0]} appears twice; each member needs its own seed")
    if len(seeds) > MAX_MEMBERS:
        raise ValueError(f"--seeds: {len(seeds)} members; at most {MAX_MEMBERS}")
    for s in seeds:
        positive_int(s, "--seeds", 0, MAX_SEED)
    return tuple(seeds)


def check_jobs(jobs: int, threads: int | None = None, config: Config | None = None) -> int:
    """Torch threads per process for `jobs` processes on cores(); ValueError (one line) for jobs < 1, more
    jobs than cores, or jobs x threads above the cores. A configuration that fixes its own training threads
    (cpu_threads, the quick profile's 1) counts those when it trains on the CPU."""
    n = cores()
    positive_int(jobs, "--jobs", 1)
    if jobs > n:
        raise ValueError(f"--jobs: {jobs} processes on {n} core(s) would oversubscribe them; at most {n}")
    if threads is None:
        return max(1, n // jobs)
    positive_int(threads, "--threads", 1)
    used = max(threads, config.cpu_threads if config is not None else 0)
    if jobs * used > n:
        raise ValueError(f"--threads: {jobs} processes x {used} threads = {jobs * used} on {n} core(s) would "
                         f"oversubscribe them; use --threads {max(1, n // jobs)} or fewer jobs")
    return threads


@dataclass(frozen=True)
class EnsembleSpec:
    """The members of an ensemble: `base` (a Config; its seed is replaced) at each seed, and optionally one
    architecture member at `width` with the first seed (arch_seed: another seed)."""
    base: Config
    seeds: tuple = (0, 1, 2)
    width: int | None = None
    arch_seed: int | None = None

    def validate(self) -> "EnsembleSpec":
        if not isinstance(self.base, Config):
            raise ValueError(f"base: expected a Config, got {type(self.base).__name__}")
        seeds = parse_seeds(self.seeds)
        if self.width is not None:
            positive_int(self.width, "--width-member", 1, MAX_WIDTH)
            if self.width == self.base.width:
                raise ValueError(f"--width-member: {self.width} is the profile's own width; the architecture "
                                 "member needs another one")
            if len(seeds) + 1 > MAX_MEMBERS:
                raise ValueError(f"--seeds: {len(seeds)} seeds and the architecture member exceed {MAX_MEMBERS}")
        if self.arch_seed is not None:
            positive_int(self.arch_seed, "arch_seed", 0, MAX_SEED)
        return replace(self, seeds=seeds)

    def configs(self) -> list:
        """[("seed" | "architecture", Config)] of every member, seed members first."""
        out = [("seed", replace(self.base, seed=s)) for s in self.seeds]
        if self.width is not None:
            seed = self.seeds[0] if self.arch_seed is None else self.arch_seed
            out.append(("architecture", replace(self.base, seed=seed, width=self.width)))
        return out


def find_run(config: Config, root: Path) -> Path | None:
    """The first numbered run under root whose checkpoints were written with exactly `config`, or None."""
    want = config.to_dict()
    for _, path in runs.list_runs(root):
        record = read_member(path / MEMBER_FILE)
        if record is not None and record["config"] == want:
            return path
        if not list_checkpoints(path):
            continue
        try:
            stored = load_quietly(path)["config"]
        except ValueError:
            continue
        if stored == want:
            return path
    return None


def member_record(run: str, config: Config, status: str, measurement=None, recipe: str | None = None,
                  seconds: dict | None = None, settings: MemberSettings | None = None) -> dict:
    """The member's record (metadata contract: run, seed, width, status, values, errors) with its kind,
    configuration, measurement settings, the seconds spent and, for a divergence, the recipe."""
    m = measurement
    return {"run": run, "seed": config.seed, "width": config.width, "status": status,
            "values": dict(m.values) if m is not None else {}, "errors": dict(m.errors) if m is not None else {},
            "recipe": recipe, "seconds": dict(seconds or {}, **(m.seconds if m is not None else {})),
            "settings": settings.to_dict() if settings is not None else None, "config": config.to_dict()}


def train_member(config: Config, root, settings: MemberSettings, progress: bool = False,
                 step_hook=None) -> dict:
    """One member: reuse its finished record, else train (or resume) its run and measure it; a divergence
    gives a "diverged" record with the recipe. The record is written to the run folder (MEMBER_FILE).
    step_hook: passed to train_chart (tests)."""
    root = Path(root)
    path = find_run(config, root)
    record = read_member(path / MEMBER_FILE) if path is not None else None
    if record is not None and record["status"] == "finished" and record["settings"] == settings.to_dict():
        return record
    t0 = time.perf_counter()
    try:
        result = train_chart(config, run=None if path is None else path.name, root=root,
                             resume=None if path is None else "latest", progress=progress, step_hook=step_hook)
    except TrainingDiverged as err:
        record = member_record(err.run, config, "diverged", recipe=str(err),
                               seconds={"training": time.perf_counter() - t0}, settings=settings)
        runs.write_json(root / err.run / MEMBER_FILE, record)
        return record
    trained = time.perf_counter() - t0
    record = member_record(result.run_dir.name, config, "finished", measure_member(result.model, config, settings),
                           seconds={"training": trained}, settings=settings)
    runs.write_json(result.run_dir / MEMBER_FILE, record)
    return record


def member_job(config_dict: dict, root: str, settings_dict: dict, threads: int) -> dict:
    """train_member in a worker process, with `threads` torch threads (picklable arguments only)."""
    torch.set_num_threads(threads)
    return train_member(Config.from_dict(config_dict), root, MemberSettings(**settings_dict))


def run_ensemble(spec: EnsembleSpec, root=runs.DEFAULT_ROOT, settings: MemberSettings | None = None, jobs: int = 1,
                 threads: int | None = None, progress: bool = False, step_hook=None) -> Ensemble:
    """Train (or reuse) and measure every member of `spec` under root, in `jobs` processes; returns the
    Ensemble (apps.ensemble_table). Every input is checked before the first member starts."""
    spec = spec.validate()
    settings = (settings or MemberSettings()).validate()
    threads = check_jobs(jobs, threads, spec.base)
    root = runs.writable_folder(root, "--root")
    members, t0 = spec.configs(), time.perf_counter()
    if jobs == 1:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            records = [train_member(c, root, settings, progress, step_hook) for _, c in members]
        finally:
            torch.set_num_threads(old)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(member_job, c.to_dict(), str(root), settings.to_dict(), threads)
                       for _, c in members]
            records = [f.result() for f in futures]
    return Ensemble.from_records(records, base_width=spec.base.width, wall_s=time.perf_counter() - t0,
                                 jobs=jobs, threads=threads)


def collect(root=runs.DEFAULT_ROOT, settings: MemberSettings | None = None, progress: bool = False) -> Ensemble:
    """Merge the members found in root's run folders (trained here or copied from other machines): a
    recorded member is taken as it is (re-measured when its settings differ), a finished run without a
    record is measured; a run still training (no polish, no divergence) is left out with a note. Runs of
    different profiles or configurations are refused, naming them (before any measurement)."""
    settings = (settings or MemberSettings()).validate()
    found, notes = [], []
    for _, path in runs.list_runs(root):
        record = read_member(path / MEMBER_FILE)
        if record is None and list_checkpoints(path):
            state = load_quietly(path)
            config = Config.from_dict(state["config"])
            if state["global_epoch"] < config.total_epochs + (1 if config.polish_points else 0):
                notes.append(f"{path.name} is not finished (epoch {state['global_epoch']} of "
                             f"{config.total_epochs}); left out")
                continue
            record = member_record(path.name, config, "unmeasured")
        if record is not None:
            found.append(record)
    if not found:
        raise ValueError(f"--collect: no ensemble member found under {root} (run folders with a finished run "
                         f"or an {MEMBER_FILE})")
    base_width = check_same_configuration(found)
    records = [measure_collected(r, root, settings) for r in found]
    return Ensemble.from_records(records, base_width=base_width, notes=tuple(notes))


def measure_collected(record: dict, root, settings: MemberSettings) -> dict:
    """A collected record as it is, or measured now when it has no measurement with these settings."""
    if record["status"] == "diverged" or (record["status"] == "finished" and record["settings"] == settings.to_dict()):
        return record
    model, config = load_trained(run=record["run"], root=root)
    t0 = time.perf_counter()
    m = measure_member(model, config, settings)
    out = member_record(record["run"], config, "finished", m, settings=settings,
                        seconds={"training": (record.get("seconds") or {}).get("training"),
                                 "measurement_total": time.perf_counter() - t0})
    runs.write_json(Path(root) / record["run"] / MEMBER_FILE, out)
    return out


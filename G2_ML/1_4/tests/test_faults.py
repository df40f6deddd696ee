"""Fault tests kept as regression tests: kills, corrupt checkpoints, escaping run names, write faults,
interrupted exports. Each runs in seconds on a tiny configuration; K7LIB_FAULT_TRIES=N runs N
random kills instead of 3 (the README's "What survives what" table quotes these tests)."""
import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_export import make_results
from test_train import PKG, files_under, tiny

from k7lib.__main__ import main as cli
from k7lib.apps import session
from k7lib.learn import checkpoint as ck
from k7lib.learn import runs
from k7lib.learn.chart_training import train_chart
from k7lib.learn.checkpoint_checks import checkpoint_problem
from k7lib.learn.divergence import TrainingDiverged
from k7lib.report import export

TRIES = int(os.environ.get("K7LIB_FAULT_TRIES", "3"))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------- run names stay inside the root
ESCAPES = ["../escaped", "..", ".", "", "  ", "a/b", "a\\b", "/tmp/k7lib-absolute-run", "sub/../../x"]


@pytest.mark.parametrize("name", ESCAPES)
def test_escaping_run_names_are_refused_by_the_api(tmp_path, name):
    root = tmp_path / "R"
    with pytest.raises(ValueError, match="not a plain folder name"):
        runs.resolve_run(name, root)
    with pytest.raises(ValueError, match="not a plain folder name"):
        train_chart(tiny(epochs=1), run=name, root=root, progress=False)
    with pytest.raises(ValueError, match="not a plain folder name"):
        train_chart(tiny(epochs=1), run=name, root=root, resume="latest", progress=False)
    with pytest.raises(session.InputError, match="not a plain folder name"):
        session.configure("quick", run=name, resume=None, checkpoint_root=root, output_dir=tmp_path / "out")
    assert files_under(tmp_path) in ([], ["R"], ["R", "out"], ["out"])
    assert not Path("/tmp/k7lib-absolute-run").exists()


def test_escaping_run_name_from_the_command_line(tmp_path, capsys):
    root = tmp_path / "R"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-m", "k7lib", "train", "--profile", "quick", "--root", str(root),
                           "--run", "../escaped", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": PKG}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run:"), proc.stderr
    for name in ("/tmp/k7lib-absolute-run-cli", "", "..", "a/b"):
        for extra in ([], ["--resume", "latest"]):
            rc = cli(["train", "--profile", "quick", "--root", str(root), "--run", name, "--no-progress"] + extra)
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1 and err[0].startswith("error: run:"), err
    assert files_under(tmp_path) == ["R"] and not Path("/tmp/k7lib-absolute-run-cli").exists()


def test_a_symbolic_link_in_the_root_cannot_lead_a_run_outside_it(tmp_path, capsys):
    root, outside = tmp_path / "R", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "run_7").symlink_to(outside, target_is_directory=True)       # the "latest" numbered run
    cfg = tiny(epochs=1)
    calls = [lambda: train_chart(cfg, run="escape", root=root, progress=False),
             lambda: train_chart(cfg, run="escape", root=root, resume="latest", progress=False),
             lambda: train_chart(cfg, root=root, resume="latest", progress=False),
             lambda: runs.resolve_run("escape", root), lambda: runs.resolve_run(None, root),
             lambda: ck.load_trained(run="escape", root=root)]
    for call in calls:
        with pytest.raises(ValueError, match="outside the root"):
            call()
    with pytest.raises(session.InputError, match="outside the root"):
        session.configure("quick", run="escape", resume=None, checkpoint_root=root, output_dir=tmp_path / "out")
    for argv in (["train", "--profile", "quick", "--run", "escape"], ["train", "--profile", "quick", "--resume", "0"],
                 ["explore", "--run", "escape"], ["validate"]):
        rc = cli(argv + ["--root", str(root)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "outside the root" in err[0], (argv, err)
    assert list(outside.iterdir()) == []
    (root / "loop").symlink_to(root / "loop")                 # a link to itself: refused, not a traceback
    with pytest.raises(ValueError, match="cannot be resolved"):
        train_chart(cfg, run="loop", root=root, progress=False)
    rc = cli(["train", "--profile", "quick", "--run", "loop", "--root", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot be resolved" in err[0], err
    inside = root / "alias"                      # a link that stays inside the root is a run like any other
    inside.symlink_to(root / "real", target_is_directory=True)
    (root / "real").mkdir()
    assert train_chart(cfg, run="alias", root=root, progress=False).history.shape[0] == cfg.total_epochs
    assert [n for n, _ in ck.list_checkpoints(root / "real")] == [0, 4]


def test_a_lock_file_that_is_a_symbolic_link_is_refused(tmp_path, finished_run):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "straight")
    (run_dir / runs.RUN_LOCK).unlink()                            # the lock file its training left
    (run_dir / runs.RUN_LOCK).symlink_to(tmp_path / "victim")
    with pytest.raises(ValueError, match="symbolic link"):
        train_chart(finished_run.config, run="straight", root=tmp_path, resume="latest", progress=False)
    assert not (tmp_path / "victim").exists()


# Arguments out of their stated bounds (point counts <= 10^8, epochs-scale <= 10^3, lr-scale <= 10, seeds
# < 2^31, threads <= 4096): one line each, before any file.
BOUNDS = [["--eval-points", "1" + "0" * 20], ["--eval-points", str(10**8 + 1)], ["--lr-scale", "1e308"],
          ["--lr-scale", "11"], ["--epochs-scale", "1e308"], ["--epochs-scale", "1e30"], ["--epochs-scale", "1001"],
          ["--epochs-scale", "inf"], ["--epochs-scale", "nan"], ["--epochs-scale=-1e308"],
          ["--seed", "1" + "0" * 30], ["--seed", str(2**31)], ["--seed", "-1"],
          ["--cpu-threads", "1" + "0" * 30], ["--cpu-threads", "-1"]]


@pytest.mark.parametrize("args", BOUNDS, ids=[" ".join(a) for a in BOUNDS])
def test_numbers_out_of_bounds_are_one_line_before_any_file(tmp_path, capsys, args):
    rc = cli(["train", "--profile", "quick", "--root", str(tmp_path / "runs"), "--no-progress"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    option = args[0].split("=")[0]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and (
        option in err[0] or option.lstrip("-").replace("-", "_") in err[0]), err
    assert files_under(tmp_path) == []


def test_numbers_out_of_bounds_elsewhere(tmp_path, capsys):
    huge, root = "1" + "0" * 20, ["--root", str(tmp_path)]
    for argv in (["validate", "--points", huge] + root, ["explore", "--threads", huge] + root,
                 ["links", "sample", "--n", huge, "--out", str(tmp_path / "o")], ["links", "train", "--epochs", huge] + root,
                 ["links", "train", "--width", huge] + root, ["links", "validate", "--n", huge] + root,
                 ["links", "ricci", "--n-train", huge] + root, ["links", "ricci", "--eval-seeds", "1", huge] + root):
        rc = cli(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
    kw = dict(checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    for bad, field in ((dict(epochs_scale=1e30), "epochs_scale"), (dict(lr_scale=1e308), "lr_scale"),
                       (dict(batch=10**9), "batch"), (dict(seed=2**40), "seed"), (dict(polish_points=10**9), "polish"),
                       (dict(resume=True), "resume")):
        with pytest.raises(session.InputError, match=field):
            session.configure("quick", **bad, **kw)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="lr_scale"):
        train_chart(tiny(), root=tmp_path / "r", lr_scale=1e308, progress=False)
    assert files_under(tmp_path) == []


def test_eval_points_are_checked_before_training(tmp_path, capsys):
    for bad in ("0", "-5"):
        rc = cli(["train", "--profile", "quick", "--root", str(tmp_path), "--eval-points", bad, "--no-progress"])
        assert rc == 2 and "--eval-points" in capsys.readouterr().err
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------- corrupt checkpoints
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A straight 4-epoch run with checkpoints 0, 2, 4 (its files are copied, never changed)."""
    root = tmp_path_factory.mktemp("straight")
    res = train_chart(tiny(epochs=1, every=2), run="straight", root=root, progress=False)
    return res


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _edit(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _set(key, value):
    return lambda s: s.__setitem__(key, value)


def _set_in(outer, key, value):
    return lambda s: s[outer].__setitem__(key, value)


# (label, how the newest checkpoint is damaged, text naming the problem)
CORRUPT = [
    ("wrong tensor shape", _set_in("model", "head.weight", torch.zeros(35, 9)), "head.weight"),
    ("wrong tensor dtype", lambda s: s["model"].__setitem__("head.bias", s["model"]["head.bias"].double()), "float64"),
    ("missing tensor", lambda s: s["model"].pop("head.bias"), "head.bias"),
    ("extra tensor", _set_in("model", "spare", torch.zeros(2)), "spare"),
    ("empty rng dict", _set("rng", {}), "rng lacks"),
    ("rng torch state of floats", _set_in("rng", "torch", torch.zeros(5056)), "ByteTensor"),
    ("rng torch state too short", _set_in("rng", "torch", torch.zeros(7, dtype=torch.uint8)), "rng state does not load"),
    ("rng numpy keys missing", lambda s: s["rng"]["numpy"].pop("keys"), "rng.numpy"),
    ("rng python state too short", lambda s: s["rng"]["python"].__setitem__("internal", [1, 2]), "does not load"),
    ("non-integer global_epoch", _set("global_epoch", 4.5), "global_epoch is 4.5"),
    ("boolean rollbacks", _set("rollbacks", True), "rollbacks"),
    ("negative epoch", _set("epoch", -1), "epoch is -1"),
    ("phase past the config", _set("phase", 9), "phase 9"),
    ("global_epoch differs from the name", _set("global_epoch", 3), "differs from the file's number"),
    ("optimizer moment of the wrong shape", lambda s: s["optimizer"]["state"][0].__setitem__(
        "exp_avg", torch.zeros(3)), "exp_avg"),
    ("optimizer without parameters", _set_in("optimizer", "param_groups", []), "optimizer covers"),
    ("optimizer not a dict", _set("optimizer", [1, 2]), "optimizer"),
    ("scheduler lr_scale NaN", _set("scheduler", {"lr_scale": float("nan")}), "lr_scale"),
    ("history of unequal columns", lambda s: s["history"]["loss"].pop(), "history"),
    ("config not a dict", _set("config", "quick"), "config"),
    ("config with a bad field", lambda s: s["config"].__setitem__("L", -1.0), "config does not build"),
    ("missing key", lambda s: s.pop("events"), "missing"),
    ("other format", _set("format", "something-else"), "not a k7lib"),
    # files that parse and have the right structure but hold values training cannot use
    ("NaN weight", lambda s: s["model"]["net.0.weight"].view(-1).__setitem__(3, float("nan")), "net.0.weight holds 1 NaN"),
    ("Inf bias", lambda s: s["model"]["head.bias"].fill_(float("inf")), "head.bias holds 35 NaN or Inf"),
    ("NaN optimizer moment", lambda s: s["optimizer"]["state"][0]["exp_avg"].fill_(float("nan")), "exp_avg holds NaN"),
    ("negative second moment", lambda s: s["optimizer"]["state"][0]["exp_avg_sq"].fill_(-1.0), "exp_avg_sq holds"),
    ("negative rollback_scale", lambda s: s["scheduler"].__setitem__("rollback_scale", -1.0), "rollback_scale is -1.0"),
    ("string user_scale", lambda s: s["scheduler"].__setitem__("user_scale", "0.5"), "user_scale is '0.5'"),
    ("user_scale 1e308", lambda s: s["scheduler"].__setitem__("user_scale", 1e308), r"user_scale is 1e\+308"),
    ("lr_scale not the product", lambda s: s["scheduler"].__setitem__("lr_scale", 0.5), "not user_scale x rollback_scale"),
    ("string optimizer step", lambda s: s["optimizer"]["state"][0].__setitem__("step", "3"), "step is '3'"),
    ("optimizer step past the epoch", lambda s: s["optimizer"]["state"][0].__setitem__("step", torch.tensor(9.0)),
     r"step is tensor\(9\.\)"),
    ("negative learning rate", lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", -1e-3), "lr is -0.001"),
    ("string betas", lambda s: s["optimizer"]["param_groups"][0].__setitem__("betas", ("0.9", 0.999)), "betas"),
    ("string amsgrad", lambda s: s["optimizer"]["param_groups"][0].__setitem__("amsgrad", "yes"), "amsgrad is 'yes'"),
    ("optimizer state without moments", lambda s: s["optimizer"]["state"][0].pop("exp_avg_sq"), "lacks"),
    ("string history value", lambda s: s["history"]["loss"].__setitem__(0, "1.5"), "history column loss holds '1.5'"),
    ("numeric phase name", lambda s: s["history"]["phase_name"].__setitem__(0, 1), "phase_name holds 1"),
    ("NaN recent loss", lambda s: s["recent_losses"].append(float("nan")), "recent_losses"),
    ("phase not that of global_epoch", _set("phase", 0), "phase 0, epoch 0 is not global epoch 4"),
    ("spike streak past the patience", _set("spike_streak", 99), "spike_streak is 99"),
]
RAW = [
    ("truncated", lambda b: b[: len(b) // 2]),
    ("zero bytes", lambda b: b""),
    ("random bytes", lambda b: random.Random(5).randbytes(len(b))),
]


@pytest.mark.parametrize("label,change,message", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_checkpoint_that_parses_is_named_and_skipped(tmp_path, finished_run, label, change, message):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "run")
    _edit(ck.checkpoint_path(run_dir, 4), change)
    with pytest.warns(RuntimeWarning, match=f"ckpt_0000004.pt is invalid: .*{message}"):
        assert ck.load_checkpoint(run_dir, "latest", expect="resume")["global_epoch"] == 2


@pytest.mark.parametrize("label,damage", RAW, ids=[r[0] for r in RAW])
def test_unreadable_checkpoint_is_named_and_skipped(tmp_path, finished_run, label, damage):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "run")
    path = ck.checkpoint_path(run_dir, 4)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(RuntimeWarning, match="ckpt_0000004.pt is unreadable"):
        assert ck.load_checkpoint(run_dir, "latest", expect="resume")["global_epoch"] == 2


@pytest.mark.parametrize("label", ["wrong tensor shape", "empty rng dict", "non-integer global_epoch", "NaN weight",
                                   "negative rollback_scale", "string optimizer step"])
def test_resume_falls_back_to_the_previous_good_checkpoint_and_replays_exactly(tmp_path, finished_run, label):
    change = {c[0]: c[1] for c in CORRUPT}[label]
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "straight")
    _edit(ck.checkpoint_path(run_dir, 4), change)
    with pytest.warns(RuntimeWarning, match="ckpt_0000004.pt"):
        res = train_chart(finished_run.config, run="straight", root=tmp_path, resume="latest", progress=False)
    for k, v in finished_run.model.state_dict().items():
        assert torch.equal(res.model.state_dict()[k], v), k
    assert ck.read_checkpoint(ck.checkpoint_path(run_dir, 4), expect="resume")["global_epoch"] == 4


def test_no_good_checkpoint_is_one_line(tmp_path, finished_run, capsys):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "straight")
    for n, path in ck.list_checkpoints(run_dir):
        _edit(path, _set("rng", {})) if n else path.write_bytes(b"")
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no readable checkpoint.*3 file"):
        warnings.simplefilter("ignore")
        train_chart(finished_run.config, run="straight", root=tmp_path, resume="latest", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli(["train", "--profile", "quick", "--run", "straight", "--root", str(tmp_path), "--resume", "latest",
                  "--no-progress"])
    assert [str(w.message).split()[1] for w in caught] == ["ckpt_0000004.pt", "ckpt_0000002.pt", "ckpt_0000000.pt"]
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: resume: no readable checkpoint")


def test_stale_temporaries_are_removed_when_a_run_is_opened(tmp_path, finished_run):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "straight")
    stale = run_dir / f".ckpt_0000006.pt.{dead_pid()}.tmp"
    live = run_dir / f".ckpt_0000006.pt.{os.getpid()}.tmp"       # a writer that is still running
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    ck.load_checkpoint(run_dir)
    assert not stale.exists() and live.exists()
    live.unlink()
    fresh = tmp_path / "named"
    fresh.mkdir()
    (fresh / f".ckpt_0000000.pt.{dead_pid()}.tmp").write_bytes(b"x")
    train_chart(finished_run.config, run="named", root=tmp_path, progress=False)
    assert not list(fresh.glob(".*.tmp"))


def test_resuming_with_another_seed_is_said(tmp_path, finished_run):
    run_dir = _copy_run(finished_run.run_dir, tmp_path / "straight")
    cfg = finished_run.config
    longer = replace(cfg, seed=cfg.seed + 1,
                     phases=tuple(replace(p, epochs=2) if i == 3 else p for i, p in enumerate(cfg.phases)))
    with pytest.warns(RuntimeWarning, match=f"seed={cfg.seed} under seed={cfg.seed + 1}"):
        train_chart(longer, run="straight", root=tmp_path, resume="latest", progress=False)
    assert [n for n, _ in ck.list_checkpoints(run_dir)][-1] == 5


def test_counters_outside_their_schedule_are_refused(finished_run):
    state = torch.load(ck.checkpoint_path(finished_run.run_dir, 4), weights_only=True)
    assert checkpoint_problem(state, expect="resume") is None
    state["global_epoch"] = 9                                     # 4 epochs (+ the polish) in its config
    assert "past the 4 epochs" in checkpoint_problem(state)


def test_rollbacks_and_the_recipe_skip_a_checkpoint_holding_nan_weights(tmp_path):
    cfg = tiny(epochs=3, every=2, max_rollbacks=2)               # 12 epochs, checkpoints every 2

    def hook(ge, loss):
        if ge == 7:             # checkpoint 6 on disk now holds NaN weights, and this step's loss is NaN
            _edit(ck.checkpoint_path(tmp_path / "run_1", 6), lambda s: s["model"]["head.weight"].fill_(float("nan")))
            return loss * float("nan")
        return loss
    with warnings.catch_warnings(record=True) as caught, pytest.raises(TrainingDiverged) as info:
        warnings.simplefilter("always")
        train_chart(cfg, root=tmp_path, progress=False, step_hook=hook)
    skipped = [str(w.message) for w in caught if "ckpt_0000006.pt is invalid" in str(w.message)]
    assert len(skipped) == 2 and all("head.weight holds" in m for m in skipped)    # each rollback went to 4
    err = info.value
    assert err.checkpoint == 4 and err.settings["RESUME"] == 4 and "--resume 4 " in err.command
    res = train_chart(cfg, run="run_1", root=tmp_path, resume=4, lr_scale=err.settings["LR_SCALE"], progress=False)
    assert list(res.history.global_epoch) == list(range(12))      # the recipe can be followed


def test_the_polish_checkpoint_resumed_with_a_longer_schedule_trains_every_epoch(tmp_path):
    cfg = tiny(epochs=1, every=2, polish_points=64)               # 4 epochs: checkpoints 0, 2, 4, polish 5
    first = train_chart(cfg, run="r", root=tmp_path, progress=False)
    assert [n for n, _ in ck.list_checkpoints(first.run_dir)] == [0, 2, 4, 5]
    longer = replace(cfg, phases=tuple(replace(p, epochs=2) if i == 3 else p for i, p in enumerate(cfg.phases)))
    with pytest.warns(RuntimeWarning, match="ckpt_0000005.pt holds the polish of a 4-epoch schedule"):
        res = train_chart(longer, run="r", root=tmp_path, resume="latest", progress=False)
    assert list(res.history.global_epoch) == [0, 1, 2, 3, 4, 5] and list(res.history.phase_name)[-2:] == [
        "unflatten", "polish"]
    assert [n for n, _ in ck.list_checkpoints(first.run_dir)] == [0, 2, 4, 5, 6]
    straight = train_chart(longer, run="s", root=tmp_path, progress=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(res.model.state_dict()[k], v), k
    pd.testing.assert_frame_equal(res.history, straight.history, check_exact=True)
    again = train_chart(longer, run="r", root=tmp_path, resume="latest", progress=False)
    assert again.history.equals(res.history)          # its own polish checkpoint: the run is complete


# ---------------------------------------------------------------- one writer per run
WRITER = r"""
import json, pathlib, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {pkg!r})
from k7lib.learn.config import Config
from k7lib.learn.chart_training import train_chart
cfg = Config.from_dict(json.loads({cfg!r}))
root = sys.argv[1]

def hook(ge, loss):
    if ge == 3:                              # checkpoints 0 and 2 are on disk: hold the run
        pathlib.Path(root, "holding").touch()
        time.sleep(600)
    return loss

train_chart(cfg, run="shared", root=root, progress=False, step_hook=hook)
"""


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_a_second_writer_is_one_line_naming_the_holder_and_writes_nothing(tmp_path, capsys):
    cfg = tiny(epochs=2, every=2)                                 # 8 epochs
    child = subprocess.Popen([sys.executable, "-c", WRITER.format(pkg=PKG, cfg=json.dumps(cfg.to_dict())),
                              str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not (tmp_path / "holding").exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.time() < deadline
            time.sleep(0.05)
        before = _files(tmp_path / "shared")
        for kw in (dict(resume=0, lr_scale=0.5), dict(resume="latest")):
            with pytest.raises(runs.RunInUse, match=f"run shared is being trained by process {child.pid}"):
                train_chart(cfg, run="shared", root=tmp_path, progress=False, **kw)
        with pytest.raises(ValueError, match="already holds checkpoints"):
            train_chart(cfg, run="shared", root=tmp_path, progress=False)
        for scale in ("0.5", "0.25"):
            rc = cli(["train", "--profile", "quick", "--run", "shared", "--root", str(tmp_path), "--resume", "0",
                      "--lr-scale", scale, "--no-progress"])
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1 and f"process {child.pid}" in err[0], err
        assert _files(tmp_path / "shared") == before
    finally:
        child.kill()                                  # SIGKILL: the kernel drops its lock
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    res = train_chart(cfg, run="shared", root=tmp_path, resume="latest", progress=False)
    assert list(res.history.global_epoch) == list(range(8))
    assert not (tmp_path / "shared" / runs.RUN_OWNER).exists()


# ---------------------------------------------------------------- disk full, unwritable folders
TORCH_WRITER = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4736 vs 4630")


@pytest.mark.parametrize("fault", ["torch writer", "ENOSPC on fsync", "EACCES on open"])
def test_checkpoint_write_fault_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch, fault):
    cfg = tiny(epochs=1, every=2)
    real_save = torch.save

    def hook(ge, loss):
        if ge == 3:                                  # checkpoints 0 and 2 are written; 4 will fail
            if fault == "torch writer":
                def broken(obj, f, *a, **k):
                    real_save(obj, f, *a, **k)
                    raise TORCH_WRITER
                monkeypatch.setattr(ck.torch, "save", broken)
            elif fault == "ENOSPC on fsync":
                monkeypatch.setattr(ck.os, "fsync", lambda fd: (_ for _ in ()).throw(
                    OSError(errno.ENOSPC, "No space left on device")))
            else:
                real_open = open
                monkeypatch.setattr("builtins.open", lambda p, *a, **k: (_ for _ in ()).throw(
                    PermissionError(errno.EACCES, "Permission denied", str(p))) if str(p).endswith(".tmp")
                    else real_open(p, *a, **k))
        return loss

    with pytest.raises(OSError, match=r"cannot write checkpoint .*ckpt_0000004.pt: .*"
                       + {"torch writer": "no space left", "ENOSPC on fsync": "No space left",
                          "EACCES on open": "Permission denied"}[fault]) as info:
        train_chart(cfg, run="r", root=tmp_path, progress=False, step_hook=hook)
    assert isinstance(info.value, runs.StorageError) and len(str(info.value).splitlines()) == 1
    monkeypatch.undo()
    assert [n for n, _ in ck.list_checkpoints(tmp_path / "r")] == [0, 2]
    assert not list((tmp_path / "r").glob(".*.tmp"))
    assert ck.load_checkpoint(tmp_path / "r", expect="resume")["global_epoch"] == 2


def test_checkpoint_write_fault_from_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ck.torch, "save", lambda *a, **k: (_ for _ in ()).throw(TORCH_WRITER))
    rc = cli(["train", "--profile", "quick", "--run", "full", "--root", str(tmp_path), "--epochs-scale", "0.002",
              "--no-progress", "--eval-points", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot write checkpoint") and "ckpt_0000000.pt" in err[0]


def test_export_write_fault_names_the_file_and_keeps_the_set(tmp_path):
    out = tmp_path / "out"
    export.write_outputs(out, make_results(seed=0))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    class Full:
        def savefig(self, f, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(runs.StorageError, match=r"fig_full.png: No space left on device"):
        export.write_outputs(out, make_results(seed=1, figures={"full": Full()}))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------- exports as a set
def _which_set(out) -> int:
    """The seed of the set read_outputs returns, after checking every file comes from that set."""
    back = export.read_outputs(out)
    seed = back["metadata"]["seed"]
    ref = make_results(seed=seed, loss_scale=seed + 1.0)
    assert (back["coords"] == ref.coords.numpy()).all() and (back["metric"] == ref.metric.numpy()).all()
    assert back["history"]["loss"].tolist() == ref.history["loss"].tolist()
    assert torch.equal(back["model"]["state_dict"]["net.0.weight"], ref.model_state["net.0.weight"])
    return seed


def _hidden(out) -> list:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_export_keeps_the_previous_set_with_the_usual_mode(tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        export.write_outputs(out, make_results(seed=0, loss_scale=1.0))
        (out / "explore").mkdir()
        (out / "explore" / "summary.json").write_text("{}")
        (out / "K7_executed.ipynb").write_text("{}")
        export.write_outputs(out, make_results(seed=1, loss_scale=2.0))
    finally:
        os.umask(old)
    assert _which_set(out) == 1 and _which_set(out / export.PREVIOUS) == 0
    assert (out / "explore" / "summary.json").exists() and (out / "K7_executed.ipynb").exists()
    for p in list(out.iterdir()) + list((out / export.PREVIOUS).iterdir()):
        if p.is_file() and export._is_set_file(p.name):
            assert p.stat().st_mode & 0o777 == 0o644, p
    assert _hidden(out) == []
    export.write_outputs(out, make_results(seed=2, loss_scale=3.0))
    assert _which_set(out) == 2 and _which_set(out / export.PREVIOUS) == 1        # only one previous set


def _moves(out, seed):
    """How many os.replace calls the switch to make_results(seed) makes in `out`."""
    calls = []
    real = os.replace

    def counting(a, b):
        calls.append(1)
        return real(a, b)
    os.replace = counting
    try:
        export.write_outputs(out, make_results(seed=seed, loss_scale=seed + 1.0))
    finally:
        os.replace = real
    return len(calls)


def test_export_interrupted_between_the_renames(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    _moves(probe, 0), _moves(probe, 1)
    n = _moves(probe, 2)                     # moves of a switch with a previous set: 6 out, 6 in, rotations
    assert n >= 12
    print(f"interrupted exports: os.replace fails at each of the {n} moves of a switch")
    for k in range(n):
        out = tmp_path / f"out{k}"
        export.write_outputs(out, make_results(seed=0, loss_scale=1.0))
        export.write_outputs(out, make_results(seed=1, loss_scale=2.0))
        real, count = os.replace, []

        def failing(a, b):
            count.append(1)
            if len(count) > k:
                raise OSError(errno.EIO, "Input/output error")
            return real(a, b)
        monkeypatch.setattr(export.os, "replace", failing)
        try:
            export.write_outputs(out, make_results(seed=2, loss_scale=3.0))
            interrupted = False
        except runs.StorageError as err:
            interrupted = True
            assert "committed" in str(err)
        finally:
            monkeypatch.setattr(export.os, "replace", real)
        assert interrupted
        assert _which_set(out) == 2                           # committed: readers see the new set, whole
        export.write_outputs(out, make_results(seed=3, loss_scale=4.0))
        assert _which_set(out) == 3 and _which_set(out / export.PREVIOUS) == 2
        assert _hidden(out) == [] and _hidden(out / export.PREVIOUS) == []


KILLED_EXPORT = r"""
import os, signal, sys, time
sys.path.insert(0, {pkg!r}); sys.path.insert(0, {tests!r})
from k7lib.report import export
from test_export import make_results
out, mode, k = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Slow:
    def savefig(self, f, **kw):
        f.write(b"partial png")
        open(os.path.join(out, "..", "staging-started"), "w").close()
        time.sleep(600)

if mode == "staging":
    export.write_outputs(out, make_results(seed=2, loss_scale=3.0, figures={{"slow": Slow()}}))
else:
    real, n = os.replace, []
    def dying(a, b):
        n.append(1)
        if len(n) > k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(a, b)
    export.os.replace = dying
    export.write_outputs(out, make_results(seed=2, loss_scale=3.0))
"""


@pytest.mark.parametrize("mode,k", [("staging", 0), ("switch", 0), ("switch", 3), ("switch", 7), ("switch", 12)])
def test_killed_export_leaves_old_or_new_and_no_litter(tmp_path, mode, k):
    out = tmp_path / "out"
    export.write_outputs(out, make_results(seed=0, loss_scale=1.0))
    export.write_outputs(out, make_results(seed=1, loss_scale=2.0))
    code = KILLED_EXPORT.format(pkg=PKG, tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", code, str(out), mode, str(k)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if mode == "staging":
        deadline = time.time() + 120
        while not (tmp_path / "staging-started").exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.time() < deadline
            time.sleep(0.05)
        child.kill()
    child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL, child.communicate()[1].decode()
    seen = _which_set(out)
    assert seen == (1 if mode == "staging" else 2)            # before the commit: old; after: new
    assert _hidden(out)                                       # what the kill left ...
    export.write_outputs(out, make_results(seed=3, loss_scale=4.0))
    assert _hidden(out) == [] and _which_set(out) == 3        # ... the next export removes
    assert _which_set(out / export.PREVIOUS) == seen


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize("at,poison,epochs", [(1, float("nan"), 3), (5, float("inf"), 3), (11, 1e12, 12)])
def test_fault_injected_mid_run_is_rolled_back(tmp_path, at, poison, epochs):
    cfg = tiny(epochs=epochs, every=4)           # a spike needs 10 earlier losses of its phase
    hits = []

    def hook(ge, loss):
        if ge == at and not hits:
            hits.append(ge)
            return loss * poison
        return loss
    res = train_chart(cfg, root=tmp_path, progress=False, step_hook=hook)
    if math.isfinite(poison):        # a lone finite spike is one heavy-tailed batch: its step is skipped
        assert res.events == [] and list(res.history.skipped) == [int(ge == at) for ge in range(cfg.total_epochs)]
    else:
        assert len(res.events) == 1 and res.events[0]["restored_to"] == 4 * (at // 4)
    assert list(res.history.global_epoch) == list(range(cfg.total_epochs))
    assert torch.isfinite(torch.tensor(res.history.loss.values)).all()


# ---------------------------------------------------------------- kill at random moments, resume exactly
KILL_CHILD = r"""
import json, pathlib, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {pkg!r})
from k7lib.learn.config import Config
from k7lib.learn.chart_training import train_chart
cfg = Config.from_dict(json.loads({cfg!r}))
root, mode = sys.argv[1], sys.argv[2]

def hook(ge, loss):
    pathlib.Path(root, "epoch").write_text(str(ge))
    time.sleep(0.02)                    # widen the window; results do not depend on time
    return loss

r = train_chart(cfg, run=mode, root=root, progress=False, step_hook=hook)
torch.save(r.model.state_dict(), pathlib.Path(root, mode + ".pt"))
"""


def test_kill_at_random_moments_then_resume_is_exact(tmp_path):
    cfg = tiny(epochs=2, every=1)                 # 8 epochs, a checkpoint after every epoch
    code = KILL_CHILD.format(pkg=PKG, cfg=json.dumps(cfg.to_dict()))
    want = train_chart(cfg, run="straight", root=tmp_path, progress=False).model.state_dict()
    rng = random.Random(int(os.environ.get("K7LIB_FAULT_SEED", "15")))
    kills = 0
    for t in range(TRIES):
        root = tmp_path / f"try{t}"
        root.mkdir()
        child = subprocess.Popen([sys.executable, "-c", code, str(root), "victim"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while not (root / "epoch").exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))         # anywhere in the ~1.5 s of training, saves included
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        if child.returncode != -signal.SIGKILL:
            continue                              # finished before the signal: nothing to test
        kills += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # a clean kill leaves no invalid checkpoint to skip
            have = ck.list_checkpoints(root / "victim")
            res = train_chart(cfg, run="victim", root=root, progress=False,
                        resume="latest" if have else None)
        for k, v in want.items():
            assert torch.equal(res.model.state_dict()[k], v), (t, k)
        assert not list((root / "victim").glob(".*.tmp"))
    print(f"random kills: {kills} of {TRIES} tries killed mid-run, all resumed bit-identically")
    assert kills >= 1

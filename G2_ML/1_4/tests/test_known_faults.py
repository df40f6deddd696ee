"""Hostile inputs to the known-metric learner (issue 29): checkpoints edited by hand, resume with no
checkpoint, the control folder as a link, bounds, the chunked evaluation of the user's field; and the
chart-side faults of the same round (configuration bounds, notebook settings, warm starts, a shorter
schedule). Tiny sizes."""
import os
import warnings

import pytest
import torch

from k7lib.apps.cli import main
from k7lib.apps.session import configure
from k7lib.exact import FIXTURES
from k7lib.learn import checkpoint as C
from k7lib.learn import checkpoint_checks as CC
from k7lib.learn import torsion_free as TF
from k7lib.learn.config import Config
from k7lib.learn.known import known_problem, known_report, train_known
from k7lib.learn.model import K7PhiModel
from k7lib.geometry.invariants import InvariantSettings

BS = FIXTURES["bryant-salamon"]
TINY = TF.KnownConfig(width=12, n_points=48, epochs=2, iterations=3, checkpoint_every=1, polish=0)
NAN, INF = float("nan"), float("inf")


def _opt(s, **kw):
    return {**s["optimizer"], "param_groups": [{**s["optimizer"]["param_groups"][0], **kw}]}


def _lstate(s, **kw):
    return {**s["optimizer"], "state": {0: {**s["optimizer"]["state"][0], **kw}}}


def _hist(s, **kw):
    return {**s["history"], **kw}


# the 28 hand edits of the issue (and kin): each is named in a warning and skipped for checkpoint 1
EDITS = {
    "tensor shape": lambda s: {**s, "model": {**s["model"], "head.bias": torch.zeros(34, dtype=torch.float64)}},
    "missing tensor": lambda s: {**s, "model": {k: v for k, v in s["model"].items() if k != "head.bias"}},
    "extra tensor": lambda s: {**s, "model": {**s["model"], "extra": torch.zeros(3, dtype=torch.float64)}},
    "int64 weights": lambda s: {**s, "model": {**s["model"], "head.weight": s["model"]["head.weight"].long()}},
    "float32 weights": lambda s: {**s, "model": {**s["model"], "head.weight": s["model"]["head.weight"].float()}},
    "NaN weights": lambda s: {**s, "model": {k: v * NAN for k, v in s["model"].items()}},
    "config width string": lambda s: {**s, "config": {**s["config"], "known": {**s["config"]["known"], "width": "12"}}},
    "config unknown field": lambda s: {**s, "config": {**s["config"], "known": {**s["config"]["known"], "mu": 1}}},
    "config without box": lambda s: {**s, "config": {k: v for k, v in s["config"].items() if k != "box"}},
    "config epochs 1": lambda s: {**s, "config": {**s["config"], "known": {**s["config"]["known"], "epochs": 1}}},
    "history cut to 2": lambda s: {**s, "history": {k: v[:1] for k, v in s["history"].items()}},
    "history cut to 0": lambda s: {**s, "history": {k: [] for k in s["history"]}},
    "bad stage": lambda s: {**s, "history": _hist(s, stage=["lbfgs", "adam"])},
    "stage a number": lambda s: {**s, "history": _hist(s, stage=["lbfgs", 3])},
    "seconds -1e300": lambda s: {**s, "history": _hist(s, seconds=[0.1, -1e300])},
    "seconds inf": lambda s: {**s, "history": _hist(s, seconds=[0.1, INF])},
    "loss nan": lambda s: {**s, "history": _hist(s, loss=[NAN, 0.1])},
    "epoch column": lambda s: {**s, "history": _hist(s, epoch=[0, 5])},
    "string max_eval": lambda s: {**s, "optimizer": _opt(s, max_eval="5")},
    "lr 1e300": lambda s: {**s, "optimizer": _opt(s, lr=1e300)},
    "history_size 0": lambda s: {**s, "optimizer": _opt(s, history_size=0)},
    "bad line_search_fn": lambda s: {**s, "optimizer": _opt(s, line_search_fn="backtracking")},
    "n_iter string": lambda s: {**s, "optimizer": _lstate(s, n_iter="8")},
    "t string": lambda s: {**s, "optimizer": _lstate(s, t="1.0")},
    "t nan": lambda s: {**s, "optimizer": _lstate(s, t=NAN)},
    "old_dirs wrong shape": lambda s: {**s, "optimizer": _lstate(
        s, old_dirs=[v[:-1] for v in s["optimizer"]["state"][0]["old_dirs"]])},
    "d wrong shape": lambda s: {**s, "optimizer": _lstate(s, d=s["optimizer"]["state"][0]["d"][:-1])},
    "H_diag zero": lambda s: {**s, "optimizer": _lstate(s, H_diag=torch.tensor(0.0, dtype=torch.float64))},
    "ro negative": lambda s: {**s, "optimizer": _lstate(s, ro=[-v for v in s["optimizer"]["state"][0]["ro"]])},
    "two param groups": lambda s: {**s, "optimizer": {**s["optimizer"],
                                                      "param_groups": s["optimizer"]["param_groups"] * 2}},
}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A straight 2-epoch run with checkpoints 1 and 2: (folder, its final weights, the good checkpoint 2)."""
    folder = tmp_path_factory.mktemp("known") / "run_1"
    run = train_known(BS.phi, BS.box, TINY, run_dir=folder, label="bs")
    good = torch.load(C.checkpoint_path(folder, 2), weights_only=True)
    return folder, {k: v.clone() for k, v in run.model.state_dict().items()}, good


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_known_checkpoint_edited_by_hand_is_named_and_skipped_for_the_one_before(straight, edit):
    folder, _, good = straight
    bad = EDITS[edit](good)
    model = TF.build(BS.phi, BS.box, TINY)[2]
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=TINY.iterations, history_size=TINY.history,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    expect = CC.expected_of(model, opt, good["config"])
    assert known_problem(good, "ckpt_0000002.pt", expect) is None
    assert known_problem(bad, "ckpt_0000002.pt", expect), edit


def test_the_resume_after_a_skipped_file_equals_the_straight_run(straight, tmp_path):
    """Checkpoint 2 replaced by a bad one: resuming warns, goes back to 1, and ends on the straight run's weights."""
    folder, final, good = straight
    run_dir = tmp_path / "run_1"
    run_dir.mkdir()
    for n in (1, 2):
        (run_dir / f"ckpt_{n:07d}.pt").write_bytes(C.checkpoint_path(folder, n).read_bytes())
    torch.save(EDITS["lr 1e300"](good), C.checkpoint_path(run_dir, 2))
    with pytest.warns(RuntimeWarning, match="ckpt_0000002.pt is invalid: L-BFGS settings"):
        more = train_known(BS.phi, BS.box, TINY, run_dir=run_dir, resume=True, label="bs")
    assert all(torch.equal(v, final[k]) for k, v in more.model.state_dict().items())


def test_a_solver_scalar_state_is_checked_by_kind():
    assert CC.solver_state_problem({"mu": 1e-6, "step": 3}, mu="positive", step="count") is None
    for bad in ({"mu": 0.0, "step": 3}, {"mu": NAN, "step": 3}, {"mu": "1", "step": 3}, {"mu": 1.0, "step": -1},
                {"mu": 1.0, "step": 2.5}, {"mu": 1.0, "step": True}, {"mu": 1.0}):
        assert CC.solver_state_problem(bad, mu="positive", step="count")


def test_resume_on_a_folder_with_no_checkpoint_starts_afresh_with_one_line(tmp_path):
    """A run killed before its first checkpoint (its folder, perhaps a writer's temporary): resume starts it
    afresh, and ends on the weights of a straight run."""
    straight_run = train_known(BS.phi, BS.box, TINY, label="bs")
    run_dir = tmp_path / "run_1"
    run_dir.mkdir()
    (run_dir / ".ckpt_0000001.pt.999999999.tmp").write_bytes(b"torn")
    with pytest.warns(RuntimeWarning, match="holds no checkpoint yet .* starting it afresh"):
        run = train_known(BS.phi, BS.box, TINY, run_dir=run_dir, resume=True, label="bs")
    assert not list(run_dir.glob(".ckpt_*.tmp"))
    assert all(torch.equal(v, straight_run.model.state_dict()[k]) for k, v in run.model.state_dict().items())


def test_a_control_folder_that_links_outside_the_run_is_refused_before_training(tmp_path):
    run_dir, outside = tmp_path / "root" / "run_1", tmp_path / "elsewhere"
    run_dir.mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, run_dir / "control")
    with pytest.raises(ValueError, match="outside the root"):
        known_report(BS.phi, BS.box, TINY, InvariantSettings(n_points=8, scrambles=2), control=True, run_dir=run_dir,
                     label="bs", resume=True)
    assert not list(outside.iterdir()) and not C.list_checkpoints(run_dir)


@pytest.mark.parametrize("args, name", [
    (["--points", str(10**20)], "n_points"), (["--width", "100000"], "width"), (["--depth", "1000"], "depth"),
    (["--epochs", str(10**20)], "epochs"), (["--iterations", str(10**20)], "iterations"),
    (["--polish", str(10**9)], "polish"), (["--seed", str(2**31)], "seed"), (["--seed", "-1"], "seed"),
    (["--invariant-points", str(10**20)], "n_points"), (["--degree", "40"], "degree"), (["--nodes", "50"], "n_nodes"),
])
def test_known_numbers_out_of_bounds_are_one_line_before_any_folder(tmp_path, capsys, args, name):
    root = tmp_path / "root"
    assert main(["known", "--fixture", "flat", "--root", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {name}") and "\n" not in err and not root.exists()


def test_user_fields_are_never_called_on_more_than_the_chunk(tmp_path):
    """The exact field and every field built on it: at most FIELD_CHUNK (training, checks) or the invariants'
    chunk points per call, with their derivatives."""
    sizes = []

    def field(x):
        sizes.append(x.shape[0])
        return BS.phi(x)
    config = TF.KnownConfig(**{**TINY.to_dict(), "n_points": TF.FIELD_CHUNK + 40, "epochs": 1})
    settings = InvariantSettings(n_points=40, scrambles=2, holonomy_points=4, holonomy_steps=2, chunk=16)
    known_report(field, BS.box, config, settings, control=False, label="bs")
    assert sizes and max(sizes) <= TF.FIELD_CHUNK and TF.FIELD_CHUNK in sizes


def test_a_full_disk_while_writing_a_known_checkpoint_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(state, fh):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left on device"):
        train_known(BS.phi, BS.box, TINY, run_dir=tmp_path / "run_1", label="bs")
    assert not list((tmp_path / "run_1").iterdir()) or not any(
        p.name.startswith(("ckpt_", ".ckpt_")) for p in (tmp_path / "run_1").iterdir())


# ---------------------------------------------------------------- chart runs and notebook settings
@pytest.mark.parametrize("field, value", [
    ("max_rollbacks", 10**30), ("checkpoint_every", 10**20), ("spike_window", 10**20), ("spike_patience", 10**20),
    ("polish_iters", 10**9), ("early_stop_window", 10**20), ("spike_factor", 1e300), ("cond_cap", 1e300),
    ("grad_clip", 1e300), ("L", 1e300), ("L", 1e-300),
])
def test_configuration_bounds(field, value):
    with pytest.raises(ValueError, match=f"^{field}: must be"):
        Config.from_profile("quick", **{field: value})


@pytest.mark.parametrize("kw, key", [
    ({"run": "x" * 201}, "run"), ({"run": "a\nb"}, "run"), ({"run": "a\x7fb"}, "run"), ({"run": 1.5}, "run"),
    ({"run": ("a",)}, "run"), ({"checkpoint_root": ""}, "checkpoint_root"), ({"output_dir": 5}, "output_dir"),
    ({"output_dir": "FILE"}, "output_dir"), ({"output_dir": "/dev/null"}, "output_dir"),
])
def test_notebook_folders_and_run_names_are_one_value_error_line(tmp_path, kw, key):
    (tmp_path / "FILE").write_text("x")
    kw = {k: str(tmp_path / v) if v == "FILE" else v for k, v in kw.items()}
    base = {"checkpoint_root": str(tmp_path / "ck"), "output_dir": str(tmp_path / "out")}
    with pytest.raises(ValueError, match=f"^{key}: ") as err:
        configure("quick", resume=None, **{**base, **kw})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make, message", [
    (lambda sd: {k: v * NAN for k, v in sd.items()}, "NaN or Inf"),
    (lambda sd: {k: v * INF for k, v in sd.items()}, "NaN or Inf"),
    (lambda sd: {k: v.long() for k, v in sd.items()}, "not a floating dtype"),
    (lambda sd: {k: v.to(torch.complex64) for k, v in sd.items()}, "not a floating dtype"),
    (lambda sd: {k: v > 0 for k, v in sd.items()}, "not a floating dtype"),
])
def test_a_warm_start_with_bad_values_is_refused_before_any_file(tmp_path, make, message):
    torch.manual_seed(0)
    sd = K7PhiModel(Config.from_profile("quick")).state_dict()
    path = tmp_path / "w.pt"
    torch.save(make(sd), path)
    root = tmp_path / "root"
    with pytest.raises(ValueError, match=message):
        from k7lib.learn.chart_training import train_chart
        train_chart(Config.from_profile("quick", warm_start=str(path)), root=root, progress=False)
    assert not root.exists() or not any(root.rglob("ckpt_*"))


def test_a_pickled_warm_start_is_one_line(tmp_path, capsys):
    class Code:
        def __reduce__(self):
            return (print, ("ran",))
    path = tmp_path / "w.pt"
    torch.save({"a": Code()}, path)
    assert main(["train", "--profile", "quick", "--root", str(tmp_path / "r"), "--warm-start", str(path),
                 "--no-progress"]) == 2
    out = capsys.readouterr()
    assert "ran" not in out.out and out.err.startswith("error: warm_start") and out.err.count("\n") == 1


def test_a_chart_run_resumed_with_a_shorter_schedule_warns_and_says_what_happens(tmp_path):
    from k7lib.learn.chart_training import train_chart
    from k7lib.learn.config import default_phases
    config = Config.from_profile("quick", phases=default_phases(2, 5e-3), width=8, depth=1, batch=8, n_fourier=1,
                                 n_chebyshev=2, polish_points=0, checkpoint_every=4)
    train_chart(config, run="r", root=tmp_path, progress=False)
    with pytest.warns(RuntimeWarning, match="has seen 8 epochs, more than the 4 of this schedule; it is taken as it is"):
        short = train_chart(config.scaled(0.5), run="r", root=tmp_path, resume="latest", progress=False)
    assert len(short.history["loss"]) == 8                   # nothing trained past the checkpoint

"""What a checkpoint must hold, checked by value: a file that parses is never trusted as it is.

`checkpoint_problem(state, name, expect)` returns why a loaded checkpoint dict cannot be used, or None.
The checks, in order:
  - the counters are integers in range of the checkpoint's own config (global_epoch equal to the
    file's number and at most total + 1, phase and epoch those of global_epoch, the spike streak
    within the patience), and that config builds;
  - every model tensor and every optimizer moment is finite;
  - every scale and rate is a positive finite number (lr_scale, user_scale and rollback_scale in
    range; Adam's lr, eps and betas), the optimizer's flags are booleans and each step an integer
    in [1, global_epoch];
  - the history's columns are equally long, phase_name strings and every other column numbers;
    recent_losses are finite numbers; every rng state loads into a scratch generator;
  - with expect="model" every model tensor has the shape and dtype of the model its own config
    builds, and with expect="resume" the optimizer also covers exactly that model's parameters
    with moments of their shapes.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..exact.box import Box
from .config import Config
from .model import K7PhiModel
from .schedule import LR_SCALE_MAX
from .torsion_free import KnownConfig

FORMAT = "k7lib-checkpoint-1"
CHECKPOINT_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "global_epoch", "phase", "epoch", "model", "optimizer", "scheduler", "history",
            "events", "rollbacks", "recent_losses", "rng", "config")
COUNTERS = ("global_epoch", "phase", "epoch", "rollbacks")
ADAM_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
ADAM_OPTIONAL_FLAGS = ("foreach", "fused")            # None: torch chooses


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_finite(v) -> bool:
    return _is_number(v) and math.isfinite(v) and v > 0


def _expected_model(cfg: Config) -> tuple[dict, list]:
    """({name: (shape, dtype)} of the state dict, [parameter shapes in order]) of the model `cfg` builds."""
    with torch.device("meta"):                   # shapes only: no memory, no random numbers drawn
        model = K7PhiModel(cfg)
    dtype = getattr(torch, cfg.train_dtype)
    spec = {k: (tuple(v.shape), dtype if v.is_floating_point() else v.dtype) for k, v in model.state_dict().items()}
    return spec, [tuple(p.shape) for p in model.parameters()]


def rng_problem(rng) -> str | None:
    """Why the rng states would not load, found by loading them into scratch generators."""
    if not isinstance(rng, dict):
        return f"rng is a {type(rng).__name__}, not a dict"
    missing = [k for k in ("torch", "numpy", "python", "sampler") if k not in rng]
    if missing:
        return f"rng lacks {missing}"
    try:
        for key in ("torch", "sampler"):
            t = rng[key]
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
                return f"rng.{key} is not a torch ByteTensor"
            torch.Generator().set_state(t)
        npst = rng["numpy"]
        if not isinstance(npst, dict) or not isinstance(npst.get("keys"), torch.Tensor):
            return "rng.numpy is not a dict with a 'keys' tensor"
        np.random.RandomState().set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                                           npst["has_gauss"], npst["cached"]))
        py = rng["python"]
        if not isinstance(py, dict) or not isinstance(py.get("internal"), (list, tuple)):
            return "rng.python is not a dict with an 'internal' list"
        random.Random().setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        if "cuda" in rng and not (isinstance(rng["cuda"], (list, tuple)) and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])):
            return "rng.cuda is not a list of torch ByteTensors"
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, IndexError) as err:
        return f"rng state does not load ({type(err).__name__}: {err})"
    return None


def head_problem(state, name: str | None, fmt: str = FORMAT, required=REQUIRED, counters=COUNTERS) -> str | None:
    """Format, keys, the counters' types, the file's number and the config's type: the part every
    checkpoint format shares (fmt, required keys and counters are the chart run's by default)."""
    if not isinstance(state, dict) or state.get("format") != fmt:
        return f"not a {fmt} file"
    missing = [k for k in required if k not in state]
    if missing:
        return f"incomplete (missing {missing})"
    for key in counters:
        if not _is_int(state[key]) or state[key] < 0:
            return f"{key} is {state[key]!r}, not a non-negative integer"
    m = CHECKPOINT_NAME.match(name or "")
    if m and int(m.group(1)) != state["global_epoch"]:
        return f"global_epoch {state['global_epoch']} differs from the file's number {int(m.group(1))}"
    if not isinstance(state["config"], dict):
        return "config is not a dict"
    return None


def _counters_problem(state: dict, cfg: Config) -> str | None:
    """The counters in range of the checkpoint's own schedule: phase and epoch those of global_epoch
    (the polish checkpoint, numbered total + 1, holds those of the last epoch), the spike streak
    below the patience."""
    total, phase = cfg.total_epochs, state["phase"]
    if phase >= len(cfg.phases):
        return f"phase {phase} is past the {len(cfg.phases)} phases of its config"
    if state["global_epoch"] > total + 1:
        return f"global_epoch {state['global_epoch']} is past the {total} epochs (+ polish) of its config"
    start = cfg.phase_starts()[phase]
    if start + state["epoch"] != min(state["global_epoch"], total - 1):
        return (f"phase {phase}, epoch {state['epoch']} is not global epoch {state['global_epoch']} "
                "of its config's schedule")
    streak = state.get("spike_streak", 0)             # absent in checkpoints written before it existed
    if not (_is_int(streak) and 0 <= streak <= cfg.spike_patience):
        return f"spike_streak is {streak!r}, not an integer in [0, spike_patience = {cfg.spike_patience}]"
    return None


def tensors_problem(model) -> str | None:
    """The model is a state dict of finite tensors."""
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        return "model is not a state dict (name -> tensor)"
    for k, v in model.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return f"model tensor {k} holds {int((~torch.isfinite(v)).sum())} NaN or Inf value(s)"
    return None


def _scheduler_problem(sched) -> str | None:
    """lr_scale, and user_scale and rollback_scale where present, positive finite numbers in range
    (the user's factor at most schedule.LR_SCALE_MAX, the rollbacks' at most 1), lr_scale their product."""
    if not (isinstance(sched, dict) and _positive_finite(sched.get("lr_scale"))):
        return f"scheduler is not a dict with a positive finite lr_scale ({sched!r})"
    for key, top in (("lr_scale", LR_SCALE_MAX), ("user_scale", LR_SCALE_MAX), ("rollback_scale", 1.0)):
        v = sched.get(key, 1.0)                       # checkpoints before the split hold lr_scale only
        if not (_positive_finite(v) and v <= top):
            return f"scheduler {key} is {v!r}, not a finite number in (0, {top:g}]"
    product = sched.get("user_scale", 1.0) * sched.get("rollback_scale", sched["lr_scale"])
    if not math.isclose(sched["lr_scale"], product, rel_tol=1e-12):
        return f"scheduler lr_scale {sched['lr_scale']!r} is not user_scale x rollback_scale ({product!r})"
    return None


def history_problem(hist, text_columns=("phase_name",)) -> str | None:
    """Columns of equal length: the text columns strings, every other column numbers."""
    if not (isinstance(hist, dict) and all(isinstance(k, str) and isinstance(v, list) for k, v in hist.items())
            and len({len(v) for v in hist.values()}) <= 1):
        return "history is not a dict of equally long lists"
    for k, col in hist.items():
        text = k in text_columns
        ok = (lambda v: isinstance(v, str)) if text else _is_number
        bad = [v for v in col if not ok(v)][:1]
        if bad:
            return f"history column {k} holds {bad[0]!r}, not {'a string' if text else 'a number'}"
    return None


def optimizer_problem(opt, global_epoch: int) -> str | None:
    """What is wrong with an Adam state dict by structure and value, or None: every group's rates and
    flags of their types and ranges, every parameter's step an integer in [1, global_epoch] (a step is
    one applied update) and its moments finite tensors (the second ones >= 0)."""
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(map(_is_int, g["params"]))
                    for g in opt["param_groups"])
            and all(isinstance(v, dict) for v in opt["state"].values())):
        return "optimizer is not an optimizer state dict (state, param_groups with integer params)"
    for n, group in enumerate(opt["param_groups"]):
        problem = _group_problem(group)
        if problem:
            return f"optimizer param_groups[{n}] {problem}"
    for i, entry in opt["state"].items():
        problem = _moments_problem(entry, global_epoch)
        if problem:
            return f"optimizer state of parameter {i!r}: {problem}"
    return None


def _group_problem(group: dict) -> str | None:
    for key in ("lr", "eps"):
        if not _positive_finite(group.get(key)):
            return f"{key} is {group.get(key)!r}, not a positive finite number"
    decay = group.get("weight_decay", 0)
    if not (_is_number(decay) and math.isfinite(decay) and decay >= 0):
        return f"weight_decay is {decay!r}, not a finite number >= 0"
    betas = group.get("betas")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        return f"betas is {betas!r}, not two numbers in [0, 1)"
    for key, v in group.items():
        if (key in ADAM_FLAGS and not isinstance(v, bool)) or (
                key in ADAM_OPTIONAL_FLAGS and not (v is None or isinstance(v, bool))):
            return f"{key} is {v!r}, not True or False"
    return None


def _moments_problem(entry: dict, global_epoch: int) -> str | None:
    missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in entry]
    if missing:
        return f"lacks {missing}"
    step = entry["step"]
    if isinstance(step, torch.Tensor) and step.ndim == 0 and step.dtype != torch.bool:
        step = step.item()
    if not (_is_number(step) and math.isfinite(step) and step == int(step) and 1 <= step <= global_epoch):
        return f"step is {entry['step']!r}, not an integer in [1, {global_epoch}]"
    for key, v in entry.items():
        if key == "step":
            continue
        if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            return f"{key} is a {type(v).__name__}, not a floating tensor"
        if not bool(torch.isfinite(v).all()) or (key != "exp_avg" and bool((v < 0).any())):
            return f"{key} holds NaN, Inf{'' if key == 'exp_avg' else ' or negative'} values"
    return None


def _lists_problem(state: dict) -> str | None:
    if not (isinstance(state["events"], list) and all(isinstance(e, dict) for e in state["events"])):
        return "events is not a list of dicts"
    recent = state["recent_losses"]
    if not (isinstance(recent, list) and all(_is_number(v) and math.isfinite(v) for v in recent)):
        return "recent_losses is not a list of finite numbers"
    return None


def checkpoint_problem(state: dict, name: str | None = None, expect: str | None = None) -> str | None:
    """What is wrong with a loaded checkpoint dict, or None (module doc lists the checks).

    name: the file name (its number must equal global_epoch); expect="model": also compare the
    model tensors with the model that the checkpoint's own config builds (what analyses load);
    expect="resume": the optimizer state too (what training continues from).
    """
    if expect not in (None, "model", "resume"):
        raise ValueError(f"expect: None, 'model' or 'resume', got {expect!r}")
    problem = head_problem(state, name)
    if problem:
        return problem
    try:
        cfg = Config.from_dict(state["config"])
    except (ValueError, TypeError, KeyError) as err:
        return f"its config does not build a model ({err})"
    problem = (_counters_problem(state, cfg) or tensors_problem(state["model"])
               or optimizer_problem(state["optimizer"], state["global_epoch"])
               or _scheduler_problem(state["scheduler"]) or history_problem(state["history"])
               or _lists_problem(state) or rng_problem(state["rng"]))
    if problem or expect is None:
        return problem
    spec, params = _expected_model(cfg)
    return _model_problem(state["model"], spec) or (
        _coverage_problem(state["optimizer"], params) if expect == "resume" else None)


def _model_problem(model: dict, spec: dict) -> str | None:
    if set(model) != set(spec):
        return f"model tensors {sorted(set(model) ^ set(spec))[:4]} differ from those of the model its config builds"
    for k, (shape, dtype) in spec.items():
        if tuple(model[k].shape) != shape or model[k].dtype != dtype:
            return (f"model tensor {k} is {str(model[k].dtype).replace('torch.', '')} {tuple(model[k].shape)}, "
                    f"the model needs {str(dtype).replace('torch.', '')} {shape}")
    return None


def _coverage_problem(opt: dict, params: list) -> str | None:
    """The optimizer covers exactly the model's parameters, with moments of their shapes."""
    ids = [i for g in opt["param_groups"] for i in g["params"]]
    if sorted(ids) != list(range(len(params))):
        return f"optimizer covers parameters {ids[:8]}, the model has {len(params)}"
    for i, entry in opt["state"].items():
        if not (_is_int(i) and 0 <= i < len(params)):
            return f"optimizer state for an unknown parameter {i!r}"
        for key, v in entry.items():
            if isinstance(v, torch.Tensor) and v.ndim > 0 and tuple(v.shape) != params[i]:
                return f"optimizer {key} of parameter {i} has shape {tuple(v.shape)}, the parameter {params[i]}"
    return None


# ---------------------------------------------------------------- the known-metric learner's checkpoints
KNOWN_STAGES = ("lbfgs", "lm", "gauss-newton")        # the history's stages of learn.known
KNOWN_COLUMNS = ("epoch", "loss", "fresh_loss", "loss_ratio", "fresh_ratio", "seconds", "stage")
LINE_SEARCHES = (None, "strong_wolfe")          # torch.optim.LBFGS's line searches
LBFGS_INTS = ("max_iter", "max_eval", "history_size")
LBFGS_TOLERANCES = ("tolerance_grad", "tolerance_change")


@dataclass(frozen=True)
class Expected:
    """What a checkpoint resumed into a given model and optimizer must match: the model's state dict
    ({name: (shape, dtype)}), the number of parameters (the length of L-BFGS's flat vectors), the
    optimizer's settings (param_groups[0] without "params") and the run's settings (`same_run`)."""
    model: dict
    size: int
    settings: dict
    config: dict


def expected_of(model, opt, config: dict) -> Expected:
    """Expected of a freshly built model, its optimizer and the run's settings dict."""
    spec = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    settings = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    return Expected(spec, sum(p.numel() for p in model.parameters()), settings, config)


def same_run(stored: dict, config: dict) -> bool:
    """A resumed run shares all its settings with the stored one but the number of epochs and the
    checkpoint spacing."""
    def fixed(c):
        return {**c, "known": {k: v for k, v in c["known"].items() if k not in ("epochs", "checkpoint_every", "lm_steps")}}
    return fixed(stored) == fixed(config)


def scalar_problem(value, key: str, kind: str) -> str | None:
    """A solver's scalar state: kind "positive" (a finite number > 0, e.g. a damping mu), "count" (an
    integer >= 0, e.g. a step count) or "finite" (a finite number)."""
    if kind == "count":
        return None if _is_int(value) and value >= 0 else f"{key} is {value!r}, not an integer >= 0"
    ok = _is_number(value) and math.isfinite(value) and (kind == "finite" or value > 0)
    return None if ok else f"{key} is {value!r}, not a {'positive ' if kind == 'positive' else ''}finite number"


def solver_state_problem(state: dict, **kinds) -> str | None:
    """The first of scalar_problem(state[key], key, kind) for key=kind given, a missing key included."""
    if not isinstance(state, dict):
        return f"solver state is a {type(state).__name__}, not a dict"
    for key, kind in kinds.items():
        problem = f"lacks {key}" if key not in state else scalar_problem(state[key], key, kind)
        if problem:
            return problem
    return None


def _flat(v, n: int | None, scalar: bool = False) -> bool:
    """v a finite floating tensor of shape () (scalar) or (n,) (n None: any length)."""
    if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
        return False
    shape_ok = v.ndim == 0 if scalar else v.ndim == 1 and (n is None or v.shape[0] == n)
    return shape_ok and bool(torch.isfinite(v).all())


def lbfgs_group_problem(group) -> str | None:
    """torch.optim.LBFGS's settings: lr > 0 finite, integer max_iter, max_eval, history_size >= 1,
    tolerances finite >= 0, a known line search."""
    if not isinstance(group, dict):
        return "is not a dict"
    problem = scalar_problem(group.get("lr"), "lr", "positive")
    for key in LBFGS_INTS:
        v = group.get(key)
        problem = problem or (None if _is_int(v) and v >= 1 else f"{key} is {v!r}, not an integer >= 1")
    for key in LBFGS_TOLERANCES:
        v = group.get(key)
        problem = problem or (None if _is_number(v) and math.isfinite(v) and v >= 0
                              else f"{key} is {v!r}, not a finite number >= 0")
    if not problem and group.get("line_search_fn") not in LINE_SEARCHES:
        problem = f"line_search_fn is {group.get('line_search_fn')!r}, not one of {LINE_SEARCHES}"
    return problem


def lbfgs_state_problem(entry, n: int | None, history: int) -> str | None:
    """L-BFGS's per-run state: counters, step t, direction d and previous gradient (n,), at most
    `history` pairs of curvature vectors (n,) with positive finite rho, H_diag > 0, a finite loss."""
    if not isinstance(entry, dict):
        return "is not a dict"
    problem = solver_state_problem({k: entry.get(k, 0) for k in ("func_evals", "n_iter")},
                                   func_evals="count", n_iter="count")
    if problem or "d" not in entry:
        return problem                              # no step taken yet: nothing else is stored
    missing = [k for k in ("t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss") if k not in entry]
    if missing:
        return f"lacks {missing}"
    problem = scalar_problem(entry["t"], "t", "positive") or scalar_problem(entry["prev_loss"], "prev_loss", "finite")
    for key in ("d", "prev_flat_grad"):
        problem = problem or (None if _flat(entry[key], n) else f"{key} is not a finite floating tensor of shape ({n},)")
    if not problem and not (_flat(entry["H_diag"], None, True) and float(entry["H_diag"]) > 0):
        problem = f"H_diag is {entry['H_diag']!r}, not a positive finite scalar tensor"
    pairs = [entry[k] for k in ("old_dirs", "old_stps", "ro")]
    if not problem and not (all(isinstance(p, list) for p in pairs) and len({len(p) for p in pairs}) == 1
                            and len(pairs[0]) <= history):
        problem = f"old_dirs, old_stps and ro are not lists of one length <= history_size {history}"
    if not problem and not all(_flat(v, n) for v in pairs[0] + pairs[1]):
        problem = f"old_dirs or old_stps holds a tensor that is not finite of shape ({n},)"
    if not problem and not all(_flat(v, None, True) and float(v) > 0 for v in pairs[2]):
        problem = "ro holds a value that is not a positive finite scalar tensor"
    al = entry.get("al", [])
    if not problem and not (isinstance(al, list) and all(v is None or _flat(v, None, True) for v in al)):
        problem = "al is not a list of finite scalar tensors"
    return problem


def lbfgs_problem(opt, expect: Expected | None = None) -> str | None:
    """An L-BFGS state dict (one param group; state at most for its first parameter), by type and
    value; with expect, its settings those of the run's optimizer and its vectors of the model's size."""
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and len(opt["param_groups"]) == 1):
        return "optimizer is not an L-BFGS state dict (state, one param group)"
    group = opt["param_groups"][0]
    problem = lbfgs_group_problem(group)
    if problem:
        return f"L-BFGS settings: {problem}"
    if expect is not None:
        changed = sorted(k for k in expect.settings if group.get(k) != expect.settings[k])
        if changed:
            return f"L-BFGS settings {changed} differ from the run's ({ {k: group.get(k) for k in changed} })"
    if len(opt["state"]) > 1 or any(k != 0 for k in opt["state"]):
        return f"L-BFGS state is for parameters {list(opt['state'])[:4]}, L-BFGS keeps one (0)"
    for entry in opt["state"].values():
        problem = lbfgs_state_problem(entry, expect.size if expect else None, group["history_size"])
        if problem:
            return f"L-BFGS state: {problem}"
    return None


def known_history_problem(hist, seen: int, stages=KNOWN_STAGES, columns=KNOWN_COLUMNS) -> str | None:
    """The learner's history: exactly `columns`, each `seen` long (the epochs the weights have seen),
    epoch the row number, stages among `stages`, loss, loss_ratio and seconds finite >= 0."""
    problem = history_problem(hist, ("stage",))
    if problem:
        return problem
    if sorted(hist) != sorted(columns):
        return f"history columns {sorted(hist)} are not {sorted(columns)}"
    if len(hist["epoch"]) != seen:
        return f"history holds {len(hist['epoch'])} rows, the weights have seen {seen} epochs"
    if hist["epoch"] != list(range(seen)):
        return "history column epoch is not 0, 1, ... in order"
    bad = [s for s in hist["stage"] if s not in stages][:1]
    if bad:
        return f"history stage {bad[0]!r} is not one of {stages}"
    for key in ("loss", "fresh_loss", "loss_ratio", "fresh_ratio", "seconds"):
        bad = [v for v in hist[key] if not (math.isfinite(v) and v >= 0)][:1]
        if bad:
            return f"history column {key} holds {bad[0]!r}, not a finite number >= 0"
    return None


def known_settings_problem(config) -> str | None:
    """The stored settings: {"known": KnownConfig's fields, "box": a Box's dict, "label": str}, each building."""
    if not (isinstance(config, dict) and set(config) == {"known", "box", "label"} and isinstance(config["label"], str)
            and isinstance(config["known"], dict) and isinstance(config["box"], dict)):
        return "its settings are not a torsion-free run's (known, box, label)"
    try:
        KnownConfig(**config["known"])
        Box(config["box"].get("lo"), config["box"].get("hi"))
    except (TypeError, ValueError) as err:
        return f"its settings do not build ({type(err).__name__}: {err})"
    return None


def known_problem(state, name: str | None, expect: Expected | None, fmt: str, required) -> str | None:
    """Why a checkpoint of the known-metric learner cannot be resumed, or None: head (format, keys,
    number), settings that build, finite model tensors, the L-BFGS state, the history of as many rows
    as global_epoch with no more L-BFGS epochs than its settings ask; with expect and the same run's
    settings (`same_run`; a file of other settings is the caller's to refuse), the model's tensor
    names, shapes and dtypes and the optimizer's settings and vector sizes."""
    problem = (head_problem(state, name, fmt, required, ("global_epoch",)) or known_settings_problem(state["config"])
               or tensors_problem(state["model"]))
    if problem:
        return problem
    mine = expect is not None and same_run(state["config"], expect.config)
    problem = lbfgs_problem(state["optimizer"], expect if mine else None) or known_history_problem(
        state["history"], state["global_epoch"])
    if problem:
        return problem
    if state["history"]["stage"].count("lbfgs") > state["config"]["known"]["epochs"]:
        return f"history holds more L-BFGS epochs than its settings' {state['config']['known']['epochs']}"
    return _model_problem(state["model"], expect.model) if mine else None

"""Training configuration: frozen dataclasses, two profiles ("quick" on a CPU, "full" on a GPU).

Only training hyperparameters live here (architecture, optimiser, batch, phase schedule, loss
weights and margins); the physical targets kappa_T = 1/61 and det g = 65/32 come from
`constants.ZeroParamGeometry` and are never configurable.

An *epoch* is one optimiser step on a freshly sampled batch of chart points (as in v1.3c).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch

from ..chart import Chart
from ..inputs import MAX_POINTS, finite_number, positive_int, positive_number

PROFILES = ("quick", "full", "auto")
METHODS = ("autograd", "fd")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
# Margins of the positivity and anti-flat terms: the configuration's defaults and losses.compute_losses'.
EIG_MARGIN, COND_CAP, ANTI_FLAT_MARGIN = 0.1, 50.0, 0.05
# Bounds of the settings, checked before any work: epoch seeds (seed << 32) + stream stay below 2^63,
# and a scale of the epochs or of the rate outside these ranges is a typing error, not a run.
MAX_SEED = 2**31 - 1
MAX_EPOCHS = 10**8
MAX_THREADS = 4096
EPOCHS_SCALE_MAX = 1e3
MAX_WIDTH, MAX_DEPTH, MAX_FEATURES = 4096, 64, 64     # far above any profile; beyond, memory runs out
# Divergence handling and polish: each rollback halves the rate (2^-100 is far below any useful one), and a
# window, patience or polish beyond these is a typing error. The chart's half-length L lies in [L_MIN, L_MAX]
# (seed 000 uses 1 or 2): outside, the neck's features (Chebyshev in lambda / L) and sampling degenerate.
MAX_ROLLBACKS, MAX_WINDOW, MAX_POLISH_ITERS = 100, 10**6, 1000
L_MIN, L_MAX = 1e-2, 1e2
MAX_FACTOR = 1e6              # spike_factor, grad_clip
MAX_COND = 1e12               # cond_cap: g's condition number in float64 is meaningless above this


@dataclass(frozen=True)
class LossWeights:
    """Weights of the named loss terms of `losses.compute_losses` (all >= 0)."""
    kappa: float = 0.0
    closure: float = 0.0
    coclosure: float = 0.0
    det: float = 0.0
    positivity: float = 0.0
    anti_flat: float = 0.0

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase: `epochs` optimiser steps at peak learning rate `lr` with these weights."""
    name: str
    epochs: int
    lr: float
    weights: LossWeights


def default_phases(epochs: int, lr: float, divisors: tuple = (2, 4, 8)) -> tuple:
    """The four phases of seed 000 (as in v1.3c), `epochs` each, peak learning rates lr and lr / d for
    the divisors d of phases 2-4 (lr/2, lr/4, lr/8 by default).

    1 coarse: torsion down (closure, coclosure and <T> toward kappa_T), metric SPD;
    2 tighten: kappa_T and det g weighted up; 3 refine: G2 structure held (positivity, det,
    kappa_T) while the anti-flat term keeps the neck metric varying; 4 unflatten: the same at
    the lowest learning rate with the targets weighted most.
    """
    d2, d3, d4 = divisors
    return (
        PhaseConfig("coarse", epochs, lr,
                    LossWeights(kappa=1e-2, closure=1.0, coclosure=1.0, det=100.0, positivity=10.0)),
        PhaseConfig("tighten", epochs, lr / d2,
                    LossWeights(kappa=1.0, closure=0.1, coclosure=0.1, det=3000.0, positivity=10.0)),
        PhaseConfig("refine", epochs, lr / d3,
                    LossWeights(kappa=1.0, det=3000.0, positivity=10.0, anti_flat=1.0)),
        PhaseConfig("unflatten", epochs, lr / d4,
                    LossWeights(kappa=3.0, det=10000.0, positivity=10.0, anti_flat=1.0)),
    )


# The full profile's 6 x 256 network, at phase 2's kappa weight (100 x phase 1's), moves <T>/kappa_T by 20%
# within a few dozen steps unless the rate is far below phase 1's end rate (lr_floor x 2e-3 = 1e-4). Measured
# on the CPU, seed 0, from checkpoint 2000: at lr/2 = 1e-3 the batch means swung between 0.9 and 1.9 within
# 130 epochs of phase 2 (the run of epoch 2536 diverged there); at lr/20, 60 epochs into the warm-up, every
# batch had loss 30-40 x the phase's median with the network frozen by skipped steps. Phases 2-4 therefore
# refine gently, and the final polish puts the two means on target.
FULL_DIVISORS = (100, 200, 400)
# With batch 1024 a spike is rolled back only after 10 in a row (each skipped step costs one batch).
FULL_SPIKE_PATIENCE = 10
# The polish's points are a quadrature of a strongly varying T: on the full run (seed 0) the mean over 8192
# Sobol points was 2.2e-3 off the mean over 65536, and fresh 2 x 10^5 points put <T>/kappa_T - 1 at
# -1.4e-3 +- 0.4e-3 after a polish on 8192 and at +0.8e-3 +- 0.4e-3 after one on 65536 (160 s on one CPU thread).
FULL_POLISH_POINTS = 65536


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; `validate()` names the first bad field."""
    profile: str = "quick"
    L: float = 2.0                   # chart half-length: lambda in [-L, L], L in [L_MIN, L_MAX] (seed 000: "e.g. L=1 or 2")
    seed: int = 0
    batch: int = 128
    width: int = 64
    depth: int = 3
    n_fourier: int = 2               # Fourier modes n = 1..n_fourier per fibre coordinate
    n_chebyshev: int = 6             # Chebyshev features T_1..T_K of lambda / L
    neck_weighted: bool = True       # importance-sample the neck (sampling.uniform)
    phases: tuple = default_phases(450, 5e-3)
    checkpoint_every: int = 1000
    max_rollbacks: int = 3
    spike_factor: float = 20.0       # divergence: loss > spike_factor x median of recent losses
    spike_window: int = 50           # number of recent losses (same phase) in that median
    spike_patience: int = 3          # that many spikes in a row roll back; a lone one skips its step
    method: str = "autograd"         # exterior derivative: forward-mode autograd or finite differences
    train_dtype: str = "float32"
    eval_dtype: str = "float64"
    device: str = "auto"
    cpu_threads: int = 0             # torch threads while training on the CPU; 0 = leave torch's setting
    warm_start: str | None = None    # path of a state dict (e.g. v1.3c models.pt) or None
    grad_clip: float = 1.0           # max global gradient norm
    warmup_frac: float = 0.05        # linear warm-up over this fraction of each phase
    lr_floor: float = 0.05           # cosine decay ends at lr_floor x peak lr
    eig_margin: float = EIG_MARGIN   # positivity hinge: eigenvalues of g and of B/|det B|^(1/9) above this
    cond_cap: float = COND_CAP       # condition number of g penalised above this
    anti_flat_margin: float = ANTI_FLAT_MARGIN   # anti-flat hinge: RMS |d g / d lambda| in the neck below this is penalised
    polish_points: int = 0           # final Gauss-Newton polish of <T> and <det g> on this many Sobol points (0: off)
    polish_iters: int = 4            # at most this many polish steps (it stops earlier at polish_tol)
    polish_tol: float = 1e-6         # relative residual of both means on the polish points
    early_stop_window: int = 0       # > 0: a phase ends once its batch means meet both targets over this many epochs
    early_stop_T: float = 0.01       # |<T>/kappa_T - 1| at most this (window mean) for the early stop
    early_stop_det: float = 2e-4     # |<det g>/(65/32) - 1| at most this (window mean) for the early stop

    def __post_init__(self):
        # Every Config (direct, replace(), from_dict) is checked when built: bad fields fail early.
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, profile: str = "auto", **overrides) -> "Config":
        """"quick" (CPU, minutes), "full" (GPU scale) or "auto" (full when CUDA is available)."""
        if profile not in PROFILES:
            raise ValueError(f"profile: unknown profile {profile!r}; choose one of {PROFILES}")
        if profile == "auto":
            profile = "full" if torch.cuda.is_available() else "quick"
        if profile == "quick":
            base = cls(profile="quick", L=2.0, batch=128, width=64, depth=3, n_fourier=2, n_chebyshev=6,
                       phases=default_phases(450, 5e-3), checkpoint_every=300, cpu_threads=1,
                       polish_points=2048)
        else:
            base = cls(profile="full", L=2.0, batch=1024, width=256, depth=6, n_fourier=8, n_chebyshev=8,
                       phases=default_phases(2500, 2e-3, FULL_DIVISORS), checkpoint_every=1000,
                       polish_points=FULL_POLISH_POINTS, spike_patience=FULL_SPIKE_PATIENCE)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown configuration field")
        return replace(base, **overrides)

    def scaled(self, factor: float) -> "Config":
        """The same configuration with every phase's epochs multiplied by factor (at least 1 each);
        factor in (0, EPOCHS_SCALE_MAX]."""
        positive_number(factor, "epochs_scale", maximum=EPOCHS_SCALE_MAX)
        phases = tuple(replace(p, epochs=max(1, int(round(p.epochs * factor)))) for p in self.phases)
        return replace(self, phases=phases)             # __post_init__ validates

    @property
    def chart(self) -> Chart:
        """The chart [-L, L] x T^6 this configuration trains on (L checked once, in `Chart`)."""
        return Chart(self.L)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def phase_starts(self) -> list[int]:
        """Global epoch at which each phase starts."""
        out, n = [], 0
        for p in self.phases:
            out.append(n)
            n += p.epochs
        return out

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Config":
        """Raise ValueError naming the first invalid field; return self when all are valid."""
        _need(self.profile in ("quick", "full"), "profile",
              f"unknown profile {self.profile!r}; choose one of {PROFILES}")
        for name, low, high in INT_FIELDS:
            positive_int(getattr(self, name), name, low, high)
        for name, low, high, open_below, open_above in NUMBER_FIELDS:
            finite_number(getattr(self, name), name, low, high, open_below=open_below, open_above=open_above)
        for name, choices in CHOICES:
            _need(getattr(self, name) in choices, name, f"must be one of {choices}, got {getattr(self, name)!r}")
        _need(isinstance(self.neck_weighted, bool), "neck_weighted", "must be True or False")
        _need(self.warm_start is None or (isinstance(self.warm_start, str) and self.warm_start), "warm_start",
              "must be None or a file path")
        _check_phases(self.phases)
        return self

    # ------------------------------------------------------------------ plain-data round trip
    def to_dict(self) -> dict:
        """Plain JSON-able dict (str, int, float, bool, None, lists, dicts) for checkpoints and metadata."""
        d = asdict(self)
        d["phases"] = [{"name": p.name, "epochs": p.epochs, "lr": p.lr, "weights": asdict(p.weights)}
                       for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Inverse of to_dict; unknown keys raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown configuration field")
        d = dict(d)
        try:
            d["phases"] = tuple(PhaseConfig(name=p["name"], epochs=p["epochs"], lr=p["lr"],
                                            weights=LossWeights(**p["weights"])) for p in d.get("phases", ()))
        except (KeyError, TypeError) as err:
            raise ValueError(f"phases: malformed phase entry ({err})") from None
        return cls(**d)                                 # __post_init__ validates


def _need(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {msg}")


def _check_phases(phases) -> None:
    _need(isinstance(phases, tuple) and len(phases) >= 1, "phases", "need a non-empty tuple of PhaseConfig")
    for i, p in enumerate(phases):
        tag = f"phases[{i}]"
        _need(isinstance(p, PhaseConfig), tag, f"must be a PhaseConfig, got {type(p).__name__}")
        _need(isinstance(p.name, str) and p.name, f"{tag}.name", "must be a non-empty string")
        positive_int(p.epochs, f"{tag}.epochs", maximum=MAX_EPOCHS)
        positive_number(p.lr, f"{tag}.lr")
        _need(isinstance(p.weights, LossWeights), f"{tag}.weights", "must be a LossWeights")
        for name, v in p.weights.items():
            finite_number(v, f"{tag}.weights.{name}", 0.0)


# (field, minimum, maximum) of the integer fields of Config
INT_FIELDS = (
    ("seed", 0, MAX_SEED), ("batch", 1, MAX_POINTS), ("width", 1, MAX_WIDTH), ("depth", 1, MAX_DEPTH),
    ("n_fourier", 1, MAX_FEATURES), ("n_chebyshev", 1, MAX_FEATURES), ("checkpoint_every", 1, MAX_EPOCHS),
    ("max_rollbacks", 0, MAX_ROLLBACKS),
    ("spike_window", 2, MAX_WINDOW), ("spike_patience", 1, MAX_WINDOW), ("cpu_threads", 0, MAX_THREADS),
    ("polish_points", 0, MAX_POINTS), ("polish_iters", 1, MAX_POLISH_ITERS), ("early_stop_window", 0, MAX_WINDOW),
)
# (field, minimum, maximum, open below, open above) of the real fields of Config
NUMBER_FIELDS = (
    ("L", L_MIN, L_MAX, False, False), ("spike_factor", 1.0, MAX_FACTOR, True, False),
    ("grad_clip", 0.0, MAX_FACTOR, True, False),
    ("warmup_frac", 0.0, 1.0, False, True), ("lr_floor", 0.0, 1.0, False, False),
    ("eig_margin", 0.0, None, False, False), ("cond_cap", 1.0, MAX_COND, True, False),
    ("anti_flat_margin", 0.0, None, False, False), ("polish_tol", 0.0, None, True, False),
    ("early_stop_T", 0.0, None, True, False), ("early_stop_det", 0.0, None, True, False),
)
CHOICES = (("method", METHODS), ("train_dtype", DTYPES), ("eval_dtype", DTYPES), ("device", DEVICES))

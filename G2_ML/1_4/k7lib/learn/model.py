"""The learned G2 3-form on the TCS chart: phi(x) = phi_bg(x) + correction(x), packed (batch, 35).

correction = MLP(features(x)) with
  features = [sin(2 pi n y_j), cos(2 pi n y_j) for n = 1..n_fourier, j = 1..6]   (periodic in y)
           + [T_1(t), ..., T_K(t)]  Chebyshev polynomials of t = lambda / L       (smooth in lambda)
           + [left, neck, right]    region weights of `chart.region_weights`
           + [cos(theta/2), sin(theta/2)]  of the twist angle theta = chart.twist_angle(lambda)
             (the background's own building blocks, so the correction can follow its twist),
  MLP = nn.Sequential named `net`: Linear(n_in, width), Tanh, (Linear(width, width), Tanh) x
  (depth - 1), and a separate output layer `head` = Linear(width, 35), zero-initialised so the
  correction vanishes at initialisation and phi starts as the background.

Parameter names: net.0 (input layer), net.2, net.4, ... (hidden layers), head (output).
Warm start from v1.3c (docs/conventions.md §9) assumes its network was an nn.Sequential `net` of 6 tanh
layers of width 256 on 168 Fourier inputs (sin/cos(2 pi l x), l = 1..12, 7 coordinates):
net.0 (256 x 168), net.2 ... net.10 (256 x 256), net.12 (35 x 256). With the full profile
(6 x 256) its hidden layers net.2..net.10 match by name and shape. Its input layer (other
features) and output layer (a whole phi, not a correction; named net.12, not head) do not.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import forms as F

N_OUT = F.n_components(3)


def fourier_features(y: torch.Tensor, n_fourier: int) -> torch.Tensor:
    """(batch, 6) fibre coordinates -> (batch, 12 n_fourier): sin then cos of 2 pi n y, n = 1..n_fourier."""
    n = torch.arange(1, n_fourier + 1, dtype=y.dtype, device=y.device)
    arg = 2 * math.pi * y[:, :, None] * n                       # (batch, 6, n_fourier)
    return torch.cat([torch.sin(arg).flatten(1), torch.cos(arg).flatten(1)], dim=1)


def chebyshev_features(t: torch.Tensor, degree: int) -> torch.Tensor:
    """(batch,) t in [-1, 1] -> (batch, degree): T_1(t) .. T_degree(t) by T_{k+1} = 2 t T_k - T_{k-1}."""
    out = [torch.ones_like(t), t]
    for _ in range(2, degree + 1):
        out.append(2 * t * out[-1] - out[-2])
    return torch.stack(out[1: degree + 1], dim=1)


class K7PhiModel(nn.Module):
    """phi: x (batch, 7) -> packed 3-form (batch, 35) = chart.phi_background(x) + head(net(features(x))).

    The chart (`Chart`, from config.L) is held here and read by the losses, the sampling and the evaluation."""

    def __init__(self, config):
        super().__init__()
        config.validate()
        self.chart = config.chart
        self.n_fourier = int(config.n_fourier)
        self.n_chebyshev = int(config.n_chebyshev)
        self.n_in = 12 * self.n_fourier + self.n_chebyshev + 5
        layers: list[nn.Module] = []
        width_in = self.n_in
        for _ in range(config.depth):
            layers += [nn.Linear(width_in, config.width), nn.Tanh()]
            width_in = config.width
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(config.width, N_OUT)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 7) -> (batch, n_in): Fourier features of y; Chebyshev, region and twist features of lambda."""
        lam = x[:, 0]
        half = self.chart.twist_angle(lam)[:, None] / 2
        return torch.cat([fourier_features(x[:, 1:], self.n_fourier),
                          chebyshev_features(lam / self.chart.L, self.n_chebyshev),
                          self.chart.region_weights(lam), torch.cos(half), torch.sin(half)], dim=1)

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """Learned packed correction (batch, 35); zero at initialisation."""
        return self.head(self.net(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != F.DIM:
            raise ValueError(f"points x must have shape (batch, 7), got {tuple(x.shape)}")
        return self.chart.phi_background(x) + self.correction(x)

    def load_compatible(self, state_dict: dict, verbose: bool = True) -> "LoadReport":
        """Copy every tensor of `state_dict` whose name and shape match a parameter or buffer here,
        layer by layer: when one tensor of a layer (same name prefix) does not match, none of
        that layer's tensors is copied.

        Returns a LoadReport (loaded names, skipped names with the reason, own names left as they
        were) and prints it when verbose. Raises ValueError when nothing matches, and before anything
        is copied when a matching tensor is not floating (int, bool, complex) or holds NaN or Inf.
        """
        if not isinstance(state_dict, dict):
            raise ValueError(f"warm-start weights must be a state dict, got {type(state_dict).__name__}")
        own = self.state_dict()
        loaded, skipped = [], []
        why = {}
        for name, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                why[name] = "not a tensor"
            elif name not in own:
                why[name] = "no parameter of that name"
            elif tuple(value.shape) != tuple(own[name].shape):
                why[name] = f"shape {tuple(value.shape)} != {tuple(own[name].shape)}"
            elif own[name].is_floating_point() and not value.is_floating_point():
                raise ValueError(f"warm-start tensor {name} is {str(value.dtype).replace('torch.', '')}, "
                                 "not a floating dtype (float16, bfloat16, float32 or float64)")
            elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"warm-start tensor {name} holds {int((~torch.isfinite(value)).sum())} NaN or "
                                 "Inf value(s)")
        # A layer is taken whole or not at all: a bias without its weight means nothing.
        bad_layers = {name.rpartition(".")[0] for name in why}
        for name in state_dict:
            if name in why:
                skipped.append((name, why[name]))
            elif name.rpartition(".")[0] in bad_layers:
                skipped.append((name, "another tensor of its layer does not match"))
            else:
                loaded.append(name)
        if not loaded:
            raise ValueError("warm-start weights match no parameter of the model by name and shape "
                             f"({len(state_dict)} tensors offered, e.g. {list(state_dict)[:3]}; "
                             f"model expects e.g. {list(own)[:3]})")
        with torch.no_grad():
            for name in loaded:
                own[name].copy_(state_dict[name].to(own[name].dtype))
        report = LoadReport(loaded=loaded, skipped=skipped, kept=[name for name in own if name not in loaded])
        if verbose:
            print(report)
        return report


@dataclass(frozen=True)
class LoadReport:
    """What `load_compatible` copied and what it left."""
    loaded: list = field(default_factory=list)     # names copied
    skipped: list = field(default_factory=list)    # (name, reason) of offered tensors not copied
    kept: list = field(default_factory=list)       # own names left at their current values

    def __str__(self) -> str:
        lines = [f"warm start: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
                 f"kept {len(self.kept)} of the model's own"]
        lines += [f"  loaded  {n}" for n in self.loaded]
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def float64_copy(model):
    """A float64 CPU copy of a model for evaluation beside CPU sample points (the caller's model,
    possibly on a GPU, is left untouched); a plain callable is returned as it is."""
    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model).double().cpu().eval()
    return model

"""The torsion-free learning problem with boundary data on a box (issue 21): its formulation, the start,
the loss and the fields it defines. The training loop is `learn.known`.

Formulation. Given a torsion-free phi_E on a box D (any field x (batch, 7) -> packed (batch, 35)),
  phi = phi_E + chi(x) Lambda^3(L(x)) N(x),     chi = prod_i (1 - t_i^2),  g(phi_E) = L L^T (Cholesky),
with N (batch, 35) a tanh network of the affine coordinates t in [-1, 1]^7 (`BoxNet`). chi vanishes on
the boundary, so phi = phi_E on dD in all 35 components: the boundary data. Lambda^3(L) takes components
in the orthonormal coframe of g(phi_E) to coordinate components, so |chi Lambda^3(L) N|_{g_E} = chi |N|: the
network's output is the correction measured by g_E, which keeps the parameters balanced across
directions of very different coordinate lengths. Chosen over phi = phi_E + d(chi eta) (closed by
construction): that one needs second derivatives of the network in d psi (49 forward directions
instead of 7), and first derivatives suffice here. Near phi_E the torsion-free solutions with these
boundary values are phi_E pulled back by diffeomorphisms that fix the boundary to first order; the loss
cannot tell them apart, so results are measured by invariants (`geometry.invariants`).

Loss: the squared L^2 torsion int_D (|d phi|^2 + |d psi|^2) vol_g (conventions §3), estimated on a fixed set of
scrambled Sobol points (sampling.box_sobol) as Vol_0(D) mean(T^2 sqrt(det g)). The 1-jets of phi_E,
Lambda^3(L) and chi at those points are computed once (`Jets`); each evaluation differentiates only the
network (7 forward tangents) and assembles phi's jet, then `torsion.torsion_from_jet`.

Start. N starts as a fixed random network P (width `START_WIDTH`, the model's depth, seeded) whose
output layer is drawn N(0, 1) and scaled so that max over the check points of chi |P| / sqrt 7 = eps
(|phi_E|_{g_E} = sqrt 7): a smooth perturbation supported in D, vanishing on dD, of relative size eps
in the sup norm, of the formulation's own kind. A wider model embeds P in its first START_WIDTH units
(the others read everything, feed nothing at first), so every width starts from the same phi. The exact
phi_E (N = 0) is representable; whether minimising torsion finds the right geometry, and how closely,
is what the run measures.

Control (boundary=False): phi = phi_E + chi Lambda^3(L) N + Lambda^3(L) M with a second network M of the same
size whose output layer starts at zero (`FreeBoundaryNet`): the same start, the same loss, every
structure of the constrained problem still reachable (M = 0), but nothing holds phi on the boundary.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import forms as F
from .. import g2
from ..derivatives import value_and_jacobian
from ..exact.box import Box, as_box, check_positive
from ..inputs import positive_int, positive_number
from ..sampling.points import box_sobol
from ..torsion import torsion_from_jet

START_WIDTH = 8                 # hidden width of the start's perturbation network
CHECK_STREAM = 1 << 20          # Sobol seed offset of the positivity check points (training uses seed)
N_CHECK = 4096                  # points on which positivity of phi_E and of the start is checked


@dataclass(frozen=True)
class KnownConfig:
    """Settings of one torsion-free run on a box (all validated in __post_init__).

    eps: relative size of the start's perturbation (sup norm, module docstring); width, depth: the
    network; n_points: training points; epochs x iterations: L-BFGS iterations in total (an epoch is one
    L-BFGS call of `iterations` iterations, the unit of checkpoints and progress); history: L-BFGS
    memory; boundary: False for the control without boundary data; seed: points, networks, perturbation.
    """
    eps: float = 0.2
    width: int = 32
    depth: int = 2
    n_points: int = 1024
    epochs: int = 32
    iterations: int = 25
    history: int = 100
    boundary: bool = True
    seed: int = 0
    checkpoint_every: int = 4

    def __post_init__(self):
        positive_number(self.eps, "eps")
        for name in ("width", "depth", "n_points", "epochs", "iterations", "history", "checkpoint_every"):
            positive_int(getattr(self, name), name)
        if self.width < START_WIDTH:
            raise ValueError(f"width must be at least {START_WIDTH} (the start's perturbation network), got {self.width}")
        if not isinstance(self.boundary, bool):
            raise ValueError(f"boundary must be True or False, got {self.boundary!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class BoxNet(nn.Module):
    """N(x) = head(tanh(... tanh(W_1 t + b_1) ...)), t = box.to_affine(x): (batch, 7) -> (batch, 35), float64."""

    def __init__(self, box: Box, width: int, depth: int):
        super().__init__()
        self.lo, self.hi = box.lo, box.hi
        layers, n_in = [], F.DIM
        with torch.random.fork_rng(devices=[]):      # weights are set from explicit generators by the callers
            for _ in range(depth):
                layers += [nn.Linear(n_in, width), nn.Tanh()]
                n_in = width
            self.net = nn.Sequential(*layers)
            self.head = nn.Linear(width, F.n_components(3))
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.new_tensor(self.lo), x.new_tensor(self.hi)
        return self.head(self.net(2 * (x - lo) / (hi - lo) - 1))


def init_uniform(layer: nn.Linear, generator: torch.Generator) -> None:
    """Weights and bias uniform in +-1/sqrt(fan_in) (the scale of nn.Linear's default), drawn from generator."""
    bound = 1 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


def embed(small: BoxNet, width: int, generator: torch.Generator) -> BoxNet:
    """A BoxNet of `width` >= small's that computes exactly small's output: small's units first, the new
    units with PyTorch's default initialisation (drawn from `generator`) reading every unit of the layer
    below, small's units reading only small's, and the new units' output weights zero."""
    depth = len(small.net) // 2
    big = BoxNet(Box(small.lo, small.hi), width, depth)
    w0 = small.head.in_features
    with torch.no_grad():
        for i in range(depth):
            lin, src = big.net[2 * i], small.net[2 * i]
            init_uniform(lin, generator)
            lin.weight[:w0] = 0
            lin.weight[:w0, :src.in_features] = src.weight
            lin.bias[:w0] = src.bias
        big.head.weight.zero_()
        big.head.weight[:, :w0] = small.head.weight
        big.head.bias.copy_(small.head.bias)
    return big


def frame_power(phi_field):
    """x -> Lambda^3(L(x)) (batch, 35, 35), g(phi_field(x)) = L L^T: coframe components -> coordinate components."""
    def power(x):
        g = g2.metric_data_packed(phi_field(x), check=False).g
        return F.exterior_power(torch.linalg.cholesky(g), 3)
    return power


def correction_field(phi_field, box: Box, network, weight: str = "cutoff"):
    """x -> w(x) Lambda^3(L(x)) network(x), w = chi ("cutoff") or 1 ("one"): a packed 3-form field (batch, 35)."""
    power = frame_power(phi_field)

    def field(x):
        out = (power(x) @ network(x)[..., None])[..., 0]
        return box.cutoff(x)[:, None] * out if weight == "cutoff" else out
    return field


class FreeBoundaryNet(nn.Module):
    """The control's pair (N, M) of BoxNets; forward gives (batch, 70) = [N(x), M(x)]: N enters phi with chi,
    M without."""

    def __init__(self, inner: BoxNet, free: BoxNet):
        super().__init__()
        self.inner, self.free = inner, free

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(x), self.free(x)], -1)


def learned_field(phi_field, box: Box, model: nn.Module, boundary: bool = True):
    """The field phi of the module docstring: phi_E + chi Lambda^3(L) model (boundary data), or for the control
    (model a FreeBoundaryNet) phi_E + chi Lambda^3(L) model.inner + Lambda^3(L) model.free."""
    if boundary:
        corr = correction_field(phi_field, box, model)
        return lambda x: phi_field(x) + corr(x)
    held = correction_field(phi_field, box, model.inner)
    free = correction_field(phi_field, box, model.free, weight="one")
    return lambda x: phi_field(x) + held(x) + free(x)


def start_network(phi_field, box: Box, config: KnownConfig, check_points: torch.Tensor) -> tuple[BoxNet, float]:
    """(P, scale): the perturbation network of the module docstring and the factor applied to its output
    layer, so that max over check_points of chi |P| / sqrt 7 = eps."""
    gen = torch.Generator().manual_seed(config.seed)
    P = BoxNet(box, START_WIDTH, config.depth)
    for i in range(config.depth):
        init_uniform(P.net[2 * i], gen)
    with torch.no_grad():
        P.head.weight.normal_(generator=gen)
        P.head.bias.normal_(generator=gen)
        size = float((box.cutoff(check_points) * P(check_points).norm(dim=-1)).max()) / math.sqrt(7)
        scale = config.eps / size
        P.head.weight *= scale
        P.head.bias *= scale
    return P, scale


def check_problem(phi_field, box: Box, config: KnownConfig) -> tuple[torch.Tensor, BoxNet]:
    """Everything that can be wrong before training, as one ValueError each: the box (as_box), phi_E not
    positive at some check point (named), the start not positive (eps too large; the point named).
    Returns (check points (N_CHECK, 7), the start's perturbation network P)."""
    box = as_box(box)
    xc = box_sobol(N_CHECK, box, seed=config.seed + CHECK_STREAM)
    check_positive(phi_field, xc, "the exact field phi_E")
    P, _ = start_network(phi_field, box, config, xc)
    start = learned_field(phi_field, box, P)
    check_positive(start, xc, f"the start phi_E + perturbation (eps = {config.eps:g}; lower eps)")
    return xc, P


@dataclass(frozen=True)
class Jets:
    """The fixed parts of phi's 1-jet at the training points x (n, 7): phi_E, Lambda^3(L) (n, 35, 35),
    chi (n,) with their x-derivatives (last axis 7; Lambda^3(L)'s stored as dpower[n, 7 I + m, J] =
    d_m Lambda^3(L)_IJ, laid out once for one batched product per evaluation)."""
    x: torch.Tensor
    phi: torch.Tensor
    dphi: torch.Tensor
    power: torch.Tensor
    dpower: torch.Tensor
    chi: torch.Tensor
    dchi: torch.Tensor


def jets(phi_field, box: Box, x: torch.Tensor) -> Jets:
    """Jets of phi_E, Lambda^3(L) and chi at x, by forward-mode derivatives, once."""
    power = frame_power(phi_field)
    with torch.no_grad():
        (p, lam, c), (dp, dlam, dc) = value_and_jacobian(lambda y: (phi_field(y), power(y), box.cutoff(y)), x)
    dlam = dlam.permute(0, 1, 3, 2).reshape(x.shape[0], -1, lam.shape[-1]).contiguous()
    return Jets(x=x, phi=p, dphi=dp, power=lam, dpower=dlam, chi=c, dchi=dc)


def _coordinate(J: Jets, n: torch.Tensor, dn: torch.Tensor):
    """Lambda^3(L) n and its jet, for frame components n (b, 35) with jet dn (b, 35, 7)."""
    value = (J.power @ n[..., None])[..., 0]
    return value, (J.dpower @ n[..., None]).reshape(dn.shape) + J.power @ dn


def phi_jet(J: Jets, n: torch.Tensor, dn: torch.Tensor, boundary: bool = True):
    """(phi (b, 35), d phi (b, 35, 7)) at the training points for the model's output n and its jet dn:
    n (b, 35) with boundary data, n (b, 70) = [N, M] for the control."""
    v, dv = _coordinate(J, n[:, :35], dn[:, :35])
    phi, dphi = J.phi + J.chi[:, None] * v, J.dphi + J.dchi[:, None, :] * v[:, :, None] + J.chi[:, None, None] * dv
    if boundary:
        return phi, dphi
    w, dw = _coordinate(J, n[:, 35:], dn[:, 35:])
    return phi + w, dphi + dw


def torsion_loss(model: nn.Module, J: Jets, volume: float, boundary: bool = True) -> torch.Tensor:
    """Vol_0(D) mean over the training points of (|d phi|^2 + |d psi|^2) sqrt(det g): int_D T^2 vol_g."""
    n, dn = value_and_jacobian(model, J.x)
    t = torsion_from_jet(*phi_jet(J, n, dn, boundary))
    return volume * ((t.norm2_dphi + t.norm2_dpsi) * t.metric.det.sqrt()).mean()


def build(phi_field, box, config: KnownConfig):
    """(box, check points, P, model at the start, Jets at the training points) for a validated problem;
    the model is embed(P, width), or for the control a FreeBoundaryNet of it and a zero-output BoxNet."""
    box = as_box(box)
    xc, P = check_problem(phi_field, box, config)
    gen = torch.Generator().manual_seed(config.seed + 1)
    model = embed(P, config.width, gen)
    if not config.boundary:
        free = BoxNet(box, config.width, config.depth)
        for i in range(config.depth):
            init_uniform(free.net[2 * i], gen)
        with torch.no_grad():
            free.head.weight.zero_()
            free.head.bias.zero_()
        model = FreeBoundaryNet(model, free)
    x = box_sobol(config.n_points, box, seed=config.seed)
    return box, xc, P, model, jets(phi_field, box, x)


def start_copy(model: nn.Module) -> nn.Module:
    """A frozen copy (the state at the start, for the start's own numbers)."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out

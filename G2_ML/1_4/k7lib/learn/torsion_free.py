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
phi_E (N = 0, a zero output layer) is then in the network's class, so this start tests the optimiser and
the loss, not the network's power to approximate. start="modes" tests that too: P is a fixed sum of four
sines (`Modes`, scaled the same way) outside the class, N = P + net with net's output starting at zero,
and phi_E needs net = -P (up to the diffeomorphisms), which the network can only approximate.

Control (boundary=False): phi = phi_E + chi Lambda^3(L) N + Lambda^3(L) M with a second network M of the same
size whose output layer starts at zero (`FreeBoundaryNet`): the same start, the same loss, every
structure of the constrained problem still reachable (M = 0), but nothing holds phi on the boundary.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import jvp, vmap

from .. import forms as F
from .. import g2
from ..batches import chunks
from ..derivatives import value_and_jacobian
from ..exact.box import Box, as_box, check_positive
from ..inputs import positive_int, positive_number
from ..sampling.points import box_sobol
from ..torsion import torsion_from_jet
from .config import MAX_DEPTH, MAX_EPOCHS, MAX_SEED, MAX_WIDTH

START_WIDTH = 8                 # hidden width of the start's perturbation network
STARTS = ("network", "modes")   # the start's perturbation: of the network's own class, or outside it
N_MODES, MODE_FREQUENCY = 4, 2.0  # the "modes" start: sum of 4 sines with wave vectors in [-2, 2]^7 (in t)
SOLVERS = ("lbfgs", "lm")       # L-BFGS alone; or L-BFGS for `epochs` (0: none), then Levenberg-Marquardt
FRESH_STREAM = 1 << 21          # Sobol seed offset of the fresh points every reported torsion is judged on
CHECK_STREAM = 1 << 20          # Sobol seed offset of the positivity check points (training uses seed)
N_CHECK = 4096                  # points on which positivity of phi_E and of the start is checked
# The user's field phi_E (and every field built on it) is called on at most FIELD_CHUNK points at a time, with
# its derivatives: peak memory is that of the field on FIELD_CHUNK points, whatever n_points.
FIELD_CHUNK = 256
# Upper bounds of KnownConfig, checked before anything is written. Points: the jets stored per training point
# take 78 kB (Lambda^3(L) and its derivatives), so 2^20 points hold 82 GB; width and depth as a chart run's.
MAX_KNOWN_POINTS, MAX_ITERATIONS, MAX_HISTORY, MAX_POLISH = 2**20, 10**6, 10**4, 10**4
KNOWN_BOUNDS = (("width", MAX_WIDTH), ("depth", MAX_DEPTH), ("n_points", MAX_KNOWN_POINTS), ("epochs", MAX_EPOCHS),
                ("iterations", MAX_ITERATIONS), ("history", MAX_HISTORY), ("polish", MAX_POLISH),
                ("checkpoint_every", MAX_EPOCHS))


@dataclass(frozen=True)
class LMSettings:
    """steps: outer steps (one normal matrix each); mu0: the first damping, relative to diag A; mu_min, mu_max:
    its bounds (a step that needs more than mu_max ends the solve); trials: damping trials per step; chunk:
    points per block of the normal equations."""
    steps: int = 16
    mu0: float = 1e-3
    mu_min: float = 1e-15
    mu_max: float = 1e10
    trials: int = 10
    chunk: int = 32

    def __post_init__(self):
        positive_int(self.steps, "lm_steps", 0, MAX_POLISH)      # at most 10^4 steps, as the polish
        for name in ("trials", "chunk"):
            positive_int(getattr(self, name), f"lm_{name}")
        for name in ("mu0", "mu_min", "mu_max"):
            positive_number(getattr(self, name), f"lm_{name}")
        if not self.mu_min <= self.mu0 <= self.mu_max:
            raise ValueError(f"lm damping: need lm_mu_min <= lm_mu0 <= lm_mu_max, got {self.mu_min:g}, "
                             f"{self.mu0:g}, {self.mu_max:g}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KnownConfig:
    """Settings of one torsion-free run on a box (all validated in __post_init__).

    eps: relative size of the start's perturbation (sup norm, module docstring); width, depth: the
    network; n_points: training points; epochs x iterations: L-BFGS iterations in total (an epoch is one
    L-BFGS call of `iterations` iterations, the unit of checkpoints and progress); history: L-BFGS
    memory; polish: Gauss-Newton steps on the output layers afterwards (`learn.known.gauss_newton`; 0: none);
    solver: "lbfgs", or "lm": the L-BFGS epochs (0 allowed) as a warm-up, then lm_steps Levenberg-Marquardt
    steps on every weight (`learn.levenberg_marquardt`) with damping lm_mu0 within [lm_mu_min, lm_mu_max];
    start: "network" (P of the network's class, module docstring) or "modes" (P a fixed sum of sines outside it);
    boundary: False for the control without boundary data; seed: points, networks, perturbation.
    """
    eps: float = 0.2
    width: int = 32
    depth: int = 2
    n_points: int = 1024
    epochs: int = 32
    iterations: int = 25
    history: int = 100
    polish: int = 0
    start: str = "network"
    boundary: bool = True
    seed: int = 0
    checkpoint_every: int = 4
    solver: str = "lbfgs"
    lm_steps: int = 16
    lm_mu0: float = 1e-3
    lm_mu_min: float = 1e-15
    lm_mu_max: float = 1e10

    def __post_init__(self):
        positive_number(self.eps, "eps")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        for name, high in KNOWN_BOUNDS:
            low = 0 if name == "polish" or (name == "epochs" and self.solver == "lm") else 1
            positive_int(getattr(self, name), name, low, high)
        self.lm_settings()
        if self.width < START_WIDTH:
            raise ValueError(f"width must be at least {START_WIDTH} (the start's perturbation network), got {self.width}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if not isinstance(self.boundary, bool):
            raise ValueError(f"boundary must be True or False, got {self.boundary!r}")
        positive_int(self.seed, "seed", 0, MAX_SEED)

    def lm_settings(self) -> LMSettings:
        """The Levenberg-Marquardt settings of this run (validated)."""
        return LMSettings(steps=self.lm_steps, mu0=self.lm_mu0, mu_min=self.lm_mu_min, mu_max=self.lm_mu_max)

    def to_dict(self) -> dict:
        return asdict(self)


class BoxNet(nn.Module):
    """N(x) = head(tanh(... tanh(W_1 t + b_1) ...)), t = box.to_affine(x): (batch, 7) -> (batch, 35), float64."""

    def __init__(self, box: Box, width: int, depth: int):
        super().__init__()
        self.box = box
        layers, n_in = [], F.DIM
        with torch.random.fork_rng(devices=[]):      # weights are set from explicit generators by the callers
            for _ in range(depth):
                layers += [nn.Linear(n_in, width), nn.Tanh()]
                n_in = width
            self.net = nn.Sequential(*layers)
            self.head = nn.Linear(width, F.n_components(3))
        self.double()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output (batch, width), in which the output is linear."""
        return self.net(self.box.to_affine(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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
    big = BoxNet(small.box, width, depth)
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


class Modes(nn.Module):
    """A fixed smooth field of frame components outside the network's class: P(x) = sum_k C_k sin(w_k . t + p_k),
    k < N_MODES, t = box.to_affine(x), C_k (35,) ~ N(0, 1), w_k uniform in [-MODE_FREQUENCY, MODE_FREQUENCY]^7,
    p_k uniform in [0, 2 pi), all drawn from `generator`; (batch, 7) -> (batch, 35). No trainable parameters."""

    def __init__(self, box: Box, generator: torch.Generator):
        super().__init__()
        self.box = box
        g = dict(generator=generator, dtype=torch.float64)
        self.register_buffer("w", (2 * torch.rand(N_MODES, F.DIM, **g) - 1) * MODE_FREQUENCY)
        self.register_buffer("p", 2 * math.pi * torch.rand(N_MODES, **g))
        self.register_buffer("C", torch.randn(N_MODES, F.n_components(3), **g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.box.to_affine(x) @ self.w.T + self.p) @ self.C


class Shifted(nn.Module):
    """N(x) = P(x) + net(x) for a fixed P (the "modes" start) and a BoxNet net whose output starts at zero."""

    def __init__(self, fixed: nn.Module, net: BoxNet):
        super().__init__()
        self.fixed, self.net_ = fixed, net
        for q in self.fixed.parameters():
            q.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fixed(x) + self.net_(x)


def start_network(phi_field, box: Box, config: KnownConfig, check_points: torch.Tensor) -> nn.Module:
    """P, the start's perturbation of the module docstring (a BoxNet of width START_WIDTH for
    start="network", `Modes` for start="modes"), its output scaled so that max over check_points of
    chi |P| / sqrt 7 = eps."""
    gen = torch.Generator().manual_seed(config.seed)
    if config.start == "modes":
        P, out = Modes(box, gen), None
    else:
        P = BoxNet(box, START_WIDTH, config.depth)
        for i in range(config.depth):
            init_uniform(P.net[2 * i], gen)
        out = P.head
        with torch.no_grad():
            out.weight.normal_(generator=gen)
            out.bias.normal_(generator=gen)
    with torch.no_grad():
        size = float((box.cutoff(check_points) * P(check_points).norm(dim=-1)).max()) / math.sqrt(7)
        scale = config.eps / size
        for t in ((out.weight, out.bias) if out is not None else (P.C,)):
            t *= scale
    return P


def check_problem(phi_field, box: Box, config: KnownConfig) -> tuple[torch.Tensor, BoxNet]:
    """Everything that can be wrong before training, as one ValueError each: the box (as_box), phi_E not
    positive at some check point (named), the start not positive (eps too large; the point named).
    Returns (check points (N_CHECK, 7), the start's perturbation network P)."""
    box = as_box(box)
    xc = box_sobol(N_CHECK, box, seed=config.seed + CHECK_STREAM)
    check_positive(phi_field, xc, "the exact field phi_E", chunk=FIELD_CHUNK)
    P = start_network(phi_field, box, config, xc)
    start = learned_field(phi_field, box, P)
    check_positive(start, xc, f"the start phi_E + perturbation (eps = {config.eps:g}; lower eps)", chunk=FIELD_CHUNK)
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


def jets_at(J: Jets, sl: slice) -> Jets:
    """The jets of the points J.x[sl]."""
    return Jets(**{k: getattr(J, k)[sl] for k in ("x", "phi", "dphi", "power", "dpower", "chi", "dchi")})


def jets(phi_field, box: Box, x: torch.Tensor) -> Jets:
    """Jets of phi_E, Lambda^3(L) and chi at x, by forward-mode derivatives, once, FIELD_CHUNK points at a time."""
    power = frame_power(phi_field)
    parts = []
    with torch.no_grad():
        for sl in chunks(x.shape[0], FIELD_CHUNK):
            parts.append(value_and_jacobian(lambda y: (phi_field(y), power(y), box.cutoff(y)), x[sl]))
    (p, lam, c), (dp, dlam, dc) = ([torch.cat([q[i][j] for q in parts]) for j in range(3)] for i in range(2))
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


def torsion_residual(J: Jets, n: torch.Tensor, dn: torch.Tensor, weight: float, boundary: bool = True) -> torch.Tensor:
    """r (b, 56): sqrt(weight sqrt(det g)) times the components of d phi (35) and d psi (21) in an orthonormal
    frame of g(phi) (g = L L^T, L^-1 on every index), for the model's output n (b, 35 or 70) and its jet dn at
    the points of J; with weight = Vol_0(D) / n_points, sum r^2 over all points is torsion_loss (the
    Gauss-Newton residual)."""
    t = torsion_from_jet(*phi_jet(J, n, dn, boundary))
    eye = torch.eye(F.DIM, dtype=n.dtype, device=n.device).expand_as(t.metric.g)
    Linv = torch.linalg.solve_triangular(torch.linalg.cholesky(t.metric.g), eye, upper=False)
    frame = torch.cat([(F.exterior_power(Linv, 4) @ t.dphi[..., None])[..., 0],
                       (F.exterior_power(Linv, 5) @ t.dpsi[..., None])[..., 0]], -1)
    return frame * (weight * t.metric.det.sqrt()).sqrt()[:, None]


@functools.cache
def d_matrix(k: int, dtype=torch.float64) -> torch.Tensor:
    """The exterior derivative on 1-jets as a matrix (C(7,k+1), 7 C(7,k)): (d w) = D @ jac.flatten() for
    jac (C(7,k), 7) = d_m w_I (forms.d_from_jacobian applied to the basis)."""
    n = F.n_components(k) * F.DIM
    basis = torch.eye(n, dtype=dtype).reshape(n, F.n_components(k), F.DIM)
    return F.d_from_jacobian(basis, k).T


def residual_jacobian(J: Jets, n: torch.Tensor, dn: torch.Tensor, weight: float, boundary: bool = True):
    """(r (b, 56), R (b, 56, out, 8)) with R[..., a, 0] = dr/dn_a and R[..., a, 1 + q] = dr/d(d_q n_a) for
    r = torsion_residual(J, n, dn, weight, boundary) and n (b, out).

    Along the 8 out directions of n's value, forward-mode jvps (they move g(phi) and psi). Along its
    derivatives, r is linear at fixed phi: r = s (Lambda^4(L^-1) D_3 j phi ; Lambda^5(L^-1) D_4 (Theta'(phi) x 1) j phi),
    s = sqrt(weight sqrt(det g)), D_k the matrices of `d_matrix`, Theta' = dpsi/dphi (g2.psi_tangent_packed),
    and d(j phi)/d(d n) = chi Lambda^3(L_E) (held part) or Lambda^3(L_E) (the control's free part)."""
    out, b = n.shape[1], n.shape[0]
    basis = torch.eye(out, dtype=n.dtype).reshape(out, 1, out).expand(out, b, out)
    r, Rv = vmap(lambda t: jvp(lambda a: torsion_residual(J, a, dn, weight, boundary), (n,), (t,)),
                 out_dims=(None, 0))(basis)
    phi, _ = phi_jet(J, n, dn, boundary)
    m = g2.metric_data_packed(phi, check=False)
    P3 = F.exterior_power(m.ginv, 3)
    psi = g2.psi_packed(phi, m, power3=P3)
    theta = g2.psi_tangent_packed(phi, psi, m, torch.eye(35, dtype=n.dtype).expand(b, 35, 35), power3=P3)
    eye = torch.eye(F.DIM, dtype=n.dtype).expand_as(m.g)
    Linv = torch.linalg.solve_triangular(torch.linalg.cholesky(m.g), eye, upper=False)
    s = (weight * m.det.sqrt()).sqrt()[:, None, None, None]
    top = F.exterior_power(Linv, 4) @ d_matrix(3, n.dtype)                        # (b, 35, 245)
    low = (F.exterior_power(Linv, 5) @ d_matrix(4, n.dtype)).reshape(b, 21, 35, F.DIM)
    low = torch.einsum("brJq,bIJ->brIq", low, theta)                              # theta[b, I, :] = Theta'(e_I)
    lin = s * torch.cat([top.reshape(b, 35, 35, F.DIM), low], 1)                  # (b, 56, 35, 7): dr/d(j phi)
    held = torch.einsum("brIq,bIJ->brJq", lin, J.power)
    deriv = [J.chi[:, None, None, None] * held] + ([] if boundary else [held])
    R = torch.cat([Rv.permute(1, 2, 0)[..., None], torch.cat(deriv, 2)], -1)
    return r, R


def heads(model: nn.Module) -> list:
    """[(output layer, hidden features x -> (b, width), the slice of the model's output it fills)]: the
    parameters that Gauss-Newton polishes, in which the output is linear."""
    def boxnet(m):
        return m.net_ if isinstance(m, Shifted) else m
    if isinstance(model, FreeBoundaryNet):
        inner, free = boxnet(model.inner), model.free
        return [(inner.head, inner.features, slice(0, 35)), (free.head, free.features, slice(35, 70))]
    net = boxnet(model)
    return [(net.head, net.features, slice(0, 35))]


def zero_output(box: Box, config: KnownConfig, generator: torch.Generator) -> BoxNet:
    """A BoxNet of the config's size with hidden layers drawn from generator and a zero output layer."""
    net = BoxNet(box, config.width, config.depth)
    for i in range(config.depth):
        init_uniform(net.net[2 * i], generator)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    return net


def build(phi_field, box, config: KnownConfig):
    """(box, P, model at the start, Jets at the training points) for a validated problem;
    the model is embed(P, width), or for the control a FreeBoundaryNet of it and a zero-output BoxNet."""
    box = as_box(box)
    _, P = check_problem(phi_field, box, config)
    gen = torch.Generator().manual_seed(config.seed + 1)
    model = embed(P, config.width, gen) if config.start == "network" else Shifted(P, zero_output(box, config, gen))
    if not config.boundary:
        model = FreeBoundaryNet(model, zero_output(box, config, gen))
    x = box_sobol(config.n_points, box, seed=config.seed)
    return box, P, model, jets(phi_field, box, x)


def start_copy(model: nn.Module) -> nn.Module:
    """A frozen copy (the state at the start, for the start's own numbers)."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out

"""G2 structures on the link L = {z in C^5 : |z| = 1, z0^5 + ... + z4^5 = 0} of the Fermat quintic.

L is a circle bundle over Q (`k7lib.quintic`) under z -> [z]. Normalisations (checked by the tests):
  omega = (i/2) d dbar log|z|^2 restricted to Q (a line has area pi, vol(Q) = 5 pi^3/3!);
  eta   = (1/2) Im(sum_i zbar_i dz_i) on L, so that d eta = pi^* omega and eta(d/dtheta) = 1/2
          for the fibre rotation z -> e^{i theta} z;
  Omega = kappa dw1 ^ dw2 ^ dw3 / (dp/dz4), the Poincare residue in the patch z0 = 1, times a
          constant kappa > 0 (`LinkStructure`).
The G2 structure of the seed ("contact Calabi-Yau" structure, Tomassini and Vezzoni, 2008):
  phi = omega ^ eta + Re Omega,      psi = (1/2) omega ^ omega - eta ^ Im Omega.
With eps^{0123456} = +1, Bryant's phi0 = e^0 ^ (e^12 + e^34 + e^56) + Re((e^1 + i e^2)(e^3 + i e^4)
(e^5 + i e^6)) has *phi0 = (1/2) omega0^2 - e^0 ^ Im Omega0, hence the minus sign (the seed's plus sign
is the opposite orientation). Exactly, with d omega = 0, d eta = omega, d Omega = 0 and omega ^ Omega = 0:
  d phi = omega ^ omega,    d psi = 0.
Pointwise, write r^2 = ((i/8) Omega ^ Omegabar) / (omega^3/3!) = kappa^2 |dp/dz4|^{-2} / det h. If e^a is
a unitary coframe of g_Q with Omega = r (e^1 + i e^2)(e^3 + i e^4)(e^5 + i e^6), the coframe
E^a = r^{1/3} e^a, E^0 = r^{-2/3} eta turns phi into phi0, so phi is positive for every r > 0 and
  g(phi) = r^{2/3} g_Q + r^{-4/3} eta (x) eta,     *phi = r^{4/3} omega^2/2 - r^{-2/3} eta ^ Im Omega,
  phi ^ psi / vol_{g(phi)} = (3 + 4 r^2) / r^{4/3}          (= 7 iff r = 1).
For Fubini-Study data r is not constant (Q with omega_FS is not Ricci-flat), so no constant kappa gives
both psi = *phi and d psi = 0. `normalisation="holomorphic"` (default) keeps Omega holomorphic: the
closed structure above, psi != *phi where r != 1. `normalisation="pointwise"` uses Omega / r: then
psi = *phi, g = g_Q + eta (x) eta and phi ^ psi = 7 vol_g exactly, but d phi != omega^2 and d psi != 0.

The chart. One fixed patch of L: z0 != 0 scaled to 1, z4 eliminated on one branch (`chart_z4`),
  z4 = e^{i pi/5} (1 + w1^5 + w2^5 + w3^5)^{1/5}   (principal power, arg z4 in (0, 2 pi/5]).
Chart points x (batch, 7):
  x[:, 0] = theta = arg z0 (fibre angle),  x[:, 1:7] = (Re w1, Im w1, Re w2, Im w2, Re w3, Im w3),
so that z = e^{i theta} (1, w1, w2, w3, z4) / |(1, w, z4)|. `sample_chart` maps line-sampled points
into the region |w_a| <= |z4| <= 1 of this patch (using the permutation and Z_5 phase symmetries of
the Fermat quintic, which preserve Q, omega_FS and its measure), where |z4| >= 4^{-1/5} and dp/dz4 is
the largest derivative, so the chart is well conditioned there. No branch of z4 is continuous on the
whole region (1 + sum w^5 winds around 0 on it); this one has its cut where 1 + sum w^5 <= 0, which
the region meets only near |w_a| = |z4| = 1 (`sample_chart` reports how close its points come).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import torch

from . import forms as F
from . import g2
from . import quintic as Qn
from . import runs as R
from .derivatives import METHODS, value_and_jacobian

NORMALISATIONS = ("holomorphic", "pointwise")
DEFAULT_RUNS = R.PACKAGE_ROOT / "runs" / "links"
DEFAULT_OUT = R.OUTPUTS / "links"
DEFAULT_PLOTS = R.OUTPUTS / "plots"
BRANCH_TOL = 1e-8


@dataclass(frozen=True)
class LinkStructure:
    """Choice of Omega: kappa > 0 scales the residue; normalisation 'holomorphic' or 'pointwise'."""
    kappa: float = 1.0
    normalisation: str = "holomorphic"

    def __post_init__(self):
        if not (isinstance(self.kappa, (int, float)) and math.isfinite(self.kappa) and self.kappa > 0):
            raise ValueError(f"LinkStructure.kappa must be a finite positive number, got {self.kappa!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"LinkStructure.normalisation must be one of {NORMALISATIONS}, "
                             f"got {self.normalisation!r}")


DEFAULT = LinkStructure()


# ---------------------------------------------------------------- chart <-> C^5
def _check_x(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.ndim != 2 or x.shape[-1] != F.DIM or torch.is_complex(x):
        raise ValueError(f"chart points must be a real tensor of shape (batch, 7), got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")


def chart_z4(w: torch.Tensor) -> torch.Tensor:
    """The chart's root of p = 0: z4 = e^{i pi/5} (1 + sum_a w_a^5)^{1/5} (principal power), (batch,).

    w (batch, 3) complex. Its cut, where 1 + sum w^5 is real and negative, meets the sampled region
    only where all |w_a| and |z4| are close to 1, away from the typical points (w ~ 0 gives z4 ~ e^{i pi/5}).
    """
    s = 1 + (w ** Qn.DEGREE).sum(-1)
    return torch.polar(s.abs() ** (1 / Qn.DEGREE), (torch.angle(s) + math.pi) / Qn.DEGREE)


def _affine(x: torch.Tensor):
    """(Z (batch, 5), dZ/dw (batch, 3, 5), dp/dz4 (batch,)) in the fixed patch, complex."""
    w = torch.complex(x[:, 1::2], x[:, 2::2])
    z4 = chart_z4(w)
    one = torch.ones_like(z4)
    Z = torch.cat([one[:, None], w, z4[:, None]], -1)
    dp4 = Qn.DEGREE * z4 ** (Qn.DEGREE - 1)
    slope = -(w / z4[:, None]) ** (Qn.DEGREE - 1)                    # dz4/dw_a = -(dp/dw_a)/(dp/dz4)
    base = torch.zeros(Qn.DIM_C, Qn.N_HOMOG, dtype=Z.dtype, device=Z.device)
    base[torch.arange(Qn.DIM_C, device=Z.device), torch.arange(1, Qn.DIM_C + 1, device=Z.device)] = 1
    e4 = torch.zeros(Qn.N_HOMOG, dtype=Z.dtype, device=Z.device)
    e4[Qn.N_HOMOG - 1] = 1
    dZ = base + slope[..., None] * e4
    return Z, dZ, dp4


def angle_to_cut(x: torch.Tensor) -> torch.Tensor:
    """Angular distance pi - |arg(1 + sum w^5)| of chart points from the cut of chart_z4, (batch,)."""
    _check_x(x)
    w = torch.complex(x[:, 1::2], x[:, 2::2])
    return math.pi - torch.angle(1 + (w ** Qn.DEGREE).sum(-1)).abs()


def check_chart(x: torch.Tensor) -> None:
    """ValueError unless x (batch, 7) is real, finite and inside the patch (dp/dz4 not vanishing)."""
    _check_x(x)
    if F._is_traced(x):
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError("chart points contain NaN or Inf")
    Z, _, dp4 = _affine(x)
    bad = ~(dp4.abs() > Qn.DERIV_TOL * Qn.gradient(Z).abs().pow(2).sum(-1).sqrt())
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of {len(x)} chart points are off the patch: dp/dz4 vanishes "
                         "there (z4 = 0 lies on the branch locus of the chart)")


def sphere_from_chart(x: torch.Tensor) -> torch.Tensor:
    """Chart points (batch, 7) -> points of L in C^5, (batch, 5) complex with |z| = 1."""
    check_chart(x)
    Z = _affine(x)[0]
    return torch.polar(torch.ones_like(x[:, 0]), x[:, 0])[:, None] * Z / Z.abs().pow(2).sum(-1, keepdim=True).sqrt()


def chart_from_sphere(z: torch.Tensor, tol: float = BRANCH_TOL) -> torch.Tensor:
    """Points of L (batch, 5) complex -> chart points (batch, 7) real.

    ValueError for points off Q, off the unit sphere, with z0 = 0, with dp/dz4 = 0, or whose z4/z0
    is not the chart's root `chart_z4` (another of the 5 sheets: outside the patch).
    """
    Qn.check_points(z)
    if bool(((z.abs().pow(2).sum(-1) - 1).abs() > 1e-8).any()):
        raise ValueError("points of the link must have |z| = 1")
    if bool((z[:, 0] == 0).any()):
        raise ValueError(f"z0 = 0 at {int((z[:, 0] == 0).sum())} points: outside the chart's patch z0 != 0")
    Z = z / z[:, :1]
    x = torch.cat([torch.angle(z[:, 0])[:, None], torch.view_as_real(Z[:, 1:4]).reshape(-1, 6)], -1)
    check_chart(x)
    off = (Z[:, 4] - chart_z4(Z[:, 1:4])).abs() > tol * (1 + Z[:, 4].abs())
    if bool(off.any()):
        raise ValueError(f"{int(off.sum())} of {len(z)} points have z4/z0 on another sheet than the "
                         "chart's root chart_z4: outside the fixed patch (use fundamental_domain first)")
    return x


def fundamental_domain(z: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Move points of Q or L into the chart's region with symmetries of the Fermat quintic.

    Permute coordinates so |z0| is largest and |z4| the largest of the rest, multiply z4 by the fifth
    root of unity that makes z4/z0 = chart_z4(w), then set arg z0 = theta (batch,) if given (else
    keep it) and normalise |z| = 1. These maps preserve Q, omega_FS and its measure.
    """
    Qn.check_points(z)
    order = z.abs().argsort(-1, descending=True)
    z = z.gather(-1, order[:, [0, 2, 3, 4, 1]])
    Z = z / z[:, :1]
    z4 = chart_z4(Z[:, 1:4]) * z[:, 0]          # the same root up to a fifth root of unity (p(z) = 0)
    z = torch.cat([z[:, :4], z4[:, None]], -1)
    if theta is not None:
        z = z * torch.polar(torch.ones_like(theta), theta - torch.angle(z[:, 0]))[:, None]
    return z / z.abs().pow(2).sum(-1, keepdim=True).sqrt()


def sample_chart(n: int, seed: int = 0) -> torch.Tensor:
    """n chart points (n, 7) float64: line-sampled points of Q (FS distributed) moved into the patch
    region (`fundamental_domain`) with a uniform fibre angle theta in [-pi, pi)."""
    qs = Qn.sample_lines(n, seed=seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    theta = (torch.rand(n, generator=gen, dtype=torch.float64, device="cpu") * 2 - 1) * math.pi
    return chart_from_sphere(fundamental_domain(qs.z, theta))


# ---------------------------------------------------------------- forms in the chart
@lru_cache(maxsize=None)
def _dw_matrix(device: str) -> torch.Tensor:
    """P (3, 7) complex with dw_a = sum_mu P[a, mu] dx^mu."""
    P = torch.zeros(Qn.DIM_C, F.DIM, dtype=torch.complex128, device="cpu")
    for a in range(Qn.DIM_C):
        P[a, 1 + 2 * a], P[a, 2 + 2 * a] = 1, 1j
    return P.to(device)


@lru_cache(maxsize=None)
def _volume_w(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Re and Im of dw1 ^ dw2 ^ dw3 as packed 3-forms (35,) each."""
    P = _dw_matrix("cpu")
    re, im = P[0].real.to(dtype), P[0].imag.to(dtype)
    for a in (1, 2):
        cr, ci = P[a].real.to(dtype), P[a].imag.to(dtype)
        k = a
        re, im = (F.wedge_packed(re, cr, k, 1) - F.wedge_packed(im, ci, k, 1),
                  F.wedge_packed(re, ci, k, 1) + F.wedge_packed(im, cr, k, 1))
    return re.to(device), im.to(device)


@dataclass
class ChartForms:
    """Kahler and contact data at chart points, packed (batch, C(7,k)) unless stated."""
    omega: torch.Tensor        # (batch, 21) pulled back omega_FS
    eta: torch.Tensor          # (batch, 7)
    re_Omega: torch.Tensor     # (batch, 35)
    im_Omega: torch.Tensor     # (batch, 35)
    g_base: torch.Tensor       # (batch, 7, 7)  g_Q + eta (x) eta
    r: torch.Tensor            # (batch,)  |Omega| ratio of the chosen Omega (1 for 'pointwise')


def chart_forms(x: torch.Tensor, structure: LinkStructure = DEFAULT) -> ChartForms:
    """omega, eta, Omega and g_Q + eta^2 at chart points x (batch, 7) (module docstring formulas).

    In the chart, with A_a = <dZ_a, Z>/|Z|^2 and h the FS Hermitian matrix (`quintic.fs_hermitian`):
    omega_{mu nu} = -Im (P^T h Pbar)_{mu nu}, g_Q = Re (P^T h Pbar), eta = (1/2) dtheta + (1/2) Im(A_a dw_a).
    """
    check_chart(x)
    Z, dZ, dp4 = _affine(x)
    h = Qn.fs_hermitian(Z, dZ)
    P = _dw_matrix(F._dev(x.device)).to(Z.dtype)
    M = P.T @ h @ P.conj()                                                    # (batch, 7, 7)
    omega = F.pack(-M.imag, 2)
    A = (dZ @ Z.conj()[..., None])[..., 0] / Z.abs().pow(2).sum(-1)[:, None]
    eta = 0.5 * (A[:, :, None] * P).sum(1).imag
    eta = eta + 0.5 * torch.nn.functional.one_hot(torch.zeros_like(x[:, 0], dtype=torch.long), F.DIM).to(x.dtype)
    f = structure.kappa / dp4
    det_h = torch.linalg.det(h).real
    r = f.abs() / det_h.sqrt()
    if structure.normalisation == "pointwise":
        f = f / r
        r = torch.ones_like(r)
    wr, wi = _volume_w(F._dev(x.device), x.dtype)
    re_O = f.real[:, None] * wr - f.imag[:, None] * wi
    im_O = f.real[:, None] * wi + f.imag[:, None] * wr
    g_base = M.real + eta[:, :, None] * eta[:, None, :]
    return ChartForms(omega=omega, eta=eta, re_Omega=re_O, im_Omega=im_O, g_base=g_base, r=r)


def phi_psi_packed(x: torch.Tensor, structure: LinkStructure = DEFAULT):
    """(phi, psi) packed (batch, 35) each: phi = eta ^ omega + Re Omega, psi = omega^2/2 - eta ^ Im Omega."""
    c = chart_forms(x, structure)
    phi = F.wedge_packed(c.eta, c.omega, 1, 2) + c.re_Omega
    psi = 0.5 * F.wedge_packed(c.omega, c.omega, 2, 2) - F.wedge_packed(c.eta, c.im_Omega, 1, 3)
    return phi, psi


def omega_field(x: torch.Tensor) -> torch.Tensor:
    """Pulled back Fubini-Study omega at chart points: (batch, 7) -> dense (batch, 7, 7)."""
    return F.unpack(chart_forms(x).omega, 2)


def eta_field(x: torch.Tensor) -> torch.Tensor:
    """Contact form eta at chart points: (batch, 7) -> (batch, 7)."""
    return chart_forms(x).eta


def phi_field(x: torch.Tensor, structure: LinkStructure = DEFAULT) -> torch.Tensor:
    """phi = omega ^ eta + Re Omega: chart points (batch, 7) -> dense (batch, 7, 7, 7)."""
    return F.unpack(phi_psi_packed(x, structure)[0], 3)


def psi_field(x: torch.Tensor, structure: LinkStructure = DEFAULT) -> torch.Tensor:
    """psi = (1/2) omega ^ omega - eta ^ Im Omega: chart points (batch, 7) -> dense (batch, 7, 7, 7, 7)."""
    return F.unpack(phi_psi_packed(x, structure)[1], 4)


def metric_closed_form(x: torch.Tensor, structure: LinkStructure = DEFAULT) -> torch.Tensor:
    """g(phi) = r^{2/3} g_Q + r^{-4/3} eta (x) eta (module docstring), (batch, 7, 7)."""
    c = chart_forms(x, structure)
    eta2 = c.eta[:, :, None] * c.eta[:, None, :]
    r = c.r[:, None, None]
    return r ** (2 / 3) * (c.g_base - eta2) + r ** (-4 / 3) * eta2


def kappa_volume_matched(n: int = 20000, seed: int = 0) -> tuple[float, float]:
    """kappa with int_Q (i/8) Omega ^ Omegabar = vol(Q) (cymetric's normalisation), and its standard error.

    kappa^2 = vol(Q) / int_Q |dp/dz_e|^{-2} / det h omega^3/3!, by the projection sampler.
    """
    qs = Qn.sample_projections(n, seed=seed)
    est, se = qs.integral(Qn.omega_ratio(qs.z))
    kappa = math.sqrt(Qn.fs_volume_quintic() / est)
    return kappa, 0.5 * kappa * se / est


# ---------------------------------------------------------------- identity checks
def _gnorm(a: torch.Tensor, k: int, m: g2.PhiMetric) -> torch.Tensor:
    return F.inner_packed(a, a, k, m.g, m.ginv, m.det).clamp_min(0).sqrt()


def structure_checks(x: torch.Tensor, structure: LinkStructure = DEFAULT, method: str = "autograd") -> dict:
    """Pointwise residuals (batch,) of the analytic structure with exact (or fd) derivatives.

    Norms are those of g(phi). Keys: d_omega (|d omega|/|omega|), d_eta_minus_omega, d_phi_minus_omega2
    (|d phi - omega^2|/|omega^2|), d_psi (|d psi|/|psi|), d_star_phi (|d *phi|/|*phi|), phi_wedge_psi
    ((phi ^ psi)/vol_g), phi_wedge_psi_predicted ((3 + 4 r^2)/r^{4/3}), psi_minus_star_phi
    (|psi - *phi|/|*phi|), metric_vs_closed_form (max |g(phi) - closed form| / max |g|), r.
    """
    if method not in METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose one of {METHODS}")
    check_chart(x)

    def fields_(y):
        c = chart_forms(y, structure)
        phi, psi = phi_psi_packed(y, structure)
        star = g2.psi_packed(phi, check=False)
        return c.omega, c.eta, phi, psi, star

    (omega, eta, phi, psi, star), jac = value_and_jacobian(fields_, x, method)
    d_omega, d_eta, d_phi, d_psi, d_star = (F.d_from_jacobian(j, k) for j, k in zip(jac, (2, 1, 3, 4, 4)))
    m = g2.metric_data_packed(phi)
    om2 = F.wedge_packed(omega, omega, 2, 2)
    c = chart_forms(x, structure)
    vol = m.orientation * m.det.sqrt()
    g_cf = metric_closed_form(x, structure)
    return {
        "d_omega": _gnorm(d_omega, 3, m) / _gnorm(omega, 2, m),
        "d_eta_minus_omega": _gnorm(d_eta - omega, 2, m) / _gnorm(omega, 2, m),
        "d_phi_minus_omega2": _gnorm(d_phi - om2, 4, m) / _gnorm(om2, 4, m),
        "d_psi": _gnorm(d_psi, 5, m) / _gnorm(psi, 4, m),
        "d_star_phi": _gnorm(d_star, 5, m) / _gnorm(star, 4, m),
        "phi_wedge_psi": F.wedge_packed(phi, psi, 3, 4)[:, 0] / vol,
        "phi_wedge_psi_predicted": (3 + 4 * c.r ** 2) / c.r ** (4 / 3),
        "psi_minus_star_phi": _gnorm(psi - star, 4, m) / _gnorm(star, 4, m),
        "metric_vs_closed_form": (m.g - g_cf).abs().flatten(1).amax(-1) / m.g.abs().flatten(1).amax(-1),
        "orientation": m.orientation,
        "r": c.r,
    }


# ---------------------------------------------------------------- learning (supervised, as the seed)
TASKS = {"3form": F.n_components(3), "metric": F.DIM * (F.DIM + 1) // 2}
_TRIU = torch.triu_indices(F.DIM, F.DIM)


def metric_to_vector(g: torch.Tensor) -> torch.Tensor:
    """Upper triangle (i <= j, row major) of symmetric metrics: (batch, 7, 7) -> (batch, 28)."""
    return g[:, _TRIU[0], _TRIU[1]]


def vector_to_metric(v: torch.Tensor) -> torch.Tensor:
    """(batch, 28) -> symmetric (batch, 7, 7), inverse of metric_to_vector (a fixed 28 x 49 matrix)."""
    S = torch.zeros(len(_TRIU[0]), F.DIM * F.DIM, dtype=v.dtype, device=v.device)
    rows = torch.arange(len(_TRIU[0]), device=v.device)
    S[rows, _TRIU[0] * F.DIM + _TRIU[1]] = 1
    S[rows, _TRIU[1] * F.DIM + _TRIU[0]] = 1
    return (v @ S).reshape(-1, F.DIM, F.DIM)


@dataclass(frozen=True)
class TrainConfig:
    """Supervised regression of phi (35 packed components) and g (28 components) on chart points."""
    n_points: int = 4096
    epochs: int = 100
    batch_size: int = 256
    width: int = 64
    depth: int = 3
    lr: float = 3e-3
    val_fraction: float = 0.125
    seed: int = 0
    kappa: float = 1.0
    normalisation: str = "holomorphic"
    tasks: tuple = ("3form", "metric")

    def __post_init__(self):
        for name in ("n_points", "epochs", "batch_size", "width", "depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr!r}")
        if not 0 < self.val_fraction < 1 or int(self.n_points * self.val_fraction) < 1 \
                or self.n_points - int(self.n_points * self.val_fraction) < 1:
            raise ValueError(f"TrainConfig.val_fraction={self.val_fraction!r} leaves no training or "
                             f"validation points out of n_points={self.n_points}")
        bad = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or bad or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"TrainConfig.tasks must be distinct names from {tuple(TASKS)}, got {self.tasks!r}")
        self.structure                                   # validates kappa and normalisation

    @property
    def structure(self) -> LinkStructure:
        return LinkStructure(kappa=float(self.kappa), normalisation=self.normalisation)


class LinkMLP(torch.nn.Module):
    """Chart point x (batch, 7) -> (batch, n_out) by a tanh MLP on the features (cos theta, sin theta,
    Re/Im w_a^k for k = 1..5): powers of the affine coordinates, the monomials the quintic is built of
    (they fit phi about twice as well as raw coordinates in a small comparison). Outputs are
    de-standardised by the training targets' mean and std (buffers, saved with the weights)."""
    POWERS = Qn.DEGREE

    def __init__(self, n_out: int, width: int = 64, depth: int = 3):
        super().__init__()
        layers, n_in = [], 2 + 2 * Qn.DIM_C * self.POWERS
        for _ in range(depth):
            layers += [torch.nn.Linear(n_in, width), torch.nn.Tanh()]
            n_in = width
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(n_in, n_out))
        self.register_buffer("y_mean", torch.zeros(n_out))
        self.register_buffer("y_std", torch.ones(n_out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.complex(x[:, 1::2], x[:, 2::2])
        pw = torch.cat([w ** k for k in range(1, self.POWERS + 1)], -1)
        return torch.cat([torch.cos(x[:, :1]), torch.sin(x[:, :1]), pw.real, pw.imag], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.y_mean + self.y_std * self.net(self.features(x))


def training_data(config: TrainConfig) -> dict:
    """Chart points and analytic targets (float64): x (n, 7), 3form (n, 35), metric (n, 28) with g = g(phi)."""
    x = sample_chart(config.n_points, seed=config.seed)
    phi, _ = phi_psi_packed(x, config.structure)
    return {"x": x, "3form": phi, "metric": metric_to_vector(g2.metric_data_packed(phi).g)}


def train(config: TrainConfig, root: str | Path = DEFAULT_RUNS, progress: bool = False) -> Path:
    """Fit one LinkMLP per task in float32 (Adam, MSE on standardised targets); save a new numbered run.

    The run folder holds config.json, <task>.pt (state dicts) and history.csv (per-epoch losses).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = training_data(config)
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(config.n_points, generator=gen, device="cpu")
    n_val = int(config.n_points * config.val_fraction)
    val, tr = perm[:n_val], perm[n_val:]
    x = data["x"].float()
    models, history = {}, []
    for task in config.tasks:
        torch.manual_seed(config.seed)
        y = data[task].float()
        with torch.device(x.device):             # the network where its training data live
            model = LinkMLP(TASKS[task], config.width, config.depth)
        model.y_mean.copy_(y[tr].mean(0))
        model.y_std.copy_(y[tr].std(0).clamp_min(1e-6))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
        scale = model.y_std
        for epoch in tqdm(range(config.epochs), desc=f"links {task}", disable=not progress):
            order = tr[torch.randperm(len(tr), generator=gen, device="cpu").to(tr.device)]
            total = 0.0
            for i in range(0, len(order), config.batch_size):
                idx = order[i: i + config.batch_size]
                loss = (((model(x[idx]) - y[idx]) / scale) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            with torch.no_grad():
                vloss = float((((model(x[val]) - y[val]) / scale) ** 2).mean())
            if not math.isfinite(total):
                raise ValueError(f"training of {task} diverged at epoch {epoch} (non-finite loss); lower lr")
            history.append({"task": task, "epoch": epoch, "train_mse": total / len(tr), "val_mse": vloss})
        models[task] = model
    run = R.new_run(root)
    for task, model in models.items():
        torch.save(model.state_dict(), run / f"{task}.pt")
    cfg = asdict(config)
    cfg["tasks"] = list(config.tasks)
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    pd.DataFrame(history).to_csv(run / "history.csv", index=False)
    return run


def load_run(run=None, root: str | Path = DEFAULT_RUNS) -> tuple[Path, TrainConfig, dict]:
    """(run folder, config, {task: LinkMLP in float64}) of a numbered run (latest by default)."""
    path = R.resolve_run(run, root)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{path} has no config.json: not a links run")
    raw = json.loads(cfg_file.read_text())
    known = {f.name for f in fields(TrainConfig)}
    raw = {k: (tuple(v) if k == "tasks" else v) for k, v in raw.items() if k in known}
    config = TrainConfig(**raw)
    models = {}
    for task in config.tasks:
        file = path / f"{task}.pt"
        if not file.is_file():
            raise ValueError(f"run {path.name} lacks the {task} model ({file.name})")
        with torch.device("cpu"):                # loaded with map_location="cpu" below
            model = LinkMLP(TASKS[task], config.width, config.depth)
        try:
            model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        except (RuntimeError, EOFError, OSError) as err:
            raise ValueError(f"cannot load {file}: {err}") from err
        models[task] = model.double().eval()
    return path, config, models


# ---------------------------------------------------------------- analysis of analytic and learned fields
def identity_residuals(phi_psi_fn, g_fn, x: torch.Tensor, method: str = "autograd") -> dict:
    """Component-wise residuals of the seed's identities for a field x -> (phi, psi) packed.

    g_fn(x, phi) -> (batch, 7, 7) is the metric used for vol_g. Returns per point:
      phi_wedge_psi (batch,) = (phi ^ psi) / vol_g - 7,
      d_psi (batch, 21)      = components of d psi,
      d_phi_minus_omega2 (batch, 35) = components of d phi - omega ^ omega,
    and the reference scales rms_psi, rms_omega2 (root mean square components over the batch).
    """
    def field(y):
        phi, psi = phi_psi_fn(y)
        return phi, psi, chart_forms(y).omega

    (phi, psi, omega), jac = value_and_jacobian(field, x, method)
    d_phi, d_psi = F.d_from_jacobian(jac[0], 3), F.d_from_jacobian(jac[1], 4)
    om2 = F.wedge_packed(omega, omega, 2, 2)
    g = g_fn(x, phi)
    vol = torch.linalg.det(g).clamp_min(0).sqrt()
    return {
        "phi_wedge_psi": F.wedge_packed(phi, psi, 3, 4)[:, 0] / vol - 7,
        "d_psi": d_psi,
        "d_phi_minus_omega2": d_phi - om2,
        "rms_psi": float(psi.detach().pow(2).mean().sqrt()),
        "rms_omega2": float(om2.detach().pow(2).mean().sqrt()),
    }


def _labels(k: int, prefix: str) -> list[str]:
    return [prefix + "".join(map(str, I)) for I in F.combos(k)]


def analyse(models: dict, structure: LinkStructure, x: torch.Tensor, method: str = "autograd"):
    """Tables (pandas) comparing the analytic structure with the learned fields at chart points x.

    Fields: 'analytic' (phi, psi = omega^2/2 - eta ^ Im Omega, g = g(phi)), 'analytic_star' (psi = *phi),
    'learned' (phi_NN, psi = *_{g(phi_NN)} phi_NN, g = g_NN when a metric model exists, else g(phi_NN)).
    Returns (summary, components, residuals): summary has one row per (field, check) with mean and max
    of |error| and the error relative to the reference scale; components has one row per (field, check,
    component); residuals holds the raw per-point arrays for plots.
    """
    import pandas as pd

    check_chart(x)
    exact = lambda y: phi_psi_packed(y, structure)

    def star(y):
        phi = exact(y)[0]
        return phi, g2.psi_packed(phi, check=False)

    g_of_phi = lambda y, phi: g2.metric_data_packed(phi).g
    fields_ = {"analytic": (exact, g_of_phi), "analytic_star": (star, g_of_phi)}
    extra = {}
    if "3form" in models:
        net = models["3form"]

        def learned(y):
            phi = net(y)
            return phi, g2.psi_packed(phi, check=False)

        g_fn = g_of_phi
        if "metric" in models:
            g_fn = lambda y, phi: vector_to_metric(models["metric"](y))
        fields_["learned"] = (learned, g_fn)
        with torch.no_grad():
            phi_true = exact(x)[0]
            extra["phi_fit"] = (net(x) - phi_true, float(phi_true.pow(2).mean().sqrt()))
            if "metric" in models:
                g_true = metric_to_vector(g2.metric_data_packed(phi_true).g)
                extra["metric_fit"] = (models["metric"](x) - g_true, float(g_true.pow(2).mean().sqrt()))
    rows, comp_rows, residuals = [], [], {}
    for name, (fn, g_fn) in fields_.items():
        res = identity_residuals(fn, g_fn, x, method)
        residuals[name] = res
        for check, ref, k, prefix in (("phi_wedge_psi", 7.0, None, None),
                                      ("d_psi", res["rms_psi"], 5, "dpsi_"),
                                      ("d_phi_minus_omega2", res["rms_omega2"], 4, "dphi-w2_")):
            err = res[check].detach().abs()
            rows.append({"field": name, "check": check, "mean_abs": float(err.mean()),
                         "max_abs": float(err.max()), "reference_scale": ref,
                         "max_relative": float(err.max()) / ref})
            if k is not None:
                for lab, col in zip(_labels(k, prefix), err.T):
                    comp_rows.append({"field": name, "check": check, "component": lab,
                                      "mean_abs": float(col.mean()), "max_abs": float(col.max())})
    for check, (err, ref) in extra.items():
        residuals["learned"][check] = err
        labels = _labels(3, "phi_") if check == "phi_fit" else \
            [f"g_{i}{j}" for i, j in zip(_TRIU[0].tolist(), _TRIU[1].tolist())]
        e = err.abs()
        rows.append({"field": "learned", "check": check, "mean_abs": float(e.mean()),
                     "max_abs": float(e.max()), "reference_scale": ref, "max_relative": float(e.max()) / ref})
        for lab, col in zip(labels, e.T):
            comp_rows.append({"field": "learned", "check": check, "component": lab,
                              "mean_abs": float(col.mean()), "max_abs": float(col.max())})
    return pd.DataFrame(rows), pd.DataFrame(comp_rows), residuals


def plot_residuals(residuals: dict, path: str | Path) -> Path:
    """Histograms of log10 pointwise errors (|phi^psi/vol - 7|, max |d psi_I|, max |(d phi - omega^2)_I|)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checks = ("phi_wedge_psi", "d_psi", "d_phi_minus_omega2")
    fig, axes = plt.subplots(1, len(checks), figsize=(4.2 * len(checks), 3.4))
    for ax, check in zip(axes, checks):
        for name, res in residuals.items():
            e = res[check].detach().abs()
            e = e if e.ndim == 1 else e.amax(-1)
            ax.hist(torch.log10(e.clamp_min(1e-18)).numpy(), bins=40, alpha=0.55, label=name)
        ax.set_title(check)
        ax.set_xlabel("log10 |error| per point")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- command line
def _sample(args) -> int:
    structure = LinkStructure(kappa=args.kappa, normalisation=args.normalisation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = sample_chart(args.n, seed=args.seed)
    phi, psi = phi_psi_packed(x, structure)
    c = chart_forms(x, structure)
    qs = Qn.sample_projections(args.volume_draws, seed=args.seed)
    vol, se = qs.integral()
    kappa_m, kappa_se = kappa_volume_matched(args.volume_draws, seed=args.seed + 1)
    checks = structure_checks(x[: args.n_checks], structure)
    summary = {
        "n_points": args.n, "structure": asdict(structure),
        "fs_volume_exact": Qn.fs_volume_quintic(),
        "fs_volume_projection_estimate": vol, "fs_volume_standard_error": se,
        "fs_volume_deviation_in_se": (vol - Qn.fs_volume_quintic()) / se,
        "kappa_volume_matched": kappa_m, "kappa_volume_matched_se": kappa_se,
        "sigma_fubini_study": Qn.sigma_measure(qs),
        "r_min": float(c.r.min()), "r_mean": float(c.r.mean()), "r_max": float(c.r.max()),
        "min_angle_to_chart_cut": float(angle_to_cut(x).min()),
        "checks_on_points": len(checks["r"]),
        **{f"max_{k}": float(v.abs().max()) for k, v in checks.items() if k not in ("r", "orientation")},
    }
    torch.save({"x": x, "phi": phi, "psi": psi, "omega": c.omega, "eta": c.eta,
                "g": g2.metric_data_packed(phi).g, "r": c.r}, out / "link_samples.pt")
    (out / "link_sample_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.n} chart points of the quintic link -> {out / 'link_samples.pt'}")
    print(f"FS volume of Q: projection sampler {vol:.5f} +- {se:.5f} vs exact 5 pi^3/3! = "
          f"{Qn.fs_volume_quintic():.5f} ({summary['fs_volume_deviation_in_se']:+.2f} se)")
    print(f"|Omega| ratio r (kappa={structure.kappa:g}, {structure.normalisation}): min {summary['r_min']:.4f} "
          f"mean {summary['r_mean']:.4f} max {summary['r_max']:.4f}; volume-matched kappa = "
          f"{kappa_m:.5f} +- {kappa_se:.5f}")
    print(f"sigma measure of the Fubini-Study metric (0 for Ricci-flat): {summary['sigma_fubini_study']:.4f}")
    print(f"closest approach of the points to the chart's branch cut: {summary['min_angle_to_chart_cut']:.3f} rad")
    for k in ("d_omega", "d_eta_minus_omega", "d_phi_minus_omega2", "d_psi", "psi_minus_star_phi",
              "metric_vs_closed_form"):
        print(f"  max {k:22s} {summary['max_' + k]:.3e}   on {summary['checks_on_points']} points")
    return 0


def _train(args) -> int:
    config = TrainConfig(n_points=args.n, epochs=args.epochs, batch_size=args.batch_size, width=args.width,
                         depth=args.depth, lr=args.lr, seed=args.seed, kappa=args.kappa,
                         normalisation=args.normalisation, tasks=tuple(args.tasks))
    run = train(config, root=args.root, progress=args.progress)
    import pandas as pd
    hist = pd.read_csv(run / "history.csv")
    last = hist.groupby("task").tail(1)
    print(f"trained {', '.join(config.tasks)} on {config.n_points} points, {config.epochs} epochs -> {run}")
    for _, row in last.iterrows():
        print(f"  {row['task']:7s} final train mse {row['train_mse']:.3e}  val mse {row['val_mse']:.3e} "
              "(standardised units)")
    return 0


def _validate(args) -> int:
    path, config, models = load_run(args.run, args.root)
    x = sample_chart(args.n, seed=args.seed)
    summary, components, residuals = analyse(models, config.structure, x, method=args.method)
    summary.to_csv(path / "validation_summary.csv", index=False)
    components.to_csv(path / "validation_components.csv", index=False)
    fig = plot_residuals(residuals, Path(args.plots) / f"links_identities_{path.name}.png")
    import pandas as pd
    with pd.option_context("display.width", 140, "display.float_format", "{:.3e}".format):
        print(f"G2 identities on {args.n} chart points ({args.method} derivatives), run {path.name}:")
        print(summary.to_string(index=False))
    print(f"tables -> {path / 'validation_summary.csv'}, {path / 'validation_components.csv'}; figure -> {fig}")
    return 0


def main(argv=None) -> int:
    """python -m k7lib links {sample,train,validate,ricci} [options]."""
    parser = argparse.ArgumentParser(prog="python -m k7lib links", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def structure_args(p):
        p.add_argument("--kappa", type=float, default=1.0, help="constant factor of Omega (default 1)")
        p.add_argument("--normalisation", choices=NORMALISATIONS, default="holomorphic")

    p = sub.add_parser("sample", help="chart points, analytic forms, FS volume check")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--volume-draws", type=int, default=4000, help="projection draws for the volume check")
    p.add_argument("--n-checks", type=int, default=64, help="points for the exact-derivative checks")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    structure_args(p)
    p = sub.add_parser("train", help="fit phi and g networks (new numbered run)")
    p.add_argument("--n", type=int, default=TrainConfig.n_points)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--root", default=str(DEFAULT_RUNS))
    p.add_argument("--progress", action="store_true")
    structure_args(p)
    p = sub.add_parser("validate", help="G2 identities of a trained run beside the analytic ones")
    p.add_argument("--run", default=None, help="run number or name (default: latest)")
    p.add_argument("--root", default=str(DEFAULT_RUNS))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1, help="seed of the evaluation points")
    p.add_argument("--method", choices=METHODS, default="autograd")
    p.add_argument("--plots", default=str(DEFAULT_PLOTS))
    from . import ricci_flat
    ricci_flat.add_arguments(sub.add_parser("ricci", help="learned Ricci-flat metric on Q and the link's G2 "
                                                          "structure from it (k7lib.ricci_flat)"))
    args = parser.parse_args(argv)
    return {"sample": _sample, "train": _train, "validate": _validate,
            "ricci": ricci_flat.run_cli}[args.command](args)

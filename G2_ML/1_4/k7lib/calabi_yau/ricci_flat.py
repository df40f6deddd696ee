"""A learned Ricci-flat Kahler metric on the Fermat quintic Q and the link's G2 structure built from it.

Kahler potential correction (the "phi-model" ansatz of Larfors, Lukas, Ruehle and Schneider,
arXiv:2111.01436, Sec. 3; Douglas et al., hep-th/0612075, for the Monge-Ampere formulation):
  omega_NN = omega_FS + (i/2) d dbar phi_NN,     h_NN = h_FS + d_a dbar_b phi_NN   (3 x 3 Hermitian),
with omega = (i/2) h_ab dw^a ^ dwbar^b in the affine coordinates w of a patch of Q (`quintic`). phi_NN is
a real function on CP^4 because its network reads only the projectively invariant Hermitian matrix
u_ij = z_i zbar_j / |z|^2 (and powers of its diagonal, `invariant_features`); omega_NN is then a globally defined closed (1,1)-form in the class of omega_FS
(same volume vol(Q) = 5 pi^3/3!), on every patch, with no transition conditions to learn.

d dbar exactly. Z(w) is holomorphic, so for any f on C^5, d_a dbar_b f(Z(w)) = sum_ij dZ_a^i (d_i dbar_j f)
conj(dZ_b^j): the holomorphic second derivatives of Z never enter. It is therefore enough to move along
the real directions of the affine coordinates w_a = s_a + i t_a at first order, z = Z + sum_a w_a dZ_a, and
take the real Hessian H of f in (s, t) with torch.func (jacfwd of jacrev):
  d_a dbar_b f = (1/4) [H_ss + H_tt + i (H_st - H_ts)]_ab,     d_a f = (1/2) [d_s - i d_t]_a f.

Monge-Ampere. Ricci-flat in the class <=> omega^3/3! = c (i/8) Omega ^ Omegabar with the constant fixed by
the volumes, c = V_K / V_Omega (V_K = int omega^3/3!, V_Omega = int (i/8) Omega ^ Omegabar); in a patch
det h / |Omega|^2 = V_K / V_Omega with |Omega|^2 = |dp/dz_e|^{-2}. The loss is the FS-weighted mean of
|1 - (V_Omega/V_K) det h_NN / |Omega|^2| over the training points, with V_Omega/V_K estimated once on
them, plus a penalty on eigenvalues of h_FS^{-1} h_NN below a floor (positivity safeguard).
Quality is cymetric's sigma measure (`quintic.sigma_measure`) on fresh samples.

The link (`links`). On L -> Q, with eta the contact form of the FS structure (d eta = omega_FS) and
Omega = kappa dw1 ^ dw2 ^ dw3 / (dp/dz4) (holomorphic, closed):
  phi = eta' ^ omega_NN + Re Omega,       psi = omega_NN^2/2 - eta' ^ Im Omega,
with eta' = eta (FS contact form) or, with `correct_eta`, eta' = eta + (1/4) d^c phi_NN, d^c = i (dbar - d),
i.e. eta' = eta + (1/2) Im(d_a phi_NN dw^a), for which d eta' = omega_FS + (i/2) d dbar phi_NN = omega_NN.
Exactly (to round-off): d omega_NN = 0 and d psi = 0 in both cases (omega_FS ^ Omega = 0 by type);
d phi = omega_NN ^ d eta' is omega_NN^2 only with the corrected eta. psi = *phi and phi ^ psi = 7 vol hold
where r = |Omega|_{omega_NN} = 1 (`calabi_yau.link` module docstring: phi ^ psi / vol = (3 + 4 r^2)/r^{4/3}), i.e.
only as well as the Monge-Ampere equation is solved; with the volume-matched kappa, r = 1 everywhere is
exactly the Ricci-flat condition.

Command line: `python -m k7lib links ricci [options]` (`cli`, calling `fit_run`) trains, reports sigma
on fresh samples and the link's identities, and saves a numbered run under runs/ricci.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.func import jacfwd, jacrev, vmap

from .. import forms as F
from .. import g2
from ..derivatives import check_method, value_and_jacobian
from ..learn import runs as R
from ..learn.fit import fit
from . import link as Lk
from . import quintic as Qn
from .link_chart import link_points

DEFAULT_RUNS = R.PACKAGE_ROOT / "runs" / "ricci"
_TRIU = torch.triu_indices(Qn.N_HOMOG, Qn.N_HOMOG, 1)


# ---------------------------------------------------------------- the potential
def invariant_features(z: torch.Tensor, powers: int = Qn.DEGREE) -> torch.Tensor:
    """Projectively invariant real features of z (*batch, 5) complex -> (*batch, 25 + 5 (powers - 1)).

    u_ij = z_i zbar_j / |z|^2 (Hermitian, invariant under z -> lambda z): its real diagonal (5), the real
    and imaginary parts of the entries above it (10 + 10), then the powers u_ii^k, k = 2..powers, of the
    diagonal: the invariant monomials |z_i|^{2k}/|z|^{2k} of Donaldson's degree-k algebraic metrics that
    the phase symmetries z_i -> e^{2 pi i m/5} z_i of the Fermat quintic keep (powers = 5, the degree, by
    default: without them the tiny networks of the tests did not learn the correction in their step budget).
    """
    u = z[..., :, None] * z.conj()[..., None, :] / z.abs().pow(2).sum(-1)[..., None, None]
    off = u[..., _TRIU[0], _TRIU[1]]
    diag = torch.diagonal(u, dim1=-2, dim2=-1).real
    return torch.cat([diag, off.real, off.imag] + [diag ** k for k in range(2, powers + 1)], -1)


def n_features(powers: int = Qn.DEGREE) -> int:
    """Length of `invariant_features`: 25 entries of u and 5 (powers - 1) diagonal powers."""
    return Qn.N_HOMOG * Qn.N_HOMOG + Qn.N_HOMOG * (powers - 1)


class KahlerPotential(torch.nn.Module):
    """phi_NN(z): a tanh MLP of `invariant_features`, (*batch, 5) complex -> (*batch,) real.

    The last layer starts at zero, so phi_NN = 0 and omega_NN = omega_FS exactly at initialisation.
    """

    def __init__(self, width: int = 64, depth: int = 3, powers: int = Qn.DEGREE):
        super().__init__()
        for name, v in (("width", width), ("depth", depth), ("powers", powers)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KahlerPotential.{name} must be a positive integer, got {v!r}")
        self.powers = powers
        layers, n_in = [], n_features(powers)
        for _ in range(depth):
            layers += [torch.nn.Linear(n_in, width), torch.nn.Tanh()]
            n_in = width
        last = torch.nn.Linear(n_in, 1)
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        self.net = torch.nn.Sequential(*layers, last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(invariant_features(z, self.powers))[..., 0]


def _check_potential(potential):
    if potential is not None and not callable(potential):
        raise ValueError(f"potential must be None or a callable z (batch, 5) complex -> (batch,) real, "
                         f"got {type(potential).__name__}")


def _in_dtype(potential, dtype: torch.dtype):
    """A module's copy in the real dtype matching `dtype` (real or complex); the original is left as it is."""
    if not isinstance(potential, torch.nn.Module):
        return potential
    real = torch.empty((), dtype=dtype).real.dtype
    p = next(iter(potential.parameters()), None)
    if p is None or p.dtype == real:
        return potential
    return copy.deepcopy(potential).to(real)


# ---------------------------------------------------------------- d dbar by torch.func
def ddbar(potential, Z: torch.Tensor, dZ: torch.Tensor, with_gradient: bool = False):
    """d_a dbar_b f and (optionally) d_a f of f = potential(z) pulled back by a holomorphic frame.

    potential: callable z (*batch, 5) complex -> (*batch,) real, pointwise (it is called on single points
    inside vmap). Z (batch, 5) complex point, dZ (batch, 3, 5) its derivatives in the affine coordinates
    (`quintic.affine_frame`). Returns the Hermitian matrix (batch, 3, 3) complex, and with with_gradient
    also (batch, 3) complex d_a f. Formulas in the module docstring; exact, not finite differences.
    """
    _check_potential(potential)
    if not (torch.is_complex(Z) and torch.is_complex(dZ) and Z.ndim == 2 and dZ.ndim == 3
            and Z.shape[-1] == Qn.N_HOMOG and dZ.shape[1:] == (Qn.DIM_C, Qn.N_HOMOG) and len(Z) == len(dZ)):
        raise ValueError(f"ddbar needs complex Z (batch, 5) and dZ (batch, 3, 5), got {tuple(Z.shape)} "
                         f"{Z.dtype} and {tuple(dZ.shape)} {dZ.dtype}")
    nd = Qn.DIM_C

    def f(t, Zr, dZr):
        # torch.func takes real tensors: the complex point travels as its real view
        z = torch.view_as_complex(Zr) + torch.complex(t[:nd], t[nd:]) @ torch.view_as_complex(dZr)
        return potential(z)

    def hess_grad(t, Zr, dZr):
        g = jacrev(f)(t, Zr, dZr)
        return g, g

    t0 = torch.zeros(len(Z), 2 * nd, dtype=Z.real.dtype, device=Z.device)
    H, grad = vmap(jacfwd(hess_grad, has_aux=True))(t0, torch.view_as_real(Z), torch.view_as_real(dZ))
    hss, htt, hst, hts = H[:, :nd, :nd], H[:, nd:, nd:], H[:, :nd, nd:], H[:, nd:, :nd]
    h = 0.25 * torch.complex(hss + htt, hst - hts)
    if not with_gradient:
        return h
    return h, 0.5 * torch.complex(grad[:, :nd], -grad[:, nd:])


@dataclass(frozen=True)
class KahlerData:
    """Per point of Q in its patch: h (batch, 3, 3) of omega_NN, h_fs of omega_FS, |Omega|^2 = |dp/dz_e|^{-2}."""
    h: torch.Tensor
    h_fs: torch.Tensor
    omega2: torch.Tensor

    @property
    def volume_ratio(self) -> torch.Tensor:
        """omega_NN^3 / omega_FS^3 = det h / det h_fs, (batch,) (patch independent)."""
        return torch.linalg.det(self.h).real / torch.linalg.det(self.h_fs).real

    @property
    def r2(self) -> torch.Tensor:
        """((i/8) Omega ^ Omegabar) / (omega_NN^3/3!) = |Omega|^2 / det h, (batch,)."""
        return self.omega2 / torch.linalg.det(self.h).real

    @property
    def relative_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of h_fs^{-1} h (batch, 3), ascending: all > 0 iff omega_NN is positive."""
        L = torch.linalg.cholesky(self.h_fs)
        Li = torch.linalg.solve_triangular(L, torch.eye(Qn.DIM_C, dtype=L.dtype, device=L.device).expand_as(L),
                                           upper=False)
        return torch.linalg.eigvalsh(Li @ self.h @ Li.conj().transpose(-1, -2))


def kahler_data(z: torch.Tensor, potential=None) -> KahlerData:
    """h_NN = h_FS + d dbar phi_NN at points z (batch, 5) of Q, each in its own patch (`quintic.choose_patch`).

    potential None (or identically zero) gives the Fubini-Study metric exactly.
    """
    Qn.check_on_quintic(z)
    _check_potential(potential)
    scale, elim = Qn.choose_patch(z)
    Z, dZ, de = Qn.affine_frame(z, scale, elim)
    h_fs = Qn.fs_hermitian(Z, dZ)
    h = h_fs if potential is None else h_fs + ddbar(_in_dtype(potential, Z.dtype), Z, dZ)
    return KahlerData(h=h, h_fs=h_fs, omega2=1 / de.abs().pow(2))


def sigma_measure(sample: Qn.QuinticSample, potential=None) -> float:
    """cymetric's sigma of omega_NN on a sample of Q (`quintic.sigma_measure` with v = det h_NN / det h_FS)."""
    if potential is None:
        return Qn.sigma_measure(sample)
    with torch.no_grad():
        v = kahler_data(sample.z, potential).volume_ratio
    return Qn.sigma_measure(sample, v)


def sigma_table(potential, n: int, seeds=(101, 102, 103), method: str = "lines"):
    """sigma of omega_FS and omega_NN on len(seeds) fresh independent samples of n points: a pandas table.

    One row per seed (sigma_fs, sigma_nn, MA residual means) and the summary (mean, std over seeds) in
    `table.attrs`. method 'lines' or 'projections' (`quintic` samplers; the latter gives 5 n points).
    """

    samplers = {"lines": Qn.sample_lines, "projections": Qn.sample_projections}
    if method not in samplers:
        raise ValueError(f"unknown sampler {method!r}; choose one of {tuple(samplers)}")
    if not seeds:
        raise ValueError("sigma_table needs at least one seed")
    rows = []
    for seed in seeds:
        s = samplers[method](n, seed=int(seed))
        with torch.no_grad():
            kd = kahler_data(s.z, potential)
        kd_fs = KahlerData(h=kd.h_fs, h_fs=kd.h_fs, omega2=kd.omega2)
        rows.append({"seed": int(seed), "n_points": len(s.z),
                     "sigma_fs": Qn.sigma_measure(s), "sigma_nn": Qn.sigma_measure(s, kd.volume_ratio),
                     "ma_fs": monge_ampere_residual(kd_fs, s.weights), "ma_nn": monge_ampere_residual(kd, s.weights),
                     "min_relative_eigenvalue": float(kd.relative_eigenvalues.min())})
    table = pd.DataFrame(rows)
    for col in ("sigma_fs", "sigma_nn", "ma_fs", "ma_nn"):
        table.attrs[col] = (float(table[col].mean()), float(table[col].std()) if len(table) > 1 else float("nan"))
    return table


def monge_ampere_residual(kd: KahlerData, weights: torch.Tensor) -> float:
    """FS-weighted mean of |1 - (V_Omega/V_K) det h / |Omega|^2| with both volumes estimated on the points."""
    v = kd.volume_ratio
    ratio = (weights * kd.r2 * v).sum() / (weights * v).sum()          # V_Omega / V_K
    return float((weights * (1 - ratio / kd.r2).abs()).sum() / weights.sum())


# ---------------------------------------------------------------- training
@dataclass(frozen=True)
class RicciConfig:
    """Monge-Ampere training of phi_NN on line-sampled points of Q (float32), evaluated in float64."""
    n_train: int = 4000
    epochs: int = 30
    batch_size: int = 100
    width: int = 64
    depth: int = 3
    powers: int = Qn.DEGREE             # diagonal powers u_ii^k, k <= powers, among the features
    lr: float = 2e-3
    seed: int = 0
    positivity_floor: float = 0.05      # eigenvalues of h_FS^{-1} h_NN below this are penalised
    positivity_weight: float = 1.0
    max_seconds: float = 0.0            # > 0: also stop after this much wall-clock training time

    def __post_init__(self):
        for name in ("n_train", "epochs", "batch_size", "width", "depth", "powers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RicciConfig.{name} must be a positive integer, got {v!r}")
        for name, ok in (("lr", lambda v: v > 0), ("positivity_floor", lambda v: 0 <= v < 1),
                         ("positivity_weight", lambda v: v >= 0), ("max_seconds", lambda v: v >= 0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)):
                raise ValueError(f"RicciConfig.{name} is out of range: {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"RicciConfig.seed must be an integer, got {self.seed!r}")


def training_points(config: RicciConfig, dtype=torch.float32) -> dict:
    """Fixed per-point data of the training sample: frame, FS Cholesky inverse, r^2_FS, weights, V_Omega/V_K."""
    s = Qn.sample_lines(config.n_train, seed=config.seed)
    scale, elim = Qn.choose_patch(s.z)
    Z, dZ, de = Qn.affine_frame(s.z, scale, elim)
    h_fs = Qn.fs_hermitian(Z, dZ)
    r2 = 1 / de.abs().pow(2) / torch.linalg.det(h_fs).real
    ratio = s.integral(r2)[0] / s.integral()[0]                               # V_Omega / V_K
    L = torch.linalg.cholesky(h_fs)
    Li = torch.linalg.solve_triangular(L, torch.eye(Qn.DIM_C, dtype=L.dtype, device=L.device).expand_as(L), upper=False)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return {"Z": Z.to(cdt), "dZ": dZ.to(cdt), "Li": Li.to(cdt), "r2": r2.to(dtype),
            "w": (s.weights / s.weights.sum()).to(dtype), "ratio": float(ratio)}


def training_loss(potential, Z, dZ, Li, r2, w, ratio: float, floor: float, weight: float):
    """(total, Monge-Ampere term, positivity term) on a batch.

    lam = eigenvalues of Li dd-bar-phi Li^H + 1 (= of h_FS^{-1} h_NN, Li = chol(h_FS)^{-1}), det ratio = prod lam,
    MA = sum_n w_n |1 - ratio * prod(lam_n) / r2_n| (w normalised FS weights),
    positivity = sum_n w_n sum_i relu(floor - lam_ni).
    """
    hc = ddbar(potential, Z, dZ)
    lam = 1 + torch.linalg.eigvalsh(Li @ hc @ Li.conj().transpose(-1, -2))
    wn = w / w.sum()
    ma = (wn * (1 - ratio * lam.prod(-1) / r2).abs()).sum()
    pos = (wn * torch.relu(floor - lam).sum(-1)).sum()
    return ma + weight * pos, ma, pos


def fit_ricci_flat(config: RicciConfig, progress: bool = False):
    """Fit phi_NN (float32; `fit.fit`: Adam, cosine learning rate) to the Monge-Ampere equation.

    Returns (model in float64, history pandas table per epoch, info dict with training_seconds,
    epochs_run and the V_Omega/V_K estimate used).
    """
    data = training_points(config)
    torch.manual_seed(config.seed)
    with torch.device(data["Z"].device):         # the network where its training points live
        model = KahlerPotential(config.width, config.depth, config.powers).float()

    def monge_ampere(idx):
        loss, ma, pos = training_loss(model, data["Z"][idx], data["dZ"][idx], data["Li"][idx], data["r2"][idx],
                                      data["w"][idx], data["ratio"], config.positivity_floor,
                                      config.positivity_weight)
        return {"loss": loss, "monge_ampere": ma, "positivity": pos}

    result = fit(model, monge_ampere, torch.arange(config.n_train, device="cpu"), epochs=config.epochs,
                 batch_size=config.batch_size, lr=config.lr, generator=torch.Generator().manual_seed(config.seed + 1),
                 name="Monge-Ampere training", progress=progress, max_seconds=config.max_seconds)
    info = {"training_seconds": result.seconds, "epochs_run": result.epochs_run,
            "volume_ratio_omega_over_kahler": data["ratio"], "n_parameters": sum(p.numel() for p in model.parameters())}
    return model.double().eval(), result.history, info


# ---------------------------------------------------------------- the link's G2 structure
@dataclass(frozen=True)
class LinkData:
    """Forms at chart points of the link (packed (batch, C(7,k))), built from omega_NN."""
    omega: torch.Tensor        # (batch, 21) omega_NN
    eta: torch.Tensor          # (batch, 7) eta or eta + (1/4) d^c phi_NN
    re_Omega: torch.Tensor     # (batch, 35)
    im_Omega: torch.Tensor     # (batch, 35)
    r: torch.Tensor            # (batch,) |Omega| against omega_NN: sqrt(((i/8) Omega ^ Omegabar)/(omega_NN^3/3!))
    phi: torch.Tensor          # (batch, 35) eta ^ omega_NN + Re Omega
    psi: torch.Tensor          # (batch, 35) omega_NN^2/2 - eta ^ Im Omega


def link_data(x: torch.Tensor, potential=None, kappa: float = 1.0, correct_eta: bool = False) -> LinkData:
    """G2 structure of the link from omega_NN at chart points x (batch, 7) (`links` chart, patch z0 = 1).

    omega_NN = -Im(P^T h_NN Pbar) and eta' = (1/2) dtheta + (1/2) Im((A_a + c d_a phi_NN) dw^a) with
    A_a = d_a log|Z|^2, c = 1 if correct_eta else 0 (module docstring); Omega = kappa dw^123 / (dp/dz4).
    potential None gives exactly `links.chart_forms` / `links.phi_psi_packed` with LinkStructure(kappa).
    """
    _check_potential(potential)
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be a finite positive number, got {kappa!r}")
    Lk.check_chart(x)
    Z, dZ, dp4 = Lk.affine_chart(x)
    h = Qn.fs_hermitian(Z, dZ)
    A = (dZ @ Z.conj()[..., None])[..., 0] / Z.abs().pow(2).sum(-1)[:, None]
    if potential is not None:
        hc, grad = ddbar(_in_dtype(potential, Z.dtype), Z, dZ, with_gradient=True)
        h = h + hc
        if correct_eta:
            A = A + grad
    P = Lk.dw_matrix(F.device_key(x.device)).to(Z.dtype)
    M = P.T @ h @ P.conj()
    omega = F.pack(-M.imag, 2)
    eta = 0.5 * (A[:, :, None] * P).sum(1).imag
    eta = eta + 0.5 * torch.nn.functional.one_hot(torch.zeros_like(x[:, 0], dtype=torch.long), F.DIM).to(x.dtype)
    f = kappa / dp4
    r = f.abs() / torch.linalg.det(h).real.sqrt()
    wr, wi = Lk.holomorphic_volume_packed(F.device_key(x.device), x.dtype)
    re_O = f.real[:, None] * wr - f.imag[:, None] * wi
    im_O = f.real[:, None] * wi + f.imag[:, None] * wr
    phi = F.wedge_packed(eta, omega, 1, 2) + re_O
    psi = 0.5 * F.wedge_packed(omega, omega, 2, 2) - F.wedge_packed(eta, im_O, 1, 3)
    return LinkData(omega=omega, eta=eta, re_Omega=re_O, im_Omega=im_O, r=r, phi=phi, psi=psi)


def link_checks(x: torch.Tensor, potential=None, kappa: float = 1.0, correct_eta: bool = False,
                method: str = "autograd") -> dict:
    """Pointwise residuals (batch,) of the link structure of omega_NN, norms of g(phi) (as `links.structure_checks`).

    Keys: d_omega, d_eta_minus_omega, d_phi_minus_omega2, d_psi (relative norms of the exterior derivatives,
    by torch.func through the potential's Hessian), psi_minus_star_phi (|psi - *phi|/|*phi|),
    phi_wedge_psi ((phi ^ psi)/vol_g, 7 when exact), phi_wedge_psi_predicted ((3 + 4 r^2)/r^{4/3}), r.
    The values keep their autograd graph to the potential's parameters (usable in a loss).
    """
    check_method(method)
    Lk.check_chart(x)
    potential = None if potential is None else _in_dtype(potential, x.dtype)

    def field(y):
        c = link_data(y, potential, kappa, correct_eta)
        return c.omega, c.eta, c.phi, c.psi

    (omega, eta, phi, psi), jac = value_and_jacobian(field, x, method)
    d_omega, d_eta, d_phi, d_psi = (F.d_from_jacobian(j, k) for j, k in zip(jac, (2, 1, 3, 4)))
    m = g2.metric_data_packed(phi)
    star = g2.psi_packed(phi, m)
    om2 = F.wedge_packed(omega, omega, 2, 2)
    r = link_data(x, potential, kappa, correct_eta).r
    n = lambda a, k: Lk.g_norm(a, k, m)
    return {
        "d_omega": n(d_omega, 3) / n(omega, 2),
        "d_eta_minus_omega": n(d_eta - omega, 2) / n(omega, 2),
        "d_phi_minus_omega2": n(d_phi - om2, 4) / n(om2, 4),
        "d_psi": n(d_psi, 5) / n(psi, 4),
        "psi_minus_star_phi": n(psi - star, 4) / n(star, 4),
        "phi_wedge_psi": F.wedge_packed(phi, psi, 3, 4)[:, 0] / (m.orientation * m.det.sqrt()),
        "phi_wedge_psi_predicted": (3 + 4 * r ** 2) / r ** (4 / 3),
        "r": r,
    }


def link_comparison(x: torch.Tensor, potential, kappa: float, method: str = "autograd"):
    """Table (pandas): mean and max of each link check for omega_FS, omega_NN, and omega_NN with corrected eta.

    For phi_wedge_psi and r the error is |value - 7| and |r - 1|.
    """

    rows = []
    for name, pot, corr in (("fubini_study", None, False), ("learned", potential, False),
                            ("learned_eta_corrected", potential, True)):
        chk = link_checks(x, pot, kappa, corr, method)
        for key, v in chk.items():
            if key == "phi_wedge_psi_predicted":
                continue
            e = (v - 7).abs() if key == "phi_wedge_psi" else (v - 1).abs() if key == "r" else v.abs()
            e = e.detach()
            rows.append({"metric": name, "check": key, "mean_abs": float(e.mean()), "max_abs": float(e.max()),
                         "n_points": len(x)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- runs and command line
def load_run(run=None, root: str | Path = DEFAULT_RUNS) -> R.SavedRun:
    """A saved Ricci-flat run (latest by default) by `runs.load_run`: config (RicciConfig) and
    {"potential": KahlerPotential} in float64."""
    return R.load_run(run, root, read=lambda path: R.read_fit(path, RicciConfig, lambda c: ("potential",)),
                      build=lambda c: {"potential": KahlerPotential(c.width, c.depth, c.powers)})


@dataclass(frozen=True)
class RicciRun:
    """A saved Ricci-flat run: its folder, configuration, the JSON summary (training, sigma means and
    spreads, volume-matched kappa), the sigma table per fresh sample and the link's identity table."""
    run: Path
    config: RicciConfig
    summary: dict
    sigma: pd.DataFrame
    link_checks: pd.DataFrame

    def to_dict(self) -> dict:
        return {"run": str(self.run), "config": asdict(self.config), "summary": self.summary}


def fit_run(config: RicciConfig, n_eval: int = 4000, eval_seeds=(101, 102, 103), n_link: int = 64,
            kappa_draws: int = 20000, root: str | Path = DEFAULT_RUNS, progress: bool = False) -> RicciRun:
    """Train, evaluate sigma on fresh samples and the link's G2 identities; save a numbered run.

    The run folder holds potential.pt, config.json, history.csv, sigma.csv, link_checks.csv and
    summary.json.
    """
    for name, v in (("n_eval", n_eval), ("n_link", n_link), ("kappa_draws", kappa_draws)):
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model, history, info = fit_ricci_flat(config, progress=progress)
    table = sigma_table(model, n_eval, tuple(eval_seeds))
    kappa, kappa_se = Lk.kappa_volume_matched(kappa_draws, seed=eval_seeds[0])
    x = link_points(n_link, seed=eval_seeds[0])
    links_table = link_comparison(x, model, kappa)
    run = R.new_run(root)
    torch.save(model.state_dict(), run / "potential.pt")
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2))
    history.to_csv(run / "history.csv", index=False)
    table.to_csv(run / "sigma.csv", index=False)
    links_table.to_csv(run / "link_checks.csv", index=False)
    summary = {**info, "n_eval": n_eval, "eval_seeds": list(eval_seeds),
               **{f"{k}_mean": v[0] for k, v in table.attrs.items()},
               **{f"{k}_std": v[1] for k, v in table.attrs.items()},
               "kappa_volume_matched": kappa, "kappa_volume_matched_se": kappa_se, "kappa_draws": kappa_draws,
               "n_link": n_link}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return RicciRun(run=run, config=config, summary=summary, sigma=table, link_checks=links_table)

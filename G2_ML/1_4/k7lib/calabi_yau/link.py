"""G2 structures on the link L = {z in C^5 : |z| = 1, z0^5 + ... + z4^5 = 0} of the Fermat quintic.

L is a circle bundle over Q (`calabi_yau.quintic`) under z -> [z]. Normalisations (checked by the tests):
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
so that z = e^{i theta} (1, w1, w2, w3, z4) / |(1, w, z4)|. `link_chart.link_points` maps line-sampled points
into the region |w_a| <= |z4| <= 1 of this patch (using the permutation and Z_5 phase symmetries of
the Fermat quintic, which preserve Q, omega_FS and its measure), where |z4| >= 4^{-1/5} and dp/dz4 is
the largest derivative, so the chart is well conditioned there. No branch of z4 is continuous on the
whole region (1 + sum w^5 winds around 0 on it); this one has its cut where 1 + sum w^5 <= 0, which
the region meets only near |w_a| = |z4| = 1 (`angle_to_cut` says how close points come; `calabi_yau.link_chart` holds the chart maps).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from .. import forms as F
from .. import g2
from ..derivatives import check_method, value_and_jacobian
from ..learn import runs as R
from ..learn.fit import fit
from . import quintic as Qn
from .link_chart import affine_chart, angle_to_cut, check_chart, link_points

NORMALISATIONS = ("holomorphic", "pointwise")
DEFAULT_RUNS = R.PACKAGE_ROOT / "runs" / "links"
DEFAULT_OUT = R.OUTPUTS / "links"
DEFAULT_PLOTS = R.OUTPUTS / "plots"


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


# ---------------------------------------------------------------- forms in the chart
@lru_cache(maxsize=None)
def dw_matrix(device: str) -> torch.Tensor:
    """P (3, 7) complex with dw_a = sum_mu P[a, mu] dx^mu."""
    P = torch.zeros(Qn.DIM_C, F.DIM, dtype=torch.complex128, device="cpu")
    for a in range(Qn.DIM_C):
        P[a, 1 + 2 * a], P[a, 2 + 2 * a] = 1, 1j
    return P.to(device)


@lru_cache(maxsize=None)
def holomorphic_volume_packed(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Re and Im of dw1 ^ dw2 ^ dw3 as packed 3-forms (35,) each."""
    P = dw_matrix("cpu")
    re, im = P[0].real.to(dtype), P[0].imag.to(dtype)
    for a in (1, 2):
        cr, ci = P[a].real.to(dtype), P[a].imag.to(dtype)
        k = a
        re, im = (F.wedge_packed(re, cr, k, 1) - F.wedge_packed(im, ci, k, 1),
                  F.wedge_packed(re, ci, k, 1) + F.wedge_packed(im, cr, k, 1))
    return re.to(device), im.to(device)


@dataclass(frozen=True)
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
    Z, dZ, dp4 = affine_chart(x)
    h = Qn.fs_hermitian(Z, dZ)
    P = dw_matrix(F.device_key(x.device)).to(Z.dtype)
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
    wr, wi = holomorphic_volume_packed(F.device_key(x.device), x.dtype)
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
def g_norm(a: torch.Tensor, k: int, m: g2.PhiMetric) -> torch.Tensor:
    """|a|_g of packed k-forms a (batch, C(7,k)) in the metric data m, (batch,)."""
    return F.inner_packed(a, a, k, m.g, m.ginv, m.det).clamp_min(0).sqrt()


def structure_checks(x: torch.Tensor, structure: LinkStructure = DEFAULT, method: str = "autograd") -> dict:
    """Pointwise residuals (batch,) of the analytic structure with exact (or fd) derivatives.

    Norms are those of g(phi). Keys: d_omega (|d omega|/|omega|), d_eta_minus_omega, d_phi_minus_omega2
    (|d phi - omega^2|/|omega^2|), d_psi (|d psi|/|psi|), d_star_phi (|d *phi|/|*phi|), phi_wedge_psi
    ((phi ^ psi)/vol_g), phi_wedge_psi_predicted ((3 + 4 r^2)/r^{4/3}), psi_minus_star_phi
    (|psi - *phi|/|*phi|), metric_vs_closed_form (max |g(phi) - closed form| / max |g|), r.
    """
    check_method(method)
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
        "d_omega": g_norm(d_omega, 3, m) / g_norm(omega, 2, m),
        "d_eta_minus_omega": g_norm(d_eta - omega, 2, m) / g_norm(omega, 2, m),
        "d_phi_minus_omega2": g_norm(d_phi - om2, 4, m) / g_norm(om2, 4, m),
        "d_psi": g_norm(d_psi, 5, m) / g_norm(psi, 4, m),
        "d_star_phi": g_norm(d_star, 5, m) / g_norm(star, 4, m),
        "phi_wedge_psi": F.wedge_packed(phi, psi, 3, 4)[:, 0] / vol,
        "phi_wedge_psi_predicted": (3 + 4 * c.r ** 2) / c.r ** (4 / 3),
        "psi_minus_star_phi": g_norm(psi - star, 4, m) / g_norm(star, 4, m),
        "metric_vs_closed_form": (m.g - g_cf).abs().flatten(1).amax(-1) / m.g.abs().flatten(1).amax(-1),
        "orientation": m.orientation,
        "r": c.r,
    }


# ---------------------------------------------------------------- learning (supervised, as the seed)
TASKS = {"3form": F.n_components(3), "metric": F.DIM * (F.DIM + 1) // 2}
TRIU = torch.triu_indices(F.DIM, F.DIM)


def metric_to_vector(g: torch.Tensor) -> torch.Tensor:
    """Upper triangle (i <= j, row major) of symmetric metrics: (batch, 7, 7) -> (batch, 28)."""
    return g[:, TRIU[0], TRIU[1]]


def vector_to_metric(v: torch.Tensor) -> torch.Tensor:
    """(batch, 28) -> symmetric (batch, 7, 7), inverse of metric_to_vector (a fixed 28 x 49 matrix)."""
    S = torch.zeros(len(TRIU[0]), F.DIM * F.DIM, dtype=v.dtype, device=v.device)
    rows = torch.arange(len(TRIU[0]), device=v.device)
    S[rows, TRIU[0] * F.DIM + TRIU[1]] = 1
    S[rows, TRIU[1] * F.DIM + TRIU[0]] = 1
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
    x = link_points(config.n_points, seed=config.seed)
    phi, _ = phi_psi_packed(x, config.structure)
    return {"x": x, "3form": phi, "metric": metric_to_vector(g2.metric_data_packed(phi).g)}


def fit_link(config: TrainConfig, root: str | Path = DEFAULT_RUNS, progress: bool = False) -> Path:
    """Fit one LinkMLP per task in float32 (`fit.fit`: Adam, cosine rate, MSE on standardised targets);
    save a new numbered run.

    The run folder holds config.json, <task>.pt (state dicts) and history.csv (per-epoch losses).
    """
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
        scale = model.y_std

        def mse(idx):
            return {"loss": (((model(x[idx]) - y[idx]) / scale) ** 2).mean()}

        def validation(epoch, row):
            with torch.no_grad():
                row["val_mse"] = float((((model(x[val]) - y[val]) / scale) ** 2).mean())

        result = fit(model, mse, tr, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                     generator=gen, name=f"training of {task}", progress=progress, after_epoch=validation)
        h = result.history.rename(columns={"loss": "train_mse"})
        h.insert(0, "task", task)
        history.append(h[["task", "epoch", "train_mse", "val_mse"]])
        models[task] = model
    run = R.new_run(root)
    for task, model in models.items():
        torch.save(model.state_dict(), run / f"{task}.pt")
    cfg = asdict(config)
    cfg["tasks"] = list(config.tasks)
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    pd.concat(history, ignore_index=True).to_csv(run / "history.csv", index=False)
    return run


def load_run(run=None, root: str | Path = DEFAULT_RUNS) -> R.SavedRun:
    """A saved links run (latest by default) by `runs.load_run`: config (TrainConfig) and {task: LinkMLP} in float64."""
    return R.load_run(run, root, read=lambda path: R.read_fit(path, TrainConfig, lambda c: c.tasks),
                      build=lambda c: {task: LinkMLP(TASKS[task], c.width, c.depth) for task in c.tasks})


def sample_summary(n: int, seed: int = 0, structure: LinkStructure = DEFAULT, volume_draws: int = 4000,
                   n_checks: int = 64, out: str | Path = DEFAULT_OUT) -> dict:
    """Chart points with the analytic forms (out/link_samples.pt) and their checks (out/link_sample_summary.json).

    The summary holds the FS volume of Q by the projection sampler beside its exact value 5 pi^3/3!,
    the volume-matched kappa, the sigma measure of Fubini-Study, the range of |Omega| ratio r, the
    closest approach to the chart's branch cut and the largest residual of every exact identity.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = link_points(n, seed=seed)
    phi, psi = phi_psi_packed(x, structure)
    c = chart_forms(x, structure)
    qs = Qn.sample_projections(volume_draws, seed=seed)
    vol, se = qs.integral()
    kappa_m, kappa_se = kappa_volume_matched(volume_draws, seed=seed + 1)
    checks = structure_checks(x[:n_checks], structure)
    summary = {
        "n_points": n, "structure": asdict(structure),
        "fs_volume_exact": Qn.fs_volume_quintic(),
        "fs_volume_projection_estimate": vol, "fs_volume_standard_error": se,
        "fs_volume_deviation_in_se": (vol - Qn.fs_volume_quintic()) / se,
        "kappa_volume_matched": kappa_m, "kappa_volume_matched_se": kappa_se,
        "sigma_fubini_study": Qn.sigma_measure(qs),
        "r_min": float(c.r.min()), "r_mean": float(c.r.mean()), "r_max": float(c.r.max()),
        "min_angle_to_chart_cut": float(angle_to_cut(x).min()),
        "checks_on_points": len(checks["r"]),
        **{f"max_{k}": float(v.abs().max()) for k, v in checks.items() if k not in ("r", "orientation")},
        "files": {"samples": str(out / "link_samples.pt"), "summary": str(out / "link_sample_summary.json")},
    }
    torch.save({"x": x, "phi": phi, "psi": psi, "omega": c.omega, "eta": c.eta,
                "g": g2.metric_data_packed(phi).g, "r": c.r}, out / "link_samples.pt")
    (out / "link_sample_summary.json").write_text(json.dumps(summary, indent=2))
    return summary

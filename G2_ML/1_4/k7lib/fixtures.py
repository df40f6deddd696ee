"""Analytic 3-form fields with known torsion (docs/conventions.md §3 fixtures), for tests and the notebook.

(a) phi = F^* phi0 for a diffeomorphism F: torsion-free.
(b) phi = e^{3f} phi0: g = e^{2f} I, tau1 = df, |d phi|^2 = 36 |df|^2_g, |d psi|^2 = 48 |df|^2_g.
(c) phi = A^* phi0 constant: g = A^T A, T = 0.
plus a generic frame field A(x)^* phi0 whose four torsion classes are all non-zero.
All fields map x (batch, 7) to packed 3-forms (batch, 35).
"""
from __future__ import annotations

import pandas as pd
import torch

from . import forms as F
from . import g2
from .torsion import torsion


def random_frame(seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    """I + scale * N(0,1) with det > 0 (float64, (7, 7))."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.eye(7, dtype=torch.float64) + scale * torch.randn(7, 7, generator=gen, dtype=torch.float64)
    if torch.linalg.det(A) < 0:
        A[0] = -A[0]
    return A


def pullback_packed(A: torch.Tensor) -> torch.Tensor:
    """(A^* phi0)_{ijk} = A_ai A_bj A_ck phi0_abc, packed, for A (..., 7, 7)."""
    phi0 = g2.phi0_packed(A.dtype, A.device).expand(*A.shape[:-2], 35)
    return F.transform_packed(phi0, 3, A.transpose(-1, -2))


def conformal_f(x: torch.Tensor):
    """f(x) = 0.3 sin(x0 + 2 x3) + 0.2 cos(2 x5 - x6) for fixture (b), with its gradient (batch, 7)."""
    f = 0.3 * torch.sin(x[:, 0] + 2 * x[:, 3]) + 0.2 * torch.cos(2 * x[:, 5] - x[:, 6])
    c = 0.3 * torch.cos(x[:, 0] + 2 * x[:, 3])
    s = -0.2 * torch.sin(2 * x[:, 5] - x[:, 6])
    zero = torch.zeros_like(c)
    df = torch.stack([c, zero, zero, 2 * c, zero, 2 * s, -s], dim=1)
    return f, df


def conformal_field(x: torch.Tensor) -> torch.Tensor:
    """Fixture (b): e^{3f} phi0."""
    f, _ = conformal_f(x)
    return torch.exp(3 * f)[:, None] * g2.phi0_packed(x.dtype, x.device)


_K = (1.0, -2.0, 1.0, 0.5, 3.0, -1.0, 2.0)
_E = (1.0, 0.5, -0.7, 0.3, 0.2, -0.4, 0.6)


def diffeo_jacobian(x: torch.Tensor, eps: float = 0.15) -> torch.Tensor:
    """DF of F^a(x) = x^a + eps e_a sin(k.x + a): DF^a_i = delta^a_i + eps e_a cos(k.x + a) k_i."""
    k = torch.tensor(_K, dtype=x.dtype, device=x.device)
    e = eps * torch.tensor(_E, dtype=x.dtype, device=x.device)
    c = torch.arange(7, dtype=x.dtype, device=x.device)
    ph = torch.cos(x @ k[:, None] + c)
    return torch.eye(7, dtype=x.dtype, device=x.device) + (e * ph)[:, :, None] * k[None, None, :]


def diffeo_field(x: torch.Tensor) -> torch.Tensor:
    """Fixture (a): F^* phi0, torsion-free."""
    return pullback_packed(diffeo_jacobian(x))


_M1 = random_frame(1, 0.2) - torch.eye(7, dtype=torch.float64)
_M2 = random_frame(2, 0.2) - torch.eye(7, dtype=torch.float64)
_W = torch.tensor([[1.0, 0.0, 2.0, -1.0, 0.0, 1.0, 0.5], [0.0, 1.0, -1.0, 0.0, 2.0, 0.0, -1.0]], dtype=torch.float64)


def generic_field(x: torch.Tensor) -> torch.Tensor:
    """A non-integrable frame field A(x)^* phi0 (times a varying scale): all four torsion classes non-zero."""
    W, M1, M2 = _W.to(x), _M1.to(x), _M2.to(x)
    a, b = torch.sin(x @ W[0]), torch.cos(x @ W[1])
    A = torch.eye(7, dtype=x.dtype, device=x.device) + a[:, None, None] * M1 + b[:, None, None] * M2
    return pullback_packed(A) * (1 + 0.2 * torch.sin(x[:, 2]))[:, None]


def lambda_frame_field(x: torch.Tensor) -> torch.Tensor:
    """A(lambda)^* phi0 with a frame depending on lambda only: a rotation of the (x1, x3) plane by
    0.4 tanh(lambda) and a stretch 1 + 0.3 exp(-lambda^2) of x0. Fibre forms dy^I stay closed and
    co-closed for its metric, forms containing d lambda do not (harmonic extraction reference)."""
    lam = x[:, 0]
    th = 0.4 * torch.tanh(lam)
    c, s = torch.cos(th), torch.sin(th)
    A = torch.eye(7, dtype=x.dtype, device=x.device).repeat(x.shape[0], 1, 1)
    A[:, 1, 1], A[:, 3, 3], A[:, 1, 3], A[:, 3, 1] = c, c, -s, s
    A[:, 0, 0] = 1 + 0.3 * torch.exp(-lam ** 2)
    return F.transform_packed(g2.phi0_packed(x.dtype, x.device).expand(x.shape[0], 35), 3, A)


def fixture_report(n: int = 64, seed: int = 0) -> pd.DataFrame:
    """Errors of the exact fixtures at n random points, float64: autograd to round-off, fd at O(h^2)."""
    x = 2 * torch.rand(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1
    rows = []
    ta = torsion(diffeo_field, x)
    rows.append(("(a) F*phi0: max T", float(ta.T.max()), 0.0))
    tb = torsion(conformal_field, x)
    f, df = conformal_f(x)
    n2 = torch.exp(-2 * f) * (df ** 2).sum(1)
    rows.append(("(b) e^{3f}phi0: max |tau1 - df|", float((tb.tau1 - df).abs().max()), 0.0))
    rows.append(("(b) max | |dphi|^2 / (36|df|^2) - 1 |", float((tb.norm2_dphi / (36 * n2) - 1).abs().max()), 0.0))
    rows.append(("(b) max | |dpsi|^2 / (48|df|^2) - 1 |", float((tb.norm2_dpsi / (48 * n2) - 1).abs().max()), 0.0))
    A = random_frame(5, 0.25)
    tc = torsion(lambda y: pullback_packed(A).expand(y.shape[0], 35) * 1, x)
    rows.append(("(c) A*phi0: max |g - A^T A|", float((tc.g - A.T @ A).abs().max()), 0.0))
    for h in (2e-2, 1e-2):
        tf = torsion(conformal_field, x, method="fd", h=h)
        rows.append((f"(b) fd, h = {h:g}: max |T_fd - T|", float((tf.T - tb.T).abs().max()), None))
    out = pd.DataFrame(rows, columns=["check", "value", "exact"]).set_index("check")
    return out


def conformal_fibre_field(a: float = 0.2):
    """phi = e^{3 f(y1)} phi0 with f = a sin(2 pi y1) (y1 = x[:, 1]): g = e^{2f} I (fixture (b)).

    Harmonic fields on [-L, L] x T^6 (absolute boundary conditions), exact: a class dy1 ^ dy^K of degree
    k has the representative c(y1) dy1 ^ dy^K with c = e^{-(7-2k) f} / I0((7-2k) a), and a fibre class
    without dy1 is its constant form (closed, co-closed, no dlambda); its Gram matrix is `geometry.accuracy.exact_gram`.
    """
    def field(x):
        f = a * torch.sin(2 * torch.pi * x[:, 1])
        return torch.exp(3 * f)[:, None] * g2.phi0_packed(x.dtype, x.device)
    return field


def shear_profile(x: torch.Tensor, eps: float = 0.05):
    """s = eps tanh(lambda) sin(2 pi y2) cos(2 pi y3) and (ds/dlambda, ds/dy2, ds/dy3) (batch, 3)."""
    lam, a, b = x[:, 0], 2 * torch.pi * x[:, 2], 2 * torch.pi * x[:, 3]
    t, sa, ca, sb, cb = torch.tanh(lam), torch.sin(a), torch.cos(a), torch.sin(b), torch.cos(b)
    ds = torch.stack([(1 - t * t) * sa * cb, 2 * torch.pi * t * ca * cb, -2 * torch.pi * t * sa * sb], dim=1)
    return eps * t * sa * cb, eps * ds


def shear_fibre_field(eps: float = 0.05):
    """phi = F^* phi0 for the shear F(lambda, y) = (lambda, y1 + s(lambda, y2, y3), y2, ..., y6) of
    `shear_profile` (fixture (a): torsion-free, g = DF^T DF varies with lambda, y2 and y3).

    F is a diffeomorphism of the chart onto itself that keeps lambda (so the boundary and its normal
    direction), and an isometry from g to the flat metric: the harmonic fields with absolute boundary
    conditions are F^* dy^I, with ||h||^2 = 2L for every fibre class and 0 for the dlambda-classes.
    """
    def field(x):
        _, ds = shear_profile(x, eps)
        grad = torch.zeros_like(x)
        grad[:, 0], grad[:, 2], grad[:, 3] = ds[:, 0], ds[:, 1], ds[:, 2]
        return shear_pullback(grad)
    return field


def shear_pullback(grad: torch.Tensor) -> torch.Tensor:
    """F^* phi0 (batch, 35) for F = (lambda, y1 + s, y2, ..., y6) with s independent of y1, from the gradient
    of s (batch, 7) (column 1 is ignored): DF = I + e_1 ds^T, so dF^1 = dy1 + ds."""
    A = torch.eye(7, dtype=grad.dtype, device=grad.device).repeat(grad.shape[0], 1, 1)
    A[:, 1, 0], A[:, 1, 2:] = grad[:, 0], grad[:, 2:]
    return pullback_packed(A)


def poisson_profile(x: torch.Tensor, eps: float, q: float, L: float, axes=(2,)):
    """s = eps cos^2(pi lambda / 2L) sum_a r(y_a), r(u) = 1 / (1 + q^2 - 2 q cos 2 pi u), and its gradient
    (batch, 7). The Fourier coefficients of r are q^|n| / (1 - q^2) (the Poisson kernel): they decay only
    geometrically, so s lies in no finite polynomial x Fourier span; s and ds/dlambda vanish at
    lambda = +-L, where F is the identity."""
    c = torch.pi / (2 * L)
    b, db = torch.cos(c * x[:, 0]) ** 2, -c * torch.sin(2 * c * x[:, 0])
    r, grad = torch.zeros_like(x[:, 0]), torch.zeros_like(x)
    for a in axes:
        u = 2 * torch.pi * x[:, a]
        den = 1 + q * q - 2 * q * torch.cos(u)
        r = r + 1 / den
        grad[:, a] = eps * b * (-4 * torch.pi * q * torch.sin(u) / den ** 2)
    grad[:, 0] = eps * db * r
    return eps * b * r, grad


def poisson_shear_field(eps: float, q: float, L: float, axes=(2,)):
    """phi = F^* phi0 for the shear y1 -> y1 + s of `poisson_profile` along the fibre axes `axes` (not y1):
    torsion-free, homotopic to the identity through eps -> 0, the identity on the boundary. As for
    `shear_fibre_field`, F is an isometry onto the flat chart that keeps lambda: the harmonic fields with
    absolute boundary conditions are F^* dy^I and the candidates' harmonic Gram matrix is the flat one."""
    if 1 in axes or not set(axes) <= set(range(2, 7)):
        raise ValueError(f"axes: fibre axes 2..6 (s must not depend on y1), got {axes!r}")

    def field(x):
        return shear_pullback(poisson_profile(x, eps, q, L, axes)[1])
    return field

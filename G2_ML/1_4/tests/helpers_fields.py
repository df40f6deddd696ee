"""Analytic 3-form fields with known torsion, shared by the tests (float64)."""
import torch

from k7lib import g2


def random_frame(seed=0, scale=0.3, n=7):
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(n, dtype=torch.float64) + scale * torch.randn(n, n, generator=g, dtype=torch.float64)
    if torch.linalg.det(A) < 0:
        A[0] = -A[0]
    return A


def pullback_packed(A):
    """Packed (A^* phi0)_{ijk} = A_ai A_bj A_ck phi0_abc for A (..., 7, 7)."""
    from k7lib import forms as F
    dense = torch.einsum("abc,...ai,...bj,...ck->...ijk", g2.phi0(A.dtype), A, A, A)
    return F.pack(dense, 3)


def conformal_f(x):
    """f(x) for fixture (b), with its gradient."""
    f = 0.3 * torch.sin(x[:, 0] + 2 * x[:, 3]) + 0.2 * torch.cos(2 * x[:, 5] - x[:, 6])
    df = torch.zeros_like(x)
    c = 0.3 * torch.cos(x[:, 0] + 2 * x[:, 3])
    s = -0.2 * torch.sin(2 * x[:, 5] - x[:, 6])
    df[:, 0], df[:, 3], df[:, 5], df[:, 6] = c, 2 * c, 2 * s, -s
    return f, df


def conformal_field(x):
    f, _ = conformal_f(x)
    return torch.exp(3 * f)[:, None] * g2.phi0_packed(x.dtype)


def diffeo_jacobian(x, eps=0.15):
    """DF for F^a(x) = x^a + eps_a sin(k.x + c_a): DF^a_i = delta + eps_a cos(k.x + c_a) k_i."""
    k = torch.tensor([1.0, -2.0, 1.0, 0.5, 3.0, -1.0, 2.0], dtype=x.dtype)
    e = eps * torch.tensor([1.0, 0.5, -0.7, 0.3, 0.2, -0.4, 0.6], dtype=x.dtype)
    c = torch.arange(7, dtype=x.dtype)
    ph = torch.cos(x @ k[:, None] + c)                # (batch, 7) over a
    return torch.eye(7, dtype=x.dtype) + (e * ph)[:, :, None] * k[None, None, :]


def diffeo_field(x):
    """Fixture (a): phi = F^* phi0 is torsion-free."""
    return pullback_packed(diffeo_jacobian(x))


_GENERIC_M1 = random_frame(1, 0.2) - torch.eye(7, dtype=torch.float64)
_GENERIC_M2 = random_frame(2, 0.2) - torch.eye(7, dtype=torch.float64)


def generic_field(x):
    """A non-integrable frame field A(x)^* phi0: all four torsion classes non-zero."""
    W = torch.tensor([[1.0, 0.0, 2.0, -1.0, 0.0, 1.0, 0.5], [0.0, 1.0, -1.0, 0.0, 2.0, 0.0, -1.0]],
                     dtype=x.dtype)
    a, b = torch.sin(x @ W[0]), torch.cos(x @ W[1])
    M1, M2 = _GENERIC_M1.to(x.dtype), _GENERIC_M2.to(x.dtype)
    A = torch.eye(7, dtype=x.dtype) + a[:, None, None] * M1 + b[:, None, None] * M2
    return pullback_packed(A) * (1 + 0.2 * torch.sin(x[:, 2]))[:, None]

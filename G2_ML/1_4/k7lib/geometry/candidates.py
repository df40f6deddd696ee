"""Candidate forms on the chart [-L, L] x T^6 whose harmonic parts the Gram and Hodge analyses count.

A `CandidateBasis` is a list of k-forms sum_I s_I(x) dx^I with profiles s of the neck coordinate: the
C(7,k) constant forms (`constant_basis`) and, for 3-forms, 42 TCS-adapted modes (`tcs_modes`: neck
bumps, block profiles and the hyper-Kaehler twist of `chart`). Seed 000 asks for 21 and 77 candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import forms as F
from ..chart import Chart, as_chart


@dataclass(frozen=True)
class NeckProfiles:
    """Smooth functions of the neck coordinate lambda in [-L, L] of a `Chart` (width w = L/4), all
    (batch,) -> (batch,).

    step(l)  = (1 + tanh(l / w)) / 2                 0 on the left, 1 on the right
    bump(l)  = exp(-l^2 / (2 w^2))                    localised in the neck
    left(l)  = (1 - tanh((l + L/2) / w)) / 2          ~1 deep in the left block, ~0 from the neck on
    right(l) = left(-l)                               the mirror image, ~1 deep in the right block
    The twist of the candidates is the chart's own (chart.twist_angle), not a profile of its own.
    """

    chart: Chart

    @property
    def L(self) -> float:
        return self.chart.L

    @property
    def width(self) -> float:
        return self.L / 4

    def step(self, lam):
        return (1 + torch.tanh(lam / self.width)) / 2

    def bump(self, lam):
        return torch.exp(-0.5 * (lam / self.width) ** 2)

    def left(self, lam):
        return (1 - torch.tanh((lam + self.L / 2) / self.width)) / 2

    def right(self, lam):
        return self.left(-lam)


def basis_form(indices, dtype=torch.float64) -> torch.Tensor:
    """Packed dx^{i1} ^ .. ^ dx^{ik} (C(7,k),) for distinct indices in any order (sign included)."""
    k = len(indices)
    out = torch.zeros(F.n_components(k), dtype=dtype, device="cpu")
    s = F.perm_sign(indices)
    if s == 0:
        raise ValueError(f"repeated index in {tuple(indices)}")
    out[F.combo_index(k)[tuple(sorted(indices))]] = s
    return out


@dataclass(frozen=True)
class CandidateBasis:
    """Candidate k-forms in separated form: mode a is w_a(x) = sum_p f_p(x) c_{p a}, with scalar
    profiles f = profiles(x) (batch, n_profiles) and constant packed forms
    coefficients (n_profiles, n_modes, C(7,k)). This covers constant forms (f = 1), profile modes
    f(lambda) dx^I and rotated forms (cos/sin profiles). Calling the basis gives the packed values
    (batch, n_modes, C(7,k)); names[a] labels mode a. The Dirichlet integrals differentiate only the
    profiles (forward mode), so their cost does not grow with the number of constant modes.
    """

    degree: int
    names: tuple
    profiles: Callable
    coefficients: torch.Tensor
    description: str = ""

    def __post_init__(self):
        F.check_degree(self.degree)
        if not 1 <= self.degree <= 6:
            raise ValueError(f"candidate degree must be in 1..6 (d and d* both defined), got {self.degree}")
        if len(self.names) == 0:
            raise ValueError("a candidate basis needs at least one mode")
        if len(set(self.names)) != len(self.names):
            raise ValueError("candidate names must be unique")
        if not callable(self.profiles):
            raise ValueError("candidate profiles must be callable x (batch, 7) -> (batch, n_profiles)")
        c = self.coefficients
        label = self.description or self.names[0]
        if not isinstance(c, torch.Tensor) or c.ndim != 3 or c.shape[1] != len(self.names):
            raise ValueError(f"candidate basis {label!r}: coefficients must have shape (n_profiles, "
                             f"{len(self.names)}, C(7,k)), got {getattr(c, 'shape', type(c).__name__)}")
        if c.shape[2] != F.n_components(self.degree):
            raise ValueError(f"candidate basis {label!r} has forms with {c.shape[2]} components, but a "
                             f"{self.degree}-form has C(7,{self.degree}) = {F.n_components(self.degree)}: wrong degree")

    @property
    def n_modes(self) -> int:
        return len(self.names)

    @property
    def n_profiles(self) -> int:
        return self.coefficients.shape[0]

    def __len__(self) -> int:
        return self.n_modes

    def profile_values(self, x: torch.Tensor) -> torch.Tensor:
        out = self.profiles(x)
        want = (x.shape[0], self.n_profiles)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"candidate basis {self.description or self.names[0]!r}: profiles returned {got}, "
                             f"expected (batch, n_profiles) = {want}")
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        P = self.profile_values(x)
        return torch.einsum("bp,pmc->bmc", P, self.coefficients.to(P.dtype).to(P.device))

    def __add__(self, other: "CandidateBasis") -> "CandidateBasis":
        if not isinstance(other, CandidateBasis) or other.degree != self.degree:
            raise ValueError("only candidate bases of the same degree can be joined")
        c1, c2 = self.coefficients.double(), other.coefficients.double()
        coef = torch.zeros(c1.shape[0] + c2.shape[0], c1.shape[1] + c2.shape[1], c1.shape[2], dtype=torch.float64, device="cpu")
        coef[: c1.shape[0], : c1.shape[1]] = c1
        coef[c1.shape[0]:, c1.shape[1]:] = c2
        p1, p2 = self.profile_values, other.profile_values
        return CandidateBasis(self.degree, tuple(self.names) + tuple(other.names),
                              lambda x: torch.cat([p1(x), p2(x)], dim=-1), coef,
                              " + ".join(d for d in (self.description, other.description) if d))


def form_name(I) -> str:
    return "dx" + "".join(str(i) for i in I)


def _ones(x):
    return torch.ones_like(x[:, :1]) + 0 * x[:, :1]          # depends on x formally: zero tangent


def constant_basis(k: int) -> CandidateBasis:
    """The C(7,k) constant forms dx^I (I increasing, packed order), named 'dx012' etc.

    On the flat torus these are exactly the harmonic k-forms (one per de Rham class).
    """
    F.check_degree(k)
    n = F.n_components(k)
    coef = torch.eye(n, dtype=torch.float64, device="cpu")[None]
    return CandidateBasis(k, tuple(form_name(I) for I in F.combos(k)), _ones, coef, f"constant {k}-forms")


TCS_PROFILES = ("bump", "left", "right", "cos_theta", "sin_theta", "cos_half", "sin_half")


def tcs_modes(chart) -> CandidateBasis:
    """The 42 TCS-adapted, position-dependent 3-form candidates (x0 = lambda, x1..x6 = y).

    neck  (15): bump(l) dx0 ^ dx^{ij}, 1 <= i < j <= 6           all fibre 2-forms, neck-localised
    left  (10): left(l) dx1 ^ dx^{jk}, 2 <= j < k <= 6            fibre 3-forms through the left
                                                                   block's external circle y1
    right (10): right(l) dx2 ^ dx^{jk}, j < k in {1,3,4,5,6}      the right block's external circle is
                                                                   y2 (the TCS matching swaps circles)
    twist  (7): the chart's hyper-Kaehler twist R(l) (chart.frame: planes (x3,x6), (x4,x5) turned
                by theta/2, theta = chart.twist_angle(l) rising from 0 to pi/2 across the neck)
                applied to fixed forms: dx_a ^ R^*wI, dx_a ^ R^*wJ for a = 0, 1, 2, with
                wI = dx34 + dx56, wJ = dx35 - dx46, R^*wI = cos theta wI + sin theta wJ,
                R^*wJ = cos theta wJ - sin theta wI, and dx01 ^ R^*dx3 with
                R^*dx3 = cos(theta/2) dx3 + sin(theta/2) dx6.
    Profiles: bump, left, right (NeckProfiles), cos theta, sin theta, cos theta/2, sin theta/2.
    chart: a `Chart` (or its L). Since these and the constant 1 are linearly independent functions of lambda, no mode (nor any
    combination of modes) is a constant combination of the 35 dx^{ijk}.
    """
    prof = NeckProfiles(as_chart(chart))
    names, rows = [], []

    def add(name, *terms):               # terms: (profile name, packed form)
        c = torch.zeros(len(TCS_PROFILES), F.n_components(3), dtype=torch.float64, device="cpu")
        for p, form in terms:
            c[TCS_PROFILES.index(p)] += form
        names.append(name)
        rows.append(c)

    for i, j in F.combos(2):
        if i >= 1:
            add(f"neck*dx0{i}{j}", ("bump", basis_form((0, i, j))))
    for j, k in F.combos(2):
        if j >= 2:
            add(f"left*dx1{j}{k}", ("left", basis_form((1, j, k))))
    for j, k in F.combos(2):
        if 2 not in (j, k) and j >= 1:
            add(f"right*dx2^dx{j}{k}", ("right", basis_form((2, j, k))))
    wI = basis_form((3, 4)) + basis_form((5, 6))
    wJ = basis_form((3, 5)) - basis_form((4, 6))
    for a in (0, 1, 2):
        ea = basis_form((a,))
        AI, AJ = F.wedge_packed(ea, wI, 1, 2), F.wedge_packed(ea, wJ, 1, 2)
        add(f"twist*dx{a}^wI", ("cos_theta", AI), ("sin_theta", AJ))
        add(f"twist*dx{a}^wJ", ("cos_theta", AJ), ("sin_theta", -AI))
    add("twist*dx01^R(dx3)", ("cos_half", basis_form((0, 1, 3))), ("sin_half", basis_form((0, 1, 6))))
    coef = torch.stack(rows, dim=1)                                  # (n_profiles, 42, 35)

    def profiles(x):
        lam = x[:, 0]
        t = prof.chart.twist_angle(lam)
        return torch.stack([prof.bump(lam), prof.left(lam), prof.right(lam), torch.cos(t),
                            torch.sin(t), torch.cos(t / 2), torch.sin(t / 2)], dim=-1)
    return CandidateBasis(3, tuple(names), profiles, coef, f"42 TCS-adapted 3-forms (L={prof.L:g})")


def candidates_2forms() -> CandidateBasis:
    """The 21 constant 2-forms dx^{ij} (seed 000: 'the 21 coordinate wedge forms')."""
    return constant_basis(2)


def candidates_3forms(chart) -> CandidateBasis:
    """77 candidates: the 35 constant dx^{ijk} followed by the 42 `tcs_modes(chart)`."""
    return constant_basis(3) + tcs_modes(chart)



"""A coordinate box D = [lo_0, hi_0] x ... x [lo_6, hi_6] in R^7, its boundary cut-off, and the
positivity check of a 3-form field on it.

The exact fixtures live on such boxes (charts of complete manifolds kept away from coordinate
singularities) and the torsion-free learner (`k7lib.learn.torsion_free`) fixes phi on the boundary of
one. Affine coordinates t_i = 2 (x_i - lo_i) / (hi_i - lo_i) - 1 in [-1, 1] are the network's input;
chi(x) = prod_i (1 - t_i^2) vanishes on the boundary, to first order in the distance to each face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import g2
from ..batches import chunks
from ..constants import DIM


@dataclass(frozen=True)
class Box:
    """D = prod_i [lo_i, hi_i]; lo and hi are 7 finite numbers with lo_i < hi_i (checked here)."""
    lo: tuple
    hi: tuple

    def __post_init__(self):
        lo, hi = _numbers(self.lo, "lo"), _numbers(self.hi, "hi")
        if len(lo) != DIM or len(hi) != DIM:
            raise ValueError(f"box: lo and hi must each hold {DIM} numbers (one per coordinate x^0..x^6), "
                             f"got {len(lo)} and {len(hi)}")
        for i, (a, b) in enumerate(zip(lo, hi)):
            if not a < b:
                kind = "empty" if a == b else "inverted"
                raise ValueError(f"box: {kind} in coordinate x^{i}: lo = {a:g} must be below hi = {b:g}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @property
    def volume(self) -> float:
        """Coordinate volume prod_i (hi_i - lo_i)."""
        return math.prod(b - a for a, b in zip(self.lo, self.hi))

    @property
    def centre(self) -> tuple:
        return tuple((a + b) / 2 for a, b in zip(self.lo, self.hi))

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) as tensors (7,) in like's dtype and device."""
        return like.new_tensor(self.lo), like.new_tensor(self.hi)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Points of the unit cube u (batch, 7) in [0, 1]^7 -> points of D (batch, 7)."""
        lo, hi = self.bounds(u)
        return lo + (hi - lo) * u

    def to_affine(self, x: torch.Tensor) -> torch.Tensor:
        """t = 2 (x - lo) / (hi - lo) - 1: (batch, 7) -> (batch, 7), D -> [-1, 1]^7."""
        lo, hi = self.bounds(x)
        return 2 * (x - lo) / (hi - lo) - 1

    def cutoff(self, x: torch.Tensor) -> torch.Tensor:
        """chi(x) = prod_i (1 - t_i^2): (batch, 7) -> (batch,); 1 at the centre, 0 on the boundary."""
        t = self.to_affine(x)
        return (1 - t * t).prod(-1)

    def to_dict(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "volume": self.volume}


def _numbers(values, name: str) -> tuple:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"box: {name} must be a sequence of {DIM} finite numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"box: {name} must hold finite numbers, got {values!r}")
    return out


def as_box(box) -> Box:
    """A Box itself, or a Box from a pair (lo, hi) of 7-number sequences."""
    if isinstance(box, Box):
        return box
    try:
        lo, hi = box
    except (TypeError, ValueError):
        raise ValueError(f"box: expected a Box or a pair (lo, hi) of {DIM}-number sequences, got {box!r}") from None
    return Box(lo, hi)


def first_nonpositive(phi_field, x: torch.Tensor, margin: float = 0.0, chunk: int = 4096) -> int | None:
    """Index of the first point of x (batch, 7) where phi_field's 3-form is not positive, or None.

    Positive means B(phi) positive definite (conventions §3, orientation +1) and, with margin > 0, the
    smallest eigenvalue of g(phi) at least `margin` times its largest (a form too close to the
    degenerate ones is refused too). Evaluated without derivatives, on at most `chunk` points at a time.
    """
    with torch.no_grad():
        phi = torch.cat([phi_field(x[sl]) for sl in chunks(x.shape[0], chunk)])
        B = g2.bilinear_B_packed(phi)
        ok = torch.isfinite(B).flatten(-2).all(-1)
        ev = torch.linalg.eigvalsh(torch.where(ok[:, None, None], B, torch.eye(DIM, dtype=B.dtype, device=B.device)))
        ok = ok & (ev[:, 0] > margin * ev[:, -1]) & (ev[:, 0] > 0)
    bad = torch.nonzero(~ok).flatten()
    return int(bad[0]) if len(bad) else None


def check_positive(phi_field, x: torch.Tensor, what: str, margin: float = 0.0, chunk: int = 4096) -> None:
    """ValueError naming the first point of x where `what` (e.g. "the exact field") is not positive
    (phi_field called on at most `chunk` points at a time)."""
    i = first_nonpositive(phi_field, x, margin, chunk)
    if i is not None:
        point = ", ".join(f"{v:.4g}" for v in x[i].tolist())
        raise ValueError(f"{what} is not a positive 3-form at x = ({point}) (B(phi) not positive definite"
                         + (f" or g(phi) more anisotropic than 1 : {margin:g}" if margin > 0 else "") + ")")

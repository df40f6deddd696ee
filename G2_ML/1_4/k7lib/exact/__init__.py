"""Torsion-free G2 structures with known metrics, on coordinate boxes: the validation fixtures of the
torsion-free learner (issue 21).

  bryant-salamon    S^3 x R^4 (Bryant-Salamon 1989, Gibbons-Page-Pope 1990 coframe), holonomy G2 (rank 14)
  gibbons-hawking   Gibbons-Hawking with two centres x flat R^3, holonomy SU(2) (rank 3)
  flat              the constant phi0 of conventions §3, holonomy trivial (rank 0)

Each `ExactFixture` holds phi: x (batch, 7) -> packed (batch, 35), the metric it must give
(batch, 7, 7), written independently of phi, its box, the rank of its holonomy algebra and its source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import g2
from . import bryant_salamon, gibbons_hawking
from .box import Box, as_box, check_positive, first_nonpositive

__all__ = ["Box", "ExactFixture", "FIXTURES", "as_box", "check_positive", "first_nonpositive", "fixture"]


@dataclass(frozen=True)
class ExactFixture:
    """A torsion-free phi on a box with its metric (both callables on points (batch, 7)) and holonomy."""
    name: str
    phi: Callable
    metric: Callable
    box: Box
    holonomy: str              # the holonomy group
    holonomy_rank: int         # dimension of its Lie algebra inside g2
    source: str

    def to_dict(self) -> dict:
        return {"name": self.name, "box": self.box.to_dict(), "holonomy": self.holonomy,
                "holonomy_rank": self.holonomy_rank, "source": self.source}


def flat_phi(x: torch.Tensor) -> torch.Tensor:
    """phi0 at every point: (batch, 7) -> (batch, 35)."""
    return g2.phi0_packed(x.dtype, x.device).expand(x.shape[0], -1)


def flat_metric(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean metric: (batch, 7) -> (batch, 7, 7)."""
    return torch.eye(7, dtype=x.dtype, device=x.device).expand(x.shape[0], 7, 7)


FIXTURES = {
    "bryant-salamon": ExactFixture("bryant-salamon", bryant_salamon.phi, bryant_salamon.metric, bryant_salamon.BOX,
                                   "G2", 14, bryant_salamon.SOURCE),
    "gibbons-hawking": ExactFixture("gibbons-hawking", gibbons_hawking.phi, gibbons_hawking.metric,
                                    gibbons_hawking.BOX, "SU(2)", 3, gibbons_hawking.SOURCE),
    "flat": ExactFixture("flat", flat_phi, flat_metric, Box((0.0,) * 7, (1.0,) * 7), "trivial", 0,
                         "the standard phi0 (conventions §3)"),
}


def fixture(name: str) -> ExactFixture:
    """The fixture of that name; ValueError listing the names when there is none."""
    if name not in FIXTURES:
        raise ValueError(f"unknown fixture {name!r}; choose one of {', '.join(FIXTURES)}")
    return FIXTURES[name]

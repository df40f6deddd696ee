"""Divergence as values: the type decides what training does; the text is rendered from the value."""
import dataclasses

import pytest

from k7lib.learn.divergence import NonFinite, Ok, Spike, check_gradient, check_loss


def test_check_loss():
    assert str(check_loss(float("nan"), [1.0] * 20, 10)).startswith("non-finite")
    assert str(check_loss(float("inf"), [], 10)).startswith("non-finite")
    assert str(check_loss(11.0, [1.0] * 20, 10)).startswith("loss spike")
    assert isinstance(check_loss(9.0, [1.0] * 20, 10), Ok)
    assert isinstance(check_loss(1e6, [1.0] * 5, 10), Ok)         # too few losses to judge a spike


def test_events_are_frozen_values_and_their_text_comes_from_them():
    nan = check_loss(float("nan"), [1.0] * 20, 10)
    assert nan == NonFinite("loss", nan.value) and str(nan) == "non-finite loss (nan)"
    spike = check_loss(11.0, [1.0] * 20, 10)
    assert spike == Spike(loss=11.0, factor=10, median=1.0, count=20)
    assert str(spike) == "loss spike 11 > 10 x median 1 of the last 20 losses"
    assert isinstance(check_gradient(float("inf")), NonFinite)
    assert str(check_gradient(float("inf"))) == "non-finite gradient norm (inf)"
    assert isinstance(check_gradient(3.0), Ok)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spike.loss = 1.0

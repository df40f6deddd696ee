from dataclasses import replace

import pytest
import torch
from torch import nn

from k7lib.learn.config import Config
from k7lib.learn.model import K7PhiModel, chebyshev_features, fourier_features
from k7lib.sampling import points as sampling


def tiny(**kw):
    return replace(Config.from_profile("quick"), width=8, depth=2, n_fourier=2, n_chebyshev=3, **kw)


def v13c_state_dict():
    """Synthetic state dict of the assumed v1.3c network: nn.Sequential `net`, Fourier features
    sin/cos(2 pi l x), l = 1..12, on 7 coordinates (168 inputs), 6 tanh layers of width 256, 35 outputs."""
    torch.manual_seed(7)
    layers = []
    width_in = 2 * 12 * 7
    for _ in range(6):
        layers += [nn.Linear(width_in, 256), nn.Tanh()]
        width_in = 256
    layers.append(nn.Linear(256, 35))
    return {f"net.{k}": v for k, v in nn.Sequential(*layers).state_dict().items()}


def test_correction_is_zero_at_initialisation(f64):
    cfg = tiny()
    model = K7PhiModel(cfg).double()
    x, _ = sampling.uniform(32, cfg.chart, torch.Generator().manual_seed(0), dtype=torch.float64)
    out = model(x)
    assert out.shape == (32, 35)
    assert torch.equal(out, cfg.chart.phi_background(x))
    assert torch.equal(model.correction(x), torch.zeros(32, 35, dtype=torch.float64))


def test_features_shape_and_periodicity(f64):
    cfg = tiny()
    model = K7PhiModel(cfg).double()
    x, _ = sampling.uniform(16, cfg.chart, torch.Generator().manual_seed(1), dtype=torch.float64)
    feats = model.features(x)
    assert feats.shape == (16, 12 * cfg.n_fourier + cfg.n_chebyshev + 5) == (16, model.n_in)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_()
    shifted = x.clone()
    shifted[:, 1:] += torch.tensor([1.0, -1.0, 2.0, 0.0, 1.0, 3.0])
    assert torch.allclose(model(shifted), model(x), atol=1e-10)   # periodic in every fibre coordinate
    t = torch.linspace(-1, 1, 9)
    cheb = chebyshev_features(t, 4)
    assert torch.allclose(cheb[:, 3], 8 * t**4 - 8 * t**2 + 1)
    assert fourier_features(x[:, 1:], 3).shape == (16, 36)


def test_architecture_from_config():
    cfg = Config.from_profile("full")
    model = K7PhiModel(cfg)
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    assert len(linears) == cfg.depth == 6 and all(m.out_features == 256 for m in linears)
    assert all(isinstance(m, nn.Tanh) for m in model.net[1::2])
    assert model.n_in != 2 * 12 * 7            # v1.3c's input layer does not silently match


def test_warm_start_from_v13c_shaped_state_dict(capsys):
    model = K7PhiModel(Config.from_profile("full"))
    sd = v13c_state_dict()
    before_in = model.net[0].weight.clone()
    report = model.load_compatible(sd)
    assert sorted(report.loaded) == sorted(f"net.{i}.{k}" for i in (2, 4, 6, 8, 10) for k in ("weight", "bias"))
    skipped = dict(report.skipped)
    assert set(skipped) == {"net.0.weight", "net.0.bias", "net.12.weight", "net.12.bias"}
    assert "shape" in skipped["net.0.weight"] and "no parameter" in skipped["net.12.weight"]
    assert "layer" in skipped["net.0.bias"]                     # same shape, but its weight does not fit
    for i in (2, 4, 6, 8, 10):
        assert torch.equal(model.net[i].weight, sd[f"net.{i}.weight"])
    assert torch.equal(model.net[0].weight, before_in)
    assert torch.count_nonzero(model.head.weight) == 0          # the correction still starts at zero
    assert "loaded 10 tensors" in capsys.readouterr().out


def test_warm_start_matching_nothing_raises():
    model = K7PhiModel(tiny())
    with pytest.raises(ValueError, match="match no parameter"):
        model.load_compatible({"encoder.weight": torch.zeros(3, 3), "net.0.weight": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match="state dict"):
        model.load_compatible([torch.zeros(2)])


def test_gradients_reach_every_layer():
    cfg = tiny()
    model = K7PhiModel(cfg)
    with torch.no_grad():
        model.head.weight.normal_()
    x, _ = sampling.uniform(8, cfg.chart, torch.Generator().manual_seed(2))
    model(x).pow(2).sum().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.parameters())

import random
import warnings

import numpy as np
import pytest
import torch

from k7lib.learn import checkpoint as ck
from k7lib.learn.config import Config
from k7lib.learn.model import K7PhiModel


def fake_state(epoch, marker=0.0):
    cfg = Config.from_profile("quick")
    return {"format": ck.FORMAT, "global_epoch": epoch, "phase": 0, "epoch": epoch,
            "model": {"w": torch.full((3,), float(marker))}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"lr_scale": 1.0}, "history": {"loss": [1.0, 0.5]}, "events": [],
            "rollbacks": 0, "recent_losses": [1.0], "rng": ck.rng_state(torch.Generator()), "config": cfg.to_dict()}


def test_save_list_load_numbered(tmp_path):
    for e in (0, 5, 10):
        path = ck.save_checkpoint(tmp_path, fake_state(e, marker=e))
        assert path.name == f"ckpt_{e:07d}.pt"
    assert [e for e, _ in ck.list_checkpoints(tmp_path)] == [0, 5, 10]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]    # no temporary left
    latest = ck.load_checkpoint(tmp_path)
    assert latest["global_epoch"] == 10 and float(latest["model"]["w"][0]) == 10
    assert ck.load_checkpoint(tmp_path, 5)["global_epoch"] == 5
    assert Config.from_dict(latest["config"]) == Config.from_profile("quick")
    with pytest.raises(ValueError, match="epoch 7"):
        ck.load_checkpoint(tmp_path, 7)
    with pytest.raises(ValueError, match="no readable checkpoint"):
        ck.load_checkpoint(tmp_path / "empty")


def test_truncated_checkpoint_is_named_and_skipped(tmp_path):
    for e in (0, 5, 10):
        ck.save_checkpoint(tmp_path, fake_state(e, marker=e))
    bad = ck.checkpoint_path(tmp_path, 10)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="ckpt_0000010.pt"):
        state = ck.load_checkpoint(tmp_path, "latest")
    assert state["global_epoch"] == 5
    with pytest.warns(RuntimeWarning, match="ckpt_0000010.pt"):
        assert ck.load_checkpoint(tmp_path, 10)["global_epoch"] == 5     # asked for 10, got the previous
    ck.checkpoint_path(tmp_path, 5).write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ck.load_checkpoint(tmp_path)["global_epoch"] == 0
    assert len(caught) == 2


def test_checkpoint_holding_code_is_refused(tmp_path):
    # weights_only=True: an arbitrary pickled object is not data and is skipped as unreadable.
    torch.save({"format": ck.FORMAT, "payload": object()}, ck.checkpoint_path(tmp_path, 3))
    with pytest.warns(RuntimeWarning, match="ckpt_0000003.pt"), pytest.raises(ValueError):
        ck.load_checkpoint(tmp_path)


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = ck.rng_state(gen)
    a = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), gen.manual_seed(99)
    ck.set_rng_state(state, gen)
    b = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])


def test_load_trained_returns_float64_eval_model(tmp_path):
    cfg = Config.from_profile("quick", width=8, depth=1, n_fourier=1, n_chebyshev=2)
    model = K7PhiModel(cfg)
    state = fake_state(4)
    state["config"] = cfg.to_dict()
    state["model"] = model.state_dict()
    ck.save_checkpoint(tmp_path / "run_1", state) if (tmp_path / "run_1").mkdir() is None else None
    loaded, config = ck.load_trained(root=tmp_path)
    assert config == cfg and not loaded.training
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.double())
    with pytest.raises(ValueError, match="not found"):
        ck.load_trained(run=7, root=tmp_path)

"""Export round trip, atomic writes and unwritable folders (the LaTeX article is tested in test_report.py)."""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from k7lib import gift
from k7lib.constants import ZeroParamGeometry  # noqa: E402
from k7lib.geometry import couplings
from k7lib.report import (
    export,  # noqa: E402
    latex,  # noqa: E402
)


def make_results(n=12, seed=0, figures=None, loss_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 7, generator=g, dtype=torch.float64)
    A = torch.eye(7, dtype=torch.float64) + 0.1 * torch.randn(n, 7, 7, generator=g, dtype=torch.float64)
    metric = A.mT @ A
    history = pd.DataFrame({"phase": [1, 1, 2], "epoch": [0, 1, 0], "global_epoch": [0, 1, 2],
                            "loss": [loss_scale * v for v in (1.0, 0.5, 0.25)], "T_mean": [0.1, 0.05, 0.02],
                            "det_mean": [2.0, 2.03, 2.031]})
    config = {"profile": "quick", "seed": seed, "L": 1.0, "widths": [16, 16], "name": "run_1 & 50% $x_y$"}
    meta = export.build_metadata(config, b2_eff=21, b3_eff=35, b2_harm=21, b3_harm=35,
                                 kappa_T_measured=0.0171, det_g_measured=2.0301,
                                 extra={"b2_topology": 21, "b3_topology": 35, "det_g_std": 1e-4,
                                        "topology_note": "T^7 chart: b3 = 35 for any metric (Hodge)."})
    pairing = couplings.Couplings(couplings.PAIRING_KIND, ((0, 1, 0), (0, 2, 1)),
                                  torch.tensor([2.0, -0.7], dtype=torch.float64),
                                  torch.tensor([0.01, 0.02], dtype=torch.float64),
                                  torch.tensor([0.9, 0.4], dtype=torch.float64))
    return export.Results(
        model_state={"net.0.weight": torch.randn(4, 3, generator=g), "net.0.bias": torch.zeros(4)},
        config=config, coords=coords, metric=metric, history=history, metadata=meta,
        couplings=gift.ansatz_table(pairing), tables={"Region statistics": pd.DataFrame({"region": ["neck"], "T": [0.01]})},
        figures=figures if figures is not None else {})


@pytest.fixture
def figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    yield fig
    plt.close(fig)


def test_round_trip_all_six_files(tmp_path, figure):
    res = make_results(figures={"loss": figure})
    paths = export.write_outputs(tmp_path / "out", res)
    names = set(os.listdir(tmp_path / "out"))
    assert names == set(export.FILES.values()) | {"fig_loss.png", "fig_loss.pdf"} == {p.name for p in paths.values()}
    back = export.read_outputs(tmp_path / "out")
    assert back["coords"].dtype == np.float64 and back["coords"].shape == (12, 7)
    assert np.array_equal(back["coords"], res.coords.numpy())
    assert back["metric"].shape == (12, 7, 7) and np.array_equal(back["metric"], res.metric.numpy())
    assert list(back["history"].columns) == list(res.history.columns)
    assert np.allclose(back["history"]["loss"], res.history["loss"])
    meta = back["metadata"]
    assert set(export.REQUIRED_METADATA) <= set(meta)
    assert meta["kappa_T_target"] == float(ZeroParamGeometry().kappa_T) and meta["exact"]["det_g"] == "65/32"
    assert set(meta["versions"]) == {"python", "torch", "numpy", "k7lib"}
    assert len(meta["coupling_table"]) == len(res.couplings)
    sd = back["model"]["state_dict"]
    assert set(sd) == set(res.model_state) and torch.equal(sd["net.0.weight"], res.model_state["net.0.weight"])
    assert back["model"]["config"] == res.config
    assert latex.tex_wellformed(tmp_path / "out" / export.FILES["tex"])
    assert back["figures"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "fig_loss.pdf").read_bytes()[:4] == b"%PDF"          # vector copy for the .tex


class FailingFigure:
    def savefig(self, f, **kw):
        f.write(b"partial")
        raise OSError("disk full while writing the figure")


def test_failed_write_leaves_previous_outputs_intact(tmp_path):
    out = tmp_path / "out"
    export.write_outputs(out, make_results(seed=0))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError, match="disk full"):
        export.write_outputs(out, make_results(seed=1, loss_scale=3.0, figures={"bad": FailingFigure()}))
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before                                   # same files, same bytes, no temporaries


def test_failed_model_write_leaves_previous_outputs_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    export.write_outputs(out, make_results(seed=0))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_save(*a, **k):
        raise RuntimeError("serialisation failed")
    monkeypatch.setattr(export.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        export.write_outputs(out, make_results(seed=2))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unwritable_folder_is_named_before_writing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="a_file/out.*not writable"):
        export.write_outputs(blocker / "out", make_results())
    if os.geteuid() != 0:                                     # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="ro"):
                export.write_outputs(ro, make_results())
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o700)


def test_bad_inputs_raise_before_writing(tmp_path):
    res = make_results()
    bad = [
        (dict(coords=res.coords[:, :6]), "coords"),
        (dict(metric=res.metric[:5]), "number of points"),
        (dict(metadata={k: v for k, v in res.metadata.items() if k != "b3_harm"}), "b3_harm"),
        (dict(config={**res.config, "fn": print}), "config.fn"),
        (dict(figures={"bad name!": None}), "figure name"),
    ]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            export.write_outputs(tmp_path / "o", export.Results(**{**res.__dict__, **change}))
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="profile"):
        export.build_metadata({"seed": 1}, b2_eff=1, b3_eff=1, b2_harm=1, b3_harm=1,
                              kappa_T_measured=0.0, det_g_measured=1.0)


def test_read_outputs_reports_missing_and_inconsistent_files(tmp_path):
    export.write_outputs(tmp_path, make_results())
    np.save(tmp_path / export.FILES["metric"], np.zeros((3, 7, 7)))
    with pytest.raises(ValueError, match="metric"):
        export.read_outputs(tmp_path)
    (tmp_path / export.FILES["history"]).unlink()
    with pytest.raises(ValueError, match="history_v1_4.csv"):
        export.read_outputs(tmp_path)


def test_read_outputs_checks_metadata_keys(tmp_path):
    export.write_outputs(tmp_path, make_results())
    (tmp_path / export.FILES["metadata"]).write_text(json.dumps({"p2": 2}))
    with pytest.raises(ValueError, match="lacks the keys.*N_gen"):
        export.read_outputs(tmp_path)

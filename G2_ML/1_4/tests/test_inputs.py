"""Table-driven bad inputs to each public entry: one ValueError naming the argument, never a raw error.

The counts of this table (bad API inputs tried and held) are what the README's "What survives
what" table quotes.
"""
import numpy as np
import pytest
import torch

from k7lib import curvature, g2, inputs
from k7lib.geometry import couplings, harmonic
from k7lib.report import export
from k7lib.torsion import torsion

PHI0 = g2.phi0_packed()


def const_field(x):
    return PHI0.to(x.dtype).expand(x.shape[0], 35)


def metric_field(x):
    return torch.eye(7, dtype=x.dtype).expand(x.shape[0], 7, 7)


GOOD = torch.rand(4, 7, dtype=torch.float64)
NAN = GOOD.clone()
NAN[1, 3] = float("nan")
INF = GOOD.clone()
INF[0, 0] = float("inf")

# (label, bad points, text the message must contain)
BAD_POINTS = [
    ("shape (8, 6)", torch.rand(8, 6), r"x must be a tensor of shape \(batch, 7\)"),
    ("shape (8, 8)", torch.rand(8, 8), r"shape \(batch, 7\).*\(8, 8\)"),
    ("shape (7,)", torch.rand(7), r"shape \(batch, 7\).*\(7,\)"),
    ("shape (2, 3, 7)", torch.rand(2, 3, 7), r"\(2, 3, 7\)"),
    ("empty batch", torch.rand(0, 7), r"at least one point.*\(0, 7\)"),
    ("float16", torch.rand(4, 7).half(), "float32 or float64.*float16"),
    ("bfloat16", torch.rand(4, 7).bfloat16(), "float32 or float64.*bfloat16"),
    ("int64", torch.ones(4, 7, dtype=torch.int64), "float32 or float64.*int64"),
    ("complex", torch.rand(4, 7, dtype=torch.complex64), "float32 or float64.*complex64"),
    ("NaN", NAN, "finite: 1 of 4"),
    ("Inf", INF, "finite: 1 of 4"),
    ("a list", [[0.0] * 7], "x must be a tensor.*a list"),
    ("a numpy array", np.zeros((4, 7)), "x must be a tensor.*ndarray"),
]

# public entries that take points x: name -> call(x)
POINT_ENTRIES = {
    "torsion": lambda x: torsion(const_field, x),
    "curvature": lambda x: curvature.curvature(metric_field, x),
    "triple_pairing": lambda x: couplings.triple_pairing(
        lambda y: torch.zeros(y.shape[0], 1, 21, dtype=y.dtype), lambda y: torch.zeros(y.shape[0], 1, 35, dtype=y.dtype), x),
    "hitchin_volume": lambda x: couplings.hitchin_volume(const_field, x),
    "hitchin_cubic": lambda x: couplings.hitchin_cubic(const_field, [const_field], x),
}


@pytest.mark.parametrize("entry", sorted(POINT_ENTRIES))
@pytest.mark.parametrize("label,x,message", BAD_POINTS, ids=[b[0] for b in BAD_POINTS])
def test_bad_points_are_named(entry, label, x, message):
    with pytest.raises(ValueError, match=message):
        POINT_ENTRIES[entry](x)


def test_good_points_pass_the_check():
    assert inputs.check_points(GOOD) is GOOD
    assert inputs.check_points(GOOD.float(), "x0") is not None
    t = torsion(const_field, GOOD)
    assert torch.allclose(t.T, torch.zeros(4, dtype=torch.float64), atol=1e-12)


DENSE0 = g2.phi0()
BAD_PHI = [
    ("empty batch", DENSE0.expand(0, 7, 7, 7), r"at least one form"),
    ("float16", DENSE0.half(), "float32 or float64.*float16"),
    ("bfloat16", DENSE0.bfloat16(), "float32 or float64.*bfloat16"),
    ("int", DENSE0.long(), "float32 or float64.*int64"),
    ("shape (5, 7, 7)", torch.zeros(5, 7, 7), r"shape \(\*batch, 7, 7, 7\)"),
    ("packed given to a dense entry", PHI0, r"shape \(\*batch, 7, 7, 7\).*\(35,\)"),
    ("NaN", torch.where(torch.rand(2, 7, 7, 7) > 2, 0.0, float("nan")).double(), "finite"),
    ("not a tensor", [[0.0]], "phi must be a tensor.*list"),
]


@pytest.mark.parametrize("entry", ["metric_from_phi", "psi_from_phi"])
@pytest.mark.parametrize("label,phi,message", BAD_PHI, ids=[b[0] for b in BAD_PHI])
def test_bad_phi_is_named(entry, label, phi, message):
    with pytest.raises(ValueError, match=message):
        getattr(g2, entry)(phi)


@pytest.mark.parametrize("phi,message", [(PHI0[None].half(), "float16"), (torch.zeros(0, 35), "at least one"),
                                         (torch.zeros(3, 34), r"\(\*batch, 35\)"), (DENSE0[None], r"\(\*batch, 35\)")])
def test_volume_density_checks_phi(phi, message):
    with pytest.raises(ValueError, match=message):
        couplings.volume_density(phi)


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_points=0), "n_points"), (dict(n_points=-5), "n_points"), (dict(n_points=2.5), "n_points"),
    (dict(L=0.0), "L must be"), (dict(L=float("nan")), "L must be"), (dict(L="wide"), "L must be"),
    (dict(dtype=torch.float16), "float32 or torch.float64"), (dict(dtype=torch.int32), "dtype"),
])
def test_extract_checks_its_sampling_arguments(kwargs, message):
    args = {"n_points": 8, "L": 1.0, "dtype": torch.float64, **kwargs}
    with pytest.raises(ValueError, match=message):
        harmonic.extract(const_field, args.pop("n_points"), args.pop("L"), **args)


def _results(**change):
    from test_export import make_results
    res = make_results()
    return export.Results(**{**res.__dict__, **change})


@pytest.mark.parametrize("change,message", [
    (dict(coords=torch.rand(12, 7).half()), "coords.*float16"),
    (dict(coords=torch.full((12, 7), float("nan"), dtype=torch.float64)), "coords must be finite"),
    (dict(coords=np.zeros((12, 7), dtype=np.int64)), "coords must be float32 or float64"),
    (dict(coords=torch.zeros(0, 7, dtype=torch.float64), metric=torch.zeros(0, 7, 7, dtype=torch.float64)),
     "at least one point"),
    (dict(metric=torch.full((12, 7, 7), float("inf"), dtype=torch.float64)), "metric must be finite"),
])
def test_export_checks_points_and_metric(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        export.write_outputs(tmp_path / "o", _results(**change))
    assert not (tmp_path / "o").exists()


def test_read_outputs_refuses_non_finite_coords(tmp_path):
    export.write_outputs(tmp_path, _results())
    np.save(tmp_path / export.FILES["coords"], np.full((12, 7), np.nan))
    with pytest.raises(ValueError, match="coords_v1_4.npy.*finite"):
        export.read_outputs(tmp_path)


def test_check_sampling_and_dtype():
    inputs.check_sampling(1, 0.5, torch.float32)
    for bad in (True, 0, "3"):
        with pytest.raises(ValueError, match="n_points"):
            inputs.check_sampling(bad, 1.0)


def _model(dtype=torch.float32):
    from test_train import tiny

    from k7lib.learn.model import K7PhiModel
    torch.manual_seed(0)
    return K7PhiModel(tiny()).to(dtype)


# (label, call, text the ValueError must contain): dtypes, mixed dtypes, empty batches, chunk <= 0
def _api_cases():
    from k7lib.learn.config import Config
    from k7lib.learn.evaluate import evaluate
    from k7lib.learn.polish import polish
    from k7lib.torsion import full_torsion, torsion_packed
    m32, x64 = _model(), torch.rand(4, 7, dtype=torch.float64)
    cfg = Config.from_profile("quick", polish_points=16)
    return [
        ("evaluate float16", lambda: evaluate(m32, 2.0, n_points=16, dtype=torch.float16), "dtype must be.*float16"),
        ("evaluate bfloat16", lambda: evaluate(m32, 2.0, n_points=16, dtype=torch.bfloat16), "dtype must be.*bfloat16"),
        ("evaluate chunk 0", lambda: evaluate(m32, 2.0, n_points=16, chunk=0), "chunk: must be a positive integer"),
        ("evaluate chunk -3", lambda: evaluate(m32, 2.0, n_points=16, chunk=-3), "chunk"),
        ("evaluate 10^20 points", lambda: evaluate(m32, 2.0, n_points=10**20), "n_points: .*<= 100000000"),
        ("evaluate half model", lambda: evaluate(_model(torch.float16), 2.0, n_points=16), "model: parameters.*float16"),
        ("torsion_packed mixed dtypes", lambda: torsion_packed(m32, x64), "x: float64 points given to a float32 model"),
        ("torsion_packed bfloat16 points", lambda: torsion_packed(m32, x64.bfloat16()), "x must be float32.*bfloat16"),
        ("torsion_packed empty batch", lambda: torsion_packed(m32, torch.rand(0, 7)), "at least one point"),
        ("full_torsion mixed dtypes", lambda: full_torsion(m32, x64), "x: float64 points given to a float32 model"),
        ("metric_data_packed empty batch", lambda: g2.metric_data_packed(torch.zeros(0, 35)), "at least one form"),
        ("metric_data_packed float16", lambda: g2.metric_data_packed(PHI0[None].half()), "phi must be float32.*float16"),
        ("metric_data_packed dense", lambda: g2.metric_data_packed(DENSE0[None]), r"\(\*batch, 35\)"),
        ("g2_identities empty batch", lambda: g2.g2_identities(DENSE0.expand(0, 7, 7, 7)), "at least one form"),
        ("polish chunk 0", lambda: polish(_model(), cfg, chunk=0), "chunk"),
        ("curvature chunk 0", lambda: curvature.curvature(metric_field, GOOD, chunk=0), "chunk"),
        ("region_table mixed dtypes", lambda: __import__("k7lib.geometry.regions", fromlist=["x"]).region_table(
            m32, x64, 2.0), "x: float64 points given to a float32 model"),
        ("hitchin_volume chunk 0", lambda: couplings.hitchin_volume(const_field, GOOD, chunk=0), "chunk"),
    ]


API_CASES = [c[0] for c in _api_cases()]


@pytest.mark.parametrize("label", API_CASES)
def test_public_functions_refuse_bad_dtypes_empty_batches_and_chunks(label):
    _, call, message = {c[0]: c for c in _api_cases()}[label]
    with pytest.raises(ValueError, match=message):
        call()


def test_matching_dtypes_pass_and_evaluate_returns_the_model_in_its_dtype():
    from k7lib.learn.evaluate import evaluate
    from k7lib.torsion import torsion_packed
    m32 = _model()
    assert torsion_packed(m32, torch.rand(3, 7)).T.dtype == torch.float32
    assert evaluate(m32, 2.0, n_points=16, chunk=8).n_points == 16
    assert all(p.dtype == torch.float32 for p in m32.parameters())

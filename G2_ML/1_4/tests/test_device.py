"""Device-clean code: with the default device set to one that cannot mix with the CPU ("meta"), the
quick pipeline on CPU tensors must still run. Any tensor made on the default device instead of the
input's device is a meta tensor, and the first operation mixing it with real data fails. On a GPU
the same stray tensor would land on the CPU beside CUDA data, which this catches without a GPU."""
import sys
from pathlib import Path

import torch

from k7lib import g2, gift, topology
from k7lib.apps import pipeline
from k7lib.geometry import couplings, harmonic
from k7lib.learn.chart_training import train_chart
from k7lib.learn.evaluate import evaluate
from k7lib.learn.polish import polish
from k7lib.report import export
from k7lib.sampling import points as sampling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import tiny  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_pipeline_creates_no_tensor_on_the_default_device(tmp_path):
    cfg = tiny(epochs=2, every=4, polish_points=128)
    with torch.device("meta"):
        result = train_chart(cfg, root=tmp_path / "runs", progress=False)
        model = result.model.double().eval()
        ev = evaluate(model, cfg.chart, n_points=64, seed=0)
        polish(result.model, cfg)
        H = harmonic.extract(model, 1024, cfg.chart, seed=0)
        xy = sampling.chart_points(128, cfg.chart, seed=1, method="uniform")
        metric = lambda x: g2.metric_data_packed(model(x)).g
        W = couplings.triple_pairing(H.two.representatives(), H.three.representatives(), xy,
                                    volume=cfg.chart.volume, metric=metric)
        C = couplings.hitchin_cubic(model, H.three.representatives(3), xy[:32], volume=cfg.chart.volume)
        Y, _ = gift.coupling_tables(W.couplings(), C.couplings())
        res = pipeline.results_from_run(result, ev, H, Y, n_points=64, topology=topology.chart_support())
        export.write_outputs(tmp_path / "out", res)
    assert (H.b2_harm, H.b3_harm) == (15, 20) and (tmp_path / "out" / export.FILES["metadata"]).is_file()


def test_exploration_validation_and_the_quintic_link_create_no_tensor_on_the_default_device(tmp_path):
    from k7lib.apps import explore, validate
    from k7lib.calabi_yau import link as links
    from k7lib.calabi_yau import link_chart, ricci_flat
    from k7lib.learn.model import K7PhiModel
    cfg = tiny()
    torch.manual_seed(0)
    model = K7PhiModel(cfg).double()
    with torch.device("meta"):
        va = validate.validate_run(model, cfg, n_points=64, out_dir=tmp_path)
        ex = explore.explore_run(model, cfg, n_points=64, out_dir=tmp_path)
        checks = links.structure_checks(link_chart.link_points(32, seed=0))
        potential, _, _ = ricci_flat.fit_ricci_flat(ricci_flat.RicciConfig(n_train=200, epochs=1))
        sigma = ricci_flat.sigma_table(potential, 200, seeds=(101,))
    assert va.statistics and ex.spectral.lambda1 > 0 and len(checks) and len(sigma)


def test_gpu_bench_runs_as_a_cpu_smoke_test_and_refuses_cuda_without_a_gpu(capsys):
    sys.path.insert(0, str(BENCH))
    import bench_gpu
    if not torch.cuda.is_available():
        assert bench_gpu.main(["--device", "cuda"]) == 2
        assert capsys.readouterr().out.strip().startswith("error: --device cuda: no CUDA device")
    assert bench_gpu.main(["--device", "cpu", "--epochs", "4", "--steps", "1", "--harmonic-points", "1024",
                           "--coupling-points", "128", "--polish-points", "256"]) == 0
    out = capsys.readouterr().out
    assert "epochs/s" in out and "ratio" in out and "b_harm = (15, 20)" in out

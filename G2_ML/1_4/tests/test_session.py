import pytest

from k7lib.apps import session
from k7lib.learn.divergence import TrainingDiverged


def test_configure_checks_every_field_before_work(tmp_path):
    s = session.configure("quick", checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    assert s.config.profile == "quick" and s.out_dir.is_dir() and "quick" in s.describe()
    with pytest.raises(session.InputError, match="profile"):
        session.configure("medium", checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    with pytest.raises(session.InputError, match="resume"):
        session.configure("quick", resume=1000, checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    with pytest.raises(session.InputError, match="output_dir"):
        session.configure("quick", checkpoint_root=tmp_path / "c", output_dir="/proc/nope")
    with pytest.raises(session.InputError, match="epochs_scale"):
        session.configure("quick", epochs_scale=-1, checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    assert session.InputError("x")._render_traceback_() == ["error: x"]


def test_auto_resume_continues_only_a_run_of_the_same_configuration(tmp_path):
    from k7lib.learn.chart_training import train_chart
    kw = dict(checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o", epochs_scale=0.005,
              batch=8, width=4, depth=1, n_fourier=1, n_chebyshev=2)
    s = session.configure("quick", **kw)
    assert s.resume is None and s.run is None                  # nothing to continue yet
    train_chart(s.config, root=s.root, progress=False)
    again = session.configure("quick", **kw)
    assert again.resume == "latest" and again.run == "run_1"
    other = session.configure("quick", **{**kw, "seed": 1})
    assert other.resume is None                               # a different configuration starts anew


@pytest.mark.parametrize("kw,field", [(dict(lr_scale=0), "lr_scale"), (dict(lr_scale=float("nan")), "lr_scale"),
                                      (dict(lr_scale=-1), "lr_scale")])
def test_bad_learning_rate_scale_is_named_before_any_folder_is_made(tmp_path, kw, field):
    with pytest.raises(session.InputError, match=field):
        session.configure("quick", checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o", **kw)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_lr_scale_is_carried_to_training_and_not_part_of_the_configuration(tmp_path):
    kw = dict(checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    s = session.configure("quick", lr_scale=0.5, **kw)
    assert s.lr_scale == 0.5 and "learning rate x0.5" in s.describe()
    assert s.config == session.configure("quick", **kw).config


@pytest.mark.skipif(session.torch.cuda.is_available(), reason="checks a runtime without a GPU")
def test_gpu_settings_on_a_cpu_runtime_are_one_line(tmp_path):
    kw = dict(checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    with pytest.raises(session.InputError, match="^profile: 'full' is sized for a GPU"):
        session.configure("full", **kw)
    with pytest.raises(session.InputError, match="^device: 'cuda' requested"):
        session.configure("quick", device="cuda", **kw)
    assert not (tmp_path / "c").exists()
    assert session.configure("auto", **kw).config.profile == "quick"        # auto picks quick
    assert session.configure("full", device="cpu", **kw).config.profile == "full"   # asked for explicitly


def test_divergence_in_a_notebook_shows_the_recipe_not_a_traceback(tmp_path, monkeypatch):
    import k7lib.learn.chart_training as T
    err = TrainingDiverged(2536, "non-finite loss (nan)", 3, "run_1", 2000,
                             "python -m k7lib train --profile full --run run_1 --resume 2000 --lr-scale 0.5",
                             {"RUN": "run_1", "RESUME": 2000, "LR_SCALE": 0.5})

    def diverge(*a, **k):
        raise err

    monkeypatch.setattr(T, "train_chart", diverge)
    s = session.configure("quick", checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    with pytest.raises(session.TrainingStopped) as info:
        session.train_session(s, progress=False)
    assert len(shown) == 1 and "`RESUME = 2000`" in shown[0].data and "--resume 2000 --lr-scale 0.5" in shown[0].data
    assert info.value._render_traceback_() == [f"stopped: {info.value}"] and "2000" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_cpu_threads_not_a_positive_integer_is_one_line(tmp_path, bad):
    with pytest.raises(session.InputError, match="^cpu_threads: must be a positive integer"):
        session.configure("quick", checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o", cpu_threads=bad)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_cpu_threads_is_applied_and_not_part_of_the_configuration(tmp_path):
    import torch
    before = torch.get_num_threads()
    try:
        s = session.configure("quick", checkpoint_root=tmp_path, output_dir=tmp_path, cpu_threads=1)
        assert s.use_threads() == 1 == torch.get_num_threads()
        assert s.config == session.configure("quick", checkpoint_root=tmp_path, output_dir=tmp_path).config
    finally:
        torch.set_num_threads(before)

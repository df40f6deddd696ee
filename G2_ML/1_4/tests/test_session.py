import pytest

from k7lib import session


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
    from k7lib.train import train
    kw = dict(checkpoint_root=tmp_path / "c", output_dir=tmp_path / "o", epochs_scale=0.005,
              batch=8, width=4, depth=1, n_fourier=1, n_chebyshev=2)
    s = session.configure("quick", **kw)
    assert s.resume is None and s.run is None                  # nothing to continue yet
    train(s.config, root=s.root, progress=False)
    again = session.configure("quick", **kw)
    assert again.resume == "latest" and again.run == "run_1"
    other = session.configure("quick", **{**kw, "seed": 1})
    assert other.resume is None                               # a different configuration starts anew

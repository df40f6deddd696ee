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

"""The package's shape: no import cycle, no private-name imports, plotting and argparse in one place each."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "architecture.py"
spec = importlib.util.spec_from_file_location("architecture", BENCH)
architecture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(architecture)


def test_the_package_keeps_its_rules():
    r = architecture.report()
    assert r["modules"] >= 30 and r["cycles"] == [] and r["private_imports"] == []
    assert r["matplotlib"] == ["k7lib.figures"] and r["argparse"] == ["k7lib.cli"]
    assert architecture.broken_rules(r) == []


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "k7lib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import _hidden\n    import matplotlib\n")
    r = architecture.report(pkg)
    assert r["cycles"] == [["k7lib.a", "k7lib.b"]]
    assert r["private_imports"] == [("k7lib.b", "k7lib.a", "_hidden")]
    assert architecture.broken_rules(r) and r["matplotlib"] == ["k7lib.b"]

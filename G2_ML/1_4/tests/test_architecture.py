"""The package's shape: layers imported only downwards, no cycle, imports inside functions only where
listed with a reason, no private-name imports, plotting and argparse in one place each, short functions
and modules."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "architecture.py"
spec = importlib.util.spec_from_file_location("architecture", BENCH)
architecture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(architecture)

def test_the_package_keeps_its_rules():
    r = architecture.report()
    assert r["modules"] >= 40 and r["unplaced"] == [] and r["upward"] == []
    assert r["cycles"] == [] and r["subpackage_cycles"] == [] and r["private_imports"] == []
    assert r["inner_unlisted"] == [] and set(r["inner_imports"]) <= set(architecture.INNER_IMPORTS)
    assert r["matplotlib"] == ["k7lib.report.figures"] and r["argparse"] == ["k7lib.apps.cli"]
    assert r["long_functions"] == [] and r["large_modules"] == []
    names = [name for name, _ in architecture.LAYERS]
    assert names.index("mathematics") < names.index("geometry") < names.index("learn") < names.index("apps")


def _package(tmp_path, files: dict) -> Path:
    pkg = tmp_path / "k7lib"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    pkg = _package(tmp_path, {"__init__.py": "", "a.py": "from . import b\n",
                              "b.py": "def f():\n    from .a import _hidden\n    import matplotlib\n"})
    r = architecture.report(pkg)
    assert r["cycles"] == [["k7lib.a", "k7lib.b"]]
    assert r["private_imports"] == [("k7lib.b", "k7lib.a", "_hidden")]
    assert architecture.broken_rules(r) and r["matplotlib"] == ["k7lib.b"]
    assert ("k7lib.b", "matplotlib") in r["inner_unlisted"]


def test_the_checker_sees_an_upward_import_an_unplaced_module_and_a_long_function(tmp_path):
    long_body = "".join(f"    x{i} = {i}\n" for i in range(architecture.MAX_FUNCTION_LINES))
    pkg = _package(tmp_path, {"__init__.py": "", "forms.py": "from .geometry import spectrum\n",
                              "geometry/__init__.py": "", "geometry/spectrum.py": f"def f():\n{long_body}",
                              "stray.py": ""})
    r = architecture.report(pkg)
    assert r["upward"] == [("k7lib.forms", "k7lib.geometry.spectrum")]
    assert r["unplaced"] == ["k7lib.stray"]
    assert r["long_functions"] == [("k7lib.geometry.spectrum.f", architecture.MAX_FUNCTION_LINES + 1)]
    broken = " ".join(architecture.broken_rules(r))
    assert "go up a layer" in broken and "in no layer" in broken and "over 60 lines" in broken


def test_default_folders_are_the_projects_whichever_subpackage_names_them():
    """Checkpoints and outputs go to G2_ML/1_4/checkpoints and outputs (the git-kept folders), not into
    the package: the run-folder module's place in the layers does not move them."""
    from k7lib.learn import runs
    project = Path(__file__).resolve().parent.parent
    assert runs.PACKAGE_ROOT == project and (project / "k7lib").is_dir()
    assert runs.DEFAULT_ROOT == project / "checkpoints" and runs.OUTPUTS == project / "outputs"
    assert (runs.DEFAULT_ROOT / ".gitkeep").is_file() and (runs.OUTPUTS / ".gitkeep").is_file()

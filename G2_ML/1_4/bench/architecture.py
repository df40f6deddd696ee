"""The package's shape in numbers: layers and the imports between them, cycles, imports inside
functions, private-name imports, function and module sizes, and which modules import matplotlib or
argparse.

  python bench/architecture.py          # prints the layers, the sizes and the counts; exit 1 if a rule is broken

Rules (README, Architecture), checked by tests/test_architecture.py:
  - every module sits in one layer of LAYERS and imports only from its own layer or the ones below it;
  - no import cycle between modules (imports inside functions count) nor between subpackages;
  - an import inside a function is allowed only where INNER_IMPORTS names it, with its reason;
  - no module imports another module's private (_underscore) names;
  - only report.figures imports matplotlib and only apps.cli imports argparse;
  - no function is longer than MAX_FUNCTION_LINES lines and no module longer than MAX_MODULE_LINES.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "k7lib"
PLOTTING, COMMAND_LINE = {"k7lib.report.figures"}, {"k7lib.apps.cli"}
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 500

# Bottom to top. An entry names a module, or a subpackage with every module below it ("pkg.*").
LAYERS = (
    ("foundation", ("k7lib", "k7lib.constants", "k7lib.inputs", "k7lib.batches")),
    ("mathematics", ("k7lib.forms", "k7lib.g2", "k7lib.derivatives", "k7lib.torsion", "k7lib.curvature",
                     "k7lib.holonomy", "k7lib.chart", "k7lib.topology", "k7lib.fixtures", "k7lib.gift",
                     "k7lib.exact.*")),
    ("sampling", ("k7lib.sampling.*",)),
    ("geometry", ("k7lib.geometry.*",)),
    ("learn", ("k7lib.learn.*",)),
    ("calabi_yau", ("k7lib.calabi_yau.*",)),
    ("report", ("k7lib.report.*",)),
    ("apps", ("k7lib.apps.*", "k7lib.__main__")),
)

# (module, imported module): why the import waits until the function runs.
INNER_IMPORTS = {
    ("k7lib.apps.session", "IPython.display"): "IPython is there only inside a notebook; the package runs without it",
    ("k7lib.report.pdf", "pypdfium2"): "optional PDF rasteriser, used only when it is installed",
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer holding `module` (None when no entry names it)."""
    for i, (_, entries) in enumerate(layers):
        for e in entries:
            if module == e or (e.endswith(".*") and (module == e[:-2] or module.startswith(e[:-1]))):
                return i
    return None


def _function_sizes(tree: ast.AST, mod: str) -> dict:
    """{'module.qualified.name': lines} of every function and method (nested ones inside their parent)."""
    out = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                out[name] = child.end_lineno - child.lineno + 1
                visit(child, name)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")
    visit(tree, mod)
    return out


def _inner_imports(tree: ast.AST, mod: str, is_pkg: bool) -> set:
    """(module, imported) pairs of import statements inside function bodies."""
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    target = resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                    out.add((mod, target))
                elif isinstance(node, ast.Import):
                    out.update((mod, a.name) for a in node.names)
    return out


def _imports(tree: ast.AST, mod: str, is_pkg: bool, names: set) -> tuple:
    """(k7lib modules imported, [(module, private name)], external top-level packages)."""
    imports, private, external, aliases = set(), [], set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
            if node.level == 0:
                external.add(target.split(".")[0])
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in names:                       # from . import forms
                    imports.add(sub)
                    aliases[a.asname or a.name] = sub
                elif target in names:
                    imports.add(target)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append((target, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                external.add(a.name.split(".")[0])
                if a.name in names:
                    imports.add(a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append((aliases[node.value.id], node.attr))
    imports.discard(mod)
    return imports, private, external


def scan(package: Path = PACKAGE) -> dict:
    """{module: {"lines", "imports" (k7lib modules), "private" [(module, name)], "external" set,
    "inner" set of (module, imported), "functions" {name: lines}}}."""
    files = sorted(package.rglob("*.py"))
    names = {module_name(f, package) for f in files}
    out = {}
    for f in files:
        mod, is_pkg = module_name(f, package), f.name == "__init__.py"
        text = f.read_text()
        tree = ast.parse(text)
        imports, private, external = _imports(tree, mod, is_pkg, names)
        out[mod] = {"lines": len(text.splitlines()), "imports": imports, "private": private, "external": external,
                    "inner": _inner_imports(tree, mod, is_pkg), "functions": _function_sizes(tree, mod)}
    return out


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def _group(module: str) -> str:
    """A module's subpackage (k7lib.geometry, ...), or the module itself for the top-level modules."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def _layer_report(info: dict, graph: dict, layers) -> dict:
    placed = {m: layer_of(m, layers) for m in info}
    upward = sorted((m, t) for m, ts in graph.items() for t in ts
                    if placed[m] is not None and placed[t] is not None and placed[t] > placed[m])
    groups = {}
    for m, ts in graph.items():
        groups.setdefault(_group(m), set()).update(_group(t) for t in ts if _group(t) != _group(m))
    return {"layers": {name: sorted(m for m in info if placed[m] == i) for i, (name, _) in enumerate(layers)},
            "unplaced": sorted(m for m, i in placed.items() if i is None), "upward": upward,
            "subpackage_cycles": cycles(groups)}


def report(package: Path = PACKAGE, layers=LAYERS, inner_allowed=INNER_IMPORTS) -> dict:
    info = scan(package)
    # a package's __init__ importing its own modules is not a dependency of theirs on it
    graph = {m: {t for t in i["imports"] if not m.startswith(t + ".")} for m, i in info.items()}
    total = sum(i["lines"] for i in info.values())
    largest = max(info, key=lambda m: info[m]["lines"])
    functions = {name: n for i in info.values() for name, n in i["functions"].items()}
    longest = max(functions, key=functions.get) if functions else None
    inner = sorted(p for i in info.values() for p in i["inner"])
    return {
        "modules": len(info), "lines": total, "largest": largest, "largest_lines": info[largest]["lines"],
        "largest_share": info[largest]["lines"] / total, "cycles": cycles(graph), **_layer_report(info, graph, layers),
        "private_imports": sorted({(m, t, n) for m, i in info.items() for t, n in i["private"] if t != m}),
        "matplotlib": sorted(m for m, i in info.items() if "matplotlib" in i["external"]),
        "argparse": sorted(m for m, i in info.items() if "argparse" in i["external"]),
        "sizes": {m: info[m]["lines"] for m in sorted(info, key=lambda m: -info[m]["lines"])},
        "inner_imports": inner, "inner_unlisted": [p for p in inner if p not in inner_allowed],
        "longest_function": longest, "longest_function_lines": functions.get(longest, 0),
        "long_functions": sorted((n, k) for n, k in functions.items() if k > MAX_FUNCTION_LINES),
        "large_modules": sorted((m, i["lines"]) for m, i in info.items() if i["lines"] > MAX_MODULE_LINES),
    }


def broken_rules(r: dict) -> list:
    checks = (
        ("unplaced", "modules in no layer"), ("upward", "imports that go up a layer"),
        ("cycles", "import cycles"), ("subpackage_cycles", "cycles between subpackages"),
        ("private_imports", "imports of private names"), ("inner_unlisted", "imports inside functions not listed"),
        ("long_functions", f"functions over {MAX_FUNCTION_LINES} lines"),
        ("large_modules", f"modules over {MAX_MODULE_LINES} lines"),
    )
    out = [f"{what}: {r[key]}" for key, what in checks if r[key]]
    if set(r["matplotlib"]) - PLOTTING:
        out.append(f"matplotlib outside report.figures: {sorted(set(r['matplotlib']) - PLOTTING)}")
    if set(r["argparse"]) - COMMAND_LINE:
        out.append(f"argparse outside apps.cli: {sorted(set(r['argparse']) - COMMAND_LINE)}")
    return out


def main() -> int:
    r = report()
    for name, mods in r["layers"].items():
        print(f"{name:12s} {', '.join(m.replace('k7lib.', '') for m in mods)}")
    print()
    for m, n in r["sizes"].items():
        print(f"  {m:36s} {n:5d}")
    print(f"{r['modules']} modules, {r['lines']} lines; largest {r['largest']} with {r['largest_lines']} lines "
          f"({r['largest_share']:.1%} of the package); longest function {r['longest_function']} "
          f"({r['longest_function_lines']} lines)")
    print(f"imports that go up: {len(r['upward'])}; cycles: {len(r['cycles'])} between modules, "
          f"{len(r['subpackage_cycles'])} between subpackages; private-name imports: {len(r['private_imports'])}")
    print(f"imports inside functions: {len(r['inner_imports'])}")
    for pair in r["inner_imports"]:
        print(f"  {pair[0]} -> {pair[1]}: {INNER_IMPORTS.get(pair, 'NOT LISTED')}")
    print(f"matplotlib in {r['matplotlib']}; argparse in {r['argparse']}")
    problems = broken_rules(r)
    for p in problems:
        print("broken:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The package's shape in numbers: module sizes, import cycles, imports of private names, and which
modules import matplotlib or argparse.

  python bench/architecture.py          # prints the table and the counts; exit 1 if a rule is broken

Rules (README, architecture): dependencies between k7lib's modules form no cycle (imports inside
functions count), no module imports another module's private (_underscore) names, and only
`figures` imports matplotlib and only `cli` imports argparse.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "k7lib"
PLOTTING, COMMAND_LINE = {"k7lib.figures"}, {"k7lib.cli"}


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


def scan(package: Path = PACKAGE) -> dict:
    """{module: {"lines", "imports" (k7lib modules), "private" [(module, name)], "external" set}}."""
    files = sorted(package.rglob("*.py"))
    names = {module_name(f, package) for f in files}
    out = {}
    for f in files:
        mod, is_pkg = module_name(f, package), f.name == "__init__.py"
        tree = ast.parse(f.read_text())
        aliases, info = {}, {"lines": len(f.read_text().splitlines()), "imports": set(), "private": [], "external": set()}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                if node.level == 0:
                    info["external"].add(target.split(".")[0])
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in names:                       # from . import forms
                        info["imports"].add(sub)
                        aliases[a.asname or a.name] = sub
                    elif target in names:
                        info["imports"].add(target)
                        if a.name.startswith("_") and not a.name.startswith("__"):
                            info["private"].append((target, a.name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    info["external"].add(a.name.split(".")[0])
                    if a.name in names:
                        info["imports"].add(a.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                info["private"].append((aliases[node.value.id], node.attr))
        info["imports"].discard(mod)
        out[mod] = info
    return out


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
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


def report(package: Path = PACKAGE) -> dict:
    info = scan(package)
    # a package's __init__ importing its own modules is not a dependency of theirs on it
    graph = {m: {t for t in i["imports"] if not m.startswith(t + ".")} for m, i in info.items()}
    total = sum(i["lines"] for i in info.values())
    largest = max(info, key=lambda m: info[m]["lines"])
    return {
        "modules": len(info), "lines": total, "largest": largest, "largest_lines": info[largest]["lines"],
        "largest_share": info[largest]["lines"] / total, "cycles": cycles(graph),
        "private_imports": sorted({(m, t, n) for m, i in info.items() for t, n in i["private"] if t != m}),
        "matplotlib": sorted(m for m, i in info.items() if "matplotlib" in i["external"]),
        "argparse": sorted(m for m, i in info.items() if "argparse" in i["external"]),
        "sizes": {m: info[m]["lines"] for m in sorted(info, key=lambda m: -info[m]["lines"])},
    }


def broken_rules(r: dict) -> list:
    out = []
    if r["cycles"]:
        out.append(f"import cycles: {r['cycles']}")
    if r["private_imports"]:
        out.append(f"imports of private names: {r['private_imports']}")
    if set(r["matplotlib"]) - PLOTTING:
        out.append(f"matplotlib outside figures: {sorted(set(r['matplotlib']) - PLOTTING)}")
    if set(r["argparse"]) - COMMAND_LINE:
        out.append(f"argparse outside cli: {sorted(set(r['argparse']) - COMMAND_LINE)}")
    return out


def main() -> int:
    r = report()
    for m, n in r["sizes"].items():
        print(f"  {m:32s} {n:5d}")
    print(f"{r['modules']} modules, {r['lines']} lines; largest {r['largest']} with {r['largest_lines']} lines "
          f"({r['largest_share']:.1%} of the package)")
    print(f"import cycles: {len(r['cycles'])}; imports of private names: {len(r['private_imports'])}; "
          f"matplotlib in {r['matplotlib']}; argparse in {r['argparse']}")
    problems = broken_rules(r)
    for p in problems:
        print("broken:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The import layering of the repository, read from the source with `ast` (nothing is imported).

    shared (0)  ->  dreamer4_torch, dreamer4_jax (1)  ->  convert (2)  ->  demo, quickstart (3)
                ->  benchmarks, experiments (4)

A module may import its own layer's packages and the layers below it, never a layer above; the two
backends never import each other. And no import cycle between modules. Every import counts: at
module level or inside a function (a cycle closed by a function-level import is still a cycle; it
only fails later), absolute or relative. Imports under `if TYPE_CHECKING:` never run and are not
counted. An import `a.b.c` is an edge to the module a.b.c (not to its parent packages); `from a.b
import name` is an edge to a.b.name when that is a module, else to a.b.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {"shared": 0, "dreamer4_torch": 1, "dreamer4_jax": 1, "convert": 2, "demo": 3, "quickstart": 3,
          "benchmarks": 4, "experiments": 4}
BACKENDS = {"dreamer4_torch", "dreamer4_jax"}


class Import(NamedTuple):
    source: str       # importing module, e.g. "shared.data.tasks"
    target: str       # imported module (resolved), e.g. "shared.data.env"
    path: str         # file of the importing module, relative to the repository root
    line: int


def module_files() -> dict[str, Path]:
    """{dotted module name: file} of every .py file of the layered packages that exist."""
    modules = {}
    for package in LAYERS:
        if not (ROOT / package).is_dir():
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, at any depth, except the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of `name` that is a module of the repository (else `name` itself)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    rel = str(path.relative_to(ROOT))
    found = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[:-(node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            found.append(Import(module, _resolve(target, modules), rel, node.lineno))
    return found


def all_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = module_files()
    edges = [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]
    return modules, edges


def top(name: str) -> str:
    return name.split(".")[0]


def layering_violations(edges: list[Import]) -> list[str]:
    out = []
    for imp in edges:
        src, dst = top(imp.source), top(imp.target)
        if dst not in LAYERS or dst == src:
            continue
        if LAYERS[dst] > LAYERS[src]:
            out.append(f"{imp.path}:{imp.line}: {imp.source} ({src}, layer {LAYERS[src]}) imports {imp.target} "
                       f"({dst}, layer {LAYERS[dst]})")
        elif src in BACKENDS and dst in BACKENDS:
            out.append(f"{imp.path}:{imp.line}: {imp.source} imports the other backend's {imp.target}")
    return out


def import_cycles(modules: dict[str, Path], edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of the module graph with more than one module (or a module
    importing itself): each one is at least one cycle. Tarjan's algorithm, iteratively."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in edges:
        if imp.target in modules:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child: Optional[str] = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return components


def describe_cycle(component: list[str], edges: list[Import]) -> str:
    members = set(component)
    inside = sorted({f"{imp.source} -> {imp.target} ({imp.path}:{imp.line})" for imp in edges
                     if imp.source in members and imp.target in members})
    return "cycle among " + ", ".join(component) + ": " + "; ".join(inside)


# ------------------------------------------------------------------------------------ the checker

def test_the_checker_resolves_relative_and_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "shared"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from . import b\nfrom ..data.b import thing\n")
    (pkg / "data" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .a import x\n"
        "def f():\n    from shared.data import a\n    import convert.cli\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    modules, edges = all_imports()
    assert set(modules) == {"shared", "shared.data", "shared.data.a", "shared.data.b"}
    assert {(e.source, e.target, e.line) for e in edges} == {
        ("shared.data.a", "shared.data.b", 1), ("shared.data.a", "shared.data.b", 2),
        ("shared.data.b", "typing", 1), ("shared.data.b", "shared.data.a", 5), ("shared.data.b", "convert.cli", 6)}
    assert import_cycles(modules, edges) == [["shared.data.a", "shared.data.b"]]
    assert layering_violations(edges) == [
        "shared/data/b.py:6: shared.data.b (shared, layer 0) imports convert.cli (convert, layer 2)"]


def test_the_checker_sees_the_backends_as_siblings():
    edge = Import("dreamer4_jax.x", "dreamer4_torch.y", "dreamer4_jax/x.py", 3)
    assert layering_violations([edge]) == ["dreamer4_jax/x.py:3: dreamer4_jax.x imports the other backend's "
                                           "dreamer4_torch.y"]
    assert layering_violations([Import("convert.a", "dreamer4_torch.y", "convert/a.py", 1),
                                Import("demo.a", "quickstart", "demo/a.py", 1)]) == []


# ------------------------------------------------------------------------------------ the repository

def test_no_module_imports_a_higher_layer_or_the_other_backend():
    _, edges = all_imports()
    violations = layering_violations(edges)
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_no_import_cycle():
    modules, edges = all_imports()
    cycles = [describe_cycle(c, edges) for c in import_cycles(modules, edges)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)

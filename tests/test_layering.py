"""The package layering: no module of ``src/visloc`` imports a package above it, and no import cycle.

From the bottom: the core modules; geometry and io; datasets, features and models; retrieval, matching
and verification; localization and semantic; training (beside those: it imports them, they never import
it); evaluation and viz; the command line, demo, service and client on top. Every import counts -- module-level,
inside functions, under ``TYPE_CHECKING``, relative or absolute. The cycle check follows what runs:
lazy imports count, ``TYPE_CHECKING`` blocks do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "visloc"

#: Layer of every top-level module / package of ``visloc`` (a new one must be placed here).
LAYERS: dict[str, int] = {
    "__init__": 0,  # the version
    "errors": 0,
    "registry": 0,
    "runtime": 0,
    "settings": 0,
    "geometry": 1,
    "io": 1,
    "datasets": 2,
    "features": 2,
    "models": 2,
    "matching": 3,
    "retrieval": 3,
    "verification": 3,
    "localization": 4,
    "semantic": 4,
    "training": 5,
    "evaluation": 6,
    "viz": 6,
    "cli": 7,
    "client": 7,
    "demo": 7,
    "service": 7,
}

#: Imports between different packages of one layer, each with the reason it is allowed.
SAME_LAYER_ALLOWED: dict[tuple[str, str], str] = {
    # the core: the registry raises the package's errors
    ("registry", "errors"): "Registry lookups raise ConfigError",
    # io writes the geometry types (poses, cameras) in the hloc file formats
    ("io", "geometry"): "pose and camera files hold Pose / Camera",
    # viz draws what evaluation computes (PCK colours, localization results)
    ("viz", "evaluation"): "figures and the report show evaluation results",
    # the command line runs the demo (``visloc demo``)
    ("cli", "demo"): "the demo command",
    # the command line registers the serve / query commands; query asks the server through the client
    ("cli", "service"): "the serve and query commands",
    ("service", "client"): "visloc query uses the Python client",
}

#: Side packages: the lowest layer that may import each (besides the package itself). Training imports the
#: layers below it, but only the command line (layer 7) imports training -- evaluation and viz never do.
SIDE_PACKAGES: dict[str, int] = {"training": 7}


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["visloc", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, runtime_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth; ``runtime_only`` leaves out ``if TYPE_CHECKING:`` blocks."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        children = list(ast.iter_child_nodes(node))
        if runtime_only and _is_type_checking(node):
            children = list(node.orelse)
        todo.extend(children)
    return out


def _imported_names(path: Path, runtime_only: bool = False) -> set[str]:
    """Absolute dotted names ``path`` imports from visloc: ``from a import b`` gives ``a.b`` (``b`` is a
    module or a name defined in ``a``), ``import a.b`` gives ``a.b``."""
    module = _module_name(path)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), runtime_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "visloc" or n.startswith("visloc.")}


def _top_level(name: str) -> str:
    """The entry of :data:`LAYERS` of a dotted visloc name (``__init__`` for names of ``visloc`` itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "__init__"


def _imported_packages(path: Path) -> set[str]:
    """The top-level ``visloc`` packages / modules that ``path`` imports (``__init__`` for ``visloc``)."""
    return {_top_level(name) for name in _imported_names(path)}


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in _sources()}


def _module_of(name: str, modules: dict[str, Path]) -> str:
    """The module an imported name lives in (``a.b.f`` -> ``a.b``)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def _violation(importer: str, imported: str) -> str | None:
    if importer == imported:
        return None
    if imported in SIDE_PACKAGES:
        return None if LAYERS[importer] >= SIDE_PACKAGES[imported] else "imports a side package"
    if LAYERS[imported] > LAYERS[importer]:
        return "imports a higher layer"
    if LAYERS[imported] == LAYERS[importer] and (importer, imported) not in SAME_LAYER_ALLOWED:
        return "imports a package of the same layer (not in SAME_LAYER_ALLOWED)"
    return None


def _edges() -> list[tuple[str, str, str, str]]:
    """``(module, importer package, imported package, imported module)`` of every visloc import."""
    modules = _modules()
    out = set()
    for module, path in modules.items():
        importer = _package_of(path)
        for name in _imported_names(path):
            out.add((module, importer, _top_level(name), _module_of(name, modules)))
    return sorted(out)


def test_every_package_has_a_layer() -> None:
    found = {_package_of(p) for p in _sources()}
    missing = sorted(found - set(LAYERS))
    assert not missing, f"top-level modules / packages without a layer in LAYERS: {missing}"


def test_no_import_goes_up() -> None:
    bad = []
    for module, importer, imported, name in _edges():
        if importer not in LAYERS or imported not in LAYERS:
            continue  # test_every_package_has_a_layer reports it
        why = _violation(importer, imported)
        if why:
            bad.append(f"{module} -> {name} ({importer}: layer {LAYERS[importer]}, {imported}: "
                       f"layer {LAYERS[imported]}; {why})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_same_layer_allowlist_is_used() -> None:
    used = {(importer, imported) for _, importer, imported, _ in _edges()}
    stale = sorted(set(SAME_LAYER_ALLOWED) - used)
    assert not stale, f"SAME_LAYER_ALLOWED entries no module needs any more (remove them): {stale}"


def _runtime_graph() -> dict[str, set[str]]:
    """Module -> the visloc modules importing it executes (with their parent packages), lazy imports
    included, ``TYPE_CHECKING`` blocks left out."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}  # itself and its parents
        edges = set()
        for imported in _imported_names(path, runtime_only=True):
            parts = _module_of(imported, modules).split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        graph[name] = edges - own
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    cycles = _cycles(_runtime_graph())
    assert not cycles, "modules that import each other (directly or through others):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from ..training.data import x", "models/a.py", {"training"}),
        ("from . import b", "models/__init__.py", {"models"}),
        ("from .. import __version__", "models/a.py", {"__init__"}),
        ("from visloc import cli", "io/a.py", {"cli"}),
        ("import visloc.geometry.warps", "io/a.py", {"geometry"}),
        ("def f():\n    from ...evaluation import y", "models/sub/a.py", {"evaluation"}),
        ("import numpy\nfrom .c import d", "models/a.py", {"models"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..viz import f", "io/a.py", {"viz"}),
    ],
)
def test_import_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, module: str,
                           expected: set[str]) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert _imported_packages(path) == expected

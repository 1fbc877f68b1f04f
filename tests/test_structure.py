"""The import structure, read from the source with ast (nothing is imported): no import circles among the
project's modules, and no `_private` name imported from another module (the test helpers under tests/
excepted). Imports inside functions count: a lazy import still ties the two modules together."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("zoo", "train", "ui", "scripts", "app.py")

def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the project (tests and benchmarks excepted)."""
    found = {}
    for source in SOURCES:
        path = ROOT / source
        files = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
        for file in files:
            parts = file.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def _imports(name: str, file: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported project module, imported name or None) for every import statement of a module."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                               if ".".join(parts[:i]) in modules), None)
                if target:
                    out.append((target, None))
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                if submodule in modules:  # `from . import x` imports the module x, not a name
                    out.append((submodule, None))
                elif origin in modules:
                    out.append((origin, alias.name))
    return out


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, str | None]]]]:
    modules = _modules()
    return modules, {name: _imports(name, file, modules) for name, file in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def test_the_project_is_found():
    modules, graph = _graph()
    assert {"zoo", "zoo._hub", "zoo._builder", "train.runner", "train.engine", "train.gan.fit", "app"} <= set(modules)
    assert ("train.checkpoint", "load_checkpoint") in graph["train.gan.fit"]  # `from ..checkpoint import`


def test_no_import_circles():
    _, graph = _graph()
    edges = {name: {target for target, _ in imports if target != name} for name, imports in graph.items()}
    circles = _cycles(edges)
    detail = ["; ".join(f"{a} -> {b}" for a in circle for b in sorted(edges[a] & set(circle)))
              for circle in circles]
    assert not circles, "import circles (move the shared piece into its own module):\n" + "\n".join(detail)


def test_no_private_name_is_imported_from_another_module():
    _, graph = _graph()
    found = {(name, origin, imported) for name, imports in graph.items() for origin, imported in imports
             if imported and imported.startswith("_") and not imported.startswith("__") and origin != name}
    unexpected = sorted(found)
    assert not unexpected, ("private names imported across modules (make them public in the module that owns "
                            f"them, or move them): {unexpected}")


def test_the_checker_sees_circles_and_private_imports(tmp_path):
    # the same rules on a tiny made-up package, so a checker that finds nothing cannot pass silently
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def f():\n    from .a import _helper\n")
    modules = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    graph = {name: _imports(name, file, modules) for name, file in modules.items()}
    assert graph["pkg.a"] == [("pkg.b", "thing")] and graph["pkg.b"] == [("pkg.a", "_helper")]
    assert _cycles({n: {t for t, _ in imports} for n, imports in graph.items()}) == [["pkg.a", "pkg.b"]]

"""The package's import graph: no cycle, imports inside functions included.

Every `import` and `from ... import` in every module of `newsletter/` is read from the
source (the AST, so an import inside a function, a method or a try block counts too),
resolved to the module it names, and drawn as an edge. A cycle, even one hidden in a
function that runs late, means two modules cannot be understood or moved one without the
other. Two kinds of import are not edges: those under `if TYPE_CHECKING:`, which never
run (annotations may name types both ways, as models and placeholders do), and a
submodule's implicit import of its parent package, which is Python's mechanics, not a
dependency of ours.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
# What a mailer backend may import from the package: the protocols and the shared helpers,
# never `newsletter.mailers` itself or another backend.
BACKENDS = ("newsletter.mailers.outbox", "newsletter.mailers.smtp", "newsletter.mailers.sendgrid")
BACKEND_MAY_IMPORT = {
    "newsletter.mailers.base",
    "newsletter.message",
    "newsletter.headers",
    "newsletter.placeholders",
    "newsletter.models",
    "newsletter.errors",
    "newsletter.config",
    "newsletter.atomic",  # the outbox writes files as every writer here does
    "newsletter.mailers.wire",  # SendGrid's HTTP transport; imports no mailer itself
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _run_time_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, is_package, node.module, node.level)
            for alias in node.names:
                # `from newsletter import audience` imports the module newsletter.audience.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {target for target in found if target in known and target != name}


def _run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, at any depth, except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in [child, *_run_time_nodes(child)])
            continue
        yield node
        yield from _run_time_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _absolute(name: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    anchor = name.split(".")
    anchor = anchor if is_package else anchor[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, module] if module else anchor)


def import_graph(root: Path) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 30  # the walk found the package, not an empty folder
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(graph)


def test_backends_import_only_the_protocols_and_shared_helpers() -> None:
    graph = import_graph(PACKAGE)
    for backend in BACKENDS:
        assert graph[backend] <= BACKEND_MAY_IMPORT, (backend, graph[backend] - BACKEND_MAY_IMPORT)


def test_the_sendgrid_transport_imports_no_mailer() -> None:
    assert not import_graph(PACKAGE)["newsletter.mailers.wire"] & {
        *BACKENDS,
        "newsletter.mailers",
    }


def test_dispatch_is_provider_neutral() -> None:
    """dispatch.py talks to the protocols only: no backend, imported early or late."""
    graph = import_graph(PACKAGE)
    assert not graph["newsletter.dispatch"] & set(BACKENDS)
    assert "newsletter.mailers.base" in graph["newsletter.dispatch"] | graph["newsletter.mailers"]


def test_the_walk_sees_imports_inside_functions_and_relative_imports(tmp_path: Path) -> None:
    """The detector itself: a cycle closed only by a late or relative import is found."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg.sub import b\n")
    (root / "sub" / "b.py").write_text("class B:\n    def late(self):\n        from .. import a\n")
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    graph = import_graph(root)
    assert graph == {
        "pkg": set(),
        "pkg.sub": set(),
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a"},
        "pkg.c": set(),
    }
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())

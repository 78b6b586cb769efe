"""The import structure of ``worker.ml``, read from the source with ``ast`` (nothing imported).

Three rules:

(a) No import cycle among ``worker.ml`` modules, counting every import statement wherever it
    stands (module level, inside a function, under ``if TYPE_CHECKING``).
(b) No module uses a private name (``_name``) of another project module: neither
    ``from m import _name`` nor ``m._name`` on an imported project module.
(c) No import statement inside a function body (the usual way of dodging a cycle), except the
    optional dependencies listed in ``FUNCTION_IMPORTS_ALLOWED`` with their reason.

Each rule is shown to fail on a small fake package written to ``tmp_path``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "worker.ml"
# Top-level packages whose modules count as the project's (their private names are private).
PROJECT_ROOTS = frozenset({"worker", "backend", "attrivue_core", "bench"})
# (importing module, imported module) pairs that may stand inside a function, with the reason.
# Empty: worker.ml has no optional heavy dependency today.
FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass
class ModuleImports:
    """What one module imports."""

    name: str
    path: Path
    # Imported modules of the package, with the line of the import (edges of the graph).
    edges: dict[str, int] = field(default_factory=dict)
    # "line: text" of every use of another project module's private name.
    private_uses: list[str] = field(default_factory=list)
    # (line, imported module) of every import inside a function body.
    function_imports: list[tuple[int, str]] = field(default_factory=list)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Visitor(ast.NodeVisitor):
    def __init__(self, info: ModuleImports, modules: set[str], is_package: bool, roots: frozenset):
        self.info = info
        self.modules = modules
        self.roots = roots
        self.depth = 0  # function nesting
        self.package = info.name if is_package else info.name.rpartition(".")[0]
        self.module_aliases: dict[str, str] = {}  # local name -> project module it is bound to

    def _project(self, module: str) -> bool:
        return module.split(".")[0] in self.roots

    def _record(self, node: ast.AST, target: str) -> None:
        line = getattr(node, "lineno", 0)
        if target in self.modules and target != self.info.name:
            self.info.edges.setdefault(target, line)
        if self.depth:
            self.info.function_imports.append((line, target))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._record(node, alias.name)
            if alias.asname and self._project(alias.name):
                self.module_aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:
                self._record(node, submodule)
                self.module_aliases[alias.asname or alias.name] = submodule
                continue
            self._record(node, base)
            if self._project(base) and _is_private(alias.name):
                self.info.private_uses.append(f"{node.lineno}: from {base} import {alias.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id in self.module_aliases
            and _is_private(node.attr)
        ):
            module = self.module_aliases[node.value.id]
            self.info.private_uses.append(f"{node.lineno}: {module}.{node.attr}")
        self.generic_visit(node)


def scan(root: Path, package: str, roots: frozenset = PROJECT_ROOTS) -> dict[str, ModuleImports]:
    """The imports of every module of ``package`` (a folder under ``root``)."""
    folder = root.joinpath(*package.split("."))
    paths = sorted(folder.rglob("*.py"))
    modules = {_module_name(root, p): p for p in paths}
    found = {}
    for name, path in modules.items():
        info = ModuleImports(name=name, path=path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _Visitor(info, set(modules), path.name == "__init__.py", roots).visit(tree)
        found[name] = info
    return found


def import_cycles(found: dict[str, ModuleImports]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in found[node].edges:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(found):
        if node not in index:
            connect(node)
    return sorted(cycles)


def private_uses(found: dict[str, ModuleImports]) -> list[str]:
    return [f"{info.name}:{use}" for info in found.values() for use in info.private_uses]


def function_imports(
    found: dict[str, ModuleImports], allowed: Iterable[tuple[str, str]] = ()
) -> list[str]:
    allowed = set(allowed)
    return [
        f"{info.name}:{line}: {target}"
        for info in found.values()
        for line, target in info.function_imports
        if (info.name, target) not in allowed
    ]


# --------------------------------------------------------------------------- worker.ml


@pytest.fixture(scope="module")
def worker_ml() -> dict[str, ModuleImports]:
    found = scan(REPO, PACKAGE)
    assert "worker.ml.training" in found and len(found) > 10
    return found


def test_no_import_cycle_among_worker_ml_modules(worker_ml: dict[str, ModuleImports]) -> None:
    assert import_cycles(worker_ml) == []


def test_no_module_uses_another_modules_private_names(worker_ml: dict[str, ModuleImports]) -> None:
    assert private_uses(worker_ml) == []


def test_no_import_inside_a_function(worker_ml: dict[str, ModuleImports]) -> None:
    assert function_imports(worker_ml, FUNCTION_IMPORTS_ALLOWED) == []


# --------------------------------------------------------------------------- the checks can fail


def _fake_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in {"pkg/__init__.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    _fake_package(
        tmp_path,
        {
            "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "pkg/b.py": "def g():\n    from pkg import a\n    return a\n",
            "pkg/sub/__init__.py": "from pkg.sub.engine import run\n",
            "pkg/sub/engine.py": "from pkg.sub import helper\n\nrun = helper\n",
            "pkg/sub/helper.py": "from .. import c\n",
            "pkg/c.py": "X = 1\n",
        },
    )
    found = scan(tmp_path, "pkg", frozenset({"pkg"}))
    assert import_cycles(found) == [["pkg.a", "pkg.b"]]
    # A submodule importing its own package's __init__, which imports it back, is a cycle too.
    (tmp_path / "pkg/sub/helper.py").write_text("from pkg.sub import run\n")
    found = scan(tmp_path, "pkg", frozenset({"pkg"}))
    assert ["pkg.sub", "pkg.sub.engine", "pkg.sub.helper"] in import_cycles(found)


def test_a_private_name_of_another_module_is_found(tmp_path: Path) -> None:
    _fake_package(
        tmp_path,
        {
            "pkg/a.py": "def _hidden():\n    return 1\n\ndef shown():\n    return _hidden()\n",
            "pkg/b.py": "from pkg.a import _hidden, shown\nfrom os import _exit\n",
            "pkg/c.py": "import pkg.a as m\nfrom pkg import a\n\nx = m._hidden\ny = a._hidden\n"
            "z = a.__name__\n",
        },
    )
    found = scan(tmp_path, "pkg", frozenset({"pkg"}))
    assert private_uses(found) == [
        "pkg.b:1: from pkg.a import _hidden",
        "pkg.c:4: pkg.a._hidden",
        "pkg.c:5: pkg.a._hidden",
    ]


def test_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    _fake_package(
        tmp_path,
        {
            "pkg/a.py": "import json\n\ndef f():\n    import csv\n    return csv\n\n"
            "class C:\n    async def m(self):\n        from pkg import b\n        return b\n",
            "pkg/b.py": "X = 1\n",
        },
    )
    found = scan(tmp_path, "pkg", frozenset({"pkg"}))
    assert function_imports(found) == ["pkg.a:4: csv", "pkg.a:9: pkg.b"]
    assert function_imports(found, {("pkg.a", "csv")}) == ["pkg.a:9: pkg.b"]

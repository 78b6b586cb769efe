"""The project's module import graph, read from the source with ``ast`` (nothing is imported).

Every ``import``/``from ... import`` counts: at module level, inside functions (marked
``in_function``, so a report can say so) and under ``if TYPE_CHECKING:`` (marked
``type_checking``). ``tests/test_layering.py`` states the rules on it: what a layer may import,
no ``_private`` name across modules, no import cycle. Each check takes the root and the packages,
so that a test can run it on a small package planted in a temporary directory.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The packages scanned to know which dotted names are the project's modules.
SOURCE_PACKAGES: tuple[str, ...] = (
    "attrivue_core",
    "attrivue_client",
    "backend",
    "worker",
    "bench",
)

# The modules held to the private-name and cycle rules: every package of the project.
LAYERED: tuple[str, ...] = SOURCE_PACKAGES


@dataclass(frozen=True)
class Import:
    """One imported module (or one name from it) in one module."""

    importer: str
    target: str  # the absolute dotted module: a project module when it resolves to one
    name: str | None  # the name taken by ``from target import name``, if not a module itself
    path: Path
    line: int
    in_function: bool
    type_checking: bool

    def describe(self, root: Path) -> str:
        where = []
        if self.in_function:
            where.append("inside a function")
        if self.type_checking:
            where.append("under TYPE_CHECKING")
        what = f"{self.target}.{self.name}" if self.name else self.target
        tail = f" ({', '.join(where)})" if where else ""
        return f"{self.path.relative_to(root)}:{self.line} {self.importer} -> {what}{tail}"


@dataclass(frozen=True)
class AttributeAccess:
    """``module._name`` read on a name bound to a project module."""

    importer: str
    module: str
    attribute: str
    path: Path
    line: int


@dataclass
class ImportGraph:
    root: Path
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    attributes: list[AttributeAccess] = field(default_factory=list)

    def is_project(self, module: str) -> bool:
        return module.split(".")[0] in {name.split(".")[0] for name in self.modules}

    def edges(self) -> dict[str, set[str]]:
        """Module -> the project modules it imports (every kind of import)."""
        out: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.target in self.modules and imp.target != imp.importer:
                out[imp.importer].add(imp.target)
        return out


def within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def is_private(name: str) -> bool:
    """One leading underscore: ``_helper``, not ``__all__`` or ``__version__``."""
    return name.startswith("_") and not name.startswith("__")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files(root: Path, packages: Sequence[str]) -> Iterator[Path]:
    for package in packages:
        base = root / package.replace(".", "/")
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))
        elif base.with_suffix(".py").is_file():
            yield base.with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Visitor(ast.NodeVisitor):
    def __init__(self, graph: ImportGraph, module: str, path: Path) -> None:
        self.graph = graph
        self.module = module
        self.path = path
        self.is_package = path.name == "__init__.py"
        self.function_depth = 0
        self.type_checking_depth = 0
        self.bound: dict[str, str] = {}  # a local name -> the project module it refers to
        self.attribute_nodes: list[ast.Attribute] = []

    # -- scopes
    def _function(self, node: ast.AST) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_checking_depth += 1
            for child in node.body:
                self.visit(child)
            self.type_checking_depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    # -- imports
    def _add(self, target: str, name: str | None, line: int) -> None:
        self.graph.imports.append(
            Import(
                importer=self.module,
                target=target,
                name=name,
                path=self.path,
                line=line,
                in_function=self.function_depth > 0,
                type_checking=self.type_checking_depth > 0,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, None, node.lineno)
            if alias.asname:
                self.bound[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.bound[top] = top

    def _resolve(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module.split(".")
        if not self.is_package:
            package = package[:-1]
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        return ".".join([*package, *([node.module] if node.module else [])])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._resolve(node)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.graph.modules:
                self._add(submodule, None, node.lineno)
                self.bound[alias.asname or alias.name] = submodule
            else:
                self._add(base, alias.name, node.lineno)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.attribute_nodes.append(node)
        self.generic_visit(node)

    def finish(self) -> None:
        """Resolve ``name.attr...`` chains once every binding of the file is known."""
        for node in self.attribute_nodes:
            chain: list[str] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute):
                chain.append(current.attr)
                current = current.value
            if not isinstance(current, ast.Name) or current.id not in self.bound:
                continue
            chain.reverse()
            module = self.bound[current.id]
            if module not in self.graph.modules:
                continue
            for attr in chain[:-1]:
                module = f"{module}.{attr}"
                if module not in self.graph.modules:
                    break
            else:
                if module != self.module:
                    self.graph.attributes.append(
                        AttributeAccess(self.module, module, chain[-1], self.path, node.lineno)
                    )


def build_graph(root: Path, packages: Sequence[str] = SOURCE_PACKAGES) -> ImportGraph:
    root = root.resolve()
    graph = ImportGraph(root=root)
    files = list(_source_files(root, packages))
    for path in files:
        graph.modules[_module_name(root, path)] = path
    for path in files:
        visitor = _Visitor(graph, _module_name(root, path), path)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        visitor.finish()
    return graph


# -- the checks: each returns what it found, as readable lines (empty when the rule holds)


def forbidden_imports(
    graph: ImportGraph, importers: Iterable[str], forbidden: Iterable[str]
) -> list[str]:
    """Imports, at any level, of a module in ``forbidden`` by a module in ``importers``."""
    importers, forbidden = tuple(importers), tuple(forbidden)
    return [
        imp.describe(graph.root)
        for imp in graph.imports
        if within(imp.importer, importers) and within(imp.target, forbidden)
    ]


def private_imports(graph: ImportGraph, importers: Iterable[str] = LAYERED) -> list[str]:
    """``from x import _y`` and ``x._y`` by a module in ``importers``, x another project module."""
    importers = tuple(importers)
    found = [
        imp.describe(graph.root)
        for imp in graph.imports
        if within(imp.importer, importers)
        and imp.name is not None
        and is_private(imp.name)
        and graph.is_project(imp.target)
        and imp.target != imp.importer
    ]
    found += [
        f"{a.path.relative_to(graph.root)}:{a.line} {a.importer} reads {a.module}.{a.attribute}"
        for a in graph.attributes
        if within(a.importer, importers) and is_private(a.attribute)
    ]
    return found


def import_cycles(graph: ImportGraph, packages: Iterable[str] = LAYERED) -> list[list[str]]:
    """The import cycles among the modules of ``packages`` (strongly connected components)."""
    packages = tuple(packages)
    nodes = sorted(m for m in graph.modules if within(m, packages))
    allowed = set(nodes)
    all_edges = graph.edges()
    edges = {m: sorted(t for t in all_edges[m] if t in allowed) for m in nodes}

    # Tarjan's algorithm, iterative (no recursion limit on a long chain).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
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
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def describe_cycle(graph: ImportGraph, cycle: Sequence[str]) -> str:
    """A cycle's modules and the imports that join them (marking those inside functions)."""
    members = set(cycle)
    lines = [
        "  " + imp.describe(graph.root)
        for imp in graph.imports
        if imp.importer in members and imp.target in members and imp.target != imp.importer
    ]
    return " <-> ".join(cycle) + "\n" + "\n".join(sorted(set(lines)))

"""The layers stay apart (docs/architecture.md).

At run time: the backend never loads torch, attrivue_core neither, and worker.ml no web, queue or
DB code. In the source (tests/import_graph.py, every import at any level): the backend imports
no worker module, attrivue_core neither torch, monai, captum, worker nor backend; no module
imports another's ``_private`` name (tests neither); no import cycle among the project's
packages (all of them: ``LAYERED``). Each source check is shown to fail on a violation planted
in a temporary package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import (
    LAYERED,
    SOURCE_PACKAGES,
    build_graph,
    describe_cycle,
    forbidden_imports,
    import_cycles,
    private_imports,
    within,
)

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in out.stdout.split()}


def test_backend_app_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        f"import os; os.environ['ATTRIVUE_DATA_DIR'] = {str(tmp_path)!r}\n"
        "from backend.main import create_app; create_app()\n"
        "import backend.services.runs, backend.services.datasets, backend.cli"
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert "worker" not in loaded


def test_core_does_not_load_torch() -> None:
    modules = sorted(p.stem for p in (REPO / "attrivue_core").glob("*.py"))
    code = "\n".join(f"import attrivue_core.{m}" for m in modules if m != "__init__")
    assert not _modules_after(code) & {"torch", "monai", "captum", "worker", "backend"}


@pytest.mark.parametrize(
    "module",
    [
        "worker.ml.training",
        "worker.ml.attribution.captum_eval",
        "worker.ml.attribution.differentiable",
        "worker.ml.losses",
        "worker.ml.metrics",
        "worker.ml.synthetic",
        "worker.ml.evaluation",
    ],
)
def test_ml_imports_no_web_queue_or_database(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert not loaded & {"celery", "fastapi", "sqlalchemy", "starlette", "kombu"}


# -- the source rules, on the repository


@pytest.fixture(scope="module")
def graph():
    # With the tests: their names count as the project's (bench borrows test helpers).
    return build_graph(REPO, (*SOURCE_PACKAGES, "tests"))


def test_backend_imports_no_worker_module(graph) -> None:
    found = forbidden_imports(graph, ["backend"], ["worker"])
    assert not found, "backend imports worker:\n" + "\n".join(found)


def test_core_imports_no_torch_worker_or_backend(graph) -> None:
    found = forbidden_imports(
        graph, ["attrivue_core"], ["torch", "monai", "captum", "worker", "backend"]
    )
    assert not found, "attrivue_core imports:\n" + "\n".join(found)


def test_no_private_name_crosses_modules(graph) -> None:
    found = private_imports(graph, LAYERED)
    assert not found, "_private names imported from another module:\n" + "\n".join(found)


def test_tests_import_no_private_name(graph) -> None:
    # Tests use the project through its public names, and share public helpers among them.
    found = private_imports(graph, ["tests"])
    assert not found, "tests import _private names:\n" + "\n".join(found)


def test_no_import_cycle(graph) -> None:
    cycles = import_cycles(graph, LAYERED)
    assert not cycles, "import cycles:\n" + "\n".join(describe_cycle(graph, c) for c in cycles)


def test_the_graph_sees_the_layers(graph) -> None:
    # The checks above pass on an empty graph too: make sure this one is the project's.
    assert {"attrivue_core.configs", "backend.main", "worker.tasks.train"} <= set(graph.modules)
    assert any(
        i.importer == "backend.services.runs" and i.target == "attrivue_core.configs"
        for i in graph.imports
    )
    assert any(i.in_function for i in graph.imports)
    # Every module of the project is held to the rules, the research code and bench included.
    assert set(LAYERED) == set(SOURCE_PACKAGES)
    for module in ("worker.ml.training.engine", "worker.research.suite", "bench.bench_load"):
        assert module in graph.modules and within(module, LAYERED)


# -- each check fails on a planted violation


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_planted_forbidden_import_is_reported(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "api/__init__.py": "",
            "api/ok.py": "import json\n",
            "api/routes.py": "def handler():\n    from jobs.heavy import run\n    return run\n",
            "core/__init__.py": "",
            "core/maths.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
            "jobs/__init__.py": "",
            "jobs/heavy.py": "def run():\n    pass\n",
        },
    )
    graph = build_graph(root, ["api", "core", "jobs"])
    found = forbidden_imports(graph, ["api"], ["jobs"])
    assert found == ["api/routes.py:2 api.routes -> jobs.heavy.run (inside a function)"]
    found = forbidden_imports(graph, ["core"], ["torch", "jobs"])
    assert found == ["core/maths.py:3 core.maths -> torch (under TYPE_CHECKING)"]
    assert forbidden_imports(graph, ["jobs"], ["api", "torch"]) == []


def test_planted_private_imports_are_reported(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "pkg/__init__.py": "__all__ = []\n",
            "pkg/a.py": "_helper = 1\n__version__ = '1'\n",
            "pkg/b.py": "from pkg.a import _helper\nfrom pkg import __all__\n",
            "pkg/c.py": "import pkg.a\n\ndef f():\n    return pkg.a._helper\n",
            "pkg/d.py": "from . import a as alias\nfrom .a import __version__\nx = alias._helper\n",
            "pkg/e.py": "from collections import _chain\n_own = 1\n",
        },
    )
    graph = build_graph(root, ["pkg"])
    assert sorted(private_imports(graph, ["pkg"])) == [
        "pkg/b.py:1 pkg.b -> pkg.a._helper",
        "pkg/c.py:4 pkg.c reads pkg.a._helper",
        "pkg/d.py:3 pkg.d reads pkg.a._helper",
    ]
    assert private_imports(graph, ["other"]) == []


def test_planted_cycle_is_reported(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "def thing():\n    from pkg import c\n    return c\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "import pkg.a\n",
            "other/__init__.py": "",
            "other/x.py": "from other import y\n",
            "other/y.py": "from . import x\n",
        },
    )
    graph = build_graph(root, ["pkg", "other"])
    assert sorted(import_cycles(graph, ["pkg", "other"])) == [
        ["other.x", "other.y"],
        ["pkg.a", "pkg.b", "pkg.c"],
    ]
    # Only the packages named take part: a cycle through a module left out is not one.
    assert import_cycles(graph, ["pkg.a", "pkg.b", "pkg.d"]) == []
    text = describe_cycle(graph, ["pkg.a", "pkg.b", "pkg.c"])
    assert "pkg/b.py:2 pkg.b -> pkg.c (inside a function)" in text

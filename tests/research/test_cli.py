"""``python -m worker.research``: every experiment is a subcommand with its own ``--help``; the
modules of ``worker.research`` (and the alias ``worker.experiments``) import no private name of
another module and form no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from worker.research.cli import EXPERIMENTS, build_parser

REPO = Path(__file__).resolve().parents[2]
RESEARCH = REPO / "worker" / "research"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_experiment() -> None:
    assert set(EXPERIMENTS) == {
        "four-settings",
        "shortcut",
        "remedies",
        "regression",
        "corrections",
        "segmentation",
        "regimes",
    }
    done = _run("-m", "worker.research", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m worker.research")
    for name in EXPERIMENTS:
        assert f"\n    {name} " in done.stdout or f"\n    {name}\n" in done.stdout, name


def test_alias_help_runs_the_same_command_line() -> None:
    done = _run("-m", "worker.experiments", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m worker.experiments")
    assert all(name in done.stdout for name in EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_subcommand_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m worker.research {name} ")
    assert "--out" in out


def test_one_subcommand_help_in_a_process() -> None:
    done = _run("-m", "worker.research", "segmentation", "--help")
    assert done.returncode == 0, done.stderr
    assert "--fractions" in done.stdout


def test_an_unknown_experiment_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["nothing"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- imports


def _modules() -> dict[str, Path]:
    found = {"worker.experiments": REPO / "worker" / "experiments.py"}
    for path in sorted(RESEARCH.glob("*.py")):
        name = "worker.research" if path.stem == "__init__" else f"worker.research.{path.stem}"
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for each import of the file, resolved to a module of
    ``known`` where ``from package import module`` names one."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:
                    found.append((submodule, None))
                else:
                    found.append((node.module, alias.name))
    return found


def _private_imports(modules: dict[str, Path]) -> list[str]:
    return [
        f"{name} imports {imported} from {module}"
        for name, path in modules.items()
        for module, imported in _imports(path, set(modules))
        if module.startswith("worker.")
        and (
            (imported is not None and imported.startswith("_"))
            or any(part.startswith("_") for part in module.split("."))
        )
    ]


def _cycles(modules: dict[str, Path]) -> list[list[str]]:
    graph = {
        name: {module for module, _ in _imports(path, set(modules)) if module in modules}
        for name, path in modules.items()
    }

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for following in graph[node]:
                if following == start:
                    return [*path, start]
                if following not in path:
                    stack.append((following, [*path, following]))
        return None

    return [found for name in graph if (found := cycle_from(name))]


def test_no_module_imports_a_private_name_of_another() -> None:
    assert not _private_imports(_modules())


def test_no_import_cycle() -> None:
    modules = _modules()
    assert not _cycles(modules)
    research = {name: path for name, path in modules.items() if name != "worker.experiments"}
    assert all(
        module != "worker.experiments"
        for path in research.values()
        for module, _ in _imports(path, set(modules))
    ), "worker.research imports its alias"


def test_the_checks_see_the_old_layout(tmp_path: Path) -> None:
    """The old layout fails both checks (a guard against checks that see nothing)."""
    alias, remedies = tmp_path / "experiments.py", tmp_path / "remedies.py"
    alias.write_text("from worker.research.remedies import run_remedies\n")
    remedies.write_text(
        "from worker import experiments as ex\nfrom worker.experiments import _fmt\n"
    )
    old = {"worker.experiments": alias, "worker.research.remedies": remedies}
    assert _private_imports(old) == [
        "worker.research.remedies imports _fmt from worker.experiments"
    ]
    assert _cycles(old)

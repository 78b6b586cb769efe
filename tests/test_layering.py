"""The layers stay apart: the backend never imports torch; worker.ml no web, queue or DB code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "torch" not in _modules_after(code)


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

"""Shared by the worker tests of imported models (issue 20): a worker process, an API client
logged in as a project user, a TorchScript model made in the test, its import through
``POST /runs/import``, a subject of a dataset, and an Integrated Gradients map computed by the
worker."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
GRID = [16, 20, 16]
STEPS = 8


@contextmanager
def worker_process(tmp_path: Path, stack: dict) -> Iterator[subprocess.Popen]:
    """A Celery worker of the stack (every queue), logging to ``tmp_path/worker.log``."""
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield worker
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()


def api_client(username: str) -> Any:
    """A TestClient of the app, entered and logged in as ``username`` (bearer token); the
    caller exits it."""
    from fastapi.testclient import TestClient

    from backend.main import create_app

    client = TestClient(create_app())
    client.__enter__()
    login = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return client


def import_model(client: Any, dataset_id: int, name: str, content: bytes, **spec: Any) -> Any:
    """``POST /runs/import`` of ``content`` with the input spec's fields (grid: ``GRID``)."""
    grid = spec.pop("grid", GRID)
    data = {"dataset_id": str(dataset_id), "name": name, "grid": [str(v) for v in grid]}
    data.update({key: str(value) for key, value in spec.items()})
    return client.post("/api/v1/runs/import", data=data, files={"model": (f"{name}.bin", content)})


def ig_map(client: Any, run_id: int, subject_id: int, tmp_path: Path) -> tuple[int, np.ndarray]:
    """Ask for an IG map, wait for the worker, and return its id and the stored volume."""
    from backend.core.db import session_scope
    from backend.models import AttributionMap

    reply = client.post(
        "/api/v1/attributions",
        json={
            "run_id": run_id,
            "subject_id": subject_id,
            "method": "integrated_gradients",
            "params": {"steps": STEPS},
        },
    )
    assert reply.status_code == 201, reply.text
    map_id = reply.json()["id"]

    def done() -> str | None:
        with session_scope() as session:
            status = session.get(AttributionMap, map_id).status
        return status if status in ("succeeded", "failed", "cancelled") else None

    status = wait_for(done, timeout=300, interval=0.5, what=f"map {map_id}")
    log = (tmp_path / "worker.log").read_text()[-3000:]
    assert status == "succeeded", (client.get(f"/api/v1/attributions/{map_id}").json(), log)
    content = client.get(f"/api/v1/attributions/{map_id}/map.nii.gz").content
    image = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    return map_id, np.asarray(image.dataobj, dtype=np.float32)


class Scripted(nn.Module):
    """A small 3D classifier with three outputs (the pathological logit is the third)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))
        return self.head(features)


def torchscript_bytes(net: nn.Module) -> bytes:
    """``net`` scripted and saved (``torch.jit.save``), as a TorchScript upload is."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def first_subject(dataset_id: int, split: str = "test") -> tuple[int, Path, Path | None]:
    """The id, image and brain mask (absolute paths) of a subject of the split."""
    from backend.core.db import session_scope
    from backend.models import Subject
    from backend.storage import get_storage

    storage = get_storage()
    with session_scope() as session:
        row = session.query(Subject).filter_by(dataset_id=dataset_id, split=split).first()
        assert row is not None, f"dataset {dataset_id} has no {split} subject"
        brain = storage.absolute(row.brain_path) if row.brain_path else None
        return row.id, storage.absolute(row.image_path), brain

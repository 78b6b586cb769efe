"""Model import and export routes without a worker: the upload cap (413), an import that no
cpu-queue worker checks in time (503, nothing left), and runs with nothing to export."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import brain_volume

GRID = ["16", "20", "16"]


@pytest.fixture
def limits(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small limits, set before the app reads its settings."""
    monkeypatch.setenv("ATTRIVUE_MAX_MODEL_BYTES", "4096")
    monkeypatch.setenv("ATTRIVUE_MODEL_CHECK_SECONDS", "1")


def _dataset(api: TestClient) -> int:
    dataset_id = int(api.post("/api/v1/datasets", json={"name": "d"}).json()["id"])
    image, _ = brain_volume(seed=0)
    content = gzip.compress(nib.Nifti1Image(image.astype(np.float32), np.eye(4)).to_bytes())
    reply = api.post(
        f"/api/v1/datasets/{dataset_id}/subjects",
        data={"subject_key": "sub-0", "label": "0"},
        files={"image": ("sub-0.nii.gz", content)},
    )
    assert reply.status_code == 201, reply.text
    return dataset_id


def _torchscript_like() -> bytes:
    """A zip laid out as torch.jit.save writes one (the API recognises it without torch)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("m/code/__torch__/m.py", "class M: pass\n")
        archive.writestr("m/version", "3\n")
    return buffer.getvalue()


def _import(api: TestClient, dataset_id: int, content: bytes) -> object:
    return api.post(
        "/api/v1/runs/import",
        data={"dataset_id": str(dataset_id), "name": "m", "grid": GRID},
        files={"model": ("m.ts", content)},
    )


def _stored(data_dir: Path) -> list[str]:
    return [
        str(p.relative_to(data_dir))
        for folder in ("imports", "runs", "tmp")
        if (data_dir / folder).exists()
        for p in (data_dir / folder).rglob("*")
        if p.is_file()
    ]


def test_an_unchecked_import_answers_503_and_a_large_one_413(
    limits: None, api: TestClient, app_env: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import Job, Run

    dataset_id = _dataset(api)
    reply = _import(api, dataset_id, _torchscript_like())
    assert reply.status_code == 503, reply.text
    assert "no worker of the cpu queue checked the model within 1 s" in reply.json()["detail"]
    too_large = _import(api, dataset_id, b"PK" + b"x" * 5000)
    assert too_large.status_code == 413, too_large.text
    with session_scope() as session:
        assert session.query(Run).count() == 0
        assert session.query(Job).count() == 0
    assert _stored(app_env) == []


def test_a_run_without_a_checkpoint_has_nothing_to_export(api: TestClient) -> None:
    dataset_id = _dataset(api)
    run = api.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "r", "config": {"grid": [16] * 3}}
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    assert api.get(f"/api/v1/runs/{run_id}/checkpoint").status_code == 404
    bundle = api.get(f"/api/v1/runs/{run_id}/bundle")
    assert bundle.status_code == 409
    assert "no best checkpoint" in bundle.json()["detail"]
    assert api.get("/api/v1/runs/999/bundle").status_code == 404

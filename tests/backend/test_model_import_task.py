"""The ``task`` of an imported model's input spec through the route, without a worker: the
form's value reaches the spec (and so the run config), a task other than classification or
regression is refused (422), and an imported regression run is refused a shortcut report
before anything is queued (it has no per-subject predictions, as a trained regression run)."""

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
    return buffer.getvalue()


def _post(api: TestClient, dataset_id: int, **form: str) -> object:
    return api.post(
        "/api/v1/runs/import",
        data={"dataset_id": str(dataset_id), "name": "m", "grid": GRID, **form},
        files={"model": ("m.ts", _torchscript_like())},
    )


def test_the_form_task_reaches_the_spec_and_a_wrong_one_is_refused(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.services import models as model_svc
    from backend.services.errors import InvalidInput

    seen: list[object] = []

    def import_model(*args: object, spec: object, **kwargs: object) -> None:
        seen.append(spec)
        raise InvalidInput("stopped here")

    monkeypatch.setattr(model_svc, "import_model", import_model)
    dataset_id = _dataset(api)
    reply = _post(api, dataset_id, task="regression", logit_index="1")
    assert reply.status_code == 422 and "stopped here" in reply.text  # type: ignore[attr-defined]
    (spec,) = seen
    assert spec.task == "regression" and spec.logit_index == 1  # type: ignore[attr-defined]
    assert spec.run_config()["task"] == "regression"  # type: ignore[attr-defined]
    default = _post(api, dataset_id)
    assert default.status_code == 422  # type: ignore[attr-defined]
    assert seen[-1].task == "classification"  # type: ignore[attr-defined]
    wrong = _post(api, dataset_id, task="segmentation")
    assert wrong.status_code == 422  # type: ignore[attr-defined]
    assert "regression" in wrong.text  # type: ignore[attr-defined]
    assert len(seen) == 2  # refused by the form, before the service


def test_an_imported_regression_run_gets_no_shortcut_report(api: TestClient, app_env: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import Job, Run, ShortcutReport

    dataset_id = _dataset(api)
    created = api.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "r", "config": {"grid": [16] * 3}}
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.source, run.status, run.model_format = "imported", "succeeded", "torchscript"
        run.config = {**run.config, "task": "regression"}
        jobs = session.query(Job).count()
    reply = api.post(
        f"/api/v1/runs/{run_id}/shortcut-reports",
        json={"split": "train", "region": {"kind": "top_relevance"}},
    )
    assert reply.status_code == 404, reply.text
    assert "it is a regression run" in reply.json()["detail"]
    with session_scope() as session:
        assert session.query(ShortcutReport).count() == 0
        assert session.query(Job).count() == jobs

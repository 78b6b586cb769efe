"""Issue 16 item 5: a run or a map whose memory estimate exceeds the worker budget
(ATTRIVUE_WORKER_MEMORY_GB) is refused with a message before anything is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import brain_volume, write_nifti


@pytest.fixture
def dataset_id(api: TestClient, tmp_path: Path) -> int:
    dataset = api.post("/api/v1/datasets", json={"name": "budget"}).json()["id"]
    for i in range(2):
        image = write_nifti(tmp_path / f"i{i}.nii.gz", brain_volume(seed=i)[0]).read_bytes()
        resp = api.post(
            f"/api/v1/datasets/{dataset}/subjects",
            data={"subject_key": f"s{i}", "label": str(i)},
            files={"image": ("i.nii.gz", image)},
        )
        assert resp.status_code == 201, resp.text
    return int(dataset)


def _counts() -> tuple[int, int]:
    from backend.core.db import session_scope
    from backend.models import Job, Run

    with session_scope() as session:
        return session.query(Run).count(), session.query(Job).count()


def test_item5_a_run_over_the_worker_memory_budget_is_refused(
    api: TestClient, dataset_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _counts()
    huge = {"network": "densenet121", "grid": [512, 512, 512]}
    resp = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "huge", "config": huge})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "GiB" in detail and "ATTRIVUE_WORKER_MEMORY_GB" in detail, detail
    assert "densenet121" in detail and "134,217,728 voxels" in detail, detail
    assert _counts() == before, "nothing is queued"

    # Attribution steps count: Integrated Gradients in the loss keeps a graph per point.
    ig = {"loss_setting": "lc_la_unsupervised", "train_attribution": ["integrated_gradients"]}
    ig_run = {**ig, "network": "resnet18", "grid": [160, 192, 160], "ig_steps": 64}
    resp = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "ig", "config": ig_run})
    assert resp.status_code == 422 and "differentiated pass" in resp.json()["detail"]

    ok = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "ok", "config": {}})
    assert ok.status_code == 201, ok.text

    # The budget is a setting: a tiny one refuses even the default run.
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "worker_memory_gb", 0.1)
    small = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "s", "config": {}})
    assert small.status_code == 422 and "0.1 GiB" in small.json()["detail"]


def test_item5_a_map_over_the_worker_memory_budget_is_refused(
    api: TestClient, dataset_id: int
) -> None:
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run

    run = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "r", "config": {}})
    assert run.status_code == 201, run.text
    with session_scope() as session:
        session.get(Run, run.json()["id"]).status = "succeeded"
    subject = api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"][0]["id"]
    body = {
        "run_id": run.json()["id"],
        "subject_id": subject,
        "method": "integrated_gradients",
        "params": {"steps": 1000, "internal_batch_size": 4096},
    }
    resp = api.post("/api/v1/attributions", json=body)
    assert resp.status_code == 422, resp.text
    assert "ATTRIVUE_WORKER_MEMORY_GB" in resp.json()["detail"]
    with session_scope() as session:
        assert session.query(AttributionMap).count() == 0
    body["params"] = {"steps": 16, "internal_batch_size": 8}
    assert api.post("/api/v1/attributions", json=body).status_code == 201

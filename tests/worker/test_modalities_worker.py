"""A two-channel dataset end to end (issue 20): imported through the API from a manifest
with a column per modality, trained with the attribution constraint by a real Celery worker,
then explained by the same worker: one map per channel, which sum to the map."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.modalities import download_volume, two_channel_import
from tests.worker.conftest import PASSWORD


def _client() -> TestClient:
    from backend.main import create_app

    client = TestClient(create_app())
    token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD}).json()[
        "access_token"
    ]
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _researcher() -> None:
    from backend.core.db import session_scope
    from backend.services.projects import create_project
    from backend.services.users import create_user

    with session_scope() as session:
        user = create_user(session, username="r", password=PASSWORD, role="researcher")
        create_project(session, name="p", description="", user=user)


def test_a_two_channel_run_trains_with_the_constraint_and_maps_each_channel(
    stack: dict, tmp_path: Path
) -> None:
    _researcher()
    api = _client()
    dataset_id = two_channel_import(api)
    config = {
        "loss_setting": "lc_la_supervised",
        "epochs": 2,
        "batch_size": 2,
        "grid": [16, 20, 16],
        "device": "cpu",
        "in_channels": 1,  # the dataset decides: two modalities, two channels
    }
    resp = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "mm", "config": config})
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["id"]
    assert resp.json()["config"]["in_channels"] == 2

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def status_of(url: str) -> str | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            status = api.get(url).json()["status"]
            return status if status in ("succeeded", "failed", "cancelled") else None

        run_status = wait_for(
            lambda: status_of(f"/api/v1/runs/{run_id}"), timeout=240, interval=1, what="run"
        )
        assert run_status == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
        metrics = api.get(f"/api/v1/runs/{run_id}").json()["metrics"]
        assert "test_attr_lesion_mass" in metrics

        subject = next(
            s
            for s in api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
            if s["split"] == "test" and s["has_mask"]
        )
        assert subject["channels"] == ["t1", "flair"]
        resp = api.post(
            "/api/v1/attributions",
            json={"run_id": run_id, "subject_id": subject["id"], "params": {"steps": 8}},
        )
        assert resp.status_code == 201, resp.text
        url = f"/api/v1/attributions/{resp.json()['id']}"
        map_status = wait_for(lambda: status_of(url), timeout=120, interval=1, what="map")
        assert map_status == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
        whole = download_volume(api, f"{url}/map.nii.gz")
        c0 = download_volume(api, f"{url}/channels/0.nii.gz")
        c1 = download_volume(api, f"{url}/channels/1.nii.gz")
        assert whole.shape == c0.shape == c1.shape == tuple(subject["shape"])
        np.testing.assert_allclose(
            c0 + c1, whole, rtol=1e-5, atol=1e-7 * float(np.abs(whole).max())
        )
        assert np.abs(c0).max() > 0 and np.abs(c1).max() > 0 and not np.allclose(c0, c1)
        assert api.get(f"{url}/channels/2.nii.gz").status_code == 404
        # The stats and the display map of the (summed) map work as for one channel.
        assert api.get(f"{url}/stats").status_code == 200
        assert api.get(f"{url}/display.nii.gz").status_code == 200
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        api.close()

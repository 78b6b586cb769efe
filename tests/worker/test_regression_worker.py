"""A regression run end to end: launched through the API, trained by a real Celery worker,
then a map of its prediction computed by the same worker (embedded broker + SQLite, and
Redis + PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD, make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
# Every second subject has a lesion (make_dataset); its target grows with the index.
TARGETS = [0.0, 1.5, 0.0, 3.0, 0.0, 2.0, 0.0, 2.5]


def _client() -> TestClient:
    from backend.main import create_app

    client = TestClient(create_app())
    token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD}).json()[
        "access_token"
    ]
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_a_regression_run_trains_and_explains_on_a_real_worker(stack: dict, tmp_path: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import RunMetric

    _, dataset_id = make_dataset(tmp_path, SPLITS, targets=TARGETS, target_name="EDSS")
    config = {
        "task": "regression",
        "loss_setting": "lc_la_supervised",
        "regression": {"loss": "mse", "constraints": ["outside_lesions", "zero_target"]},
        "epochs": 2,
        "batch_size": 2,
        "grid": [16, 20, 16],
        "device": "cpu",
        "val_attribution": False,
        "early_stopping_metric": "val_mae",
    }
    api = _client()
    resp = api.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "reg", "config": config}
    )
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["id"]

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
        run = api.get(f"/api/v1/runs/{run_id}").json()
        assert run_status == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]

        # The regression metrics, not the classification ones, on the test split.
        metrics = run["metrics"]
        assert {"test_mae", "test_rmse", "test_attr_lesion_mass"} <= set(metrics)
        assert "test_auroc" not in metrics
        assert metrics["test_n"] == 2 and metrics["test_rmse"] >= metrics["test_mae"] >= 0
        with session_scope() as session:
            names = {m.name for m in session.query(RunMetric).filter(RunMetric.run_id == run_id)}
        assert {"val_mae", "loss_c", "loss_a"} <= names and "val_auroc" not in names

        # A map of the regression model's prediction, computed by the same worker; the run's
        # config and its dataset's target name are what the viewer's legend reads.
        subject = next(
            s
            for s in api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
            if s["split"] == "test" and s["has_mask"]
        )
        resp = api.post(
            "/api/v1/attributions",
            json={"run_id": run_id, "subject_id": subject["id"], "params": {"steps": 4}},
        )
        assert resp.status_code == 201, resp.text
        url = f"/api/v1/attributions/{resp.json()['id']}"
        assert wait_for(lambda: status_of(url), timeout=120, interval=1, what="map") == "succeeded"
        assert api.get(f"{url}/map.nii.gz").status_code == 200
        assert run["config"]["task"] == "regression"
        assert api.get(f"/api/v1/datasets/{dataset_id}").json()["target_name"] == "EDSS"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        api.close()

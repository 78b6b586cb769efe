"""A real Celery worker runs a training job: embedded broker + SQLite, and Redis + PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import make_dataset


def test_worker_runs_a_training_job(stack: dict, tmp_path: Path) -> None:
    from backend.core.config import get_settings
    from backend.core.db import session_scope, upgrade_database
    from backend.models import Job, Run, RunMetric, User
    from backend.services.jobs import dispatch
    from backend.services.runs import create_run
    from backend.storage import get_storage

    upgrade_database()
    user_id, dataset_id = make_dataset(tmp_path, ["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    # grad_clip_norm: the clipping share is recorded too (lc_only probes L_A on its first batch).
    config = {
        "epochs": 2,
        "batch_size": 2,
        "grid": [16, 20, 16],
        "device": "cpu",
        "grad_clip_norm": 5.0,
    }
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(session, dataset_id=dataset_id, name="w", config=config, user=user)
        session.commit()
        dispatch(session, run.job, get_settings())
        run_id, job_id = run.id, run.job_id

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def finished() -> str | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with session_scope() as session:
                status = session.get(Job, job_id).status
            return status if status in ("succeeded", "failed", "cancelled") else None

        status = wait_for(finished, timeout=240, interval=1, what=f"train job {job_id}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    with session_scope() as session:
        job = session.get(Job, job_id)
        run = session.get(Run, run_id)
        assert status == "succeeded", job.error
        assert job.progress == pytest.approx(1.0) and job.attempts == 1 and job.worker
        assert run.status == "succeeded" and "test_auroc" in run.metrics
        epochs = {m.epoch for m in session.query(RunMetric).filter(RunMetric.run_id == run_id)}
        assert len(epochs) == 2
    assert (get_storage().checkpoint_dir(run_id) / "last.pt").is_file()

    # The gradient instrumentation of every epoch reaches the API (worker.ml.gradients).
    from fastapi.testclient import TestClient

    from backend.main import create_app
    from tests.worker.conftest import PASSWORD

    with TestClient(create_app()) as client:
        token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        points = client.get(f"/api/v1/runs/{run_id}/metrics").json()["data"]
    by_name: dict[str, dict[int, float]] = {}
    for point in points:
        by_name.setdefault(point["name"], {})[point["epoch"]] = point["value"]
    for name in (
        "grad_norm_c",
        "grad_norm_a",
        "grad_ratio",
        "grad_cosine",
        "grad_norm_total",
        "clip_fraction",
        "attribution_abs_mean",
        "attribution_seconds",
        "attribution_share",
    ):
        assert set(by_name.get(name, {})) == {1, 2}, name
    for epoch in (1, 2):
        assert -1.0 <= by_name["grad_cosine"][epoch] <= 1.0
        assert 0.0 < by_name["attribution_share"][epoch] < 1.0
        assert 0.0 <= by_name["clip_fraction"][epoch] <= 1.0
        assert by_name["grad_ratio"][epoch] > 0

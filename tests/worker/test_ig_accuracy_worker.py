"""Issue 21 goal 4 through the API and a real Celery worker: a map asked for with a target
completeness delta records the points the worker chose and the delta it reached; a map whose
cap on points comes first records that the target was not reached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD, make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
GRID = [16, 20, 16]


def test_target_delta_is_reached_and_recorded_through_a_worker(stack: dict, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from backend.core.db import session_scope
    from backend.main import create_app
    from backend.models import AttributionMap, Subject, User
    from backend.services.runs import create_run
    from worker.tasks.train import run_training

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    config = {"epochs": 1, "batch_size": 2, "grid": GRID, "device": "cpu", "seed": 0}
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(session, dataset_id=dataset_id, name="r", config=config, user=user)
        session.commit()
        run_id, train_job = run.id, run.job_id
        subject_id = (
            session.query(Subject).filter_by(dataset_id=dataset_id, split="test").first().id
        )
    run_training(train_job)

    requests = {
        "to_1_percent": {"target_delta": 0.01, "max_points": 257},
        # A target no three points reach: the cap comes first.
        "capped": {"target_delta": 1e-9, "max_points": 3},
    }
    ids: dict[str, int] = {}
    with TestClient(create_app()) as client:
        login = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for name, params in requests.items():
            reply = client.post(
                "/api/v1/attributions",
                json={"run_id": run_id, "subject_id": subject_id, "params": params},
            )
            assert reply.status_code == 201, reply.text
            ids[name] = reply.json()["id"]

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def finished() -> dict[str, str] | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with session_scope() as session:
                states = {n: session.get(AttributionMap, i).status for n, i in ids.items()}
            done = all(s in ("succeeded", "failed", "cancelled") for s in states.values())
            return states if done else None

        states = wait_for(finished, timeout=300, interval=1, what="the two maps")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert set(states.values()) == {"succeeded"}, (
        states,
        (tmp_path / "worker.log").read_text()[-3000:],
    )

    with TestClient(create_app()) as client:
        login = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        reached = client.get(f"/api/v1/attributions/{ids['to_1_percent']}").json()
        assert reached["params"]["target_delta"] == 0.01
        assert reached["params"]["max_points"] == 257
        stats = reached["stats"]
        assert stats["ig_target_reached"] == 1.0
        assert 3 <= stats["ig_points"] <= 257 and stats["ig_points"] == int(stats["ig_points"])
        assert stats["relative_delta"] <= 0.01
        assert reached["convergence_delta"] is not None
        capped = client.get(f"/api/v1/attributions/{ids['capped']}").json()["stats"]
        assert capped["ig_target_reached"] == 0.0
        assert capped["ig_points"] == 3.0
        assert capped["relative_delta"] > 1e-9

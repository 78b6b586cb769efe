"""Job control with real Celery worker processes: cancel, recovery after SIGKILL, /health.

Each test runs on the embedded stack (filesystem broker + SQLite) and, when
ATTRIVUE_TEST_REDIS_URL and ATTRIVUE_TEST_DATABASE_URL are set, on Redis + PostgreSQL. The
workers beat every second and a job is lost after 5 s of silence, so that recovery is quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD, make_dataset

TERMINAL = ("succeeded", "failed", "cancelled")
# Eight training subjects in batches of two on a 24x28x24 grid, with an IG constraint: four
# steps of a few tenths of a second each (most of an epoch, as validation is cheap here).
CONFIG = {
    "batch_size": 2,
    "grid": [24, 28, 24],
    "device": "cpu",
    "seed": 3,
    "loss_setting": "lc_la_supervised",
    "train_attribution": ["integrated_gradients"],
    "ig_steps": 8,
    "val_attribution": False,
}


def _queue_run(dataset_id: int, epochs: int) -> tuple[int, int]:
    from backend.core.config import get_settings
    from backend.core.db import session_scope
    from backend.models import User
    from backend.services.jobs import dispatch
    from backend.services.runs import create_run

    with session_scope() as session:
        user = session.query(User).filter_by(username="r").one()
        config = {**CONFIG, "epochs": epochs}
        run = create_run(session, dataset_id=dataset_id, name="r", config=config, user=user)
        session.commit()
        dispatch(session, run.job, get_settings())
        return run.id, run.job_id


def _start_worker(stack: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
            env={**os.environ, **stack},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def job_row(job_id: int):
    from backend.core.db import session_scope
    from backend.models import Job

    with session_scope() as session:
        return session.get(Job, job_id)


def epochs_stored(run_id: int) -> list[tuple[int, str]]:
    from backend.core.db import session_scope
    from backend.models import RunMetric

    with session_scope() as session:
        rows = session.query(RunMetric.epoch, RunMetric.name).filter_by(run_id=run_id).all()
        return [(epoch, name) for epoch, name in rows]


def _alive(worker: subprocess.Popen, log: Path) -> None:
    assert worker.poll() is None, log.read_text()[-3000:]


def api_client() -> TestClient:
    from backend.main import create_app

    client = TestClient(create_app())
    token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def test_cancel_stops_training_within_a_step_and_health_shows_the_worker(
    stack: dict, tmp_path: Path
) -> None:
    run_id, job_id = _queue_run(make_dataset(tmp_path)[1], epochs=30)
    log = tmp_path / "worker.log"
    worker = _start_worker(stack, log)
    client = api_client()
    try:

        def listed() -> list[dict] | None:
            _alive(worker, log)
            return client.get("/api/v1/health").json()["workers"] or None

        workers = wait_for(listed, timeout=90, what="the worker in /health")
        assert len(workers) == 1 and workers[0]["queues"] == ["cpu", "gpu"]
        assert workers[0]["gpu"] == "cpu" and f":{worker.pid}" in workers[0]["name"]

        def in_epoch_two() -> bool:
            _alive(worker, log)
            return any(epoch == 1 for epoch, _ in epochs_stored(run_id))

        wait_for(in_epoch_two, timeout=120, interval=0.1, what="training to reach epoch 2")
        training = client.get("/api/v1/health").json()["workers"]
        asked = time.monotonic()
        cancel = client.post(f"/api/v1/runs/{run_id}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"]

        def ended() -> str | None:
            status = job_row(job_id).status
            return status if status in TERMINAL else None

        assert wait_for(ended, timeout=60, interval=0.1, what="the cancel") == "cancelled"
        took = time.monotonic() - asked
    finally:
        stop_worker(worker)
    job = job_row(job_id)
    # The flag is read before every step: training ends with the step it was in (a few tenths
    # of a second here; 8 s leaves room for a loaded machine; 28 more epochs would take >60 s).
    assert took < 8, f"the cancel took {took:.1f} s; {job.message}"
    assert job.message.startswith("cancelled (epoch "), job.message
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "cancelled"
    assert max(epoch for epoch, _ in epochs_stored(run_id)) <= 3
    assert [(w["name"], w["busy"]) for w in training] == [(workers[0]["name"], True)]
    assert client.get("/api/v1/health").json()["workers"] == []  # gone after its shutdown


def test_a_job_whose_worker_is_killed_is_recovered_and_resumed(stack: dict, tmp_path: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import Run
    from backend.storage import get_storage

    dataset_id = make_dataset(tmp_path)[1]
    run_id, job_id = _queue_run(dataset_id, epochs=3)
    log = tmp_path / "worker.log"
    first = _start_worker(stack, log)
    try:

        def epoch_one_checkpointed() -> bool:
            _alive(first, log)
            last = get_storage().checkpoint_dir(run_id) / "last.pt"
            return last.is_file() and any(epoch == 1 for epoch, _ in epochs_stored(run_id))

        wait_for(epoch_one_checkpointed, timeout=120, interval=0.2, what="epoch 1's checkpoint")
        first.kill()  # SIGKILL: no shutdown code runs, the message is never acknowledged
        first.wait()
        assert job_row(job_id).status == "running"
    finally:
        stop_worker(first)
    second = _start_worker(stack, log)
    try:

        def ended() -> str | None:
            _alive(second, log)
            status = job_row(job_id).status
            return status if status in TERMINAL else None

        status = wait_for(ended, timeout=150, interval=0.5, what="the recovered job")
    finally:
        stop_worker(second)
    job = job_row(job_id)
    assert status == "succeeded", f"{job.error}\n{log.read_text()[-3000:]}"
    assert job.attempts == 2 and job.message == "trained 3 epochs"
    assert "re-queued" in log.read_text()
    with session_scope() as session:
        runs = session.query(Run).filter_by(dataset_id=dataset_id).all()
        assert len(runs) == 1 and runs[0].status == "succeeded"
        assert runs[0].metrics["resumed_from_epoch"] >= 1
        assert runs[0].metrics["epochs_completed"] == 3
    points = Counter(epochs_stored(run_id))
    assert {epoch for epoch, _ in points} == {1, 2, 3}
    assert set(points.values()) == {1}, "an epoch's metrics were stored twice"


# --------------------------------------------------------------------------- in process


def _running_job(*, worker: str | None, heartbeat_age: float, attempts: int = 1) -> int:
    """A run whose job is running on ``worker`` with a heartbeat ``heartbeat_age`` s old."""
    from datetime import UTC, datetime, timedelta

    from backend.core.db import session_scope
    from backend.models import Dataset, Job, Project, Run

    with session_scope() as session:
        project = session.query(Project).first()
        if project is None:
            project = Project(name="p", description="")
            session.add(project)
            session.flush()
        dataset = Dataset(project_id=project.id, name="d", description="")
        session.add(dataset)
        session.flush()
        beat = datetime.now(UTC) - timedelta(seconds=heartbeat_age)
        job = Job(kind="train", status="running", worker=worker, heartbeat_at=beat)
        job.attempts = attempts
        session.add(job)
        session.flush()
        session.add(
            Run(name="r", dataset_id=dataset.id, config={}, status="running", job_id=job.id)
        )
        return job.id


def test_claims_are_atomic_and_fence_the_loser(stack: dict) -> None:
    from backend.core.db import session_scope
    from backend.models import Job, JobStatus
    from worker.tasks.common import JobReporter, claim_job, finish_job

    with session_scope() as session:
        job = Job(kind="train")
        session.add(job)
        session.flush()
        job_id = job.id
    claims = []
    start = threading.Barrier(6)

    def claim() -> None:
        start.wait()
        claims.append(claim_job(job_id))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].attempt == 1
    assert job_row(job_id).status == "running"

    # Its heartbeat goes stale: a redelivered task takes the job over, the first attempt stops.
    with session_scope() as session:
        session.get(Job, job_id).heartbeat_at = job_row(job_id).heartbeat_at.replace(year=2000)
    taken = claim_job(job_id)
    assert taken is not None and taken.attempt == 2
    loser = JobReporter(won[0])
    assert loser.cancel_requested() and loser.lost
    assert not finish_job(won[0], JobStatus.failed, message="written by the loser")
    assert job_row(job_id).status == "running" and job_row(job_id).attempts == 2

    # A cancel request is seen by the very next check: training stops before its next step.
    winner = JobReporter(taken)
    assert not winner.cancel_requested()
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True
    assert winner.cancel_requested() and not winner.lost


def test_recovery_requeues_only_lost_jobs_once(stack: dict, monkeypatch) -> None:
    from backend.core.config import get_settings
    from backend.core.db import session_scope
    from backend.models import Job, Run
    from backend.services import jobs

    sent: list[int] = []
    monkeypatch.setattr(jobs, "send_job", lambda task, job_id, settings: sent.append(job_id))
    with session_scope() as session:
        jobs.register_worker(session, name="alive", hostname="h", queues=["gpu"], gpu="cpu", pid=1)
    lost = _running_job(worker="dead", heartbeat_age=60, attempts=1)
    busy = _running_job(worker="dead", heartbeat_age=1)  # beat recently: not lost yet
    silent_but_alive = _running_job(worker="alive", heartbeat_age=60)
    exhausted = _running_job(worker="dead", heartbeat_age=60, attempts=3)

    barrier = threading.Barrier(4)
    results: list[list[int]] = []

    def recover() -> None:
        barrier.wait()
        with session_scope() as session:
            results.append(jobs.recover_lost_jobs(session, get_settings()))

    threads = [threading.Thread(target=recover) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sum(results, [])) == [lost] and sent == [lost]
    with session_scope() as session:
        job = session.get(Job, lost)
        assert (job.status, job.message, job.attempts) == ("queued", jobs.REQUEUED_MESSAGE, 1)
        assert session.query(Run).filter_by(job_id=lost).one().status == "queued"
        assert session.get(Job, busy).status == "running"
        assert session.get(Job, silent_but_alive).status == "running"
        assert session.get(Job, exhausted).status == "failed"
        assert session.query(Run).filter_by(job_id=exhausted).one().status == "failed"

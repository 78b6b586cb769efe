"""Issue 16 item 5: a cancel stops a map while it is being computed.

The attribution task runs in this process (``run_attribution``, the Celery task's body); a
thread asks for the cancel once the job runs, as ``POST /jobs/{id}/cancel`` does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.worker.conftest import make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
GRID = [16, 20, 16]


def test_item5_cancel_stops_a_map_being_computed(
    stack: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.ml.training.cancel as training
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Job, Subject, User
    from backend.schemas.attribution import AttributionCreate
    from backend.services.attributions import create_attribution
    from backend.services.jobs import cancel_job
    from backend.services.runs import create_run
    from backend.storage import get_storage
    from worker.tasks.attribute import run_attribution
    from worker.tasks.train import run_training

    monkeypatch.setattr(training, "CANCEL_POLL_SECONDS", 0.0, raising=False)
    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    config = {"epochs": 1, "batch_size": 2, "grid": GRID, "device": "cpu", "seed": 0}
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(session, dataset_id=dataset_id, name="r", config=config, user=user)
        session.commit()
        run_id, train_job = run.id, run.job_id
    run_training(train_job)
    with session_scope() as session:
        user = session.get(User, user_id)
        subject = session.query(Subject).filter_by(dataset_id=dataset_id).first()
        body = AttributionCreate(
            run_id=run_id,
            subject_id=subject.id,
            method="integrated_gradients",
            params={"steps": 1000, "internal_batch_size": 1},  # a thousand forward passes
        )
        row = create_attribution(session, body=body, user=user)
        session.commit()
        map_id, job_id = row.id, row.job_id

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with session_scope() as session:
                job = session.get(Job, job_id)
                if job.status == "running" and "computing" in (job.message or ""):
                    cancel_job(session, job)
                    return
            time.sleep(0.02)

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    started = time.monotonic()
    run_attribution(job_id)
    took = time.monotonic() - started
    canceller.join()
    with session_scope() as session:
        job = session.get(Job, job_id)
        row = session.get(AttributionMap, map_id)
        assert job.status == "cancelled", (job.status, job.message, job.error)
        assert job.message == "cancelled while computing integrated_gradients"
        assert row.status == "cancelled" and row.path is None
    assert not get_storage().map_path(run_id, map_id).exists()
    assert took < 60

"""A real Celery worker runs a training job: embedded broker + SQLite, and Redis + PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, _clear_caches, postgres_database
from tests.helpers import brain_volume, wait_for, write_nifti

BACKENDS = ["embedded", "redis+postgres"]


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[dict]:
    """Environment for one backend flavour; the in-process code and the worker share it."""
    env = {"ATTRIVUE_DATA_DIR": str(tmp_path / "data"), "ATTRIVUE_ENVIRONMENT": "test"}
    databases: Iterator[str] | None = None
    if request.param == "redis+postgres":
        redis_url = os.environ.get("ATTRIVUE_TEST_REDIS_URL")
        pg_url = os.environ.get("ATTRIVUE_TEST_DATABASE_URL")
        if not (redis_url and pg_url):
            pytest.skip("set ATTRIVUE_TEST_REDIS_URL and ATTRIVUE_TEST_DATABASE_URL (.ci/run does)")
        import redis

        redis.Redis.from_url(redis_url).flushdb()  # no stale messages from earlier runs
        databases = postgres_database(pg_url)
        env["ATTRIVUE_DATABASE_URL"] = next(databases)
        env["ATTRIVUE_BROKER_URL"] = redis_url
    else:
        monkeypatch.delenv("ATTRIVUE_DATABASE_URL", raising=False)
        monkeypatch.delenv("ATTRIVUE_BROKER_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _clear_caches()
    try:
        yield env
    finally:
        _clear_caches()
        if databases is not None:
            next(databases, None)


def _make_dataset(tmp_path: Path) -> int:
    from backend.core.db import session_scope
    from backend.services.datasets import create_dataset, import_subject
    from backend.services.projects import create_project
    from backend.services.users import create_user
    from backend.storage import get_storage

    with session_scope() as session:
        user = create_user(session, username="r", password="researcher-pass", role="researcher")
        project = create_project(session, name="p", description="", user=user)
        dataset = create_dataset(
            session, project_id=project.id, name="tiny", description="", user=user
        )
        splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
        for i, split in enumerate(splits):
            lesion = i % 2 == 1
            image, mask = brain_volume(seed=i, lesion=lesion)
            img = write_nifti(tmp_path / f"img{i}.nii.gz", image)
            msk = write_nifti(tmp_path / f"mask{i}.nii.gz", mask) if lesion else None
            with open(img, "rb") as fi:
                fm = open(msk, "rb") if msk else None
                import_subject(
                    session,
                    get_storage(),
                    dataset=dataset,
                    subject_key=f"sub-{i}",
                    label=int(lesion),
                    split=split,
                    image=(img.name, fi),
                    mask=(msk.name, fm) if fm and msk else None,
                    max_bytes=10**8,
                )
                if fm:
                    fm.close()
        return user.id, dataset.id


def test_worker_runs_a_training_job(stack: dict, tmp_path: Path) -> None:
    from backend.core.config import get_settings
    from backend.core.db import session_scope, upgrade_database
    from backend.models import Job, Run, RunMetric, User
    from backend.services.jobs import dispatch
    from backend.services.runs import create_run
    from backend.storage import get_storage

    upgrade_database()
    user_id, dataset_id = _make_dataset(tmp_path)
    config = {"epochs": 2, "batch_size": 2, "grid": [16, 20, 16], "device": "cpu"}
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

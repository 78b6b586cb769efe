"""Shared by the worker tests: the backend stack a worker process runs on, and a dataset."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import clear_caches, postgres_database, xdist_redis_url
from tests.helpers import brain_volume, write_nifti

BACKENDS = ["embedded", "redis+postgres"]
PASSWORD = "researcher-pass"
SPLITS = ("train",) * 8 + ("val",) * 2 + ("test",) * 2


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[dict]:
    """Environment of one backend flavour, shared by the test process and its workers."""
    env = {
        "ATTRIVUE_DATA_DIR": str(tmp_path / "data"),
        "ATTRIVUE_ENVIRONMENT": "test",
        "ATTRIVUE_DEVICE": "cpu",
        "ATTRIVUE_HEARTBEAT_SECONDS": "1",
        "ATTRIVUE_JOB_STALE_SECONDS": "5",
    }
    databases: Iterator[str] | None = None
    if request.param == "redis+postgres":
        redis_url = os.environ.get("ATTRIVUE_TEST_REDIS_URL")
        pg_url = os.environ.get("ATTRIVUE_TEST_DATABASE_URL")
        if not (redis_url and pg_url):
            pytest.skip("set ATTRIVUE_TEST_REDIS_URL and ATTRIVUE_TEST_DATABASE_URL (.ci/run does)")
        import redis

        redis_url = xdist_redis_url(redis_url)
        redis.Redis.from_url(redis_url).flushdb()  # no stale messages from earlier runs
        databases = postgres_database(pg_url)
        env["ATTRIVUE_DATABASE_URL"] = next(databases)
        env["ATTRIVUE_BROKER_URL"] = redis_url
    else:
        monkeypatch.delenv("ATTRIVUE_DATABASE_URL", raising=False)
        monkeypatch.delenv("ATTRIVUE_BROKER_URL", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clear_caches()
    from backend.core.db import upgrade_database

    upgrade_database()
    try:
        yield env
    finally:
        clear_caches()
        if databases is not None:
            next(databases, None)


def make_dataset(
    tmp_path: Path,
    splits: Sequence[str] = SPLITS,
    *,
    targets: Sequence[float | None] | None = None,
    target_name: str = "",
) -> tuple[int, int]:
    """A researcher ``r`` in a project, and a dataset with one subject per split entry
    (every second one with a lesion and its mask), with ``targets[i]`` as subject i's
    continuous target when given; returns (user id, dataset id)."""
    from backend.core.db import session_scope
    from backend.services.datasets import create_dataset, import_subject
    from backend.services.projects import create_project
    from backend.services.users import create_user
    from backend.storage import get_storage

    with session_scope() as session:
        user = create_user(session, username="r", password=PASSWORD, role="researcher")
        project = create_project(session, name="p", description="", user=user)
        dataset = create_dataset(
            session,
            project_id=project.id,
            name="d",
            description="",
            user=user,
            target_name=target_name,
        )
        for i, split in enumerate(splits):
            lesion = i % 2 == 1
            image, mask = brain_volume(seed=i, lesion=lesion)
            files = {"image": write_nifti(tmp_path / f"i{i}.nii.gz", image)}
            if lesion:
                files["mask"] = write_nifti(tmp_path / f"m{i}.nii.gz", mask)
            handles = {key: open(path, "rb") for key, path in files.items()}
            try:
                import_subject(
                    session,
                    get_storage(),
                    dataset=dataset,
                    subject_key=f"sub-{i}",
                    label=int(lesion),
                    split=split,
                    target=targets[i] if targets is not None else None,
                    image=(files["image"].name, handles["image"]),
                    mask=(files["mask"].name, handles["mask"]) if lesion else None,
                    max_bytes=10**8,
                )
            finally:
                for handle in handles.values():
                    handle.close()
        return user.id, dataset.id

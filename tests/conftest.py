"""Fixtures: an in-process API on a temporary data directory, and a live server + worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "admin-password-for-tests"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (`make test` runs `-n 2 --dist loadgroup`): the tests of one
    file share a worker, so a module fixture is built once; every test on the session's live
    server (the ``pipeline`` fixture) shares one worker, so that server starts once.

    ``tryfirst``: xdist's worker reads the ``xdist_group`` marks in its own hook of this name
    and turns them into the nodeid's ``@group`` suffix; run after it, the marks came too late
    and every test was scheduled on its own (the live server started on both workers, and a
    module fixture could be built twice). pytest 9.2 ignores the nodeid that xdist 3.8 sets,
    so pyproject.toml keeps pytest below 9.2 (tests/test_xdist_groups.py checks both)."""
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            group = "pipeline"
        else:
            group = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


def xdist_redis_url(url: str) -> str:
    """``url`` with a Redis database of its own per pytest-xdist worker (gw0 keeps the given
    number, gw1 takes the one below it, ...), so that one worker's FLUSHDB and queues never
    meet another's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    head, _, db = url.rpartition("/")
    number = int(db or 0) - int(worker[2:])
    if number < 0:
        raise RuntimeError(f"too many xdist workers for the Redis databases below {url}")
    return f"{head}/{number}"


def clear_caches() -> None:
    from backend.core import db
    from backend.core.config import get_settings

    get_settings.cache_clear()
    db.clear_engine_cache()


def postgres_database(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``base_url``, dropped afterwards."""
    import psycopg

    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"attrivue_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base_url.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        from backend.core import db

        db.clear_engine_cache()
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _databases() -> list[str]:
    """SQLite always; PostgreSQL too when ATTRIVUE_TEST_DATABASE_URL is set (CI sets it)."""
    return ["sqlite"] + (["postgresql"] if os.environ.get("ATTRIVUE_TEST_DATABASE_URL") else [])


@pytest.fixture(params=_databases())
def app_env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Settings pointing at a fresh data directory (filesystem broker) and a fresh database."""
    data = tmp_path / "data"
    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(data))
    monkeypatch.setenv("ATTRIVUE_ENVIRONMENT", "test")
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL", "ATTRIVUE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    databases = None
    if request.param == "postgresql":
        databases = postgres_database(os.environ["ATTRIVUE_TEST_DATABASE_URL"])
        monkeypatch.setenv("ATTRIVUE_DATABASE_URL", next(databases))
    clear_caches()
    try:
        yield data
    finally:
        clear_caches()
        if databases is not None:
            next(databases, None)


@pytest.fixture
def api(app_env: Path) -> Iterator[TestClient]:
    """A TestClient on a migrated database with an admin, logged in by bearer token."""
    from backend.core.db import session_scope, upgrade_database
    from backend.main import create_app
    from backend.services.projects import create_project
    from backend.services.users import create_user

    upgrade_database()
    with session_scope() as session:
        admin = create_user(session, username="admin", password=ADMIN_PASSWORD, role="admin")
        create_project(session, name="test project", description="", user=admin)
    with TestClient(create_app()) as client:
        token = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


# --- the live stack: `attrivue serve` (uvicorn + a Celery worker) in a subprocess ---------


@dataclass
class Pipeline:
    base_url: str
    username: str
    password: str
    token: str
    data_dir: Path
    source_dir: Path
    dataset_id: int
    run_id: int
    subject_id: int
    subject_key: str
    attribution_id: int

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )


def wait_job(client: httpx.Client, job_id: int, *, timeout: float) -> dict:
    def done() -> dict | None:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(done, timeout=timeout, interval=1.0, what=f"job {job_id}")
    assert job["status"] == "succeeded", f"job {job_id} ended {job['status']}: {job['error']}"
    return job


def upload_folder(client: httpx.Client, dataset_id: int, folder: Path) -> list[dict]:
    import csv

    subjects = []
    with open(folder / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            files = {"image": (Path(row["image"]).name, (folder / row["image"]).read_bytes())}
            if row["mask"]:
                files["mask"] = (Path(row["mask"]).name, (folder / row["mask"]).read_bytes())
            data = {"subject_key": row["subject"], "label": row["label"], "split": row["split"]}
            resp = client.post(f"/api/v1/datasets/{dataset_id}/subjects", data=data, files=files)
            assert resp.status_code == 201, resp.text
            subjects.append(resp.json())
    return subjects


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Upload a small synthetic dataset, train a run and compute IG, all through a live server."""
    from worker.ml.synthetic import SyntheticConfig, generate_dataset

    root = tmp_path_factory.mktemp("live")
    source = root / "source"
    generate_dataset(
        source,
        SyntheticConfig(n_healthy=6, n_lesion=6, grid=(24, 28, 24), spacing_mm=8.0, seed=3),
    )
    port = free_port()
    env = {
        **os.environ,
        "ATTRIVUE_DATA_DIR": str(root / "data"),
        "ATTRIVUE_ENVIRONMENT": "test",
        "ATTRIVUE_DEVICE": "cpu",
    }
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        env.pop(name, None)
    attrivue = [sys.executable, "-m", "backend.cli"]
    subprocess.run(
        [*attrivue, "create-user", "tester", "--role", "admin", "--password", ADMIN_PASSWORD],
        env=env,
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(
        [*attrivue, "serve", "--port", str(port)], env=env, cwd=REPO, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"server exited; see {root / 'server.log'}")
            try:
                return httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=90, what="the server to answer /health")
        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": "tester", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        project = client.post("/api/v1/projects", json={"name": "live"}).json()
        dataset = client.post(
            "/api/v1/datasets", json={"name": "live test", "project_id": project["id"]}
        ).json()
        subjects = upload_folder(client, dataset["id"], source)
        run = client.post(
            "/api/v1/runs",
            json={
                "dataset_id": dataset["id"],
                "name": "lc-only smoke",
                "config": {"epochs": 2, "batch_size": 2, "grid": [24, 28, 24], "seed": 1},
            },
        )
        assert run.status_code == 201, run.text
        wait_job(client, run.json()["job_id"], timeout=420)
        lesion = next(s for s in subjects if s["has_mask"])
        attr = client.post(
            "/api/v1/attributions",
            json={
                "run_id": run.json()["id"],
                "subject_id": lesion["id"],
                "params": {"steps": 16, "internal_batch_size": 8},
            },
        )
        assert attr.status_code == 201, attr.text
        wait_job(client, attr.json()["job_id"], timeout=300)
        yield Pipeline(
            base_url=base,
            username="tester",
            password=ADMIN_PASSWORD,
            token=token,
            data_dir=root / "data",
            source_dir=source,
            dataset_id=dataset["id"],
            run_id=run.json()["id"],
            subject_id=lesion["id"],
            subject_key=lesion["subject_key"],
            attribution_id=attr.json()["id"],
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

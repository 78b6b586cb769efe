"""Faults with a real Celery worker, a real broker and a real database.

- Redis (our own redis-server, persisting like the deployment's) is killed and restarted while
  one job runs and two wait: every job ends succeeded exactly once.
- PostgreSQL (our own database) becomes unreachable through a TCP proxy we cut: the API
  answers 503 with a clear message, recovers when it is back, and the training worker retries
  its writes and finishes its job without losing it.
- The disk is full while a map is written (RLIMIT_FSIZE on the worker: its writes fail as on a
  full disk, with EFBIG): the job fails with a clear error and no file, whole or partial,
  is left; with room again the same request succeeds.
- The API process is SIGKILLed mid-upload: no subject, no file of the dataset appears, the
  interrupted import's staging files are removed at the next start, and the chunked upload
  resumes from the bytes that reached the disk.

A worker SIGKILLed mid-training resumes from its checkpoint:
tests/worker/test_job_control.py::test_a_job_whose_worker_is_killed_is_recovered_and_resumed.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_PASSWORD, REPO, clear_caches, postgres_database
from tests.helpers import brain_volume, free_port, wait_for
from tests.reliability.faults import (
    POSTGRES_BASE,
    RedisServer,
    TcpProxy,
    fault_env,
    queue_run,
    wait_terminal,
)
from tests.worker.conftest import make_dataset
from tests.worker.test_job_control import api_client, epochs_stored, job_row, stop_worker

# Four training subjects and one of each class in val and test: a few seconds per job.
SPLITS = ("train",) * 4 + ("val",) * 2 + ("test",) * 2


class Worker:
    """``attrivue worker`` (solo pool: one process) with its output drained to a buffer, so
    that the test can limit the process's file sizes without its log file hitting the limit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = io.StringIO()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.write(line.decode(errors="replace"))

    def log(self) -> str:
        return self.output.getvalue()

    def alive(self) -> None:
        assert self.process.poll() is None, self.log()[-3000:]

    def stop(self) -> None:
        stop_worker(self.process)
        self._reader.join(timeout=5)


def _postgres():  # type: ignore[no-untyped-def]
    """Our own database on the PostgreSQL server (dropped by ``next(databases, None)``)."""
    databases = postgres_database(POSTGRES_BASE)
    return databases, next(databases)


def _assert_each_epoch_once(run_id: int, epochs: int) -> None:
    points = Counter(epochs_stored(run_id))
    assert {epoch for epoch, _ in points} == set(range(1, epochs + 1))
    assert set(points.values()) == {1}, "an epoch's metrics were stored twice"


# --------------------------------------------------------------------------- Redis


def test_redis_restart_loses_no_job_and_runs_none_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    worker = None
    try:
        fault_env(tmp_path, monkeypatch, broker_url=redis.url)
        dataset_id = make_dataset(tmp_path, SPLITS)[1]
        runs = [queue_run(dataset_id, epochs=2) for _ in range(3)]
        job_ids = [job_id for _, job_id in runs]
        worker = Worker(dict(os.environ))

        def first_running() -> bool:
            worker.alive()
            return job_row(job_ids[0]).status == "running"

        wait_for(first_running, timeout=120, interval=0.05, what="the first job to run")
        redis.kill()  # one job running, the others waiting in the broker
        at_kill = [job_row(j).status for j in job_ids]
        assert at_kill[-1] == "queued" and "running" in at_kill[:2], at_kill
        time.sleep(2)
        redis.start()
        states = wait_terminal(job_ids, timeout=240, alive=worker.alive)
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()
    log = worker.log()
    assert states == dict.fromkeys(job_ids, "succeeded"), log[-3000:]
    for run_id, job_id in runs:
        job = job_row(job_id)
        # One claim each: no job was run a second time (a re-delivered message finds its job
        # finished or running and does nothing).
        assert job.attempts == 1 and job.message == "trained 2 epochs", (job.message, log)
        _assert_each_epoch_once(run_id, 2)
    assert "Connection" in log or "connection" in log, "the worker saw Redis go away"


# --------------------------------------------------------------------------- PostgreSQL


def test_database_cut_gives_503_then_recovers_and_the_worker_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    databases, url = _postgres()
    server = make_url(url)
    proxy = TcpProxy((server.host or "127.0.0.1", server.port or 5432))
    proxy.start()
    proxied = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    worker = None
    try:
        fault_env(tmp_path, monkeypatch, database_url=proxied, stale_seconds=10)
        from backend.main import DATABASE_DOWN

        dataset_id = make_dataset(tmp_path, SPLITS)[1]
        run_id, job_id = queue_run(dataset_id, epochs=6)
        client = api_client()
        worker = Worker(dict(os.environ))

        def epoch_one() -> bool:
            worker.alive()
            return any(epoch == 1 for epoch, _ in epochs_stored(run_id))

        wait_for(epoch_one, timeout=120, interval=0.2, what="epoch 1 of the run")
        proxy.cut()
        cut_at = time.monotonic()
        down = client.get(f"/api/v1/runs/{run_id}")
        assert down.status_code == 503, down.text
        assert down.json() == {"detail": DATABASE_DOWN} and down.headers["retry-after"]
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        assert health.json()["database"].startswith("unreachable")

        def worker_retrying() -> bool:
            worker.alive()
            return "database unavailable while" in worker.log()

        # The cut lasts until the training task has failed a write and is retrying it.
        wait_for(worker_retrying, timeout=30, interval=0.2, what="the worker to retry a write")
        time.sleep(max(0.0, 3 - (time.monotonic() - cut_at)))
        proxy.restore()
        back = client.get(f"/api/v1/runs/{run_id}")
        assert back.status_code == 200, back.text
        states = wait_terminal([job_id], timeout=180, alive=worker.alive)
        log = worker.log()
        assert states == {job_id: "succeeded"}, log[-3000:]
        job = job_row(job_id)
        assert job.attempts == 1 and job.message == "trained 6 epochs", job.message
        _assert_each_epoch_once(run_id, 6)
    finally:
        if worker is not None:
            worker.stop()
        proxy.cut()
        clear_caches()
        next(databases, None)


# --------------------------------------------------------------------------- disk full


def _attribution(run_id: int, subject_id: int) -> tuple[int, int]:
    from backend.core.config import get_settings
    from backend.core.db import session_scope
    from backend.models import User
    from backend.schemas.attribution import AttributionCreate
    from backend.services import attributions

    with session_scope() as session:
        user = session.query(User).filter_by(username="r").one()
        body = AttributionCreate(run_id=run_id, subject_id=subject_id, method="saliency", params={})
        row = attributions.create_attribution(session, body=body, user=user)
        session.commit()
        attributions.dispatch_all(session, [row], get_settings())
        return row.id, row.job_id


def test_disk_full_while_writing_a_map_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's database is PostgreSQL (no database file of its own to grow), its broker
    the filesystem one (small message files), its log a pipe: under the size limit only the
    map's write fails, exactly as it would on a full disk."""
    from backend.core.db import session_scope
    from backend.models import Subject
    from backend.storage import get_storage

    databases, url = _postgres()
    worker = None
    try:
        fault_env(tmp_path, monkeypatch, database_url=url)
        dataset_id = make_dataset(tmp_path, SPLITS)[1]
        run_id, train_job = queue_run(dataset_id, epochs=1)
        worker = Worker(dict(os.environ))
        assert wait_terminal([train_job], timeout=180, alive=worker.alive) == {
            train_job: "succeeded"
        }, worker.log()[-3000:]
        with session_scope() as session:
            subject_id = session.query(Subject.id).filter_by(dataset_id=dataset_id).first()[0]
        maps = get_storage().run_dir(run_id) / "maps"

        _, hard = resource.prlimit(worker.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(worker.process.pid, resource.RLIMIT_FSIZE, (4096, hard))
        attribution_id, job_id = _attribution(run_id, subject_id)
        assert wait_terminal([job_id], timeout=120, alive=worker.alive) == {job_id: "failed"}
        job = job_row(job_id)
        assert "no space to write the map" in job.error and "File too large" in job.error
        assert "nothing was stored" in job.error, job.error
        leftovers = sorted(p.name for p in maps.iterdir()) if maps.exists() else []
        assert leftovers == [], f"a partial map was left: {leftovers}"

        def row_failed() -> bool:
            from backend.models import AttributionMap

            with session_scope() as session:
                row = session.get(AttributionMap, attribution_id)
                return row.status == "failed" and row.path is None

        # The job ends first, then its map's row (two writes).
        wait_for(row_failed, timeout=10, interval=0.1, what="the map's row to show the failure")

        # Room again: the same request succeeds and the map is whole.
        resource.prlimit(worker.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
        attribution_id, job_id = _attribution(run_id, subject_id)
        assert wait_terminal([job_id], timeout=120, alive=worker.alive) == {job_id: "succeeded"}
        written = maps / f"{attribution_id}.nii.gz"

        def products_settled() -> bool:
            # The display map and statistics come from a CPU task sent once the job is done:
            # wait for them before listing, so a product still being written is not a leftover.
            names = [p.name for p in maps.iterdir()]
            products = {f"{attribution_id}.display.nii.gz", f"{attribution_id}.stats.json"}
            return products <= set(names) and not any(n.endswith(".part") for n in names)

        wait_for(products_settled, timeout=60, interval=0.2, what="the map's products")
        names = sorted(p.name for p in maps.iterdir())
        # The map and its products (display map, statistics): only the new map's, no temporary.
        assert written.name in names, names
        assert all(n.startswith(f"{attribution_id}.") for n in names), names
        assert np.isfinite(np.asarray(nib.load(written).dataobj)).all()
        worker.alive()
    finally:
        if worker is not None:
            worker.stop()
        clear_caches()
        next(databases, None)


# --------------------------------------------------------------------------- API restart


class Server:
    """``attrivue serve --no-worker`` on a port of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "backend.cli", "serve", "--no-worker"]
                + ["--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.base}/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=90, interval=0.2, what="the API to answer")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def _raw_request(port: int, head: str, body: bytes) -> socket.socket:
    """Send the head and ``body`` (only part of what Content-Length announces); keep it open."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + body)
    return sock


def test_api_killed_mid_upload_leaves_no_partial_dataset(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ATTRIVUE_DATA_DIR": str(tmp_path / "data"),
        "ATTRIVUE_ENVIRONMENT": "test",
    }
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        env.pop(name, None)
    data_dir = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "create-user", "boss", "--role", "admin"]
        + ["--password", ADMIN_PASSWORD],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    server = Server(env, tmp_path / "server.log")
    server.start()
    try:
        token = httpx.post(
            f"{server.base}/api/v1/auth/login",
            json={"username": "boss", "password": ADMIN_PASSWORD},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        api = httpx.Client(base_url=server.base, headers=auth, timeout=30)
        project = api.post("/api/v1/projects", json={"name": "p"}).json()["id"]
        dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()

        # A chunked upload of a 2.3 MB volume: the first 500 kB arrive whole.
        image = brain_volume((72, 80, 100), seed=1)[0]
        volume = nib.Nifti1Image(image, np.eye(4)).to_bytes()
        size = len(volume)
        upload = api.post(
            "/api/v1/uploads", json={"project_id": project, "filename": "s.nii", "size": size}
        ).json()
        first = 500_000
        sent = api.put(f"/api/v1/uploads/{upload['id']}?offset=0", content=volume[:first])
        assert sent.json()["received"] == first
        # The next chunk is on the wire (1.5 of its 1.8 MB sent) when the server dies ...
        chunk = volume[first:]
        chunk_sock = _raw_request(
            server.port,
            f"PUT /api/v1/uploads/{upload['id']}?offset={first} HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(chunk)}\r\n\r\n",
            chunk[:1_500_000],
        )
        # ... and so is a multipart import of two subjects (the manifest and one file sent).
        boundary = "b0undary"
        manifest = b"subject,image,label\na,a.nii,0\nb,b.nii,1\n"
        parts = [("manifest", "manifest.csv", manifest), ("files", "a.nii", volume)]
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + content
            + b"\r\n"
            for field, name, content in parts
        )
        import_sock = _raw_request(
            server.port,
            f"POST /api/v1/datasets/{dataset['id']}/imports HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body) + 10 * size}\r\n\r\n",
            body,
        )
        staging = data_dir / "tmp"

        def both_in_progress() -> bool:
            part = staging / "uploads" / f"{upload['id']}.part"
            staged = [p for p in staging.glob("import-*/part-*") if p.stat().st_size > 0]
            return part.stat().st_size > first and bool(staged)

        wait_for(both_in_progress, timeout=30, interval=0.1, what="both bodies on the disk")
        server.kill()
        chunk_sock.close()
        import_sock.close()
        assert list(staging.glob("import-*")), "the crash left the import's staging folder"

        server.start()
        # Nothing of the import: no subject, no dataset file, its staging folder swept.
        subjects = api.get(f"/api/v1/datasets/{dataset['id']}/subjects").json()
        assert subjects["count"] == 0
        assert [p for p in (data_dir / "datasets").rglob("*") if p.is_file()] == []
        assert list(staging.glob("import-*")) == []
        assert "staging folders of interrupted imports" in server.log.read_text()
        # The chunked upload kept a prefix of what was sent, and resumes from it.
        received = api.get(f"/api/v1/uploads/{upload['id']}").json()["received"]
        assert first < received <= first + 1_500_000
        part = (staging / "uploads" / f"{upload['id']}.part").read_bytes()
        assert part == volume[:received], "the stored prefix is exactly what was sent"
        rest = api.put(
            f"/api/v1/uploads/{upload['id']}?offset={received}", content=volume[received:]
        )
        assert rest.json()["status"] == "complete", rest.text
        manifest_up = api.post(
            "/api/v1/uploads",
            json={
                "project_id": project,
                "filename": "manifest.csv",
                "size": len(b"subject,image,label\ns,s.nii,0\n"),
            },
        ).json()
        api.put(
            f"/api/v1/uploads/{manifest_up['id']}?offset=0",
            content=b"subject,image,label\ns,s.nii,0\n",
        )
        done = api.post(
            f"/api/v1/datasets/{dataset['id']}/imports",
            json={"upload_ids": [upload["id"], manifest_up["id"]]},
        )
        assert done.status_code == 201, done.text
        stored = api.get(f"/api/v1/subjects/{done.json()['data'][0]['id']}/image.nii.gz")
        got = nib.Nifti1Image.from_bytes(gzip.decompress(stored.content))
        np.testing.assert_array_equal(np.asarray(got.dataobj), image)
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=30)

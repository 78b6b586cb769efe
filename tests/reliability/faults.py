"""Fault injection for the reliability tests: a TCP proxy that can be cut, an own Redis, and
the environment of one fault test (its data directory, database and broker)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import clear_caches
from tests.helpers import free_port, wait_for

# CI exports this; on a developer machine the local server (trust auth) is used directly.
POSTGRES_BASE = os.environ.get(
    "ATTRIVUE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server; ``cut`` drops every connection and refuses new
    ones (as a network partition or a stopped server would), ``restore`` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    restore = start

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone may not)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class RedisServer:
    """A redis-server of this test only, persisting like the deployment's (append-only file,
    fsync on every write), so that a restart keeps what it had acknowledged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ],
            stdout=open(self.folder / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(answers, timeout=20, interval=0.1, what="redis-server to answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()


def fault_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    stale_seconds: float = 5,
) -> dict[str, str]:
    """Environment of a test and its workers: fast heartbeats, a migrated database."""
    env = {
        "ATTRIVUE_DATA_DIR": str(tmp_path / "data"),
        "ATTRIVUE_ENVIRONMENT": "test",
        "ATTRIVUE_DEVICE": "cpu",
        "ATTRIVUE_HEARTBEAT_SECONDS": "1",
        "ATTRIVUE_JOB_STALE_SECONDS": str(stale_seconds),
    }
    if database_url:
        env["ATTRIVUE_DATABASE_URL"] = database_url
    if broker_url:
        env["ATTRIVUE_BROKER_URL"] = broker_url
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clear_caches()
    from backend.core.db import upgrade_database

    upgrade_database()
    return env


def wait_terminal(job_ids: list[int], *, timeout: float, alive=None) -> dict[int, str]:  # type: ignore[no-untyped-def]
    from backend.core.db import session_scope
    from backend.models import Job

    def done() -> dict[int, str] | None:
        if alive is not None:
            alive()
        with session_scope() as session:
            states = {j: session.get(Job, j).status for j in job_ids}
        finished = all(s in ("succeeded", "failed", "cancelled") for s in states.values())
        return states if finished else None

    return wait_for(done, timeout=timeout, interval=0.3, what=f"jobs {job_ids} to end")


def elapsed(start: float) -> float:
    return time.monotonic() - start


# L_C only, one batch of two per step on a 16x20x16 grid: a few seconds per job, and the
# worker reads the job row (cancel check) before every step.
LIGHT_CONFIG = {
    "batch_size": 2,
    "grid": [16, 20, 16],
    "device": "cpu",
    "seed": 3,
    "loss_setting": "lc_only",
    "val_attribution": False,
}


def queue_run(dataset_id: int, epochs: int) -> tuple[int, int]:
    """A training run of user ``r`` (tests.worker.conftest.make_dataset), sent to the broker."""
    from backend.core.config import get_settings
    from backend.core.db import session_scope
    from backend.models import User
    from backend.services.jobs import dispatch
    from backend.services.runs import create_run

    with session_scope() as session:
        user = session.query(User).filter_by(username="r").one()
        config = {**LIGHT_CONFIG, "epochs": epochs}
        run = create_run(session, dataset_id=dataset_id, name="r", config=config, user=user)
        session.commit()
        dispatch(session, run.job, get_settings())
        return run.id, run.job_id
